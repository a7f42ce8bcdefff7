"""How the sidebar looks and is installed, in a real browser: the extension listed enabled,
its settings schema, the OpenMOLE (mole) icon on its tab, JupyterLab's light and dark themes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.sidebar import REPO, SIDEBAR, Lab, needs, select, shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ANSI = re.compile(r"\x1b\[[0-9;]*m")
ICON = REPO / "labextension" / "style" / "icons" / "mole.svg"

# The panel's colours, and what the theme's variables resolve to in the page right now.
COLOURS = """() => {
    const probe = document.createElement('div');
    probe.style.background = 'var(--jp-layout-color1)';
    probe.style.color = 'var(--jp-ui-font-color1)';
    document.body.appendChild(probe);
    const expected = getComputedStyle(probe);
    const panel = getComputedStyle(document.getElementById('jupyter-mole-sidebar'));
    const head = getComputedStyle(document.querySelector('#jupyter-mole-sidebar .jp-mole-details-head'));
    const button = getComputedStyle(document.querySelector('#jupyter-mole-sidebar .jp-mole-remove'));
    const found = {
        light: document.body.dataset.jpThemeLight,
        background: panel.backgroundColor,
        layoutColor1: expected.backgroundColor,
        color: panel.color,
        fontColor1: expected.color,
        detailsBackground: head.backgroundColor,
        buttonBackground: button.backgroundColor,
        buttonColor: button.color,
    };
    probe.remove();
    return found;
}"""


def test_labextension_is_listed_enabled_and_ok() -> None:
    needs()
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


def _paths(svg: str) -> list[str]:
    return [p.get("d", "") for p in ET.fromstring(svg).iter() if p.tag.endswith("path")]


def test_the_tab_shows_the_mole_icon(page: Any) -> None:
    icon = page.locator(f".jp-SideBar .lm-TabBar-tab[data-id='{SIDEBAR}'] svg")
    assert icon.get_attribute("data-icon") == "jupyter-mole:mole"
    shown = _paths(icon.evaluate("svg => svg.outerHTML"))
    assert shown and shown == _paths(ICON.read_text())  # the mole of style/icons/mole.svg
    # one colour, the theme's (jp-icon3), not a colour of its own
    assert icon.locator(".jp-icon3").count() == 1


def _rgb(colour: str) -> tuple[int, int, int]:
    """'rgb(r, g, b)' (opaque) as numbers; anything else (transparent, rgba) fails."""
    match = re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", colour)
    assert match, f"not an opaque colour: {colour}"
    red, green, blue = map(int, match.groups())
    return red, green, blue


def _switch_theme(page: Any, name: str, light: bool) -> dict[str, str]:
    """Choose the theme in the Settings menu; the panel's colours once it applies."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    page.locator(".lm-Menu-item", has_text=name).first.click()
    wanted = "true" if light else "false"
    page.locator(f"body[data-jp-theme-light='{wanted}']").wait_for(state="attached")
    colours = page.evaluate(COLOURS)
    for _ in range(50):  # the theme's transition
        if colours["detailsBackground"] == colours["layoutColor1"]:
            break
        page.wait_for_timeout(200)
        colours = page.evaluate(COLOURS)
    return colours


def _check(colours: dict[str, str], light: bool) -> None:
    assert colours["light"] == ("true" if light else "false"), colours
    # the panel's own background is the theme's layout colour, opaque, light or dark
    assert colours["background"] == colours["layoutColor1"], colours
    brightness = sum(_rgb(colours["background"])) / 3
    assert brightness > 200 if light else brightness < 80, colours
    # and its text is the theme's first font colour
    assert colours["color"] == colours["fontColor1"], colours
    # so are the sidebar's own parts (the panel's background is also JupyterLab's, for its
    # sidebars): the details' head and the buttons
    assert colours["detailsBackground"] == colours["layoutColor1"], colours
    assert colours["buttonBackground"] == colours["layoutColor1"], colours
    assert colours["buttonColor"] == colours["fontColor1"], colours


def test_it_follows_the_light_and_dark_themes(lab: Lab, page: Any) -> None:
    execution = lab.run("scripts/fragile.oms")  # an execution of its own, its details shown
    lab.wait_state(execution, lambda s: s["state"] != "running")
    select(page, execution).locator(".jp-mole-remove").wait_for()
    try:
        _check(_switch_theme(page, "JupyterLab Light", light=True), light=True)
        shot(page, "30-light-theme")
        _check(_switch_theme(page, "JupyterLab Dark", light=False), light=False)
        shot(page, "31-dark-theme")
    finally:  # the other tests see the lab as it was
        _switch_theme(page, "JupyterLab Light", light=True)
