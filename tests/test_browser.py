"""The cookbook in a real browser: notebooks run through JupyterLab's own UI, and the site built from them.

Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them), driven by Selenium:

- JupyterLab: a server on 127.0.0.1 with a token and a free port; one notebook per scenario opened in
  the browser, run with Run > Run All Cells once the status bar says the kernel is idle (clicked while
  it says "Initializing", Run All runs nothing), waited on until every code cell has its count, saved
  with File > Save Notebook; the saved file has no error output. The notebook must not show as modified
  when it opens (its committed metadata is what Lab writes), and no "official Jupyter news?" pop-up may
  cover it (the environment's overrides.json).
- The site (``mmhelpers.site``) built from those saved notebooks, served on 127.0.0.1: every page
  loads with no console error, shows its figures, and every internal link resolves. Screenshots of the
  landing page and one notebook page are written to build/screenshots/ (CI keeps them).

Without Chromium these tests skip, unless ``CI`` is set: CI never skips them.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mmhelpers import site
from mmhelpers.paths import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# two notebooks, run with their default parameters (embedded data): the first has formulas, so the site's MathJax
# is checked too; the second is a scenario's (5-10 s). Every notebook runs headless in tests/test_notebooks*.py;
# these check what only a browser shows (Lab's Run All, saving, the news pop-up, the site's pages), which is the
# same for every notebook (four notebooks here took 117 s, two about 60 s)
LAB_NOTEBOOKS = (
    "00_foundations/01_attention_from_scratch.ipynb",
    "03_mini_vlm/01_representation.ipynb",
)
RUN_TIMEOUT_S = 300  # per notebook


def _require_chromium() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: CI must install Debian's chromium and chromium-driver")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition, timeout: float, what: str, interval: float = 0.5, fail: bool = True):
    """Poll ``condition()`` until it returns something truthy; after ``timeout`` seconds fail naming ``what`` (or return None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    if fail:
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
    return None


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie (exited, not yet reaped) counts as gone
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" in status.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Headless Debian Chromium through chromium-driver, with the console log kept; stopped by its process id."""
    _require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the background-networking flags keep Chromium from calling out (this machine has no network)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    pids = [service.process.pid] + [p.pid for p in psutil.Process(service.process.pid).children(recursive=True)]
    try:
        yield driver
    finally:
        driver.quit()
        for pid in pids:  # chromedriver and every Chromium process it started
            if not _wait_for(lambda pid=pid: _pid_gone(pid), 20, f"browser process {pid} to exit", fail=False):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- JupyterLab


def _kernel_status(driver) -> str:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.jp-StatusBar-TextItem')).map(e => e.textContent).join(' | ')"
    )


def _click_menu(driver, menu: str, item: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{menu}']").click()
    label = f"//li[contains(@class,'lm-Menu-item')][.//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']]"
    _wait_for(lambda: driver.find_elements(By.XPATH, label), 10, f"menu item {menu} > {item}")[0].click()


def _prompts(driver) -> list[str]:
    """Input prompts of the notebook on screen: '[3]:' ran, '[*]:' running, '[ ]:' not run."""
    return driver.execute_script(
        "const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');"
        "return nb ? Array.from(nb.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')).map(e => e.textContent.trim()) : [];"
    )


def _run_in_lab(driver, base: str, token: str, root: Path, rel: str) -> dict:
    """Open ``rel`` in JupyterLab, Run All Cells once the kernel is idle, wait for every cell, save; say what was seen."""
    n_code = sum(
        1
        for c in json.loads((root / rel).read_text())["cells"]
        if c["cell_type"] == "code" and "".join(c["source"]).strip()
    )
    start = time.monotonic()
    driver.get(f"{base}/lab/tree/{urllib.parse.quote(rel)}?reset&token={token}")  # reset: no tabs from the last page
    _wait_for(lambda: "| Idle" in _kernel_status(driver), 120, f"the kernel of {rel} to say Idle")
    time.sleep(1)  # Lab updates the notebook's metadata from the kernel's info just after it connects
    dirty_on_open = driver.execute_script("return document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length")
    toasts = driver.execute_script(
        "return Array.from(document.querySelectorAll('.Toastify__toast')).map(e => e.textContent)"
    )
    _click_menu(driver, "Run", "Run All Cells")

    def finished() -> bool:
        prompts = _prompts(driver)
        ran = [p for p in prompts if p[1:-2].isdigit()]
        return "| Idle" in _kernel_status(driver) and "[*]:" not in prompts and len(ran) >= n_code

    _wait_for(finished, RUN_TIMEOUT_S, f"{rel} to finish (every code cell counted, kernel idle)", interval=1)
    _click_menu(driver, "File", "Save Notebook")
    _wait_for(
        lambda: not driver.execute_script("return document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty').length"),
        30, f"{rel} to be saved",
    )  # fmt: skip
    return {"dirty_on_open": dirty_on_open, "toasts": toasts, "seconds": time.monotonic() - start}


@pytest.fixture(scope="module")
def lab_run(browser, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run LAB_NOTEBOOKS through JupyterLab's UI in a copy of the notebooks; the server is stopped by its process id."""
    work = tmp_path_factory.mktemp("lab")
    root = work / "notebooks"
    for rel in LAB_NOTEBOOKS:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / "notebooks" / rel, root / rel)
    env = {k: v for k, v in os.environ.items() if k != "MMHELPERS_MIRROR"}
    env.update(MMHELPERS_DATA=str(work / "data"), MMHELPERS_CACHE=str(work / "cache"), MMHELPERS_BUILD=str(work / "build"),
               MMHELPERS_OFFLINE="1", JUPYTER_RUNTIME_DIR=str(work / "runtime"))  # fmt: skip
    port, token = _free_port(), secrets.token_hex(16)
    log = (work / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
         f"--LabApp.workspaces_dir={work / 'workspaces'}", f"--LabApp.user_settings_dir={work / 'settings'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    seen = {}
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    return True
            except OSError:
                return False

        _wait_for(up, 60, f"JupyterLab on port {port} (log: {work / 'lab.log'})")
        for rel in LAB_NOTEBOOKS:
            seen[rel] = _run_in_lab(browser, base, token, root, rel)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    assert _pid_gone(server.pid)
    return {"root": root, "seen": seen}


@pytest.mark.parametrize("rel", LAB_NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(lab_run: dict, rel: str):
    seen = lab_run["seen"][rel]
    assert seen["dirty_on_open"] == 0, f"{rel} shows as modified as soon as it opens: commit the metadata Lab writes"
    assert not any("news" in t for t in seen["toasts"]), f"a news pop-up covers {rel}: {seen['toasts']}"
    nb = json.loads((lab_run["root"] / rel).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert all(isinstance(n, int) for n in counts), f"cells not run in Lab: {counts}"
    assert counts == sorted(counts), f"cells ran out of order: {counts}"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{rel}: {errors[0]['ename']}: {errors[0]['evalue']}"
    figures = [o for c in code for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert figures, f"{rel} drew no figure in Lab"
    text = json.dumps([c["outputs"] for c in code])
    assert "IProgress not found" not in text, "tqdm.auto fell back to text bars: ipywidgets is missing"


# ---------------------------------------------------------------------------------------------- the site


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """The browser dropping a connection it no longer needs (BrokenPipe, reset) is not an error of the site."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def site_server(lab_run: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The site built from the notebooks Lab just ran and saved, served on 127.0.0.1."""
    out = tmp_path_factory.mktemp("site") / "site"
    index = site.build(out, [lab_run["root"]])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(index.parent))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", index.parent
    finally:
        server.shutdown()
        server.server_close()


def test_site_pages_load_with_their_figures_and_links(browser, site_server: tuple[str, Path]):
    base, folder = site_server
    pages = ["index.html"] + [p.with_suffix(".html").as_posix() for p in map(Path, LAB_NOTEBOOKS)]
    assert all((folder / p).is_file() for p in pages), sorted(p.relative_to(folder) for p in folder.rglob("*.html"))
    shots = REPO_ROOT / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    links: set[str] = set()
    for page in pages:
        browser.get_log("browser")  # drop what earlier pages logged
        browser.get(f"{base}/{page}")
        _wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 20, f"{page} to load")
        images = browser.execute_script(
            "return Array.from(document.querySelectorAll('article img')).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
        )
        assert all(done and width > 0 for _, done, width in images), f"{page}: broken images {images}"
        if page.startswith("00_foundations/01"):  # MathJax (shipped with the site) typeset the formulas
            _wait_for(lambda: browser.execute_script("return document.querySelectorAll('mjx-container').length"),
                      20, f"MathJax to typeset the formulas of {page}")  # fmt: skip
        if page != "index.html":
            assert len(images) >= 1, f"{page} shows no figure"
            assert "Executed in JupyterLab" in browser.page_source, f"{page} does not say how it was executed"
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"{page}: console errors {errors}"
        hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        links.update(h.split("#")[0] for h in hrefs if h.startswith(base))
        if page in ("index.html", pages[2]):
            browser.save_screenshot(str(shots / ("site-" + page.replace("/", "-").replace(".html", ".png"))))
    for link in sorted(links):
        with urllib.request.urlopen(link, timeout=5) as response:  # raises on 404
            assert response.status == 200, link
    linked = {urllib.parse.urlparse(link).path.lstrip("/") for link in links}
    assert set(pages) <= linked, f"pages not linked from the site's navigation: {set(pages) - linked}"
