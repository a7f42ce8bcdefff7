"""``jupyter-mole``: the command line (so ``jupyter mole ...`` works too).

One parser with a subparser per command, and one small function per command
that returns the exit status. ``run`` executes a script in the foreground on
the embedded engine and follows it on the terminal.

Exit statuses, so scripts and CI can tell what happened:

- 0: the execution finished;
- 1: it failed (a job raised, a hook could not write...);
- 2: it never started: bad arguments, no such script, a script that does not
  load or a workflow that cannot run as written;
- 130: interrupted by Ctrl-C (the execution was cancelled first).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from .argtypes import positive_int

if TYPE_CHECKING:
    from .engine import Execution

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
POLL_INTERVAL = 0.2


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Interrupts:
    """Ctrl-C while an execution runs: the first asks for a clean cancel, not a traceback.

    Raising KeyboardInterrupt in the middle of drawing or of the engine's shutdown
    would leave jobs (and their child programs) running; so the handler only sets
    a flag that the follow loop checks. A second Ctrl-C says we are still
    cleaning up; a third quits at once, for a cancel that hangs.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.count = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.requested.set()
        if self.count == 2:
            os.write(2, b"still cancelling; press Ctrl-C again to quit without cleaning up\n")
        elif self.count >= 3:
            os.write(2, b"quitting without cleaning up\n")
            os._exit(EXIT_INTERRUPTED)

    @contextmanager
    def installed(self) -> Iterator[_Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # only the main thread may set handlers; Ctrl-C is then the caller's
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while the Dask workers are spawned, so that they inherit it ignored.

    A Ctrl-C in a terminal goes to every process of the foreground group; the
    workers must leave it to us, or they die mid-job (with a traceback each)
    instead of being cancelled. A Ctrl-C during these seconds is lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- run ------------------------------------------------------------------------------
def _add_run(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "run",
        parents=[common],
        help="run a script in the foreground on the embedded engine",
        description="Run a workflow script on this machine's cores and follow it live. "
        "Ctrl-C cancels the execution (its running jobs are stopped) and exits with 130.",
    )
    p.add_argument("script", type=Path, help="the workflow script (.oms, Python dialect)")
    p.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="where the script's files are read and results written (default: its folder)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the engine keeps the execution's logs and scratch files "
        "(default: a temporary folder removed at the end)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="number of local Dask worker processes (default: one per core)",
    )
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """``jupyter-mole run SCRIPT``: run it in the foreground, exit with how it ended."""
    script: Path = args.script
    if not script.is_file():
        _err(f"jupyter-mole run: there is no script {script}")
        return EXIT_USAGE
    # Resolved: the script sees it as `work_directory`, and the engine joins the
    # relative paths the script builds from it (`work_directory / "x.csv"`) onto
    # the work directory again; a relative one would then be counted twice.
    work = (args.work_dir if args.work_dir is not None else script.parent).resolve()
    if not work.is_dir():
        _err(f"jupyter-mole run: the work directory {work} is not a folder")
        return EXIT_USAGE
    if args.state_dir is not None:
        return _run(script, work, args.state_dir, args)
    with tempfile.TemporaryDirectory(prefix="jupyter-mole-", ignore_cleanup_errors=True) as tmp:
        return _run(script, work, Path(tmp), args)


def _run(script: Path, work: Path, state_dir: Path, args: argparse.Namespace) -> int:
    # Imported here: the engine pulls in Dask, which `--help` does not need.
    from .engine import Engine, MoleError, ScriptError, load_script

    try:
        loaded = load_script(script, work)
    except ScriptError as e:
        _err(e.message)
        if args.verbose and e.stack_trace:
            _err(e.stack_trace.rstrip("\n"))
        return EXIT_USAGE
    engine = Engine(state_dir, n_workers=args.workers, dask_log_level=_quiet_dask(args.verbose))
    interrupts = _Interrupts()
    with interrupts.installed():
        try:
            with _sigint_ignored():
                engine.warm_up()
            try:
                execution = engine.start(loaded.workflow, work, script=str(script))
            except MoleError as e:
                _err(e.message)
                return EXIT_USAGE
            return _follow(execution, interrupts, args.verbose)
        finally:
            engine.close()


DASK_SILENT = logging.CRITICAL + 10


def _quiet_dask(verbose: bool) -> int:
    """Keep Dask's own log lines off the terminal, unless ``--verbose``.

    A worker that dies makes Dask log from the scheduler, the nanny and the
    other workers, in lines that name its internals; the engine reports the
    same event as one WARNING about the lost job, which is what the user can
    act on. Dask configured its ``distributed`` logger with a handler to
    stderr when it was imported; in this process the handler is dropped, and
    the level returned is what the worker processes are given.
    """
    if verbose:
        return logging.ERROR
    dask_logger = logging.getLogger("distributed")
    for handler in list(dask_logger.handlers):
        dask_logger.removeHandler(handler)
    dask_logger.addHandler(logging.NullHandler())
    dask_logger.propagate = False
    return DASK_SILENT


def _follow(execution: Execution, interrupts: _Interrupts, verbose: bool) -> int:
    """Show ``execution`` until it ends; cancel it on the first Ctrl-C. Returns the exit status."""
    from .engine import State
    from .terminal import format_summary, open_display

    offset = 0
    cancelling = False
    display = open_display(verbose=verbose)
    with display:
        while True:
            done = execution.done  # read first: what follows then drains everything
            text, offset = execution.output(offset)
            display.output(text)
            display.errors(execution.errors_since_last_read("cli"))
            display.update(execution.snapshot())
            if done:
                break
            if interrupts.requested.is_set() and not cancelling:
                cancelling = True
                display.message("cancelling...", error=True)
                execution.cancel()
            execution.wait(POLL_INTERVAL)
    snapshot = execution.snapshot()
    if snapshot.state is State.FINISHED:
        print(format_summary(snapshot), flush=True)
        return EXIT_INTERRUPTED if interrupts.requested.is_set() else EXIT_OK
    _err(format_summary(snapshot))
    if snapshot.state is State.CANCELLED:
        return EXIT_INTERRUPTED
    if snapshot.error:
        _err(f"error: {snapshot.error}")
    if verbose and snapshot.stack_trace and snapshot.stack_trace not in display.shown_traces:
        _err(snapshot.stack_trace.rstrip("\n"))
    return EXIT_FAILED


# -- the parser ----------------------------------------------------------------------
Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each command adds its own subparser."""
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also print stack traces of errors"
    )
    parser = argparse.ArgumentParser(
        prog="jupyter-mole",
        description="OpenMOLE model explorations from Jupyter: run workflow scripts "
        "on the embedded engine.",
        epilog="The Jupyter server extension's settings (c.Mole...): jupyter mole --help-all "
        "lists them, jupyter mole --generate-config writes jupyter_mole_config.py.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_run(subparsers, common)
    from .server.serve import add_parser as add_serve

    add_serve(subparsers)
    __import__("jupyter_mole.client_cli", fromlist=["*"]).add_parsers(subparsers)
    return parser


JUPYTER_FLAGS = ("--help-all", "--generate-config")
"""Handed to the Jupyter server extension, as ``jupyter lab`` takes them: its settings."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jupyter-mole``, ``jupyter mole`` and ``python -m jupyter_mole``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in JUPYTER_FLAGS:
        from .labserver.app import main as extension_settings

        return extension_settings(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    handler: Command = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
