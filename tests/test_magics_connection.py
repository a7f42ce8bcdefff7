"""How the magics reach a server, and how they name the notebook an execution came from.

``%mole connect`` takes the command-line client's connection options
(``--ca-file``, ``--insecure``, ``--api`` beside ``--password-file`` and
``--fingerprint``). A connection file written for ``c.Mole.url`` carries the
extension's ``verify_tls`` and ``api``, and the kernels honour them. The
``notebook`` tag is the notebook's path relative to Jupyter's root when the
server extension tells kernels the root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_mole.client import MoleClient
from jupyter_mole.connection import (
    ROOT_VARIABLE,
    Connection,
    read_connection_file,
    write_connection_file,
)
from jupyter_mole.kernel.magics import _notebook_path
from tests.kernels import info_of, magics
from tests.servers import PASSWORD, ServerProcess
from tests.test_magics import QUICK_SCRIPT


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(f"{PASSWORD}\n")
    return path


# -- %mole connect -------------------------------------------------------------------------
def test_connect_trusts_a_ca_file(
    shell: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    mole_server: ServerProcess,
    password_file: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    line = f"connect {mole_server.url} --password-file {password_file}"
    with pytest.raises(UsageError, match="certificate verify failed"):
        shell.run_line_magic("mole", line)  # self-signed: not trusted by default
    shell.run_line_magic("mole", f"{line} --ca-file {mole_server.certfile}")
    assert capsys.readouterr().out.startswith(
        f"connected to jupyter-mole (ours) at {mole_server.url} (%mole connect)\n"
    )
    assert magics(shell).connection.ca_file == str(mole_server.certfile)
    with pytest.raises(UsageError, match=r"--ca-file: there is no file .*nowhere\.pem"):
        shell.run_line_magic("mole", f"{line} --ca-file {password_file.parent}/nowhere.pem")


def test_connect_insecure_and_a_chosen_api(
    shell: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    mole_server: ServerProcess,
    password_file: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    line = f"connect {mole_server.url} --password-file {password_file}"
    shell.run_line_magic("mole", f"{line} --insecure --api job")
    captured = capsys.readouterr()
    assert "warning: --insecure: the server's certificate is not checked" in captured.err
    assert captured.out.startswith(f"connected to OpenMOLE (/job API) at {mole_server.url}")
    assert magics(shell).client().kind == "openmole-job"
    with pytest.raises(UsageError, match="--insecure checks nothing"):
        shell.run_line_magic("mole", f"{line} --insecure --fingerprint {mole_server.fingerprint}")
    with pytest.raises(UsageError, match="invalid choice: 'rest'"):
        shell.run_line_magic("mole", f"{line} --api rest")
    shell.run_line_magic("mole", "help")  # every form, with its options
    help_text = capsys.readouterr().out.split("``%mole connect``")[1]
    for option in ("--password-file", "--fingerprint", "--ca-file", "--insecure", "--api"):
        assert option in help_text


@pytest.mark.parametrize("api", ["job", "token"])
def test_the_list_of_an_openmole_server_leaves_blank_what_it_does_not_say(
    shell: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    mole_server: ServerProcess,
    password_file: Path,
    capsys: pytest.CaptureFixture,
    api: str,
) -> None:
    # OpenMOLE lists ids only: no state, no script, no counts. Not "0/0 jobs" for a run of 4.
    shell.run_line_magic(
        "mole",
        f"connect {mole_server.url} --password-file {password_file} "
        f"--fingerprint {mole_server.fingerprint} --api {api}",
    )
    run = shell.run_cell_magic("mole", "quick.oms", QUICK_SCRIPT)
    try:
        capsys.readouterr()
        shell.run_line_magic("mole", "list")
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["id", "state", "script", "jobs", "notebook", "age"]
        assert run.id in lines  # the id alone on its row
        assert not any("0/0" in line for line in lines)
    finally:
        run.remove()


# -- the connection file of c.Mole.url ------------------------------------------------------
def test_the_connection_file_carries_tls_verification_and_the_api(
    shell: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    mole_server: ServerProcess,
    capsys: pytest.CaptureFixture,
) -> None:
    # As the extension writes it for c.Mole.verify_tls = False, c.Mole.api = "job".
    written = Connection(mole_server.url, PASSWORD, verify_tls=False, api="job")
    path = write_connection_file(written)
    assert json.loads(path.read_text())["verify_tls"] is False
    assert read_connection_file(path) == Connection(
        mole_server.url, PASSWORD, verify_tls=False, api="job", source="connection file"
    )
    shell.run_line_magic("mole", "status")  # self-signed, unpinned: accepted, as the sidebar does
    assert capsys.readouterr().out.startswith(
        f"connected to OpenMOLE (/job API) at {mole_server.url} (the connection file)"
    )


@pytest.mark.parametrize(
    ("field", "value"), [("verify_tls", "false"), ("verify_tls", 0), ("api", "rest")]
)
def test_a_bad_value_in_the_connection_file_keeps_the_default(
    tmp_path: Path, field: str, value: Any
) -> None:
    path = tmp_path / "connection.json"
    path.write_text(json.dumps({"url": "https://example.org:8443", field: value}))
    found = read_connection_file(path)
    assert found is not None and (found.verify_tls, found.api) == (True, "auto")


def test_the_clients_options_pin_first_then_a_ca_file_then_verify_tls() -> None:
    options = Connection(
        "https://h:1", "pw", "AB" * 32, "ca.pem", verify_tls=False
    ).client_options()
    assert options == {
        "password": "pw",
        "fingerprint": "AB" * 32,
        "verify": "ca.pem",
        "api": "auto",
    }
    assert Connection("https://h:1", verify_tls=False).client_options()["verify"] is False
    assert Connection("https://h:1").client_options()["verify"] is True


# -- the notebook tag ----------------------------------------------------------------------
def test_the_notebook_tag_is_relative_to_jupyters_root(
    shell: InteractiveShell,
    served: ServerProcess,
    client: MoleClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "root"
    monkeypatch.setenv(ROOT_VARIABLE, str(root))  # as the server extension tells its kernels
    monkeypatch.setenv("JPY_SESSION_NAME", str(root / "study" / "analysis.ipynb"))
    run = shell.run_cell_magic("mole", "quick.oms", QUICK_SCRIPT)
    assert info_of(client, run.id).tags == {"notebook": "study/analysis.ipynb"}


@pytest.mark.parametrize(
    ("session", "root", "tag"),
    [
        ("{root}/a/b.ipynb", "{root}", "a/b.ipynb"),
        ("{root}/a/b.ipynb", "{root}/", "a/b.ipynb"),
        ("{link}/a/b.ipynb", "{root}", "a/b.ipynb"),  # the root reached through a link
        ("/elsewhere/b.ipynb", "{root}", "/elsewhere/b.ipynb"),  # outside the root: as given
        ("{root}/a/b.ipynb", None, "{root}/a/b.ipynb"),  # no extension: as Jupyter gave it
        ("a/b.ipynb", "{root}", "a/b.ipynb"),  # already relative to the root
    ],
)
def test_notebook_paths(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    session: str,
    root: str | None,
    tag: str,
) -> None:
    real = tmp_path / "root"
    (real / "a").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    names = {"root": str(real), "link": str(tmp_path / "link")}
    if root is None:
        monkeypatch.delenv(ROOT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(ROOT_VARIABLE, root.format(**names))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert _notebook_path({"__session__": session.format(**names)}) == tag.format(**names)
    assert _notebook_path({}) is None
