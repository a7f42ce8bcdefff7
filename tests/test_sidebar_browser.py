"""The JupyterLab sidebar in a real browser: Chromium (Debian's) driven by Playwright.

A real ``jupyter lab`` is started with the package installed (its server extension
and its prebuilt lab extension), in a temporary root, with Jupyter's runtime,
data and config directories isolated. The steps follow a user: run a ``%%mole``
cell, watch the execution in the sidebar, read its output, download a result
into the file browser's folder, run a ``.oms`` file from the file browser's
context menu, start a slow one and cancel it. A screenshot of every step is
kept in ``test-artifacts/sidebar/``.

What this needs is installed by ``.ci/setup`` (not here): the ``jupyterlab`` and
``playwright`` Python packages, Debian's ``chromium``, and the built extension
(``.ci/labextension``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.batch_systems import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

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
PI_SCRIPT = (REPO / "notebooks" / "pi.oms").read_text()
SLOW_SCRIPT = """
x = Val(int)
DirectSampling(
    evaluation=SystemExecTask("sleep 120", inputs=[x]),
    sampling=x.in_([1, 2]),
)
"""
FAILING_SCRIPT = """
x = Val(int)

@PythonTask(inputs=[x])
def fragile(x):
    raise ValueError("no good value here")

DirectSampling(evaluation=fragile, sampling=x.in_([1]))
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _notebook(*sources: str) -> str:
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
    """Jupyter's directories under ``base``, no MOLE_* setting: a lab of its own, embedded server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "MOLE_"))}
    for name in ("runtime", "data", "config"):
        (base / name).mkdir(parents=True, exist_ok=True)
    # no "get notified about Jupyter news?" toast over the page
    (base / "config" / "labconfig").mkdir(exist_ok=True)
    (base / "config" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
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

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.env = isolated_lab_environment(base / "jupyter")
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
            f"--ServerApp.root_dir={self.root}", "--Mole.embedded_workers=2",
            "--Mole.poll_interval=0.5",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, cwd=self.root,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # until the embedded backend answers through the extension
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter lab exited:\n{self.output()}")
            with contextlib.suppress(OSError, ValueError):
                service = self.api("service")
                if service.get("info") and not service.get("problem"):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyter lab or its backend did not start:\n{self.output()}")
            time.sleep(0.3)

    def api(self, endpoint: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}mole/api/{endpoint}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

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
        # The embedded server outlives Jupyter by design (kernels share it): stop ours.
        connection = Path(self.env["JUPYTER_RUNTIME_DIR"]) / "jupyter-mole-server.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(connection.read_text())["pid"])
            _stop_group(pid)


def _stop_group(pid: int) -> None:
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


def _needs() -> None:
    # Nothing is skipped: what the tests need, .ci/setup installs; missing is a failure.
    import jupyterlab  # noqa: F401
    import playwright.sync_api  # noqa: F401

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is installed by .ci/setup (apt-get install chromium)")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    _needs()
    lab = Lab(tmp_path_factory.mktemp("lab"))
    lab.root.mkdir()
    (lab.root / "analysis.ipynb").write_text(
        _notebook("%load_ext jupyter_mole", f"%%mole pi.oms\n{PI_SCRIPT}")
    )
    (lab.root / "downloads").mkdir()
    scripts = lab.root / "scripts"
    scripts.mkdir()
    (scripts / "menu.oms").write_text(PI_SCRIPT)
    (scripts / "slow.oms").write_text(SLOW_SCRIPT)
    (scripts / "fragile.oms").write_text(FAILING_SCRIPT)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def page(lab: Lab) -> Iterator:
    from playwright.sync_api import sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []  # uncaught exceptions and console errors of the page
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))

        def console(message) -> None:  # a failed request is logged by Chromium itself: not ours
            if message.type == "error" and "Failed to load resource" not in message.text:
                errors.append(f"console: {message.text}")

        page.on("console", console)
        page.goto(f"{lab.url}lab/tree/analysis.ipynb?token={lab.token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / "99-last.png"))
            (ARTIFACTS / "page-errors.txt").write_text("\n".join(errors))
            context.close()
            browser.close()
        assert errors == [], errors  # the panel says what went wrong; nothing reaches the console


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def row(page, script: str, notebook: str | None = None):
    rows = page.locator(".jp-mole-row").filter(
        has=page.locator(".jp-mole-script", has_text=re.compile(rf"^{re.escape(script)}$"))
    )
    if notebook is not None:
        rows = rows.filter(has=page.locator(".jp-mole-tag", has_text=notebook))
    return rows


def show_tab(page, panel_id: str) -> None:
    """Show a panel of the left sidebar (clicking its tab only when hidden: a click toggles)."""
    tab = page.locator(f".jp-SideBar .lm-TabBar-tab[data-id='{panel_id}']")
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    page.locator(f"#{panel_id}").wait_for()


def listing(page, name: str):
    """The item of the file browser's listing with this name."""
    text = page.locator(".jp-DirListing-itemText", has_text=re.compile(rf"^{re.escape(name)}$"))
    return page.locator("#filebrowser .jp-DirListing-item").filter(has=text)


def open_folder(page, folder: str) -> None:
    """Go to a folder of the file browser (from its root, by its breadcrumbs and a double click)."""
    show_tab(page, "filebrowser")
    page.locator("#filebrowser .jp-BreadCrumbs-home").click()
    listing(page, folder).dblclick()
    page.locator("#filebrowser .jp-BreadCrumbs", has_text=folder).wait_for()


def run_from_context_menu(page, name: str) -> None:
    item = listing(page, name)
    assert item.get_attribute("data-file-type") == "mole-script"
    item.click(button="right")
    menu_item = page.locator(".lm-Menu-item", has_text="Run on OpenMOLE")
    menu_item.first.wait_for()
    menu_item.first.click()


def test_labextension_is_listed_enabled_and_ok() -> None:
    _needs()
    jupyter = Path(sys.executable).with_name("jupyter")
    listing = subprocess.run(
        [str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=60
    )
    text = ANSI.sub("", listing.stdout + listing.stderr)
    line = next((li for li in text.splitlines() if li.strip().startswith("jupyter-mole ")), None)
    assert line is not None, text
    assert "enabled" in line and "OK" in line, line


def test_settings_schema_holds_the_poll_interval(lab: Lab) -> None:
    request = urllib.request.Request(
        f"{lab.url}lab/api/settings/jupyter-mole:plugin",
        headers={"Authorization": f"token {lab.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        settings = json.loads(answer.read())
    poll = settings["schema"]["properties"]["pollInterval"]
    assert poll["type"] == "number" and poll["default"] > 0


def test_sidebar_follows_a_notebook_execution_to_its_files(lab: Lab, page) -> None:
    # the %%mole cell, run from the notebook
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(
        timeout=60_000
    )
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    page.keyboard.press("Shift+Enter")
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    prompts.nth(0).filter(has_text="[1]").wait_for()
    prompts.nth(1).filter(has_text=re.compile(r"\[(\*|2)\]")).wait_for()
    shot(page, "01-notebook-running")

    # the sidebar: the execution appears, tagged with its notebook, and finishes with a full bar
    show_tab(page, "jupyter-mole-sidebar")
    page.locator("#jupyter-mole-sidebar .jp-mole-service").filter(has_text="embedded").wait_for()
    execution = row(page, "pi.oms", "analysis.ipynb")
    execution.first.wait_for(timeout=60_000)
    shot(page, "02-sidebar-listed")
    execution.and_(page.locator("[data-state='finished']")).wait_for(timeout=90_000)
    bar = execution.first.locator(".jp-mole-progress")
    assert bar.get_attribute("aria-valuenow") == "100"
    label = bar.get_attribute("aria-label") or ""
    done, total = map(int, re.match(r"(\d+) of (\d+) jobs completed", label).groups())
    assert done == total > 0, label
    assert execution.first.locator(".jp-mole-progress-bar").evaluate(
        "bar => bar.getBoundingClientRect().width / bar.parentElement.getBoundingClientRect().width"
    ) == pytest.approx(1.0, abs=0.01)
    shot(page, "03-sidebar-finished")

    # the magic tagged it with the notebook's path relative to Jupyter's root (the kernel is told
    # an absolute one), and the row and the details show that one form
    (pi,) = [e for e in lab.api("executions") if e.get("script") == "pi.oms"]
    assert pi["tags"]["notebook"] == "analysis.ipynb"
    assert execution.first.locator(".jp-mole-tag").inner_text() == "analysis.ipynb"

    # its details: the output of the run (the display hook prints pi)
    execution.first.click()
    details = page.locator(".jp-mole-details")
    fact = details.locator(".jp-mole-facts dt", has_text="notebook").locator(
        "xpath=following-sibling::dd[1]"
    )
    assert fact.inner_text() == "analysis.ipynb"
    details.locator(".jp-mole-output").filter(has_text=re.compile(r"pi")).wait_for()
    output = details.locator(".jp-mole-output").inner_text()
    assert re.search(r"3\.1\d", output), output
    details.locator(".jp-mole-file[data-name='result.csv']").wait_for()
    shot(page, "04-details-output")

    # download result.csv into the file browser's current folder: it shows there, and on disk
    open_folder(page, "downloads")
    show_tab(page, "jupyter-mole-sidebar")
    details.locator(".jp-mole-file[data-name='result.csv'] .jp-mole-download").click()
    page.get_by_text("Downloaded result.csv into /downloads").first.wait_for()
    shot(page, "05-downloaded")
    show_tab(page, "filebrowser")
    listing(page, "result.csv").wait_for()
    downloaded = lab.root / "downloads" / "result.csv"
    assert downloaded.is_file()
    assert downloaded.read_text().splitlines()[0].startswith("pi")
    shot(page, "06-in-file-browser")


def test_context_menu_runs_a_script_and_cancel_stops_one(lab: Lab, page) -> None:
    open_folder(page, "scripts")
    before = {e["id"] for e in lab.api("executions")}

    run_from_context_menu(page, "menu.oms")  # the sidebar shows (and selects) the new execution
    started = row(page, "menu.oms", "scripts/menu.oms")
    started.first.wait_for()
    new = {e["id"] for e in lab.api("executions")} - before
    assert len(new) == 1, new
    assert started.first.get_attribute("data-id") in new
    started.and_(page.locator("[data-state='finished']")).wait_for(timeout=90_000)
    shot(page, "07-context-menu-run")

    # a slow one, started the same way, then cancelled from its details (with confirmation)
    show_tab(page, "filebrowser")
    run_from_context_menu(page, "slow.oms")
    slow = row(page, "slow.oms", "scripts/slow.oms")
    slow.and_(page.locator("[data-state='running']")).wait_for()
    slow_id = slow.first.get_attribute("data-id")
    details = page.locator(f".jp-mole-details[data-id='{slow_id}']")  # selected when started
    details.wait_for()
    cancel = details.locator(".jp-mole-cancel")
    cancel.and_(page.locator(":enabled")).wait_for()
    cancel.click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for()
    shot(page, "08-cancel-confirm")
    dialog.locator(".jp-Dialog-button.jp-mod-warn").click()
    slow.and_(page.locator("[data-state='cancelled']")).wait_for(timeout=60_000)
    assert lab.api(f"executions/{slow_id}/state")["state"] == "cancelled"
    shot(page, "09-cancelled")


def test_errors_remove_and_backend_problems(lab: Lab, page) -> None:
    # a failing script: its error, with the stack trace behind a click
    open_folder(page, "scripts")
    run_from_context_menu(page, "fragile.oms")
    fragile = row(page, "fragile.oms")
    fragile.and_(page.locator("[data-state='failed']")).wait_for(timeout=60_000)
    fragile_id = fragile.first.get_attribute("data-id")
    details = page.locator(f".jp-mole-details[data-id='{fragile_id}']")
    error = details.locator(".jp-mole-error", has_text="no good value here").first
    error.wait_for()
    stack = error.locator(".jp-mole-stack pre")
    if error.locator(".jp-mole-stack").count():
        assert not stack.is_visible()
        error.locator(".jp-mole-stack summary").click()
        stack.wait_for()
        assert "ValueError" in stack.inner_text()
    shot(page, "10-errors")

    # Remove, with confirmation: the row goes, and the backend forgot it
    details.locator(".jp-mole-remove").click()
    page.locator(".jp-Dialog").wait_for()
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()
    fragile.first.wait_for(state="detached")
    assert fragile_id not in {e["id"] for e in lab.api("executions")}
    shot(page, "11-removed")

    # the backend failing: a readable message in the panel, gone when it answers again
    def broken(route) -> None:
        route.fulfill(
            status=502,
            content_type="application/json",
            body=json.dumps({"message": "the backend does not answer: connection refused"}),
        )

    executions = re.compile(r"/mole/api/executions(\?[^/]*)?$")  # Jupyter adds a cache buster
    page.route(executions, broken)
    banner = page.locator("#jupyter-mole-sidebar .jp-mole-banner")
    page.locator("#jupyter-mole-sidebar .jp-mole-refresh").click()
    banner.filter(has_text="the backend does not answer: connection refused").wait_for()
    shot(page, "12-backend-problem")
    page.unroute(executions, broken)
    page.locator("#jupyter-mole-sidebar .jp-mole-refresh").click()
    banner.wait_for(state="hidden", timeout=70_000)  # after the back-off, at the latest

    # no polling while the sidebar is hidden
    asked: list[str] = []
    page.on("request", lambda r: "/mole/api/" in r.url and asked.append(r.url))
    show_tab(page, "filebrowser")
    page.wait_for_timeout(500)
    asked.clear()
    page.wait_for_timeout(5000)  # more than two poll intervals (2 s by default)
    assert asked == []
    show_tab(page, "jupyter-mole-sidebar")
    page.wait_for_timeout(500)
    assert any(executions.search(url) for url in asked), asked


def test_it_follows_the_dark_theme(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    page.locator(".lm-Menu-item", has_text="JupyterLab Dark").first.click()
    page.locator("body[data-jp-theme-light='false']").wait_for(state="attached")
    show_tab(page, "jupyter-mole-sidebar")
    page.locator(".jp-mole-row").first.click()
    page.wait_for_timeout(1000)  # the theme's transition
    background = page.locator("#jupyter-mole-sidebar").evaluate(
        "node => getComputedStyle(node).backgroundColor"
    )
    red, green, blue = map(int, re.findall(r"\d+", background)[:3])
    assert red + green + blue < 3 * 80, background
    shot(page, "13-dark-theme")
