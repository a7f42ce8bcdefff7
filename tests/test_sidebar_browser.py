"""The JupyterLab sidebar in a real browser, as a user goes: run a ``%%mole`` cell,
watch the execution in the sidebar, read its output, download a result into the
file browser's folder, run a ``.oms`` file from the file browser's context menu,
start a slow one and cancel it, read a failure and remove it.

The lab, the browser and the helpers are in ``tests/sidebar.py``; the poll, the
problems the panel reports and its looks have modules of their own.
"""

from __future__ import annotations

import re
import time
from typing import Any

import psutil
import pytest

from tests.sidebar import (
    SIDEBAR,
    TAIL_SECONDS,
    Lab,
    listing,
    open_folder,
    row,
    row_of,
    run_from_context_menu,
    select,
    shot,
    show_tab,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# "took 12 s, just now", "took 1 min 5 s, 3 min ago"
TOOK = re.compile(r"^took \d+ (ms|s|min|h|d)( \d+ (s|min|h))?, (just now|\d+ (s|min|h|d) ago)$")
# "running 850 ms", "waiting 3 s", "running 1 min 5 s"
RUNNING = re.compile(r"^(running|waiting) \d+ (ms|s|min|h|d)( \d+ (s|min|h))?$")


def test_sidebar_follows_a_notebook_execution_to_its_files(lab: Lab, page: Any) -> None:
    # the %%mole cell, run from the notebook
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
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
    show_tab(page, SIDEBAR)
    page.locator(f"#{SIDEBAR} .jp-mole-service").filter(has_text="embedded").wait_for()
    execution = row(page, "pi.oms", "analysis.ipynb")
    execution.first.wait_for(timeout=60_000)
    shot(page, "02-sidebar-listed")
    execution.and_(page.locator("[data-state='finished']")).wait_for(timeout=90_000)
    bar = execution.first.locator(".jp-mole-progress")
    assert bar.get_attribute("aria-valuenow") == "100"
    label = bar.get_attribute("aria-label") or ""
    done, total = map(int, re.match(r"(\d+) of (\d+) jobs completed", label).groups())
    assert done == total > 0, label
    # the bar's width eases in (a CSS transition): wait for it to end full
    execution.first.locator(".jp-mole-progress-bar").evaluate(
        """bar => new Promise((resolve, reject) => {
            const full = () => bar.getBoundingClientRect().width
                / bar.parentElement.getBoundingClientRect().width > 0.99;
            const until = Date.now() + 10000;
            const check = () => full() ? resolve(true)
                : Date.now() > until ? reject(new Error("the bar never filled"))
                : requestAnimationFrame(check);
            check();
        })"""
    )
    shot(page, "03-sidebar-finished")

    # its environment's counters (the default one, `local`) and how long it took, how long ago
    local = execution.first.locator(".jp-mole-environment[data-environment='local']")
    done_jobs = local.locator("[data-counter='done'] .jp-mole-counter-value").inner_text()
    assert int(done_jobs) > 0, local.inner_text()
    took = execution.first.locator(".jp-mole-time").inner_text()
    assert TOOK.match(took), took

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
    show_tab(page, SIDEBAR)
    details.locator(".jp-mole-file[data-name='result.csv'] .jp-mole-download").click()
    page.get_by_text("Downloaded result.csv into /downloads").first.wait_for()
    shot(page, "05-downloaded")
    show_tab(page, "filebrowser")
    listing(page, "result.csv").wait_for()
    downloaded = lab.root / "downloads" / "result.csv"
    assert downloaded.is_file()
    assert downloaded.read_text().splitlines()[0].startswith("pi")
    shot(page, "06-in-file-browser")


def test_rows_are_newest_first(lab: Lab, page: Any) -> None:
    # at least three executions, submitted one after the other
    for _ in range(max(0, 3 - len(lab.api("executions")))):
        lab.run("scripts/fragile.oms")
        time.sleep(0.2)
    show_tab(page, SIDEBAR)
    rows = page.locator(f"#{SIDEBAR} .jp-mole-row")
    deadline = time.monotonic() + 20
    while True:  # until the sidebar shows what the backend lists (a poll or two)
        backend = sorted(lab.api("executions"), key=lambda e: e["submitted"], reverse=True)
        newest_first = [e["id"] for e in backend]
        shown = rows.evaluate_all("items => items.map(item => item.dataset.id)")
        if sorted(shown) == sorted(newest_first) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(300)
    assert len(newest_first) >= 3
    assert shown == newest_first


def _sleeps(lab: Lab) -> list[psutil.Process]:
    """The `sleep 120` processes that the lab's embedded server runs (SLOW_SCRIPT's jobs)."""
    server = psutil.Process(int(lab.connection()["pid"]))
    found = []
    for child in server.children(recursive=True):
        try:
            if child.cmdline() == ["sleep", "120"]:
                found.append(child)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_context_menu_runs_a_script_and_cancel_stops_one(lab: Lab, page: Any) -> None:
    open_folder(page, "scripts")
    before = lab.ids()

    run_from_context_menu(page, "menu.oms")  # the sidebar shows (and selects) the new execution
    started = row(page, "menu.oms", "scripts/menu.oms")
    started.first.wait_for()
    assert started.first.get_attribute("data-id") == lab.started_since(before)
    started.and_(page.locator("[data-state='finished']")).wait_for(timeout=90_000)
    shot(page, "07-context-menu-run")

    # a slow one, started the same way: its row says for how long it runs
    show_tab(page, "filebrowser")
    before = lab.ids()
    run_from_context_menu(page, "slow.oms")
    slow_id = lab.started_since(before)
    try:  # its jobs hold both workers for two minutes: cancelled whatever happens here
        slow = row_of(page, slow_id)
        slow.and_(page.locator("[data-state='running']")).wait_for()
        # jobs really running on the backend, their processes there, before Cancel
        lab.wait_state(slow_id, lambda s: s["running"] > 0, timeout=60)
        deadline = time.monotonic() + 30
        while not _sleeps(lab):
            assert time.monotonic() < deadline, "no `sleep 120` process of the slow script"
            time.sleep(0.3)
        running = slow.locator(".jp-mole-time").inner_text()
        assert RUNNING.match(running), running

        # cancelled from its details (selected when started), with confirmation
        details = page.locator(f".jp-mole-details[data-id='{slow_id}']")
        details.wait_for()
        cancel = details.locator(".jp-mole-cancel")
        cancel.and_(page.locator(":enabled")).wait_for()
        cancel.click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for()
        shot(page, "08-cancel-confirm")
        dialog.locator(".jp-Dialog-button.jp-mod-warn").click()
        slow.and_(page.locator("[data-state='cancelled']")).wait_for(timeout=60_000)
        assert lab.state(slow_id)["state"] == "cancelled"
        deadline = time.monotonic() + 20
        while left := _sleeps(lab):  # and its jobs' processes are gone
            assert time.monotonic() < deadline, f"still running after Cancel: {left}"
            time.sleep(0.3)
        shot(page, "09-cancelled")
    finally:
        if lab.state(slow_id)["state"] == "running":
            lab.api(f"executions/{slow_id}/cancel", {})


def test_errors_and_remove(lab: Lab, page: Any) -> None:
    # a failing script: its error, with its level, and the stack trace behind a click
    open_folder(page, "scripts")
    before = lab.ids()
    run_from_context_menu(page, "fragile.oms")
    fragile_id = lab.started_since(before)
    fragile = row_of(page, fragile_id)
    fragile.and_(page.locator("[data-state='failed']")).wait_for(timeout=60_000)
    details = select(page, fragile_id)
    error = details.locator(".jp-mole-error", has_text="no good value here").first
    error.wait_for()
    assert error.locator(".jp-mole-level").inner_text() == "FAILURE"  # the execution's own error
    assert error.get_attribute("data-level") == "FAILURE"
    stack = error.locator(".jp-mole-stack pre")
    assert not stack.is_visible()
    error.locator(".jp-mole-stack summary").click()
    stack.wait_for()
    assert "ValueError" in stack.inner_text()
    shot(page, "10-errors")

    # Remove, with confirmation: the row goes, and the backend forgot it
    details.locator(".jp-mole-remove").click()
    page.locator(".jp-Dialog").wait_for()
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-warn").click()
    fragile.wait_for(state="detached")
    assert fragile_id not in lab.ids()
    shot(page, "11-removed")


def test_details_tail_the_output_while_it_runs(lab: Lab, page: Any) -> None:
    tail_id = lab.run("scripts/tail.oms")
    details = select(page, tail_id)
    running = row_of(page, tail_id).and_(page.locator("[data-state='running']"))
    output = details.locator(".jp-mole-output")
    # the job's first line, while it still runs
    output.filter(has_text="line 1").wait_for(timeout=(TAIL_SECONDS - 2) * 1000)
    assert running.count() == 1, lab.state(tail_id)
    assert lab.state(tail_id)["state"] == "running"
    assert f"line {TAIL_SECONDS}" not in output.inner_text()
    shot(page, "12-output-tail")
    # then its last, appended
    output.filter(has_text=f"line {TAIL_SECONDS}").wait_for(timeout=60_000)
    assert output.inner_text().index("line 1") < output.inner_text().index(f"line {TAIL_SECONDS}")
