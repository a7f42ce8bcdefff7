"""What a waiting ``%%mole`` cell raises when its execution ends without finishing.

The cell must fail, so that a notebook's "Run all" stops there rather than at
the next cell, confused by results that were never written. The same is true
of Ctrl-C (the execution is cancelled, and ``KeyboardInterrupt`` still raised).
What a person needs is the execution's own error, not the magic's Python
stack: IPython shows what ``_render_traceback_`` returns instead of a
traceback, so the cell's error output is those few lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import ExecutionState

if TYPE_CHECKING:
    from .handle import Execution

__all__ = ["ExecutionFailed"]

MAX_LINES = 30
"""Lines of the execution's error shown in the cell; the view above keeps all of it."""


class ExecutionFailed(Exception):
    """The execution a ``%%mole`` cell waited for failed, or was cancelled by someone else.

    ``execution`` is its handle (also in the ``-o NAME`` variable, for
    ``errors()`` or ``output()``), ``state`` its last state, and ``message``
    the execution's error (or what cancelled it), without any stack trace.
    """

    def __init__(self, execution: Execution, state: ExecutionState) -> None:
        self.execution = execution
        self.state = state
        script = execution.script or "the script"
        if state.state == "cancelled":
            self.message = (
                f"{script} was cancelled (execution {execution.id}) before it finished: by "
                "its view's Cancel button, %mole cancel, the sidebar, or another notebook"
            )
        else:
            error = state.error.message if state.error is not None else "no error message"
            self.message = f"{script} {state.state} (execution {execution.id}): {error}"
        super().__init__(self.message)

    def _render_traceback_(self) -> list[str]:
        """The lines IPython shows for this exception, in place of a Python traceback."""
        lines = f"{type(self).__name__}: {self.message}".splitlines()
        if len(lines) > MAX_LINES:
            more = len(lines) - MAX_LINES
            lines = [*lines[:MAX_LINES], f"... ({more} more lines: the view above shows them)"]
        return lines
