"""``%%mole script.oms`` and the ``%mole`` line magics.

The cell magic writes the cell to the script file in the notebook's folder,
sends that folder to the server, shows the live view, and (unless told not to)
waits; Ctrl-C while waiting cancels the execution and still raises, so that
queued cells stop. Line magics print for a person, not raw JSON.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .. import archive, connection
from .handle import Execution
from .view import Follower, show

__all__ = ["MoleMagics"]


def _tags(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag takes key=value, got {item!r}")
        tags[key] = value
    return tags


def _notebook_path(user_ns: dict[str, Any]) -> str | None:
    """The notebook this kernel runs, as Jupyter tells kernels (or None in plain IPython)."""
    for candidate in (user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


@magics_class
class MoleMagics(Magics):
    """The ``mole`` magics; one instance per IPython shell."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.connection: connection.Connection | None = None
        self._client: Any = None

    # -- the server ----------------------------------------------------------------------
    def client(self) -> Any:
        """The client of the server in use, found (or started) on first use."""
        if self._client is None:
            from ..client import MoleClient

            found = connection.resolve(self.connection)
            self._client = MoleClient(
                found.url,
                password=found.password,
                fingerprint=found.fingerprint,
                verify=found.ca_file or True,
            )
            self.connection = found
        return self._client

    # -- the magic ---------------------------------------------------------------------
    @line_cell_magic
    def mole(self, line: str, cell: str | None = None) -> Any:
        """Run a workflow script on the server (cell), or manage executions (line).

        Cell: ``%%mole script.oms [--no-wait] [-o NAME] [--timeout S] [--download PATH ...] [--tag k=v]``
        writes the cell to ``script.oms`` in the notebook's folder, sends the folder and
        runs it; the cell's value is the execution.

        Line: ``%mole list | status | connect URL | state ID | output ID | download ID [PATH] [--to DIR]
        | cancel ID | remove ID``.
        """
        if cell is not None:
            with _reported("%%mole"):
                return self.run_cell(line, cell)
            return None
        words = shlex.split(line)
        if not words:
            print(self.mole.__doc__)
            return None
        command, rest = words[0], " ".join(shlex.quote(w) for w in words[1:])
        handler = getattr(self, f"line_{command}", None)
        if handler is None:
            print(f"%mole {command}: unknown command; try %mole list, status, connect, state, "
                  f"output, download, cancel or remove")  # fmt: skip
            return None
        with _reported(f"%mole {command}"):
            return handler(rest)
        return None

    @magic_arguments()
    @argument("script", help="the script file to write the cell to, in the notebook's folder")
    @argument("--no-wait", action="store_true", help="return at once; the view keeps updating")
    @argument("-o", "--output", metavar="NAME", help="store the execution handle in this variable")
    @argument(
        "--timeout", type=float, help="stop waiting after this many seconds (the run goes on)"
    )
    @argument("--download", nargs="+", default=[], metavar="PATH", help="fetch these when finished")
    @argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="tag the execution")
    def run_cell(self, line: str, cell: str) -> Execution | None:
        """``%%mole script.oms``: write, send, run, watch."""
        args = parse_argstring(self.run_cell, line)
        folder = Path.cwd()
        script = folder / args.script
        try:
            script.relative_to(folder)
        except ValueError:
            print(f"{args.script}: the script must be inside the notebook's folder ({folder})")
            return None
        tags = _tags(args.tag)
        notebook = _notebook_path(self.shell.user_ns)
        if notebook:
            tags.setdefault("notebook", notebook)
        tmp = script.with_name(f".{script.name}.tmp")
        tmp.write_text(cell)
        tmp.replace(script)
        client = self.client()
        with tempfile.TemporaryDirectory(prefix="mole-upload-") as scratch:
            upload = Path(scratch) / "workDirectory.tgz"
            try:
                archive.pack(folder, upload, progress=_Progress("packing").update)
            except archive.ArchiveTooLarge as e:
                print(e)
                return None
            execution_id = client.start(
                upload,
                str(script.relative_to(folder)),
                tags=tags,
                progress=_Progress("sending").update,
            )
        execution = Execution(client, execution_id, args.script, folder)
        if args.output:
            self.shell.user_ns[args.output] = execution
        view = show(execution, background=args.no_wait)
        if args.no_wait:
            return execution
        self._wait(execution, view, args.timeout)
        if args.download:
            state = execution.state()
            if state.state == "finished":
                for path in args.download:
                    print(f"downloaded {execution.download(path)}")
            else:
                print(f"nothing downloaded: the execution is {state.state}")
        return execution

    def _wait(self, execution: Execution, view: Any, timeout: float | None) -> None:
        """Drive the view until the end; Ctrl-C cancels the execution and re-raises."""
        follower: Follower = view.follower
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not follower.step():
                if deadline is not None and time.monotonic() > deadline:
                    print(
                        f"still running after {timeout:g} s; the execution goes on: {execution.id}"
                    )
                    follower.start_background()
                    return
                time.sleep(0.5)
        except KeyboardInterrupt:
            print(f"interrupted: cancelling {execution.id}")
            try:
                execution.cancel()
                follower.step()
            finally:
                raise

    # -- line commands -------------------------------------------------------------------
    def line_list(self, rest: str) -> None:
        client = self.client()
        infos = client.list(details=True)
        if not infos:
            print("no executions")
            return
        rows = [("id", "state", "script", "jobs", "notebook", "age")]
        now = time.time()
        for info in infos:
            if isinstance(info, str):
                rows.append((info, "", "", "", "", ""))
                continue
            age = f"{int(now - info.submitted)} s" if info.submitted else ""
            rows.append(
                (info.id, info.state or "", info.script or "", f"{info.completed}/{info.ready + info.running + info.completed}",
                 (info.tags or {}).get("notebook", ""), age)
            )  # fmt: skip
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip())

    def line_status(self, rest: str) -> None:
        client = self.client()
        info = client.service_info()
        assert self.connection is not None
        print(f"connected to {client.kind} at {self.connection.url} ({self.connection.source})")
        print(f"version {info.version}; API: {', '.join(info.generations)}; engine: {info.engine}")

    @magic_arguments()
    @argument("url", help="the server's address, e.g. https://host:8443")
    @argument("--password-file", help="a file whose first line is the password")
    @argument("--fingerprint", help="the server certificate's SHA-256 fingerprint, to pin it")
    def line_connect(self, rest: str) -> None:
        """``%mole connect URL [--password-file F] [--fingerprint FP]``"""
        args = parse_argstring(self.line_connect, rest)
        password = None
        if args.password_file:
            password = Path(args.password_file).read_text().splitlines()[0].strip()
        self.connection = connection.Connection(
            args.url.rstrip("/"), password, args.fingerprint, source="connect"
        )
        self._client = None
        self.line_status("")

    def _execution(self, execution_id: str) -> Execution:
        return Execution(self.client(), execution_id, folder=Path.cwd())

    def line_state(self, rest: str) -> None:
        state = self._execution(rest.strip()).state()
        from .view import TextView

        print(TextView(self._execution(rest.strip())).progress_line(state))
        if state.error is not None:
            print(state.error.message)

    def line_output(self, rest: str) -> None:
        print(self._execution(rest.strip()).output(), end="")

    @magic_arguments()
    @argument("id")
    @argument(
        "path", nargs="?", default="", help="a file or folder of the work directory (default all)"
    )
    @argument("--to", help="where to put it (default: a folder named after the execution)")
    @argument("--overwrite", action="store_true", help="replace what is already there")
    def line_download(self, rest: str) -> None:
        args = parse_argstring(self.line_download, rest)
        path = self._execution(args.id).download(args.path, args.to, overwrite=args.overwrite)
        print(f"downloaded {path}")

    def line_cancel(self, rest: str) -> None:
        self._execution(rest.strip()).cancel()
        print(f"cancelled {rest.strip()}")

    def line_remove(self, rest: str) -> None:
        self._execution(rest.strip()).remove()
        print(f"removed {rest.strip()}")


@contextlib.contextmanager
def _reported(what: str) -> Iterator[None]:
    """What the user got wrong (or the server refused) prints as a message, not a traceback."""
    from ..client import MoleClientError

    try:
        yield
    except (
        MoleClientError,
        archive.ArchiveError,
        connection.NoServerError,
        ValueError,
        OSError,
    ) as e:
        print(f"{what}: {e}", file=sys.stderr)
    except UsageError as e:
        print(f"{what}: {e}", file=sys.stderr)


class _Progress:
    """Upload and packing progress, printed once a large transfer is under way."""

    def __init__(self, what: str, threshold: int = 50 * 1024 * 1024) -> None:
        self.what = what
        self.threshold = threshold
        self.last = 0.0

    def update(self, done: int, total: int) -> None:
        if total < self.threshold:
            return
        now = time.monotonic()
        if now - self.last >= 1 or done >= total:
            self.last = now
            print(
                f"\r{self.what}: {done / 2**20:.0f} / {total / 2**20:.0f} MiB",
                end="" if done < total else "\n",
            )
