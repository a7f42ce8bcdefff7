"""Modules beside a script: importable from it, sent to workers by value, never stale.

A model's own code often lives in a ``.py`` file beside the script. The script
may import it; Dask workers cannot (the work directory is not on their path),
so such modules are pickled by value with the tasks that use them. They are
dropped from ``sys.modules`` once the script is loaded, so that the next
script (or the same one, after an edit) imports its own, current copy.
Installed packages are never taken for local modules, even when a virtual
environment lives inside the work directory.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle

__all__ = ["importable_from"]


def _is_local(file: str, root: Path) -> bool:
    path = Path(file).resolve()
    if not path.is_relative_to(root):
        return False
    parts = path.relative_to(root).parts
    if any(p in ("site-packages", "dist-packages") for p in parts):
        return False
    # A folder with a pyvenv.cfg is a virtual environment: what it holds is installed code.
    return not any((root.joinpath(*parts[:i]) / "pyvenv.cfg").exists() for i in range(len(parts)))


@contextlib.contextmanager
def importable_from(work_directory: Path) -> Iterator[None]:
    """Let the code run inside import from ``work_directory``; ship what it imported by value."""
    root = work_directory.resolve()
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(root))
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            file = getattr(module, "__file__", None)
            if file and _is_local(file, root):
                cloudpickle.register_pickle_by_value(module)
                del sys.modules[name]
