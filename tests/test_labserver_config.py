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
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (see test_labserver's docstring)
from traitlets import TraitError

from jupyter_mole.labserver.config import Mole
from tests.labservers import (  # noqa: F401  (the fixtures are used by name)
    Records,
    backend_of,
    jp_server_config_fixture,
    logged,
    mole_config_fixture,
    no_stray_servers_fixture,
    on_loop,
    server_log_fixture,
    servers_under,
)

PROJECT = Path(__file__).parent.parent


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


def empty_password_file(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "password").write_text("\nthe password is on the first line, not here\n")
    return {"url": "https://h:1", "password_file": str(tmp_path / "password")}


@pytest.mark.parametrize(
    ("config", "trait"),
    [
        ({"url": "https://me:secret@h:8443"}, "Mole.url"),
        ({"state_directory": __file__}, "Mole.state_directory"),
        ({"state_directory": f"{__file__}/state"}, "Mole.state_directory"),
        (empty_password_file, "Mole.password_file"),
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
    config: dict[str, Any] | Callable[[Path], dict[str, Any]],
    trait: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    jp_server_config["Mole"] = config(tmp_path) if callable(config) else config
    # by default Jupyter logs a failing extension and goes on without it...
    app = jp_configurable_serverapp(config=jp_server_config)
    assert "mole_backend" not in app.web_app.settings
    logged = caplog.text + capsys.readouterr().err  # the app logs to stderr while it starts
    failures = [line for line in logged.splitlines() if "jupyter_mole | extension failed" in line]
    assert failures and trait in failures[0], logged
    assert "secret" not in failures[0]  # a url's password is not echoed
    type(app).clear_instance()
    # ...and a server that must not start without it fails
    jp_server_config["ServerApp"]["reraise_server_extension_failures"] = True
    with pytest.raises(SystemExit):
        jp_configurable_serverapp(config=jp_server_config)
    said = capsys.readouterr().err
    assert re.search(f"Bad config encountered during initialization: .*{re.escape(trait)}", said)


def test_a_url_with_a_password_in_it_says_where_the_password_goes() -> None:
    with pytest.raises(TraitError) as refused:
        Mole(url="https://me:secret@openmole.example.org:8443")
    assert "secret" not in str(refused.value)
    assert "Mole.password" in str(refused.value) and "Mole.password_file" in str(refused.value)
    assert Mole(url="https://openmole.example.org:8443/").url == "https://openmole.example.org:8443"


def isolated_jupyter(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The environment's ``jupyter`` command, and an environment with nothing of ours in it."""
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
    return jupyter, env


def test_the_wheel_installs_the_file_that_enables_the_extension() -> None:
    """What ``pip install`` of a wheel does is the packaging rule: the extension's config file
    goes to ``{prefix}/etc/jupyter/jupyter_server_config.d``, where Jupyter looks."""
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    shared = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    source = "jupyter_mole/etc/jupyter_server_config.d"
    assert shared.get(source) == "etc/jupyter/jupyter_server_config.d", shared
    enabling = json.loads((PROJECT / source / "jupyter_mole.json").read_text())
    assert enabling == {"ServerApp": {"jpserver_extensions": {"jupyter_mole": True}}}
    assert [p.name for p in (PROJECT / source).iterdir()] == ["jupyter_mole.json"]


@pytest.mark.slow
def test_installing_the_package_enables_the_extension(tmp_path: Path) -> None:
    """``pip install`` put the config file in the environment; Jupyter lists the extension OK."""
    package_file = (
        PROJECT / "jupyter_mole" / "etc" / "jupyter_server_config.d" / "jupyter_mole.json"
    )
    installed = (
        Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "jupyter_mole.json"
    )
    assert json.loads(installed.read_text()) == json.loads(package_file.read_text())
    jupyter, env = isolated_jupyter(tmp_path)
    listed = subprocess.run(
        [jupyter, "server", "extension", "list"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"jupyter_mole\s+enabled", text), text
    assert re.search(r"jupyter_mole 0\.1\.0\s+OK", text), text
    assert not servers_under(tmp_path)  # listing does not start a backend


# -- the settings, where Jupyter users look for them ------------------------------------------


@pytest.mark.slow
def test_jupyter_mole_help_all_and_generate_config_show_every_setting(tmp_path: Path) -> None:
    """``jupyter mole --help-all`` lists the settings with their help, and ``--generate-config``
    writes them, commented, to ``jupyter_mole_config.py`` (as ``jupyter lab`` does its own).
    ``jupyter server --help-all`` cannot: it reads its command line before it finds extensions."""
    jupyter, env = isolated_jupyter(tmp_path)
    run = {"capture_output": True, "text": True, "env": env, "timeout": 120, "check": True}
    shown = subprocess.run([jupyter, "mole", "--help-all"], **run).stdout  # type: ignore[call-overload]
    flat = " ".join(shown.split())
    for name, trait in Mole.class_traits(config=True).items():
        assert f"--Mole.{name}=" in shown, name
        assert " ".join(trait.help.split())[:60] in flat, name
    assert "--Mole.url=<Unicode> The OpenMOLE REST server to use" in flat
    assert not servers_under(tmp_path)  # and no server was started

    subprocess.run([jupyter, "mole", "--generate-config"], **run)  # type: ignore[call-overload]
    written = (tmp_path / "config" / "jupyter_mole_config.py").read_text()
    for name in Mole.class_traits(config=True):
        assert f"# c.Mole.{name} = " in written, name
    assert "## The OpenMOLE REST server to use" in written
    assert not list((tmp_path / "runtime").glob("*"))


@pytest.mark.parametrize("mole_config", [{}], indirect=True, ids=["nothing-in-server-config"])
@on_loop
async def test_the_extension_reads_jupyter_mole_config(
    jp_config_dir: Path,
    jp_configurable_serverapp: Any,
    jp_server_config: dict[str, Any],
    server_log: Records,
) -> None:
    """The file that ``jupyter mole --generate-config`` writes is read by the extension."""
    (jp_config_dir / "jupyter_mole_config.py").write_text(
        'c.Mole.url = "http://127.0.0.1:9"\nc.Mole.poll_interval = 2.5\n'
    )
    app = jp_configurable_serverapp(config=jp_server_config)
    backend = backend_of(app)
    assert (backend.config.url, backend.config.poll_interval) == ("http://127.0.0.1:9", 2.5)
    await logged(server_log, "the backend at http://127.0.0.1:9 does not answer")
