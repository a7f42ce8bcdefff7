"""A ``%%mole`` cell that waits, in a kernel: awaited, so that its widget's buttons work.

Why not block: ipykernel handles the front end's messages from its event loop,
and a cell that sleeps in a loop holds that loop, so a click on Cancel would
only reach the kernel once the cell had ended. ipykernel 7 dispatches widget
(comm) messages while a cell *awaits* (it was made so that async cells can wait
for widgets), so in a kernel a ``%%mole`` cell that waits is run as an awaiting
cell: an input transformer rewrites IPython's ``run_cell_magic('mole', ...)``
call into ``await`` of :meth:`MoleMagics.awaited_cell`. (``jupyter-ui-poll``,
the usual answer for ipykernel 6, drives ``Kernel.do_one_iteration``, which
ipykernel 7.1 removed: with it, clicks still waited for the cell's end.)

While the cell awaits, the view's background task polls with the asynchronous
client, other views keep updating, and Ctrl-C (which ipykernel turns into the
cancellation of the cell's task) cancels the execution and raises
``KeyboardInterrupt``, as the blocking wait does. Outside a kernel (terminal
IPython, ``shell.run_cell_magic`` from code) the magic blocks as before.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from ..protocol import ExecutionState

if TYPE_CHECKING:
    from .handle import Execution

__all__ = ["await_waiting_cells", "install", "wait_in_loop"]

_CALL = "get_ipython().run_cell_magic('mole', "
_AWAITED = "await get_ipython().magics_manager.registry['MoleMagics'].awaited_cell("


def _awaits(shell: Any) -> bool:
    """Whether this kernel runs a cell with a top-level ``await`` in its own running loop.

    As ipykernel decides: autoawait on, with IPython's asyncio runner, inside the loop.
    """
    from IPython.core.async_helpers import _asyncio_runner

    if getattr(shell, "kernel", None) is None or not getattr(shell, "autoawait", False):
        return False
    if getattr(shell, "loop_runner", None) is not _asyncio_runner:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def await_waiting_cells(lines: list[str]) -> list[str]:
    """IPython's post transformer: a ``%%mole`` cell, transformed, is awaited in a kernel."""
    from IPython import get_ipython

    if len(lines) == 1 and lines[0].startswith(_CALL) and _awaits(get_ipython()):
        return [_AWAITED + lines[0][len(_CALL) :]]
    return lines


def install(shell: Any) -> None:
    """Register the transformer (once) in a kernel's shell; nothing elsewhere."""
    if getattr(shell, "kernel", None) is None:
        return
    transformers = shell.input_transformers_post
    if await_waiting_cells not in transformers:
        transformers.append(await_waiting_cells)


async def wait_in_loop(
    execution: Execution, view: Any, timeout: float | None
) -> ExecutionState | None:
    """Await the view's background polling until the end; the last state (None after ``timeout``).

    Ctrl-C cancels the execution and raises ``KeyboardInterrupt``; if the server cannot
    cancel it (OpenMOLE cancels only by removing), the view goes on following it.
    """
    from ..client import NotFound

    follower = view.follower
    follower.start_background()
    task = follower.task
    assert task is not None  # in a running loop
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:  # Ctrl-C: ipykernel cancels the cell's task
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        print(f"interrupted: cancelling {execution.id}", file=sys.stderr)
        try:
            execution.cancel()
            follower.refresh()
        except Exception as e:  # say so, and still raise: queued cells must stop
            print(f"could not cancel {execution.id}: {e}", file=sys.stderr)
        raise KeyboardInterrupt from None
    if not done:
        print(f"still running after {timeout:g} s; the execution goes on: {execution.id}")
        return None
    if follower.state is None or not follower.state.done:
        raise NotFound(f"execution {execution.id} is no longer on the server", status=404)
    return follower.state
