"""The Jupyter server extension's configuration: trait help, invalid values, enabled on install.

Split out of ``test_labserver.py`` (which keeps the embedded server and the
routes) to keep each module under 600 lines; these tests need no embedded
server, so the module-scoped shared one is not started here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (see test_labserver's docstring)

from jupyter_mole.labserver.config import Mole
from tests.labservers import (  # noqa: F401  (the fixtures are used by name)
    jp_server_config_fixture,
    mole_config_fixture,
    no_stray_servers_fixture,
    servers_under,
)


def test_every_trait_has_help() -> None:
    traits = Mole.class_traits(config=True)
    assert {
        "url",
        "password",
        "password_file",
        "ca_file",
        "fingerprint",
        "verify_tls",
        "api",
    } <= set(traits)
    assert {"state_directory", "embedded_workers", "poll_interval"} <= set(traits)
    for name, trait in traits.items():
        assert len(trait.help) > 20, name
    assert Mole().poll_interval == 1.0 and Mole().url is None


PIN = ":".join(["AB"] * 32)


@pytest.mark.parametrize(
    ("config", "trait"),
    [
        ({"url": "ftp://host/x"}, "Mole.url"),
        ({"url": "localhost:8443"}, "Mole.url"),
        ({"poll_interval": 0}, "Mole.poll_interval"),
        ({"poll_interval": "often"}, "poll_interval"),
        ({"password_file": "/no/such/file"}, "Mole.password_file"),
        ({"ca_file": "/no/such/ca.pem"}, "Mole.ca_file"),
        ({"url": "https://h:1", "password": "a", "password_file": __file__}, "Mole.password"),
        ({"url": "http://h:1", "fingerprint": PIN}, "Mole.fingerprint"),
        ({"url": "https://h:1", "fingerprint": "not-hex"}, "Mole.fingerprint"),
        ({"api": "soap"}, "Mole.api"),
        ({"embedded_workers": -1}, "Mole.embedded_workers"),
    ],
)
def test_invalid_configuration_fails_at_start_naming_the_trait(
    jp_configurable_serverapp: Any,
    jp_server_config: dict[str, Any],
    config: dict[str, Any],
    trait: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    jp_server_config["Mole"] = config
    # by default Jupyter logs a failing extension and goes on without it...
    app = jp_configurable_serverapp(config=jp_server_config)
    assert "mole_backend" not in app.web_app.settings
    logged = caplog.text + capsys.readouterr().err  # the app logs to stderr while it starts
    failures = [line for line in logged.splitlines() if "jupyter_mole | extension failed" in line]
    assert failures and trait in failures[0], logged
    type(app).clear_instance()
    # ...and a server that must not start without it fails
    jp_server_config["ServerApp"]["reraise_server_extension_failures"] = True
    with pytest.raises(SystemExit):
        jp_configurable_serverapp(config=jp_server_config)
    said = capsys.readouterr().err
    assert re.search(f"Bad config encountered during initialization: .*{re.escape(trait)}", said)


@pytest.mark.slow
def test_installing_the_package_enables_the_extension(tmp_path: Path) -> None:
    """``pip install`` put the config file in the environment; Jupyter lists the extension OK."""
    package_file = (
        Path(__file__).parent.parent
        / "jupyter_mole"
        / "etc"
        / "jupyter_server_config.d"
        / "jupyter_mole.json"
    )
    installed = (
        Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "jupyter_mole.json"
    )
    assert json.loads(installed.read_text()) == json.loads(package_file.read_text())
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    assert jupyter is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")},
        "HOME": str(tmp_path),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "NO_COLOR": "1",
    }
    listed = subprocess.run(
        [jupyter, "server", "extension", "list"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"jupyter_mole\s+enabled", text), text
    assert re.search(r"jupyter_mole 0\.1\.0\s+OK", text), text
    assert not servers_under(tmp_path)  # listing does not start a backend
