"""Where in the script a DSL object was made, for messages raised long after.

A task's output of the wrong type is found while a job runs, on a worker, far
from the line that defined the task; a Val left without a name is found when
the workflow is checked, after the script has run. Both messages name the
script line, so the modeller goes straight to it. The line is the one running
in the script when the object was built: for ``@PythonTask(...)`` over a
function, the decorator's line.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["SCRIPT_MODULE", "script_site"]

SCRIPT_MODULE = "__mole_script__"
"""The ``__name__`` a script runs under: how a frame of the script is told from ours."""


def script_site() -> str | None:
    """``"pi.oms, line 7"``: the script line running now, or None outside a script.

    The nearest frame of the script's own code (a function the script defines
    counts) is taken, so a task built by a helper function of the script is
    placed at the helper's line.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__") == SCRIPT_MODULE:
            return f"{Path(frame.f_code.co_filename).name}, line {frame.f_lineno}"
        frame = frame.f_back
    return None
