"""The live view of an execution: an ipywidgets panel, or text where widgets cannot render.

Updates come from the kernel's own event loop, never from a thread (ipykernel
7 broke thread-driven widget updates): a background asyncio task polls while
other cells run, and a cell that waits drives the same updates itself. Errors
accumulate (the whole log, repeats counted), the output tail grows, and
polling stops when the execution ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..protocol import ExecutionState

if TYPE_CHECKING:
    from .handle import Execution

__all__ = ["Follower", "TextView", "show", "widgets_available"]

TAIL_BYTES = 20_000


def widgets_available() -> bool:
    """Widgets render in a Jupyter kernel's front end; not in terminal IPython, nor when turned off."""
    if os.environ.get("MOLE_NO_WIDGETS", "").lower() in ("1", "true", "yes"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Follower:
    """Polls one execution and feeds a view: state, new output, the error log."""

    def __init__(self, execution: Execution, view: Any) -> None:
        self.execution = execution
        self.view = view
        self.offset = 0
        self.tail = ""
        self.errors: dict[tuple[str, str], dict[str, Any]] = {}
        self.state: ExecutionState | None = None
        self.task: asyncio.Task | None = None

    def _errors_from(self, state: ExecutionState) -> None:
        """Accumulate errors: the server's whole log when it keeps one, else each state's slice."""
        client = self.execution.client
        if getattr(client, "kind", "") == "jupyter-mole":
            with contextlib.suppress(Exception):
                for e in client.errors(self.execution.id):
                    record = e if isinstance(e, dict) else vars(e)
                    key = (str(record.get("level")), str(record.get("message")))
                    self.errors[key] = record
                return
        for env in state.environments:
            for e in env.errors:
                key = (str(e.level), e.message)
                known = self.errors.setdefault(
                    key,
                    {
                        "message": e.message,
                        "level": e.level,
                        "stack-trace": e.stack_trace,
                        "count": 0,
                    },
                )
                known["count"] = int(known.get("count", 0)) + 1

    def step(self) -> bool:
        """One poll; True when the execution has ended."""
        client = self.execution.client
        state = client.state(self.execution.id)
        text, self.offset = client.output(self.execution.id, self.offset)
        if text:
            self.tail = (self.tail + text)[-TAIL_BYTES:]
        self._errors_from(state)
        self.state = state
        self.view.update(state, self.tail, text, list(self.errors.values()))
        if state.done:
            self.view.finish(state)
        return state.done

    async def run(self, poll: float = 1.0) -> None:
        """Poll from the event loop until the execution ends; back off while the server fails."""
        from ..client import NotFound

        delay = poll
        while True:
            try:
                # A short local request: cheaper than a thread, and safe for widget updates.
                done = self.step()
                delay = poll
            except NotFound:  # removed (from another view, or another notebook): stop here
                self.view.problem(f"execution {self.execution.id} is no longer on the server")
                return
            except Exception as e:  # the server is away: say so and retry later
                self.view.problem(f"cannot reach the server: {e}")
                done = False
                delay = min(delay * 2, 30.0)
            if done:
                return
            await asyncio.sleep(delay)

    def start_background(self, poll: float = 1.0) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (plain script): the caller waits or polls itself
        self.task = loop.create_task(self.run(poll))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class TextView:
    """Text progress for terminals and front ends without widgets."""

    def __init__(self, execution: Execution, stream: Any = None, every: float = 2.0) -> None:
        self.execution = execution
        self.stream = stream or sys.stdout
        self.every = every
        self.last = 0.0
        self.shown_errors: set[tuple[str, str]] = set()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, state: ExecutionState, tail: str, new_output: str, errors: list[dict]) -> None:
        if new_output:
            self.stream.write(new_output)
            self.stream.flush()
        for e in errors:
            key = (str(e.get("level")), str(e.get("message")))
            if key not in self.shown_errors:
                self.shown_errors.add(key)
                self._print(f"[{e.get('level')}] {e.get('message')}")
        now = time.monotonic()
        if not state.done and now - self.last >= self.every:
            self.last = now
            self._print(self.progress_line(state))

    def progress_line(self, state: ExecutionState) -> str:
        tasks = ", ".join(
            f"{name}: {c.ready} ready {c.running} running {c.completed} completed"
            for name, c in state.capsules
        )
        envs = ", ".join(
            f"{e.name}: {e.submitted} submitted {e.running} running {e.done} done {e.failed} failed"
            for e in state.environments
        )
        details = "; ".join(part for part in (tasks, envs) if part)
        return f"{state.state}: {state.completed}/{state.total} jobs" + (
            f" ({details})" if details else ""
        )

    def finish(self, state: ExecutionState) -> None:
        line = f"{state.state}: {state.completed} jobs completed ({self.execution.id})"
        if state.error is not None:
            line += f"\n{state.error.message}"
        self._print(line)

    def problem(self, message: str) -> None:
        self._print(message)


def show(execution: Execution, poll: float = 1.0, background: bool = True) -> Any:
    """Display a live view of ``execution``; returns the view (a widget, or a text view)."""
    if widgets_available():
        from IPython.display import display

        from .widget import WidgetView

        view: Any = WidgetView(execution)
        display(view.box)
    else:
        view = TextView(execution)
    follower = Follower(execution, view)
    view.follower = follower
    if background:
        try:
            follower.step()
        except Exception as e:
            view.problem(f"cannot reach the server: {e}")
        if follower.state is None or not follower.state.done:
            follower.start_background(poll)
    return view
