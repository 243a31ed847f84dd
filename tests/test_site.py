"""The static site (mmhelpers.site): which executed copy each page shows, how a notebook is cleaned for reading, the build."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
from PIL import Image

from mmhelpers import site
from mmhelpers.run_notebooks import executed_dir

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REL = "00_foundations/01_attention_from_scratch.ipynb"


def _plot_png() -> str:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(50), np.sin(np.arange(50) / 5))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _photo_png() -> str:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(240, 320, 3)), 0), 1)  # photo-like: many colours, smooth
    img = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _tqdm_widget_state(model_id: str) -> dict:
    """Widget state as nbclient saves it for one finished tqdm.notebook bar."""
    return {
        model_id: {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_b", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": "train:\u2007100%"}},
        "b": {"model_name": "FloatProgressModel", "state": {"value": 20, "max": 20}},
        "r": {"model_name": "HTMLModel", "state": {"value": "\u200720/20\u2007[00:03&lt;00:00,\u20076.1it/s]"}},
    }


def executed_notebook(params: dict | None = None, papermill: bool = True) -> nbformat.NotebookNode:
    """A small executed notebook with the outputs the cleaning must handle."""
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# 00.01 · A title\n\nThe story starts here."),
        v4.new_code_cell('SMOKE = False\nDATA = "embedded"', metadata={"tags": ["parameters"]}),
        v4.new_code_cell(
            "work()",
            outputs=[
                v4.new_output("stream", name="stderr", text="UserWarning: something in a library\n"),
                v4.new_output("stream", name="stderr", text="  0%|          | 0/20\r100%|##########| 20/20\n"),
                v4.new_output("stream", name="stdout", text="step 1\rstep 2\rdone\n"),
                v4.new_output(
                    "display_data",
                    data={
                        site.WIDGET_VIEW: {"model_id": "bar", "version_major": 2, "version_minor": 0},
                        "text/plain": "  0%|          | 0/20 [00:00<?, ?it/s]",
                    },
                ),
                v4.new_output(
                    "display_data",
                    data={
                        site.WIDGET_VIEW: {"model_id": "no-state", "version_major": 2, "version_minor": 0},
                        "text/plain": "  0%|",
                    },
                ),
            ],
        ),  # fmt: skip
        v4.new_code_cell(
            "plot()",
            outputs=[
                v4.new_output("display_data", data={"image/png": _plot_png(), "text/plain": "<Figure>"}),
                v4.new_output("display_data", data={"image/png": _photo_png(), "text/plain": "<Figure>"}),
            ],
        ),  # fmt: skip
        v4.new_code_cell(
            "fail()",
            outputs=[
                v4.new_output("error", ename="ValueError", evalue="bad", traceback=[f"frame {i}" for i in range(40)]),
            ],
        ),  # fmt: skip
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["widgets"] = {site.WIDGET_STATE: {"state": _tqdm_widget_state("bar"), "version_major": 2}}
    if papermill:
        nb.metadata["papermill"] = {"parameters": params or {}, "start_time": "2026-12-01T10:29:17.7+00:00",
                                    "duration": 66.0}  # fmt: skip
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
    return nb


def test_clean_notebook_keeps_what_a_reader_needs(tmp_path: Path):
    nb = site.clean_notebook(executed_notebook({"DATA": "real", "METRICS_JSON": "/x.json"}), tmp_path / "x.ipynb")
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    joined = "\n".join(texts)
    assert "UserWarning" not in joined and " 0/20" not in joined, "stderr (warnings, text progress bars) is dropped"
    assert "done\n" in joined and "step 1" not in joined, "carriage-return updates show their last state"
    assert "train: 100% | 20/20 [00:03<00:00, 6.1it/s]" in joined, "a progress bar becomes its final line"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(site.WIDGET_VIEW in o.get("data", {}) for o in outputs), "no widget outputs (they need a CDN)"
    assert "widgets" not in nb.metadata
    (error,) = [o for o in outputs if o.output_type == "error"]
    assert len(error.traceback) == site.TRACEBACK_LINES + 1 and error.traceback[-1] == "frame 39"
    # the banner sits right under the title and says how, when and on what the copy ran
    assert nb.cells[0].source == "# 00.01 · A title"
    banner = nb.cells[1].source
    assert (
        "papermill on 2026-12-01 10:29 UTC in 1.1 min" in banner and "real data" in banner and "full settings" in banner
    )
    assert "METRICS_JSON" not in banner and "`DATA='real'`" in banner
    assert nb.cells[2].source == "The story starts here."


def test_clean_notebook_compresses_figures(tmp_path: Path):
    raw = executed_notebook()
    nb = site.clean_notebook(raw, tmp_path / "x.ipynb")
    before = [
        o.data["image/png"]
        for c in raw.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    after = [o.data for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text/plain" in o.get("data", {})]
    plot, photo = after
    assert "image/png" in plot and len(plot["image/png"]) <= len(before[0]), "a plot stays a (palette) PNG"
    assert "image/jpeg" in photo and "image/png" not in photo, "a photo-like figure becomes a JPEG"
    assert len(photo["image/jpeg"]) < len(before[1]) / 3
    img = Image.open(io.BytesIO(base64.b64decode(plot["image/png"]))).convert("RGB")
    orig = Image.open(io.BytesIO(base64.b64decode(before[0]))).convert("RGB")
    assert np.array_equal(np.asarray(img), np.asarray(orig)), "the plot's PNG is lossless"


def test_provenance_of_a_notebook_saved_in_jupyterlab(tmp_path: Path):
    path = tmp_path / "x.ipynb"
    nb = executed_notebook(papermill=False)
    nbformat.write(nb, path)
    text = site.provenance(nb, path)
    assert text.startswith("Executed in JupyterLab, saved ") and "embedded data" in text
    nb.cells[1].source = "SMOKE = True"  # a notebook that reads no data set, run small
    assert "generated and package-shipped inputs" in site.provenance(nb, path) and "smoke" in site.provenance(nb, path)


def test_collect_prefers_the_real_data_run(tmp_path: Path):
    real, embedded = tmp_path / "executed-real", tmp_path / "executed"
    for folder in (real, embedded):
        (folder / REL).parent.mkdir(parents=True)
        nbformat.write(executed_notebook(), folder / REL)
    other = "01_av_digits/01_representation.ipynb"
    (embedded / other).parent.mkdir(parents=True)
    nbformat.write(executed_notebook(), embedded / other)
    found = site.collect([real, embedded])
    assert found[REL] == real / REL and found[other] == embedded / other
    assert found["00_foundations/02_tensors_and_features.ipynb"] is None  # not executed anywhere


def test_run_notebooks_writes_each_kind_of_run_to_its_own_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MMHELPERS_BUILD", str(tmp_path))
    assert executed_dir({}) == tmp_path / "executed"
    assert executed_dir({"DATA": "real"}) == tmp_path / "executed-real"
    assert executed_dir({"DATA": "/home/me/calls"}) == tmp_path / "executed-own"
    assert executed_dir({"DATA": "real", "SMOKE": True}) == tmp_path / "executed-smoke"
    assert site.default_sources() == [tmp_path / "executed-real", tmp_path / "executed"]


def test_build_renders_pages_with_figure_files_and_leaves_no_litter(tmp_path: Path):
    src = tmp_path / "executed"
    (src / REL).parent.mkdir(parents=True)
    nbformat.write(executed_notebook({"DATA": "real"}), src / REL)
    out = tmp_path / "site"
    index = site.build(out, [src])
    assert index == out / "index.html"
    landing = index.read_text()
    assert "attention from scratch" in landing and "not executed yet" in landing  # the others
    assert "real data, 2026-12-01" in landing  # what and when, in the map
    assert "Results" in landing and "Audio-visual digits" in landing  # tables from results/*.json
    page = (out / REL).with_suffix(".html").read_text()
    assert "train: 100% | 20/20" in page and "UserWarning" not in page and "frame 3<" not in page
    images = sorted(p.suffix for p in (out / "_images").iterdir())
    assert images == [".jpg", ".png"], "figures are image files, not inlined data"
    assert "data:image" not in page
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax ships with the site"
    assert site.size_mb(out) < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["executed", "site"], "no work folders left behind"
    assert not (out / ".buildinfo").exists() and not list(out.rglob("*.ipynb")), "no second copy of the notebooks"


def test_build_without_executed_notebooks_says_what_to_run(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="make notebooks"):
        site.build(tmp_path / "site", [tmp_path / "nothing"])
    assert site.main(["--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "site")]) == 2


def test_committed_notebooks_carry_the_metadata_jupyterlab_writes():
    """Lab rewrites a kernelspec named "Python 3" and a bare language_info on open, so the notebook shows as modified."""
    for path in sorted(site.NOTEBOOK_DIR.rglob("*.ipynb")):
        meta = json.loads(path.read_text())["metadata"]
        assert meta["kernelspec"] == {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }, path
        info = dict(meta["language_info"])
        assert info.pop("version").startswith("3.11."), f"{path}: language_info.version is the project's Python"
        assert info == {
            "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
            "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3",
        }, path  # fmt: skip
