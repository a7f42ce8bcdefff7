"""``jupyter-mole submit | state | output | download | list | cancel | remove``: a server's executions.

The commands are clients of a REST server (ours, or OpenMOLE of either
generation) through :class:`jupyter_mole.client.MoleClient`. Where the server
is and how to reach it: ``--url`` or ``MOLE_URL``; the password from
``--password-file``, ``MOLE_PASSWORD`` or ``MOLE_PASSWORD_FILE`` (never on the
command line, where other users could read it); ``--fingerprint`` /
``MOLE_FINGERPRINT`` pins a self-signed certificate, ``--ca-file`` /
``MOLE_CA_FILE`` trusts one.

Exit statuses: 0 done (for ``--wait``/``--follow``: the execution finished);
1 the server refused or failed, or the execution failed or was cancelled;
2 usage (bad arguments, no server address); 130 Ctrl-C, which only detaches:
the execution goes on running on the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import archive
from .client import MOLE, MoleClient, MoleClientError
from .protocol import ExecutionInfo, ExecutionState

if TYPE_CHECKING:
    from .engine.state import ErrorRecord, Snapshot

__all__ = ["add_parsers", "error_records", "snapshot_of"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "jupyter-mole"


class Usage(Exception):
    """A command line that cannot work as given: exit 2 with this message."""


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- protocol objects as the terminal display's engine records ----------------------------
def snapshot_of(
    execution_id: str,
    state: ExecutionState,
    started: float | None = None,
    ended: float | None = None,
) -> Snapshot:
    """An ``ExecutionState`` from a server as the engine's :class:`Snapshot` the display draws."""
    from .engine.state import CapsuleCounts, EnvironmentCounts, Snapshot, State

    capsules = {n: CapsuleCounts(c.ready, c.running, c.completed) for n, c in state.capsules}
    if not capsules and state.total:  # OpenMOLE may send the totals only
        capsules = {"jobs": CapsuleCounts(state.ready, state.running, state.completed)}
    environments = [
        EnvironmentCounts(e.name or "environment", e.submitted, e.running, e.done, e.failed)
        for e in state.environments
    ]
    try:
        kind = State(state.state)
    except ValueError:
        kind = State.FAILED if state.error else State.RUNNING
    error = state.error
    return Snapshot(
        execution_id, kind, capsules, environments,
        error=error.message if error else None,
        stack_trace=error.stack_trace if error else None,
        started=started, ended=ended,
    )  # fmt: skip


def error_records(state: ExecutionState) -> list[ErrorRecord]:
    """The environment errors a state carries (those since the last query) as engine records."""
    from .engine.state import ErrorLevel, ErrorRecord

    records = []
    for environment in state.environments:
        for error in environment.errors:
            try:
                level = ErrorLevel(error.level or "FINE")
            except ValueError:
                level = ErrorLevel.FINE
            name = environment.name or "environment"
            records.append(ErrorRecord(error.message, level, name, error.stack_trace))
    return records


# -- connecting ---------------------------------------------------------------------------
def _connect(args: argparse.Namespace) -> MoleClient:
    env = os.environ
    url = args.url or env.get("MOLE_URL")
    if not url:
        raise Usage(
            "no server address: give --url https://HOST:PORT or set MOLE_URL "
            "(`jupyter-mole serve` prints its address when it starts)"
        )
    options: dict[str, Any] = {"api": args.api}
    if args.password_file:
        options["password_file"] = args.password_file
    elif env.get("MOLE_PASSWORD"):
        options["password"] = env["MOLE_PASSWORD"]
    elif env.get("MOLE_PASSWORD_FILE"):
        options["password_file"] = env["MOLE_PASSWORD_FILE"]
    fingerprint = args.fingerprint or env.get("MOLE_FINGERPRINT")
    if args.insecure:
        options["verify"] = False
        _err("warning: --insecure: the server's certificate is not checked")
    elif args.ca_file or env.get("MOLE_CA_FILE"):
        options["verify"] = args.ca_file or env["MOLE_CA_FILE"]
    if fingerprint and not args.insecure and url.startswith("https:"):
        options["fingerprint"] = fingerprint
    try:
        return MoleClient(url, **options)
    except ValueError as e:
        raise Usage(str(e)) from None


def _run(command: Callable[[MoleClient, argparse.Namespace], int]) -> Callable[..., int]:
    """A command with a client: errors to stderr with the server's message, and exit statuses."""

    def handler(args: argparse.Namespace) -> int:
        name = f"{PROG} {args.command}"
        try:
            with _connect(args) as client:
                return command(client, args)
        except Usage as e:
            _err(f"{name}: {e}")
            return EXIT_USAGE
        except MoleClientError as e:
            _err(f"{name}: {e}")
            if args.verbose and e.stack_trace:
                _err(e.stack_trace.rstrip("\n"))
            return EXIT_FAILED
        except (OSError, ValueError, archive.ArchiveError) as e:
            _err(f"{name}: {e}")
            return EXIT_USAGE if isinstance(e, FileNotFoundError | ValueError) else EXIT_FAILED
        except KeyboardInterrupt:
            _err("interrupted")
            return EXIT_INTERRUPTED

    return handler


# -- following an execution ----------------------------------------------------------------
def _times(client: MoleClient, execution_id: str) -> tuple[float | None, float | None]:
    if client.detect() != MOLE:  # only our server says when an execution started
        return None, None
    info = client.info(execution_id)
    return info.started, info.ended


def _follow(client: MoleClient, execution_id: str, args: argparse.Namespace) -> int:
    """Show the execution live until it ends; its exit status. Ctrl-C detaches (130)."""
    try:
        return _show_until_done(client, execution_id, args)
    except KeyboardInterrupt:
        _err(
            f"detached: execution {execution_id} goes on running on the server.\n"
            f"  follow it again: {PROG} output {execution_id} --follow\n"
            f"  stop it:         {PROG} cancel {execution_id}   (or remove it with its files: "
            f"{PROG} remove {execution_id})"
        )
        return EXIT_INTERRUPTED


def _show_until_done(client: MoleClient, execution_id: str, args: argparse.Namespace) -> int:
    from .terminal import format_summary, open_display

    started = _times(client, execution_id)[0] or time.time()
    offset = 0
    with open_display(verbose=args.verbose) as display:
        while True:
            state = client.state(execution_id)  # first: the output read next is then complete
            text, offset = client.output(execution_id, offset)
            display.output(text)
            display.errors(error_records(state))
            display.update(snapshot_of(execution_id, state, started))
            if state.done:
                break
            time.sleep(args.poll)
    ended = _times(client, execution_id)[1] or time.time()
    snapshot = snapshot_of(execution_id, state, started, ended)
    if state.state == "finished":
        print(format_summary(snapshot), flush=True)
        return EXIT_OK
    _err(format_summary(snapshot))
    if state.error is not None:
        _err(f"error: {state.error.message}")
        trace = state.error.stack_trace
        if args.verbose and trace and trace not in display.shown_traces:
            _err(trace.rstrip("\n"))
    return EXIT_FAILED


# -- the commands ----------------------------------------------------------------------------
def _tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Usage(f"--tag {item!r}: give a tag as NAME=VALUE")
        tags[key] = value
    return tags


def _upload_progress() -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress(
        "uploading", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=Console(file=sys.stderr), transient=True,
    )  # fmt: skip
    task = bar.add_task("upload", total=None)
    bar.start()
    return (lambda sent, total: bar.update(task, completed=sent, total=total)), bar.stop


def _preload_display() -> None:
    """Import the display (and the engine's records) before there is anything to detach from.

    A Ctrl-C that lands inside a C extension's import leaves CPython's "unhandled
    KeyboardInterrupt" flag set even when the exception is caught, and the process
    then dies of SIGINT instead of exiting 130 with the detach message.
    """
    from . import terminal  # noqa: F401


def cmd_submit(client: MoleClient, args: argparse.Namespace) -> int:
    tags = _tags(args.tag)
    if args.wait:
        _preload_display()
    if not args.source.exists():
        raise Usage(f"there is no folder or archive {args.source}")
    progress, done = _upload_progress()
    try:
        execution_id = client.start(args.source, args.script, tags or None, progress)
    finally:
        done()
    if not args.wait:
        print(execution_id, flush=True)
        return EXIT_OK
    _err(f"execution {execution_id} started on {client.url}")
    return _follow(client, execution_id, args)


def _state_line(execution_id: str, state: ExecutionState) -> str:
    line = f"{execution_id}  {state.state}"
    if state.total or state.state == "running":
        line += f": {state.completed}/{state.total} jobs completed ({state.running} running, "
        line += f"{state.ready} ready)"
    return line


def cmd_state(client: MoleClient, args: argparse.Namespace) -> int:
    state = client.state(args.id)
    if args.json:
        print(json.dumps(state.to_json(), indent=2))
        return EXIT_OK
    print(_state_line(args.id, state))
    for environment in state.environments:
        print(
            f"  {environment.name or 'environment'}: {environment.submitted} submitted, "
            f"{environment.running} running, {environment.done} done, {environment.failed} failed"
        )
    for record in error_records(state):
        print(f"  [{record.level}] {record.environment}: {record.message}")
    if state.error is not None:
        print(f"error: {state.error.message}")
        if args.verbose and state.error.stack_trace:
            print(state.error.stack_trace.rstrip("\n"))
    return EXIT_OK


def cmd_output(client: MoleClient, args: argparse.Namespace) -> int:
    if args.follow:
        _preload_display()
        return _follow(client, args.id, args)
    text, _ = client.output(args.id)
    sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_OK


def cmd_download(client: MoleClient, args: argparse.Namespace) -> int:
    path = client.download(args.id, args.path, args.output, overwrite=args.overwrite)
    print(path)
    return EXIT_OK


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _row(info: ExecutionInfo) -> list[str]:
    jobs = f"{info.completed}/{info.ready + info.running + info.completed}" if info.state else "-"
    tags = ",".join(f"{k}={v}" for k, v in info.tags.items()) or "-"
    return [info.id, info.state or "-", info.script or "-", _when(info.submitted), jobs, tags]


def cmd_list(client: MoleClient, args: argparse.Namespace) -> int:
    executions = client.list(details=args.details, limit=args.limit)
    if not args.details:
        for execution_id in executions:
            print(execution_id)
        return EXIT_OK
    columns = ["id", "state", "script", "submitted", "jobs", "tags"]
    rows = [_row(info) for info in executions if isinstance(info, ExecutionInfo)]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, box=None, header_style="bold")
        for row in rows:
            table.add_row(*row)
        Console(highlight=False).print(table)
    else:
        for row in [columns, *rows]:
            print("\t".join(row))
    return EXIT_OK


def cmd_cancel(client: MoleClient, args: argparse.Namespace) -> int:
    info = client.cancel(args.id)
    print(f"{args.id} {info.state}: its files stay (`{PROG} remove {args.id}` deletes them)")
    return EXIT_OK


def cmd_remove(client: MoleClient, args: argparse.Namespace) -> int:
    client.remove(args.id)
    print(f"{args.id} removed")
    return EXIT_OK


# -- the parsers -----------------------------------------------------------------------------
def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connecting to the server")
    group.add_argument("--url", help="the server's address, e.g. https://127.0.0.1:8443 (MOLE_URL)")
    group.add_argument(
        "--password-file",
        metavar="FILE",
        help="file whose first line is the password (else MOLE_PASSWORD or MOLE_PASSWORD_FILE)",
    )
    group.add_argument(
        "--fingerprint",
        metavar="AB:CD:...",
        help="accept only the certificate with this SHA-256 fingerprint, as `jupyter-mole serve` "
        "prints it (MOLE_FINGERPRINT)",
    )
    group.add_argument(
        "--ca-file", metavar="PEM", help="trust the certificates in this file (MOLE_CA_FILE)"
    )
    group.add_argument(
        "--insecure", action="store_true", help="do not check the server's certificate at all"
    )
    group.add_argument(
        "--api",
        choices=["auto", "job", "token"],
        default="auto",
        help="the API to speak: found out by default; 'job' or 'token' for OpenMOLE's",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also print stack traces of errors"
    )
    return common


def _add(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    command: Callable[[MoleClient, argparse.Namespace], int],
    common: argparse.ArgumentParser,
    summary: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    description = description or summary[0].upper() + summary[1:] + "."
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, parents=[common], help=summary, description=description
    )
    parser.set_defaults(handler=_run(command), command=name)
    return parser


def _poll(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll", type=float, default=0.5, metavar="S", help="seconds between polls (0.5)"
    )


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands on ``jupyter-mole``'s parser."""
    common = _connection_options()
    p = _add(
        subparsers, "submit", cmd_submit, common,
        "send a folder to a server and start a script in it",
        "Pack DIR (or send a tar.gz as is) and start SCRIPT in it on the server; print the "
        "execution's id. With --wait, follow it live and exit with its status (0 finished, "
        "1 failed); Ctrl-C then only detaches (exit 130): the execution goes on running, "
        f"`{PROG} output ID --follow` follows it again and `{PROG} cancel ID` stops it.",
    )  # fmt: skip
    p.add_argument("source", type=Path, metavar="DIR", help="the work directory (or a tar.gz)")
    p.add_argument("--script", required=True, help="the script's path, relative to DIR")
    p.add_argument(
        "--tag", action="append", default=[], metavar="NAME=VALUE", help="label the execution"
    )
    p.add_argument("--wait", action="store_true", help="follow the execution until it ends")
    _poll(p)
    p = _add(subparsers, "state", cmd_state, common, "show an execution's state")
    p.add_argument("id", help="the execution's id")
    p.add_argument("--json", action="store_true", help="print the state as the API's JSON")
    p = _add(
        subparsers, "output", cmd_output, common, "print what an execution printed",
        "Print what an execution printed. With --follow, go on printing it live until the "
        "execution ends, and exit with its status; Ctrl-C stops following (exit 130), not the "
        "execution.",
    )  # fmt: skip
    p.add_argument("id", help="the execution's id")
    p.add_argument("--follow", "-f", action="store_true", help="follow until the execution ends")
    _poll(p)
    p = _add(
        subparsers, "download", cmd_download, common,
        "fetch a file or folder of an execution's work directory",
        "Fetch a file or folder of an execution's work directory (the whole of it by default) "
        "and print where it was written. An existing destination is never replaced without "
        "--overwrite.",
    )  # fmt: skip
    p.add_argument("id", help="the execution's id")
    p.add_argument("path", nargs="?", default="", help="inside the work directory (default: all)")
    p.add_argument(
        "-o", "--output", type=Path, metavar="DEST", help="where to write it (default: its name)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p = _add(subparsers, "list", cmd_list, common, "list the server's executions")
    p.add_argument(
        "--details", action="store_true", help="state, script, submission time, jobs and tags"
    )
    p.add_argument("--limit", type=int, metavar="N", help="at most N executions, newest first")
    p = _add(
        subparsers, "cancel", cmd_cancel, common, "stop an execution and keep its files",
        "Stop an execution; its files and logs stay, and its state reads cancelled "
        "(a jupyter-mole server only: OpenMOLE can only remove).",
    )  # fmt: skip
    p.add_argument("id", help="the execution's id")
    p = _add(
        subparsers, "remove", cmd_remove, common, "stop an execution and delete it with its files"
    )
    p.add_argument("id", help="the execution's id")
