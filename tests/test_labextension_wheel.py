"""`pip install` gives the JupyterLab extension with no extra step: a wheel built from the
repository's files (what a clone has, without node_modules or any earlier build) carries the
prebuilt extension and the server extension's config as shared data.

The wheel is built as pip builds it for a user: in an isolated build environment (hatchling,
hatch-jupyter-builder and jupyter-builder from the package index), whose build hook runs
``npm install`` and ``npm run build`` in ``labextension/``. Node >= 20.19 and npm are needed
(``.ci/setup`` checks for them); the npm registry and the package index are reached.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.sidebar import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXTENSION = "share/jupyter/labextensions/jupyter-mole"


def repository_files(repo: Path) -> list[str]:
    """The files that a commit of the working tree would hold: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    return [name for name in listed.split("\0") if name and (repo / name).is_file()]


def test_a_wheel_of_the_repository_carries_the_lab_extension(tmp_path: Path) -> None:
    source = tmp_path / "jupyter-mole"
    for name in repository_files(REPO):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    assert not (source / "jupyter_mole" / "labextension").exists()  # no build to start from
    assert not (source / "labextension" / "node_modules").exists()

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    (wheel,) = (tmp_path / "dist").glob("jupyter_mole-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (data,) = {n.split("/")[0] for n in names if re.match(r"[^/]+\.data/", n)}
        extension = f"{data}/data/{EXTENSION}"
        package = json.loads(archive.read(f"{extension}/package.json"))
        schema = json.loads(archive.read(f"{extension}/schemas/jupyter-mole/plugin.json"))
        install = json.loads(archive.read(f"{extension}/install.json"))
        config = json.loads(
            archive.read(f"{data}/data/etc/jupyter/jupyter_server_config.d/jupyter_mole.json")
        )
    entries = [
        n for n in names if re.fullmatch(rf"{re.escape(extension)}/static/remoteEntry\.\w+\.js", n)
    ]
    assert len(entries) == 1, sorted(names)
    # the prebuilt extension: its package.json names the remote entry that the wheel holds
    assert package["name"] == "jupyter-mole"
    assert f"{extension}/{package['jupyterlab']['_build']['load']}" == entries[0]
    assert f"{extension}/static/style.js" in names
    assert schema == json.loads((REPO / "labextension" / "schema" / "plugin.json").read_text())
    assert install["packageName"] == "jupyter-mole"
    # and the server extension enabled
    assert config == {"ServerApp": {"jpserver_extensions": {"jupyter_mole": True}}}
