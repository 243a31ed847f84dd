"""The cookbook as a static site: the executed notebooks, with their figures, rendered by Sphinx and MyST-NB.

    python -m mmhelpers.site                     # build/site/index.html from the executed notebooks
    python -m mmhelpers.site --source DIR ...    # other folders of executed notebooks, best first

Nothing is executed here: MyST-NB renders the outputs the notebooks already hold. For each notebook the
site takes the executed copy of the real-data full run (``build/executed-real/``, written by
``make notebooks ARGS="-p DATA real"``) where there is one, else the copy ``make notebooks`` wrote on
the embedded data (``build/executed/``); notebooks with neither are listed as not yet executed.

Why Sphinx + MyST-NB: it renders stored outputs without a kernel (``nb_execution_mode = "off"``), writes
each figure once as an image file instead of inlining it in the page, gives navigation, search and
prev/next links for free, and is what Jupyter Book is built on, without its extra layer. MathJax
comes from the ``sphinx-mathjax-offline`` package (only the two parts the pages use, 1.5 MB instead
of its 24 MB), so the site works with no network.

Before rendering, each notebook is cleaned for reading (:func:`clean_notebook`): a note says which
data it ran on and when; progress bars become their final line; stderr (kernel warnings, raw tqdm
text) is dropped; tracebacks are cut to their last lines; widget state is dropped (it would need
JavaScript from a CDN).
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import html
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import nbformat

from mmhelpers.paths import REPO_ROOT, build_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
TRACEBACK_LINES = 12  # an error output keeps its last lines on the site

SCENARIOS = {
    "00_foundations": "Foundations",
    "01_av_digits": "Audio-visual digits",
    "02_image_text": "Image-text retrieval",
    "03_mini_vlm": "A small vision-language model",
}
STAGES = ("representation", "feature extraction", "fusion", "training", "evaluation")


def default_sources() -> list[Path]:
    """Folders of executed notebooks, best first: the real-data runs, then the embedded-data runs."""
    return [build_dir() / "executed-real", build_dir() / "executed"]


def scenario_title(folder: str) -> str:
    """``01_av_digits`` -> "Audio-visual digits" (folders not in SCENARIOS: their name, spaced)."""
    return SCENARIOS.get(folder, folder.split("_", 1)[-1].replace("_", " ").capitalize())


def collect(sources: list[Path]) -> dict[str, Path | None]:
    """Map each notebook under notebooks/ (``scenario/stem.ipynb``) to its executed copy in the first source that has one."""
    found: dict[str, Path | None] = {}
    for nb in sorted(NOTEBOOK_DIR.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        rel = nb.relative_to(NOTEBOOK_DIR).as_posix()
        found[rel] = next((s / rel for s in sources if (s / rel).is_file()), None)
    return found


# ---------------------------------------------------------------------------------------------- cleaning


def _parameter_defaults(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The literal values assigned in the cell tagged ``parameters``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            values = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
            return values
    return {}


def provenance(nb: nbformat.NotebookNode, path: Path) -> str:
    """One sentence: how, when and on which data this copy was executed."""
    pm = nb.metadata.get("papermill", {})
    given = pm.get("parameters", {})
    params = {**_parameter_defaults(nb), **given}
    data = params.get("DATA", "embedded")
    data_text = {
        "embedded": "the embedded data (no download)",
        "real": "the real data sets (the registry's mirror)",
    }.get(data, f"the folder `{data}`")
    if "DATA" not in params:  # a notebook that reads no data set
        data_text = "generated and package-shipped inputs"
    size = "smoke (tiny) settings" if params.get("SMOKE") else "its full settings"
    shown = {k: v for k, v in given.items() if k not in ("METRICS_JSON", "RESULTS_JSON")}
    args = ", ".join(f"`{k}={v!r}`" for k, v in shown.items())
    if pm.get("start_time"):
        when = dt.datetime.fromisoformat(pm["start_time"]).strftime("%Y-%m-%d %H:%M UTC")
        took = f" in {pm['duration'] / 60:.1f} min" if pm.get("duration") else ""
        how = f"Executed by papermill on {when}{took}"
    else:
        when = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        how = f"Executed in JupyterLab, saved {when}"
    return f"{how}, on {data_text}, with {size}" + (f" (parameters {args})." if args else ".")


def _widget_states(nb: nbformat.NotebookNode) -> dict[str, dict[str, Any]]:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _progress_line(model_id: str, states: dict[str, dict[str, Any]]) -> str | None:
    """The last line a tqdm bar showed, rebuilt from the saved widget state.

    tqdm's notebook bar is an HBox of HTML (description and percent), the bar, and HTML (counts, times, rate).
    """
    box = states.get(model_id, {}).get("state", {})
    parts = []
    for child in box.get("children", []):
        child_state = states.get(str(child).removeprefix("IPY_MODEL_"), {})
        if child_state.get("model_name") == "HTMLModel":
            text = html.unescape(re.sub(r"<[^>]+>", "", child_state.get("state", {}).get("value", "")))
            parts.append(text.replace("\u2007", " ").replace("\xa0", " ").strip())
    text = " | ".join(p for p in parts if p)
    return text or None


def compress_image(png_b64: str, jpeg_quality: int = 85) -> tuple[str, str]:
    """A figure as small as it reads well: ``(mime type, base64)``.

    Plots with few colours become palette PNGs (lossless); photo-like figures become JPEGs when that
    saves at least two thirds; anything else stays the PNG it was.
    """
    import base64
    import io

    from PIL import Image

    raw = base64.b64decode(png_b64)
    img = Image.open(io.BytesIO(raw))
    img.load()
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    best_mime, best = "image/png", raw
    if rgb.getcolors(256) is not None:  # at most 256 colours: a palette PNG loses nothing
        buf = io.BytesIO()
        rgb.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
        if buf.tell() < len(best):
            best = buf.getvalue()
    else:
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=jpeg_quality, optimize=True)
        if buf.tell() < len(raw) / 3:
            best_mime, best = "image/jpeg", buf.getvalue()
    return best_mime, base64.b64encode(best).decode()


def _last_line(text: str) -> str:
    """What a terminal shows after carriage-return updates: each line's text after its last ``\\r``."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def clean_notebook(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """A copy of an executed notebook made for reading (see the module docstring); ``path`` is where it was read."""
    nb = copy.deepcopy(nb)
    states = _widget_states(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "stream" and out.get("name") == "stderr":
                continue  # kernel warnings and text progress bars
            if kind == "stream":
                out["text"] = _last_line(out["text"])
            elif kind == "error":
                tb = out.get("traceback", [])
                out["traceback"] = (["..."] if len(tb) > TRACEBACK_LINES else []) + tb[-TRACEBACK_LINES:]
            elif kind in ("display_data", "execute_result") and WIDGET_VIEW in out.get("data", {}):
                line = _progress_line(out["data"][WIDGET_VIEW].get("model_id", ""), states)
                if line is None:
                    continue  # a widget whose state was not saved: nothing readable to show
                out = nbformat.v4.new_output("stream", name="stdout", text=line + "\n")
            if kind in ("display_data", "execute_result") and "image/png" in out.get("data", {}):
                mime, data = compress_image(out["data"].pop("image/png"))
                out["data"][mime] = data
            outputs.append(out)
        # merge neighbouring stdout streams, so a loop's progress lines read as one block
        merged: list[Any] = []
        for out in outputs:
            if merged and out.get("output_type") == "stream" and merged[-1].get("output_type") == "stream":
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        cell.outputs = merged
    nb.metadata.pop("widgets", None)
    banner = nbformat.v4.new_markdown_cell(f"```{{note}}\n{provenance(nb, path)}\n```")
    at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), None)
    if at is None:
        nb.cells.insert(0, banner)
    else:  # right under the title: split the first markdown cell after its heading line
        title, _, rest = nb.cells[at].source.partition("\n")
        if title.startswith("# ") and rest.strip():
            nb.cells[at].source = title
            nb.cells.insert(at + 1, nbformat.v4.new_markdown_cell(rest.strip("\n")))
        nb.cells.insert(at + 1, banner)
    return nb


# ---------------------------------------------------------------------------------------------- pages


def landing_page(pages: dict[str, Path | None], notes: dict[str, str]) -> str:
    """index.md: what the cookbook is, the notebook map (scenario x stage), and the results tables."""
    from mmhelpers import results_tables

    lines = [
        "# Multimodal Cookbook",
        "",
        "Runnable recipes for combining **images, text and audio** in PyTorch: ordered Jupyter notebooks that walk "
        "each application scenario through the same five stages (representation, feature extraction, fusion, "
        "training, evaluation), plus `mmhelpers`, the tested helper package the notebooks import their machinery "
        "from. These pages are the notebooks as executed, with their figures; each says which data it ran on and "
        "when. To run them yourself: `make notebooks` (see the README).",
        "",
        "## The notebooks",
        "",
    ]
    by_scenario: dict[str, list[str]] = {}
    for rel in pages:
        by_scenario.setdefault(rel.split("/")[0], []).append(rel)
    width = max(len(rels) for rels in by_scenario.values())
    heads = [f"{i + 1:02d} {STAGES[i]}" if i < len(STAGES) else f"{i + 1:02d}" for i in range(width)]
    lines += ["| scenario | " + " | ".join(heads) + " |", "|---" * (width + 1) + "|"]
    for scenario, rels in by_scenario.items():
        cells = []
        for rel in rels:
            name = Path(rel).stem.split("_", 1)[-1].replace("_", " ")
            cells.append(f"[{name}]({rel}) ({notes[rel]})" if pages[rel] else f"{name}: not executed yet")
        cells += [""] * (width - len(cells))
        lines.append(f"| **{scenario[:2]} · {scenario_title(scenario)}** | " + " | ".join(cells) + " |")
    lines += ["", "Each page says how, when and on which data its notebook was executed.", ""]
    lines += [
        "## Results",
        "",
        "From the full runs on the real data, as in the README (`results/<scenario>.json`).",
        "",
    ]
    for name in results_tables.available():
        folder = next((f for f in SCENARIOS if f.endswith(name)), name)
        lines += [f"### {folder[:2]} · {scenario_title(folder)}", "", results_tables.render(name), ""]
    for scenario, rels in by_scenario.items():
        done = [Path(r).with_suffix("").as_posix() for r in rels if pages[r] is not None]
        if done:
            caption = f"{scenario[:2]} · {scenario_title(scenario)}"
            lines += ["```{toctree}", ":hidden:", f":caption: {caption}", "", *done, "```", ""]
    return "\n".join(lines)


CONF = '''\
# Written by mmhelpers.site for one build; not meant to be edited.
import shutil
from pathlib import Path

project = "Multimodal Cookbook"
author = "the Multimodal Cookbook authors"
extensions = ["myst_nb", "sphinx.ext.githubpages"]  # githubpages: .nojekyll, so GitHub Pages serves _static/
html_theme = "furo"
html_title = "Multimodal Cookbook"
html_favicon = "favicon.png"
html_copy_source = False  # no second copy of every notebook under _sources/
html_show_sourcelink = False
nb_execution_mode = "off"  # render the outputs the notebooks hold; never run them
nb_output_stderr = "remove"
myst_enable_extensions = ["dollarmath", "colon_fence"]
mathjax_path = "mathjax/tex-chtml.js"
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
MATHJAX = Path({mathjax!r})


def _copy_mathjax(app, exc):
    """Ship MathJax with the site (the pages work offline): the TeX-to-HTML bundle and its fonts only."""
    if exc is None and MATHJAX.is_dir():
        out = Path(app.outdir) / "_static" / "mathjax"
        (out / "output" / "chtml" / "fonts").mkdir(parents=True, exist_ok=True)
        shutil.copy2(MATHJAX / "tex-chtml.js", out / "tex-chtml.js")
        shutil.copytree(MATHJAX / "output" / "chtml" / "fonts" / "woff-v2",
                        out / "output" / "chtml" / "fonts" / "woff-v2", dirs_exist_ok=True)


def setup(app):
    app.connect("build-finished", _copy_mathjax)
'''


def _favicon(path: Path) -> None:
    """A 32x32 icon (three coloured bars: image, text, audio), so browsers do not ask for a missing favicon.ico."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate(((31, 119, 180), (255, 127, 14), (44, 160, 44))):
        draw.rectangle((2 + 10 * i, 6 + 6 * (i % 2), 9 + 10 * i, 28), fill=colour)
    img.save(path)


def _mathjax_dir() -> Path:
    """The MathJax 3 files inside the ``sphinx-mathjax-offline`` package."""
    from importlib.metadata import distribution

    dist = distribution("sphinx-mathjax-offline")
    init = next(f for f in dist.files if f.name == "tex-chtml.js" and "static/mathjax" in str(f))
    return Path(dist.locate_file(init)).parent


def build(out: Path | None = None, sources: list[Path] | None = None, quiet: bool = True) -> Path:
    """Render the site into ``out`` (default build/site) from ``sources`` (default :func:`default_sources`)."""
    from sphinx.cmd.build import build_main

    out = Path(out or build_dir() / "site")
    sources = [Path(s) for s in (sources or default_sources())]
    pages = collect(sources)
    if not any(pages.values()):
        where = ", ".join(str(s) for s in sources)
        raise FileNotFoundError(f"no executed notebooks in {where}: run `make notebooks` first")
    work = out.parent / f".{out.name}-work"  # removed after the build
    shutil.rmtree(work, ignore_errors=True)
    stage = work / "src"  # Sphinx's source folder: the cleaned copies, index.md and conf.py
    notes = {}
    for rel, src in pages.items():
        if src is None:
            continue
        nb = nbformat.read(src, as_version=4)
        pm = nb.metadata.get("papermill", {})
        data = (_parameter_defaults(nb) | pm.get("parameters", {})).get("DATA")
        when = pm.get("start_time", "")[:10] or "JupyterLab"
        notes[rel] = f"{data} data, {when}" if data else when
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(clean_notebook(nb, src), target)
    (stage / "index.md").write_text(landing_page(pages, notes))
    (stage / "conf.py").write_text(CONF.format(mathjax=str(_mathjax_dir())))
    _favicon(stage / "favicon.png")
    html_dir = work / "html"  # MyST-NB writes its image files beside it, in work/jupyter_execute
    args = ["-b", "html", "-d", str(work / "doctrees"), "-j", "auto", str(stage), str(html_dir)]
    code = build_main((["-q"] if quiet else []) + args)
    if code != 0:
        raise RuntimeError(f"sphinx-build failed with exit code {code} (its sources are in {stage})")
    (html_dir / ".buildinfo").unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)  # replace the old site only once the new one is complete
    html_dir.rename(out)
    shutil.rmtree(work)
    return out / "index.html"


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", action="append", type=Path, help="folder of executed notebooks (repeat: best first)")
    ap.add_argument("--out", type=Path, help="output folder (default build/site)")
    ap.add_argument("--verbose", action="store_true", help="show Sphinx's output")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        index = build(args.out, args.source, quiet=not args.verbose)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"site: {index} ({size_mb(index.parent):.1f} MB, built in {time.perf_counter() - start:.0f} s); "
          f"open it in a browser, or serve it: python -m http.server -d {index.parent}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
