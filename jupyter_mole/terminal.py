"""Showing an execution in a terminal: a live progress display, or plain lines for logs.

The command line follows an execution by polling it (a :class:`Snapshot`, new
output text, new error records) and hands each piece to a display from
:func:`open_display`. Anything that polls the same three things (``run`` on the
embedded engine, ``submit --wait`` against a server) shows it the same way.

On a terminal the display is a ``rich`` live panel (a progress bar, per-task and
per-environment counters) with output and errors scrolling above it. Anywhere
else (a pipe, a CI log, a test) it writes plain lines without escape codes: the
output as it comes, each error, a progress line at most every few seconds, and a
summary at the end, so a log stays readable and greppable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from .engine.state import ErrorRecord, Snapshot, State

__all__ = [
    "Display",
    "LiveDisplay",
    "PlainDisplay",
    "format_error",
    "format_progress",
    "format_summary",
    "open_display",
]


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def known_jobs(snapshot: Snapshot) -> int:
    """Jobs known so far: a method generates its jobs as it goes, so the total grows."""
    return max(snapshot.ready + snapshot.running + snapshot.completed, snapshot.total or 0)


def elapsed(snapshot: Snapshot, now: float | None = None) -> float:
    """Seconds the execution has run (until it ended, if it has)."""
    if snapshot.started is None:
        return 0.0
    end = snapshot.ended if snapshot.ended is not None else (now or time.time())
    return max(0.0, end - snapshot.started)


def format_progress(snapshot: Snapshot, now: float | None = None) -> str:
    """One line for a log: ``running: 37/100 jobs completed (4 running, 59 ready) after 5.0 s``."""
    return (
        f"{snapshot.state}: {snapshot.completed}/{_jobs(known_jobs(snapshot))} completed "
        f"({snapshot.running} running, {snapshot.ready} ready) after {elapsed(snapshot, now):.1f} s"
    )


def format_summary(snapshot: Snapshot) -> str:
    """The last line: ``finished: 100 jobs completed in 1.2 s``."""
    return f"{snapshot.state}: {_jobs(snapshot.completed)} completed in {elapsed(snapshot):.1f} s"


def format_error(record: ErrorRecord, verbose: bool = False) -> str:
    """An environment error as a log line; its stack trace follows only when ``verbose``."""
    repeat = f" (x{record.count})" if record.count > 1 else ""
    line = f"[{record.level}] {record.environment}: {record.message}{repeat}"
    if verbose and record.stack_trace:
        line += "\n" + record.stack_trace.rstrip("\n")
    return line


class _Lines:
    """Splits streamed text into whole lines, so a line is never cut by a progress line."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> str:
        text = self._partial + text
        head, newline, self._partial = text.rpartition("\n")
        return head + newline

    def rest(self) -> str:
        rest, self._partial = self._partial, ""
        return rest + "\n" if rest else ""


class Display:
    """What a follower calls; the base does the line splitting both kinds share.

    ``shown_traces`` remembers the stack traces already printed, so that a
    follower does not print the same one again in its final report.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._lines = _Lines()
        self.shown_traces: set[str] = set()

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def output(self, text: str) -> None:
        """New output of the execution (any piece of text; printed line by line)."""
        whole = self._lines.feed(text)
        if whole:
            self._write_output(whole)

    def errors(self, records: Iterable[ErrorRecord]) -> None:
        """New environment errors, each printed once."""
        for record in records:
            self.message(format_error(record, self.verbose), error=True)
            if self.verbose and record.stack_trace:
                self.shown_traces.add(record.stack_trace)

    def update(self, snapshot: Snapshot) -> None:
        """The latest counters."""

    def message(self, text: str, error: bool = False) -> None:
        """A line of our own (``cancelling...``), to stderr when ``error``."""
        raise NotImplementedError

    def close(self) -> None:
        """Print what is left of the output and stop drawing; safe to call twice."""
        rest = self._lines.rest()
        if rest:
            self._write_output(rest)

    def _write_output(self, text: str) -> None:
        raise NotImplementedError


class PlainDisplay(Display):
    """Plain lines for pipes and logs; progress at most every ``every`` seconds."""

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        verbose: bool = False,
        every: float = 5.0,
        heartbeat: float = 60.0,
    ) -> None:
        super().__init__(verbose)
        self.stdout = stdout
        self.stderr = stderr
        self.every = every
        self.heartbeat = heartbeat
        self._last_time = time.monotonic()
        self._last_counts: tuple[int, int, int] | None = None

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.state is not State.RUNNING:
            return
        now = time.monotonic()
        counts = (snapshot.ready, snapshot.running, snapshot.completed)
        since = now - self._last_time
        # A line when something moved, and now and then when nothing did, so a
        # long silent job still shows the run is alive, without flooding a log.
        if (since >= self.every and counts != self._last_counts) or since >= self.heartbeat:
            self._last_time, self._last_counts = now, counts
            self._print(self.stdout, format_progress(snapshot))

    def message(self, text: str, error: bool = False) -> None:
        self._print(self.stderr if error else self.stdout, text)

    def _write_output(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    @staticmethod
    def _print(stream: TextIO, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()


def _counters(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, header_style="bold")
    table.add_column(title)
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(escape(str(cell)) for cell in row))
    return table


def render(snapshot: Snapshot, now: float | None = None) -> Group:
    """The live panel: a progress bar over the known jobs, then per task and per environment."""
    total = known_jobs(snapshot)
    bar = Table.grid(padding=(0, 2, 0, 0))
    bar.add_column(width=40)
    bar.add_column()
    bar.add_row(
        ProgressBar(total=max(total, 1), completed=snapshot.completed, width=40),
        f"{snapshot.completed}/{_jobs(total)}  {snapshot.state}  {elapsed(snapshot, now):.1f} s",
    )
    parts: list[Table] = [bar]
    if snapshot.capsules:
        rows = [[n, c.ready, c.running, c.completed] for n, c in snapshot.capsules.items()]
        parts.append(_counters("task", ["ready", "running", "completed"], rows))
    if snapshot.environments:
        rows = [[e.name, e.submitted, e.running, e.done, e.failed] for e in snapshot.environments]
        parts.append(_counters("environment", ["submitted", "running", "done", "failed"], rows))
    return Group(*parts)


class LiveDisplay(Display):
    """A ``rich`` live panel on a terminal, with output and errors printed above it."""

    def __init__(self, stdout: TextIO, stderr: TextIO, verbose: bool = False) -> None:
        super().__init__(verbose)
        self.console = Console(file=stdout, highlight=False)
        # Errors share the terminal with the panel; drawn by the same console they
        # scroll above it. When stderr goes elsewhere (a file), they go there.
        self.error_console = (
            self.console if stderr.isatty() else Console(file=stderr, highlight=False)
        )
        self._live: Live | None = Live(
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
        )
        self._live.start()

    def update(self, snapshot: Snapshot) -> None:
        if self._live is not None:
            self._live.update(render(snapshot), refresh=True)

    def message(self, text: str, error: bool = False) -> None:
        console = self.error_console if error else self.console
        console.print(text, markup=False, style="red" if error else None, soft_wrap=True)

    def _write_output(self, text: str) -> None:
        self.console.out(text, end="", highlight=False)

    def close(self) -> None:
        super().close()
        if self._live is not None:
            self._live.stop()
            self._live = None


def open_display(
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    verbose: bool = False,
    live: bool | None = None,
) -> Display:
    """A live display when ``stdout`` is a terminal (or ``live`` says so), plain lines otherwise."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if live is None:
        live = stdout.isatty()
    if live:
        return LiveDisplay(stdout, stderr, verbose)
    return PlainDisplay(stdout, stderr, verbose)
