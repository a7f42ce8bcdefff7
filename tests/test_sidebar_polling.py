"""The sidebar's poll, in a real browser: the interval of the user's settings, and no list
request while the panel or the browser tab is hidden (``tests/sidebar.py`` has the lab,
whose user settings set ``POLL_INTERVAL``)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.sidebar import (
    DEFAULT_POLL_INTERVAL,
    POLL_INTERVAL,
    SIDEBAR,
    Lab,
    ListRequests,
    show_tab,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Hide (or show again) the browser tab as the browser would: visibilityState and the event.
SET_VISIBILITY = """hidden => {
    if (hidden) {
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    } else {
        delete document.visibilityState;
        delete document.hidden;
    }
    document.dispatchEvent(new Event('visibilitychange'));
    return document.visibilityState;
}"""


def test_the_poll_interval_of_the_user_settings_is_used(lab: Lab, page: Any) -> None:
    request = urllib.request.Request(
        f"{lab.url}lab/api/settings/jupyter-mole:plugin",
        headers={"Authorization": f"token {lab.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        settings = json.loads(answer.read())
    assert settings["schema"]["properties"]["pollInterval"]["default"] == DEFAULT_POLL_INTERVAL
    assert json.loads(settings["raw"]) == {"pollInterval": POLL_INTERVAL}  # the lab's user settings

    show_tab(page, SIDEBAR)
    with ListRequests(page) as requests:
        page.wait_for_timeout(1000)
        times = requests.over(6)
    gap = ListRequests.median_gap(times)
    assert len(times) >= 6, times
    assert POLL_INTERVAL * 0.8 < gap < 1.0, (gap, ListRequests.gaps(times))


def test_no_polling_while_the_panel_is_hidden(page: Any) -> None:
    show_tab(page, SIDEBAR)
    with ListRequests(page) as requests:
        show_tab(page, "filebrowser")
        page.wait_for_timeout(500)
        assert requests.over(4 * POLL_INTERVAL + 1) == []
        show_tab(page, SIDEBAR)  # shown: a refresh at once, then the poll again
        page.wait_for_timeout(500)
        assert requests.times, "no list request once the panel shows again"
        assert len(requests.over(3)) >= 3


def test_no_polling_while_the_browser_tab_is_hidden(page: Any) -> None:
    show_tab(page, SIDEBAR)
    with ListRequests(page) as requests:
        try:
            assert page.evaluate(SET_VISIBILITY, True) == "hidden"
            page.wait_for_timeout(POLL_INTERVAL * 1000 * 2)  # the poll lingers one tick
            assert requests.over(3 * POLL_INTERVAL + 0.5) == []
        finally:
            assert page.evaluate(SET_VISIBILITY, False) == "visible"
        assert len(requests.over(2)) >= 2, "the poll did not come back with the browser tab"
