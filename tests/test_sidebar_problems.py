"""What the sidebar says when things go wrong, in a real browser: a failing backend (a readable
banner, a poll that backs off, and recovery by itself), a failing details request (said in the
details, the list stays live), and a backend that lists ids only (OpenMOLE's job API: a note)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.sidebar import (
    LIST,
    POLL_INTERVAL,
    SIDEBAR,
    Lab,
    ListRequests,
    open_lab,
    select,
    shot,
    show_tab,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FAILING_FOR = 10.0  # seconds of a failing backend, watched without a click


def _answer(status: int, message: str) -> Any:
    def route(route: Any) -> None:
        route.fulfill(
            status=status, content_type="application/json", body=json.dumps({"message": message})
        )

    return route


def test_a_failing_backend_backs_off_and_recovers_by_itself(page: Any) -> None:
    show_tab(page, SIDEBAR)
    banner = page.locator(f"#{SIDEBAR} .jp-mole-banner")
    broken = _answer(502, "the backend does not answer: connection refused")
    with ListRequests(page) as requests:
        page.route(LIST, broken)
        try:
            times = requests.over(FAILING_FOR)
            banner.filter(has_text="the backend does not answer: connection refused").wait_for()
            shot(page, "20-backend-problem")
        finally:
            page.unroute(LIST, broken)
    # at the poll interval, 20 requests; backing off (intervals grow up to threefold), a few
    gaps = ListRequests.gaps(times)
    assert 1 <= len(times) <= 0.6 * FAILING_FOR / POLL_INTERVAL, times
    assert max(gaps, default=0) >= 1.5, gaps
    # the backend answers again: the banner goes at the next try, with no click
    banner.wait_for(state="hidden", timeout=70_000)  # after the back-off, at the latest
    shot(page, "21-backend-back")


def test_a_failing_details_request_shows_in_the_details(lab: Lab, page: Any) -> None:
    execution = lab.run("scripts/fragile.oms")
    lab.wait_state(execution, lambda s: s["state"] != "running")
    details = select(page, execution)
    output = re.compile(rf"/mole/api/executions/{execution}/output(\?.*)?$")
    broken = _answer(500, "the output store is unavailable")
    banner = page.locator(f"#{SIDEBAR} .jp-mole-banner")
    problem = details.locator(".jp-mole-details-problem")
    with ListRequests(page) as requests:
        page.route(output, broken)
        try:
            problem.filter(has_text="the output store is unavailable").wait_for()
            shot(page, "22-details-problem")
            # the list goes on at its pace, and the panel has no problem of its own
            times = requests.over(3)
            assert len(times) >= 3, times
            assert banner.is_hidden()
            assert details.locator(".jp-mole-details-title").is_visible()
        finally:
            page.unroute(output, broken)
    problem.wait_for(state="detached")


def test_a_backend_that_lists_ids_only_says_so(lab: Lab, browser: Any, tmp_path: Any) -> None:
    """A second lab speaks OpenMOLE's job API to the first lab's server: ids only, said so."""
    known = lab.run("scripts/fragile.oms")
    server = lab.connection()
    options = [f"--Mole.url={server['url']}", "--Mole.api=job"]
    options += [f"--Mole.{k}={server[k]}" for k in ("password", "fingerprint") if server.get(k)]
    remote = Lab(tmp_path / "remote", *options)
    try:
        remote.start()
        assert remote.api("service")["kind"] == "openmole-job"
        with open_lab(browser, remote) as page:
            show_tab(page, SIDEBAR)
            note = page.locator(f"#{SIDEBAR} .jp-mole-note")
            note.filter(has_text="OpenMOLE lists ids only").wait_for()
            assert note.get_attribute("role") == "note"
            page.wait_for_timeout(4 * POLL_INTERVAL * 1000)  # and it stays, poll after poll
            assert note.is_visible()
            page.locator(f"#{SIDEBAR} .jp-mole-row[data-id='{known}']").wait_for()
            shot(page, "23-ids-only")
    finally:
        remote.stop()
