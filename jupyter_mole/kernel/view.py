"""The live view of an execution: an ipywidgets panel, or text where widgets cannot render.

Updates come from the kernel's own event loop, never from a thread (ipykernel
7 broke thread-driven widget updates): a background asyncio task polls while
other cells run, and a cell that waits drives the same updates itself. The
task polls with an asynchronous twin of the execution's client, so a server
that is slow to answer (or never answers) holds up that task only, never the
kernel: a blocking request from the loop would freeze every cell and widget of
the notebook for as long as the client's timeout. Errors accumulate (the
whole log, repeats counted), the output tail grows, and polling stops when
the execution ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..protocol import ExecutionState

if TYPE_CHECKING:
    from ..client import AsyncMoleClient
    from .handle import Execution

__all__ = [
    "Follower",
    "Poll",
    "TextView",
    "final_text",
    "progress_line",
    "show",
    "widgets_available",
]

TAIL_BYTES = 20_000
TRACE_LINES = 6
"""Lines of a failed execution's stack trace that the text view prints (its last ones: where
it failed); the widget keeps the whole trace behind a click."""


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


# -- text, for a person: the text view, the panel's text/plain, %mole state ---------------------
def progress_line(state: ExecutionState) -> str:
    """``running: 3/10 jobs (model: 5 ready 2 running 3 completed; local: ...)``."""
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


def jobs_completed(state: ExecutionState) -> int:
    """Jobs completed by the end: a finished execution completed every job it had."""
    return max(state.total, state.completed) if state.state == "finished" else state.completed


def final_text(execution: Execution, state: ExecutionState) -> str:
    """The end, in a few lines: the state, the jobs, the error and where it happened."""
    text = f"{state.state}: {jobs_completed(state)} jobs completed ({execution.id})"
    if state.error is not None:
        text += f"\n{state.error.message}"
        trace = [
            line
            for line in (state.error.stack_trace or "").splitlines()
            if line.strip() and line.strip() != "Traceback (most recent call last):"
        ]  # the header reads like a crash of the magic: the frames say where the job failed
        if trace:
            shown = trace[-TRACE_LINES:]
            more = "  ...\n" if len(trace) > len(shown) else ""
            text += "\n" + more + "\n".join(f"  {line.rstrip()}" for line in shown)
    return text


# -- polling ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Poll:
    """What one poll read: the state, the output from ``offset`` on, the whole error log."""

    state: ExecutionState
    offset: int
    text: str
    next_offset: int
    log: list[Any] | None = None
    """The whole error log (our server keeps one), or None: then each state's errors count."""


def _no_counts(state: ExecutionState) -> bool:
    return not (state.total or state.capsules or state.environments)


class Follower:
    """Polls one execution and feeds a view: state, new output, the error log."""

    def __init__(self, execution: Execution, view: Any) -> None:
        self.execution = execution
        self.view = view
        self.offset = 0
        self.tail = ""
        self.errors: dict[tuple[str, str], dict[str, Any]] = {}
        self.state: ExecutionState | None = None
        self.ended = False
        self.task: asyncio.Task | None = None
        self.poll = 1.0
        self._wake = asyncio.Event()

    # -- one poll: read (blocking, or awaited), then show ---------------------------------
    def fetch(self) -> Poll:
        """One poll with the execution's (blocking) client."""
        client = self.execution.client
        ident, start = self.execution.id, self.offset
        state = client.state(ident)
        text, end = client.output(ident, start)
        log = None
        if client.kind == "jupyter-mole":
            try:
                log = list(client.errors(ident))
            except Exception:
                log = None
        return Poll(state, start, text, end, log)

    async def afetch(self, client: AsyncMoleClient) -> Poll:
        """One poll with an asynchronous client: the loop runs on while the server thinks."""
        ident, start = self.execution.id, self.offset
        state = await client.state(ident)
        text, end = await client.output(ident, start)
        log = None
        if client.kind == "jupyter-mole":
            try:
                log = list(await client.errors(ident))
            except Exception:
                log = None
        return Poll(state, start, text, end, log)

    def apply(self, poll: Poll) -> bool:
        """Show what a poll read; True when the execution has ended."""
        text = ""
        if poll.offset == self.offset:  # else another poll has shown this output already
            text, self.offset = poll.text, poll.next_offset
            if text:
                self.tail = (self.tail + text)[-TAIL_BYTES:]
        self._errors_from(poll)
        state = poll.state
        if state.done and self.state is not None and _no_counts(state):
            # OpenMOLE's end states carry no counters: keep the last ones seen, not 0/0 and
            # empty tables (without their errors: those were counted when they came).
            last = self.state
            state = dataclasses.replace(
                state,
                ready=last.ready,
                running=last.running,
                completed=last.completed,
                capsules=list(last.capsules),
                environments=[dataclasses.replace(e, errors=[]) for e in last.environments],
            )
        self.state = state
        self.view.update(state, self.tail, text, list(self.errors.values()))
        if state.done and not self.ended:
            self.ended = True
            self.view.finish(state)
        return state.done

    def _errors_from(self, poll: Poll) -> None:
        """Accumulate errors: the server's whole log when it keeps one, else each state's slice."""
        if poll.log is not None:
            for e in poll.log:
                record = e if isinstance(e, dict) else vars(e)
                key = (str(record.get("level")), str(record.get("message")))
                self.errors[key] = record
            return
        for env in poll.state.environments:
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
        """One blocking poll (a waiting cell outside a kernel, a click); True at the end."""
        return self.apply(self.fetch())

    # -- in the background, from the event loop ------------------------------------------
    async def run(self, poll: float = 1.0) -> None:
        """Poll from the event loop until the execution ends; back off while the server fails."""
        from ..client import AsyncMoleClient, NotFound

        client = AsyncMoleClient.sharing(self.execution.client)
        delay = poll
        try:
            while True:
                self._wake.clear()
                try:
                    done = self.apply(await self.afetch(client))
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
                try:  # until the next poll, or until someone wants to see the state now
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            await client.aclose()

    @property
    def polling(self) -> bool:
        return self.task is not None and not self.task.done()

    def start_background(self, poll: float | None = None) -> None:
        """Poll from the running event loop (a kernel's); nothing without one (a plain script)."""
        if poll is not None:
            self.poll = poll
        if self.polling:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (plain script): the caller waits or polls itself
        self.task = loop.create_task(self.run(self.poll))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def refresh(self) -> None:
        """Show the state now (after a click): wake the background poll, or poll here."""
        if self.polling:
            self._wake.set()
        else:
            self.step()


class TextView:
    """Text progress for terminals and front ends without widgets."""

    def __init__(self, execution: Execution, stream: Any = None, every: float = 2.0) -> None:
        self.execution = execution
        self.stream = stream or sys.stdout
        self.every = every
        self.last = 0.0
        self.shown_errors: set[tuple[str, str]] = set()
        self.follower: Follower | None = None

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
            self._print(progress_line(state))

    def progress_line(self, state: ExecutionState) -> str:
        return progress_line(state)

    def finish(self, state: ExecutionState) -> None:
        self._print(final_text(self.execution, state))

    def problem(self, message: str) -> None:
        self._print(message)


def show(execution: Execution, poll: float = 1.0, background: bool = True) -> Any:
    """Display a live view of ``execution``; returns the view (a widget, or a text view).

    ``background``: show the state now (a poll of the cell's own), then poll from the
    kernel's event loop until the end, where there is a loop. Otherwise the caller polls.
    """
    widgets = widgets_available()
    if widgets:
        from .widget import WidgetView

        view: Any = WidgetView(execution)
    else:
        view = TextView(execution)
    follower = Follower(execution, view)
    follower.poll = poll
    view.follower = follower
    if background:
        try:
            follower.step()
        except Exception as e:
            view.problem(f"cannot reach the server: {e}")
    if widgets:
        from IPython.display import display

        # With a display id: the end updates the text that front ends without widgets show.
        view.handle = display(view.box, display_id=True)
    if background and not follower.ended:
        follower.start_background(poll)
    return view
