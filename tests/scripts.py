"""Writing and loading ``.oms`` scripts in tests: shared by tests/test_script.py and
tests/test_script_errors.py (split from one file to keep each under 600 lines).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jupyter_mole.engine import (
    Script,
    ScriptError,
    WorkflowError,
    load_script,
)


def write(folder: Path, source: str, name: str = "pi.oms") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return path


def load(folder: Path, source: str, name: str = "pi.oms") -> Script:
    return load_script(write(folder, source, name))


def load_error(folder: Path, source: str, name: str = "pi.oms") -> ScriptError:
    with pytest.raises(ScriptError) as info:
        load(folder, source, name)
    return info.value


def static_error(folder: Path, source: str) -> str:
    script = load(folder, source)
    with pytest.raises(WorkflowError) as info:
        script.workflow.provides({})
    return str(info.value)


MODEL = textwrap.dedent("""
    x, y, z, w = Val(float), Val(float), Val(float), Val(float)

    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return x + 1
""")
