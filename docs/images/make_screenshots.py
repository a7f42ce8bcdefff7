"""Make the README's screenshots for real: a real JupyterLab, a real notebook, a real browser.

Starts ``jupyter lab`` (with jupyter-mole installed: its server extension and
its sidebar) in a temporary folder (``my-project`` in the system's temporary
directory) holding a copy of ``notebooks/``, opens a
notebook with two ``%%mole`` cells in headless Chromium (Debian's, driven by
Playwright), runs it, and takes two pictures into this folder:

- ``widget.png``: the live view of a ``%%mole`` cell, once its run has finished;
- ``sidebar.png``: JupyterLab with the OpenMOLE sidebar open on an execution.

Run it from the clone, with the project's virtualenv::

    .venv/bin/python docs/images/make_screenshots.py

Jupyter's directories are temporary, and the embedded server it starts is
stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from tests.batch_systems import free_port  # noqa: E402
from tests.test_sidebar_browser import isolated_lab_environment  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
CHROMIUM_ARGS += ["--disable-background-networking", "--disable-component-update"]


def notebook() -> str:
    """A notebook that runs the quickstart's pi estimation and the sweep's forest fire."""
    pi = (REPO / "notebooks" / "pi.oms").read_text()
    sweep = json.loads((REPO / "notebooks" / "sweep.ipynb").read_text())
    fire = next(
        "".join(c["source"])
        for c in sweep["cells"]
        if "".join(c["source"]).startswith("%%mole fire.oms")
    )
    sources = ["%load_ext jupyter_mole", f"%%mole pi.oms -o run\n{pi}", fire]
    cells = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"cell-{i}",
            "metadata": {},
            "outputs": [],
            "source": source,
        }
        for i, source in enumerate(sources)
    ]
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    return json.dumps(
        {"cells": cells, "metadata": {"kernelspec": kernel}, "nbformat": 4, "nbformat_minor": 5}
    )


def api(url: str, token: str, endpoint: str) -> object:
    request = urllib.request.Request(
        f"{url}mole/api/{endpoint}", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def stop_embedded(connection: Path) -> None:
    """The embedded server outlives JupyterLab by design (kernels share it): stop it."""
    try:
        pid = int(json.loads(connection.read_text())["pid"])
        os.killpg(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except OSError:
            return
        time.sleep(0.2)


def screenshots(url: str, token: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
        page.set_default_timeout(60_000)
        page.goto(f"{url}lab/tree/analysis.ipynb?token={token}")
        page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for()
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        for _ in range(3):
            page.keyboard.press("Shift+Enter")
        wait_for(
            lambda: (
                [e.get("state") for e in api(url, token, "executions")] == ["finished", "finished"]
            ),
            "the two executions to finish",
        )
        page.locator(".jp-CodeCell .jp-InputPrompt", has_text="[3]").wait_for()
        page.wait_for_timeout(2000)  # the widgets' last update

        # the widget of the pi estimation, with its cell's first line
        mole = page.locator(".jp-CodeCell").nth(1)
        mole.scroll_into_view_if_needed()
        mole.locator(".jp-OutputArea-output").first.screenshot(path=str(HERE / "widget.png"))

        # the sidebar, with the forest fire selected
        page.locator(".jp-SideBar .lm-TabBar-tab[data-id='jupyter-mole-sidebar']").click()
        row = page.locator(".jp-mole-row", has=page.locator(".jp-mole-script", has_text="fire.oms"))
        row.first.click()
        page.locator(".jp-mole-file[data-name='fire.csv']").wait_for()
        page.locator(".jp-mole-output").filter(has_text="burned").wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(HERE / "sidebar.png"))
        browser.close()


def main() -> int:
    if not Path(CHROMIUM).exists():
        print(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 1
    # The notebook's folder has a plain name: its path shows in the sidebar's details.
    root = Path(tempfile.gettempdir()) / "my-project"
    if root.exists():
        print(f"{root} exists: move it away first", file=sys.stderr)
        return 1
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns("mole-*"))
    with tempfile.TemporaryDirectory(prefix="mole-screenshots-") as tmp:
        base = Path(tmp)
        (root / "analysis.ipynb").write_text(notebook())
        env = isolated_lab_environment(base / "jupyter")
        token, port = secrets.token_hex(16), free_port()
        url = f"http://127.0.0.1:{port}/"
        args = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}", "--Mole.embedded_workers=2", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.append("--allow-root")
        log = open(base / "jupyter-lab.log", "wb")
        lab = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        try:
            wait_for(lambda: api(url, token, "service").get("info"), "JupyterLab and its backend")
            screenshots(url, token)
        finally:
            lab.send_signal(signal.SIGTERM)
            lab.wait(30)
            log.close()
            stop_embedded(base / "jupyter" / "runtime" / "jupyter-mole-server.json")
            shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {HERE / 'widget.png'} and {HERE / 'sidebar.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
