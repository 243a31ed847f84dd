"""Execute the cookbook's notebooks headlessly with papermill and summarise their key figures.

    python -m mmhelpers.run_notebooks                 # every notebook, full parameters, embedded data
    python -m mmhelpers.run_notebooks --smoke         # every notebook with SMOKE=True (what the tests use)
    python -m mmhelpers.run_notebooks --only 00_ -p DATA real
    python -m mmhelpers.run_notebooks --only 03_mini_vlm -p DATA real --seeds 0 1 2 --jobs 3

Executed copies go to build/executed/ (build/executed-real/ with ``-p DATA real``, build/executed-own/
with your folder, build/executed-smoke/ with --smoke), each notebook's metrics JSON to build/metrics/,
and a summary (time, status and metrics per notebook) to build/summary.json. Then the site is built
from the executed copies (``mmhelpers.site``: build/site/index.html), unless --no-site.

``--seeds`` runs the notebooks once per seed (``-p SEED s``), each seed in its own process with its own build
folder (build/seeds/seed<s>/, its log beside it), ``--jobs`` of them at once with ``cores // jobs`` PyTorch
threads each (``-p THREADS`` overrides). The small models of a recipe use two threads little better than one
(the mini VLM's VQA step: 45 ms on 2 threads, 51 ms on 1), so on a small machine seeds side by side finish
sooner than one after another. A scenario's results file gathers the seeds (:mod:`mmhelpers.seed_results`);
the first seed's executed copies and metrics become build/'s, for the site; the wall time of all the seeds
together is stamped into the results file as ``all_seeds``, and the ``make notebooks`` command that ran into
each seed's ``command`` (with ``--jobs`` written out).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmhelpers.atomic import locked, write_json
from mmhelpers.paths import REPO_ROOT, build_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


PATH_VARIABLES = ("MMHELPERS_MIRROR", "MMHELPERS_DATA", "MMHELPERS_CACHE", "MMHELPERS_BUILD")


def absolute_path_variables(environ: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """Make the folders named by relative ``MMHELPERS_*`` variables absolute, against the folder the runner was
    started in: a kernel starts in its notebook's folder, where ``MMHELPERS_MIRROR=../shared/data`` typed at the
    repository root would name another folder. Returns the variables changed."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    changed = {}
    for name in PATH_VARIABLES:
        value = environ.get(name)
        if value and not Path(value).expanduser().is_absolute():
            environ[name] = changed[name] = str((cwd / Path(value).expanduser()).resolve())
    return changed


def discover(only: str | None = None) -> list[Path]:
    """Notebooks under notebooks/, in their numbered order (checkpoints and executed copies skipped)."""
    found = sorted(p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return [p for p in found if only is None or only in p.relative_to(NOTEBOOK_DIR).as_posix()]


def notebook_id(path: Path) -> str:
    """``notebooks/00_foundations/01_attention.ipynb`` -> ``00_foundations__01_attention``."""
    return "__".join(path.relative_to(NOTEBOOK_DIR).with_suffix("").parts)


def executed_dir(parameters: dict[str, Any] | None = None) -> Path:
    """Where executed copies go, by what they ran on, so a smoke or own-data run never replaces the site's copies."""
    parameters = parameters or {}
    data = parameters.get("DATA", "embedded")
    if parameters.get("SMOKE"):
        return build_dir() / "executed-smoke"
    if data == "real":
        return build_dir() / "executed-real"
    return build_dir() / ("executed" if data == "embedded" else "executed-own")


def check_executed(nb: dict[str, Any], path: Path) -> None:
    """Fail a notebook that ran nothing: every non-empty code cell must have an execution count."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    if not code:
        raise RuntimeError(f"{path}: the notebook has no code cells")
    skipped = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    if skipped:
        raise RuntimeError(f"{path}: code cells {skipped} were not executed")


def execute(path: Path, parameters: dict[str, Any] | None = None, out_dir: Path | None = None,
            metrics_json: Path | None = None, log_output: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run one notebook in a fresh python3 kernel with papermill; return the metrics it wrote.

    Raises papermill's PapermillExecutionError (with the failing cell's traceback) on any error,
    and RuntimeError if the notebook executed no code or wrote no metrics.
    """
    import nbformat
    import papermill

    nid = notebook_id(path)
    out_dir = out_dir or executed_dir(parameters)
    metrics_json = metrics_json or build_dir() / "metrics" / f"{nid}.json"
    metrics_json.unlink(missing_ok=True)
    out_path = out_dir / path.relative_to(NOTEBOOK_DIR)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    params = {**(parameters or {}), "METRICS_JSON": str(metrics_json)}
    papermill.execute_notebook(
        str(path), str(out_path), parameters=params, kernel_name="python3", cwd=str(path.parent),
        progress_bar=False, log_output=log_output,
    )  # fmt: skip
    check_executed(nbformat.read(out_path, as_version=4), out_path)
    if not metrics_json.exists():
        raise RuntimeError(f"{path}: finished but wrote no metrics to {metrics_json}")
    return json.loads(metrics_json.read_text())


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _stamp_results(summary: dict[str, Any]) -> None:
    """Add the wall time of a scenario's notebooks to the results file one of them wrote (``results_json``); in a
    file gathered over seeds (:mod:`mmhelpers.seed_results`) to the seed that ran, so ``runtime_s`` is their mean."""
    for nid, entry in summary["notebooks"].items():
        path = entry["metrics"].get("results_json")
        if not path or not Path(path).exists():
            continue
        scenario = nid.split("__")[0]
        seconds = sum(e["seconds"] for n, e in summary["notebooks"].items() if n.startswith(scenario + "__"))
        stamp = {
            "runtime_s": round(seconds, 1),
            "runtime_notebooks": {
                n: e["seconds"] for n, e in summary["notebooks"].items() if n.startswith(scenario + "__")
            },
            # wall time depends on what else ran: the 15-minute load average at the end says whether the cores were idle
            "load_average_15min": round(os.getloadavg()[2], 2),
        }
        seed = str(entry["metrics"].get("_context", {}).get("seed"))
        _update_results(path, stamp, seeds=[seed])
        print(f"runtime of {scenario}: {seconds:.0f} s -> {path}")


def _update_results(path: str | Path, fields: dict[str, Any], seeds: list[str]) -> None:
    """Write ``fields`` into the results file at ``path``: into each of ``seeds``' records (then the mean and
    spread again) when the file gathers seeds, else at its top level. Under the file's lock, as seeds run at once."""
    from mmhelpers.seed_results import mean_and_spread, results_lock

    with locked(results_lock(path)):
        record = json.loads(Path(path).read_text())
        per_seed = record.get("per_seed", {})
        if any(s in per_seed for s in seeds):
            for s in seeds:
                if s in per_seed:
                    per_seed[s].update(fields)
            record = mean_and_spread(per_seed)
        else:
            record.update(fields)
        write_json(path, record)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="run with SMOKE=True (small and fast)")
    ap.add_argument("--only", help="run only notebooks whose path contains this text")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="set a notebook parameter (Python literal), e.g. -p DATA real")  # fmt: skip
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    ap.add_argument("--no-site", action="store_true", help="do not build the site (build/site) afterwards")
    ap.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                    help="run the notebooks once per seed, each seed in its own process (see the module's docstring)")
    ap.add_argument("--jobs", type=int, metavar="N",
                    help="with --seeds: seeds run at once (default: one per core, at most one per seed)")  # fmt: skip
    args = ap.parse_args(argv)
    params: dict[str, Any] = {k: _parse_value(v) for k, v in args.p}
    if args.smoke:
        params["SMOKE"] = True
    typed_mirror = os.environ.get("MMHELPERS_MIRROR")  # as typed, for the command a --seeds run records
    absolute_path_variables()  # before the kernels start, each in its notebook's folder
    notebooks = discover(args.only)
    if not notebooks:
        print("no notebooks matched", file=sys.stderr)
        return 2
    if args.jobs is not None and not args.seeds:
        ap.error("--jobs needs --seeds")
    if args.seeds:
        if "SEED" in params:
            ap.error("give the seeds with --seeds or -p SEED, not both")
        if len(set(args.seeds)) != len(args.seeds):
            ap.error(f"--seeds repeats a seed: {args.seeds}")
        if args.jobs is not None and args.jobs < 1:
            ap.error(f"--jobs must be at least 1, got {args.jobs}")
        jobs = args.jobs or min(len(args.seeds), os.cpu_count() or 1)
        failed = run_seeds(args.seeds, jobs, args.p, args.only, args.smoke, args.log_output,
                           command=seeds_command(sys.argv[1:] if argv is None else argv, jobs, typed_mirror))  # fmt: skip
        return _build_site() if not args.no_site and not failed else int(bool(failed))
    summary: dict[str, Any] = {"parameters": params, "notebooks": {}}
    failed = 0
    for path in notebooks:
        nid = notebook_id(path)
        print(f"== {path.relative_to(REPO_ROOT)} ...", flush=True)
        start = time.perf_counter()
        try:
            metrics = execute(path, params, log_output=args.log_output)
            status = "ok"
        except Exception as e:  # report every notebook, then fail at the end
            metrics, status = {}, f"FAILED: {type(e).__name__}: {str(e).strip()[-3000:]}"
            failed += 1
        seconds = round(time.perf_counter() - start, 1)
        summary["notebooks"][nid] = {"status": status, "seconds": seconds, "metrics": metrics}
        print(f"   {status} in {seconds} s", flush=True)
    _stamp_results(summary)
    out = write_json(build_dir() / "summary.json", summary)
    print(f"\n{len(notebooks) - failed}/{len(notebooks)} notebooks ran; executed copies in "
          f"{executed_dir(params)}; summary in {out}")  # fmt: skip
    if not args.no_site and _build_site():
        return 1
    return 1 if failed else 0


def _build_site() -> int:
    """Build the site from the executed copies; 1 (and why, on stderr) if it could not be built."""
    from mmhelpers import site

    start = time.perf_counter()
    try:
        index = site.build()
    except Exception as e:  # the notebooks' results stand; say why there is no site
        print(f"site not built: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"site built in {time.perf_counter() - start:.0f} s ({site.size_mb(index.parent):.1f} MB): "
          f"open {index.relative_to(REPO_ROOT) if index.is_relative_to(REPO_ROOT) else index} in a browser")  # fmt: skip
    return 0


def seeds_command(argv: list[str], jobs: int, mirror: str | None = None) -> str:
    """The ``make notebooks`` command that repeats a ``--seeds`` run from ``argv``, with its ``--jobs`` written out
    (the default depends on the machine's cores) and the mirror variable it ran with: ``mirror`` as it was typed
    (``main`` reads it before making it absolute), else ``$MMHELPERS_MIRROR``."""
    argv = list(argv) if "--jobs" in argv else [*argv, "--jobs", str(jobs)]
    mirror = mirror or os.environ.get("MMHELPERS_MIRROR")
    return (f"MMHELPERS_MIRROR={shlex.quote(mirror)} " if mirror else "") + f'make notebooks ARGS="{shlex.join(argv)}"'


def run_seeds(seeds: list[int], jobs: int, p: list[list[str]] | None = None, only: str | None = None,
              smoke: bool = False, log_output: bool = False, command: str | None = None) -> int:  # fmt: skip
    """Run the notebooks once per seed, ``jobs`` seeds at once, each in a process of its own (``python -m
    mmhelpers.run_notebooks ... -p SEED s``) with build/seeds/seed<s>/ as its build folder and its output in
    build/seeds/seed<s>.log; ``cores // jobs`` threads each unless ``p`` sets THREADS. Then the first seed's
    executed copies and metrics are copied into build/, build/summary.json lists every seed's summary, and the
    wall time of the whole run is stamped into each results file the seeds wrote (``all_seeds``), with ``command``
    (:func:`seeds_command`) as each seed's command where given: what ran, not the per-seed command a notebook
    writes. Returns the number of seeds that failed."""
    p = [list(x) for x in (p or [])]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    given = [_parse_value(v) for name, v in p if name == "THREADS"]
    if not given:
        p.append(["THREADS", str(threads)])
    elif not isinstance(given[-1], int) or given[-1] < 1:
        raise ValueError(f"THREADS for --seeds must be a number of threads, got {given[-1]!r}")
    else:
        threads = given[-1]
    root = build_dir()
    base = [sys.executable, "-m", "mmhelpers.run_notebooks", "--no-site", *sum((["-p", k, v] for k, v in p), [])]
    base += (["--only", only] if only else []) + (["--smoke"] if smoke else [])
    print(f"seeds {seeds}, {jobs} at once, {threads} thread(s) each; logs in {root / 'seeds'}", flush=True)

    def one(seed: int) -> tuple[int, int, float]:
        folder = root / "seeds" / f"seed{seed}"
        shutil.rmtree(folder, ignore_errors=True)  # this seed's copies from an earlier run: never mixed in
        folder.mkdir(parents=True)
        env = {**os.environ, "MMHELPERS_BUILD": str(folder), "MMHELPERS_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads)}  # fmt: skip
        start = time.perf_counter()
        print(f"   seed {seed}: started", flush=True)
        with open(root / "seeds" / f"seed{seed}.log", "w") as log:
            cmd = base + ["-p", "SEED", str(seed)] + (["--log-output"] if log_output else [])
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd()).returncode
        seconds = time.perf_counter() - start
        print(f"   seed {seed}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {seconds:.0f} s", flush=True)
        return seed, rc, seconds

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(one, seeds))
    wall = round(time.perf_counter() - start, 1)
    summaries = {}
    for seed, _, _ in done:
        path = root / "seeds" / f"seed{seed}" / "summary.json"
        summaries[str(seed)] = json.loads(path.read_text()) if path.exists() else {}
    first = root / "seeds" / f"seed{seeds[0]}"
    for sub in first.iterdir():  # executed copies and metrics of the first seed: what the site shows
        if sub.is_dir():
            shutil.copytree(sub, root / sub.name, dirs_exist_ok=True)
    stamp = {"all_seeds": {"seeds": seeds, "jobs": jobs, "threads_per_job": threads, "wall_s": wall}}
    results = {e["metrics"]["results_json"] for s in summaries.values() for e in s.get("notebooks", {}).values()
               if e.get("metrics", {}).get("results_json")}  # fmt: skip
    ran = [str(seed) for seed, rc, _ in done if rc == 0]  # a failed seed's older record did not run in this time
    for path in sorted(results):
        if Path(path).exists() and ran:
            _update_results(path, stamp | ({"command": command} if command else {}), seeds=ran)
            print(f"wall time of seeds {seeds}: {wall:.0f} s -> {path}")
    write_json(root / "summary.json", {"parameters": dict(p), "seeds": summaries, **stamp})
    failed = [seed for seed, rc, _ in done if rc]
    print(f"\n{len(seeds) - len(failed)}/{len(seeds)} seeds ran in {wall:.0f} s" + (f"; failed: {failed} (see their logs)"
          if failed else ""))  # fmt: skip
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
