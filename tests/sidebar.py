"""Helpers and fixtures of the ``test_sidebar_*`` modules: the JupyterLab sidebar in a real browser.

A real ``jupyter lab`` is started with the package installed (its server extension
and its prebuilt lab extension), in a temporary root, with Jupyter's runtime,
data and config directories isolated, and user settings of its own (a poll
interval of ``POLL_INTERVAL`` seconds). Chromium (Debian's) is driven by
Playwright. One lab and one page serve every sidebar test of a session (the
fixtures are a plugin, see ``conftest.py``); each test sets up what it needs
itself, so that any of them also passes alone. A screenshot of every step is
kept in ``test-artifacts/sidebar/``.

What this needs is installed by ``.ci/setup`` (not here): the ``jupyterlab`` and
``playwright`` Python packages, Debian's ``chromium``, and the built extension
(``.ci/labextension``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batch_systems import free_port
from tests.servers import FAILING_SCRIPT, PI_SCRIPT

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "sidebar"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIDEBAR = "jupyter-mole-sidebar"
# The lab's user settings set this poll interval (seconds; the schema's default is 2).
POLL_INTERVAL = 0.5
DEFAULT_POLL_INTERVAL = 2.0
# The sidebar's list request (Jupyter adds a cache buster to GET requests).
LIST = re.compile(r"/mole/api/executions(\?[^/]*)?$")

SLOW_SCRIPT = """
x = Val(int)
DirectSampling(
    evaluation=SystemExecTask("sleep 120", inputs=[x]),
    sampling=x.in_([1, 2]),
)
"""
# One job that prints a line at once and another TAIL_SECONDS later: what a running job
# prints reaches the execution's output while it runs (every half second).
TAIL_SECONDS = 9
TAIL_SCRIPT = f"""
import time

x = Val(int)

@PythonTask(inputs=[x])
def talk(x):
    print("line 1")
    time.sleep({TAIL_SECONDS})
    print("line {TAIL_SECONDS}")

DirectSampling(evaluation=talk, sampling=x.in_([1]))
"""


def notebook(*sources: str) -> str:
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
    return json.dumps(
        {
            "cells": cells,
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    )


def isolated_lab_environment(base: Path) -> dict[str, str]:
    """Jupyter's directories under ``base``, no MOLE_* setting: a lab of its own, embedded server.

    Its user settings give the sidebar a poll interval of ``POLL_INTERVAL`` seconds, where
    JupyterLab reads them (``<config dir>/lab/user-settings/<extension>/<plugin>``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "MOLE_"))}
    for name in ("runtime", "data", "config"):
        (base / name).mkdir(parents=True, exist_ok=True)
    # no "get notified about Jupyter news?" toast over the page
    (base / "config" / "labconfig").mkdir(exist_ok=True)
    (base / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    settings = base / "config" / "lab" / "user-settings" / "jupyter-mole"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(
        json.dumps({"pollInterval": POLL_INTERVAL})
    )
    env.update(
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


class Lab:
    """A running ``jupyter lab`` and what the test needs to know about it."""

    def __init__(self, base: Path, *options: str) -> None:
        self.base = base
        self.root = base / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = isolated_lab_environment(base / "jupyter")
        self.options = options or ("--Mole.embedded_workers=2",)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = base / "jupyter-lab.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        args = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={self.port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}", *self.options,
            "--Mole.poll_interval=0.5",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=self.root,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # until the backend answers through the extension
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter lab exited:\n{self.output()}")
            with contextlib.suppress(OSError, ValueError):
                service = self.api("service")
                if service.get("info") and not service.get("problem"):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab or its backend did not start:\n{self.output()}")
            time.sleep(0.3)

    def api(self, endpoint: str, body: dict[str, Any] | None = None) -> Any:
        """GET (or POST ``body`` to) the extension's ``mole/api/<endpoint>``, as JSON."""
        request = urllib.request.Request(
            f"{self.url}mole/api/{endpoint}",
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode(),
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def run(self, path: str) -> str:
        """Start the script at ``path`` (of Jupyter's tree) as the sidebar's menu does: its id."""
        return self.api("executions", {"path": path})["id"]

    def ids(self) -> set[str]:
        return {e["id"] for e in self.api("executions")}

    def started_since(self, before: set[str], timeout: float = 30) -> str:
        """The one execution that the backend lists and ``before`` did not (waits for it)."""
        deadline = time.monotonic() + timeout
        while not (new := self.ids() - before):
            assert time.monotonic() < deadline, "no new execution"
            time.sleep(0.2)
        (execution_id,) = new
        return execution_id

    def state(self, execution_id: str) -> dict[str, Any]:
        return self.api(f"executions/{execution_id}/state")

    def wait_state(
        self, execution_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 90
    ) -> dict[str, Any]:
        """Poll the execution's state until ``done(state)``; the last state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(execution_id)
            if done(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{execution_id}: still {state}")
            time.sleep(0.3)

    def connection(self) -> dict[str, Any]:
        """The embedded server's connection file (url, password, pid...)."""
        path = Path(self.env["JUPYTER_RUNTIME_DIR"]) / "jupyter-mole-server.json"
        return json.loads(path.read_text())

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        # The embedded server outlives Jupyter by design (kernels share it): stop ours (a lab
        # configured with another server's url has none).
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            connection = self.connection()
            if connection.get("kind") == "embedded":
                stop_group(int(connection["pid"]))


def stop_group(pid: int) -> None:
    """SIGTERM the embedded server's process group (it runs in its own session), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def needs() -> None:
    # Nothing is skipped: what the tests need, .ci/setup installs; missing is a failure.
    import jupyterlab  # noqa: F401
    import playwright.sync_api  # noqa: F401

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is installed by .ci/setup (apt-get install chromium)")


@pytest.fixture(scope="session", name="lab")
def lab_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    needs()
    lab = Lab(tmp_path_factory.mktemp("lab"))
    (lab.root / "analysis.ipynb").write_text(
        notebook("%load_ext jupyter_mole", f"%%mole pi.oms\n{PI_SCRIPT}")
    )
    (lab.root / "downloads").mkdir()
    scripts = lab.root / "scripts"
    scripts.mkdir()
    (scripts / "menu.oms").write_text(PI_SCRIPT)
    (scripts / "slow.oms").write_text(SLOW_SCRIPT)
    (scripts / "fragile.oms").write_text(FAILING_SCRIPT)
    (scripts / "tail.oms").write_text(TAIL_SCRIPT)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session", name="artifacts")
def artifacts_fixture() -> Path:
    """The screenshots' folder, emptied once per run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module", name="browser")
def browser_fixture(artifacts: Path) -> Iterator[Any]:
    """Chromium, per module: Playwright's sync API leaves its event loop marked as running in
    the main thread while it is open, and the modules after the sidebar's (the widget's tests)
    run their own loops there."""
    from playwright.sync_api import sync_playwright

    needs()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_lab(browser: Any, lab: Lab, path: str = "lab") -> Iterator[Any]:
    """A page of ``lab`` at ``path``, loaded; no uncaught error or console error when it closes."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []  # uncaught exceptions and console errors of the page
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))

    def console(message: Any) -> None:  # a failed request is logged by Chromium itself: not ours
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(f"console: {message.text}")

    page.on("console", console)
    page.goto(f"{lab.url}{path}?token={lab.token}")
    page.locator(f".jp-SideBar .lm-TabBar-tab[data-id='{SIDEBAR}']").wait_for(timeout=60_000)
    try:
        yield page
    finally:
        name = re.sub(r"\W+", "-", path)
        page.screenshot(path=str(ARTIFACTS / f"99-last-{lab.port}-{name}.png"))
        (ARTIFACTS / f"page-errors-{lab.port}.txt").write_text("\n".join(errors))
        context.close()
    assert errors == [], errors  # the panel says what went wrong; nothing reaches the console


@pytest.fixture(scope="module", name="page")
def page_fixture(lab: Lab, browser: Any) -> Iterator[Any]:
    """The lab's page, opened on the notebook ``analysis.ipynb``."""
    with open_lab(browser, lab, "lab/tree/analysis.ipynb") as page:
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        yield page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def row(page: Any, script: str, notebook: str | None = None) -> Any:
    rows = page.locator(".jp-mole-row").filter(
        has=page.locator(".jp-mole-script", has_text=re.compile(rf"^{re.escape(script)}$"))
    )
    if notebook is not None:
        rows = rows.filter(has=page.locator(".jp-mole-tag", has_text=notebook))
    return rows


def row_of(page: Any, execution_id: str) -> Any:
    return page.locator(f"#{SIDEBAR} .jp-mole-row[data-id='{execution_id}']")


def show_tab(page: Any, panel_id: str) -> None:
    """Show a panel of the left sidebar (clicking its tab only when hidden: a click toggles)."""
    tab = page.locator(f".jp-SideBar .lm-TabBar-tab[data-id='{panel_id}']")
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    page.locator(f"#{panel_id}").wait_for()


def select(page: Any, execution_id: str) -> Any:
    """Show the sidebar, select this execution's row: its details."""
    show_tab(page, SIDEBAR)
    item = row_of(page, execution_id)
    item.wait_for()
    if "jp-mod-selected" not in (item.get_attribute("class") or ""):
        item.click()
    details = page.locator(f".jp-mole-details[data-id='{execution_id}']")
    details.wait_for()
    return details


def listing(page: Any, name: str) -> Any:
    """The item of the file browser's listing with this name."""
    text = page.locator(".jp-DirListing-itemText", has_text=re.compile(rf"^{re.escape(name)}$"))
    return page.locator("#filebrowser .jp-DirListing-item").filter(has=text)


def open_folder(page: Any, folder: str) -> None:
    """Go to a folder of the file browser (from its root, by its breadcrumbs and a double click)."""
    show_tab(page, "filebrowser")
    page.locator("#filebrowser .jp-BreadCrumbs-home").click()
    listing(page, folder).dblclick()
    page.locator("#filebrowser .jp-BreadCrumbs", has_text=folder).wait_for()


def run_from_context_menu(page: Any, name: str) -> None:
    item = listing(page, name)
    assert item.get_attribute("data-file-type") == "mole-script"
    item.click(button="right")
    menu_item = page.locator(".lm-Menu-item", has_text="Run on OpenMOLE")
    menu_item.first.wait_for()
    menu_item.first.click()


class ListRequests:
    """When the page asked for the list of executions (monotonic seconds), while recording."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.times: list[float] = []

    def _seen(self, request: Any) -> None:
        if LIST.search(request.url) and request.method == "GET":
            self.times.append(time.monotonic())

    def __enter__(self) -> ListRequests:
        self.page.on("request", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        self.page.remove_listener("request", self._seen)

    def clear(self) -> None:
        self.times.clear()

    def over(self, seconds: float) -> list[float]:
        """Record for ``seconds`` (from now, the earlier ones dropped): the times seen."""
        self.clear()
        self.page.wait_for_timeout(seconds * 1000)
        return list(self.times)

    @staticmethod
    def gaps(times: list[float]) -> list[float]:
        return [b - a for a, b in itertools.pairwise(times)]

    @classmethod
    def median_gap(cls, times: list[float]) -> float:
        gaps = cls.gaps(times)
        return statistics.median(gaps) if gaps else float("inf")
