"""``%%mole script.oms`` and the ``%mole`` line magics.

The cell magic writes the cell to the script file in the notebook's folder,
sends that folder to the server, shows the live view, and (unless told not to)
waits: in a kernel by awaiting, so that the view's buttons work meanwhile
(see ``awaiting``), elsewhere by polling. A cell that waits fails when the
execution does not finish, so that queued cells stop: Ctrl-C cancels the
execution and still raises ``KeyboardInterrupt``; an execution that fails (or
that someone else cancels) raises :class:`ExecutionFailed` with its error,
once the view shows the end.
Line magics print for a person, not raw JSON.
"""

from __future__ import annotations

import contextlib
import inspect
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
from ..protocol import ExecutionState
from .awaiting import wait_in_loop
from .errors import ExecutionFailed
from .handle import Execution
from .view import Follower, progress_line, show

__all__ = ["MoleMagics"]

PROGRESS_THRESHOLD = 50 * 1024 * 1024
"""Packing and sending print their progress for folders larger than this (bytes)."""

_KINDS = {
    "jupyter-mole": "jupyter-mole (ours)",
    "openmole-job": "OpenMOLE (/job API)",
    "openmole-token": "OpenMOLE (token API)",
}
_ABOUT_AN_EXECUTION = ("state", "output", "download", "cancel", "remove")
_SOURCES = {
    "connect": "%mole connect",
    "environment": "MOLE_URL",
    "connection file": "the connection file",
    "started": "started by this kernel",
}


def _max_upload() -> int:
    """The packing size cap: ``MOLE_MAX_UPLOAD`` (bytes, or with a K, M or G suffix)."""
    text = os.environ.get("MOLE_MAX_UPLOAD", "").strip()
    if not text:
        return archive.DEFAULT_MAX_UPLOAD
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number, scale = text.lower().rstrip("ib"), 1
    if number and number[-1] in units:
        number, scale = number[:-1], units[number[-1]]
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise ValueError(
            f"MOLE_MAX_UPLOAD={text!r}: give a size in bytes, or with a K, M or G suffix"
        ) from None
    if value <= 0:
        raise ValueError(f"MOLE_MAX_UPLOAD={text!r}: the size cap must be positive")
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tags(items: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag takes key=value, got {item!r}")
        tags[key] = value
    return tags


def _notebook_path(user_ns: dict[str, Any]) -> str | None:
    """The notebook this kernel runs, relative to the Jupyter server's root when it is known.

    Jupyter tells a kernel its notebook in ``JPY_SESSION_NAME`` (ipykernel copies
    it to ``__session__``). jupyter_server 2 makes it the notebook's absolute path
    when the front end names the file, as JupyterLab does; else the path relative
    to its root. The sidebar and the extension name notebooks and scripts relative
    to the root, so the tag does too: our server extension hands the root to the
    kernels (``MOLE_JUPYTER_ROOT``). None in plain IPython.
    """
    for candidate in (user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME")):
        if isinstance(candidate, str) and candidate:
            return _relative_to_root(candidate, os.environ.get(connection.ROOT_VARIABLE))
    return None


def _relative_to_root(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` (in POSIX form, as Jupyter's API paths), if inside it."""
    if not root or not Path(path).is_absolute():
        return path
    pairs = [(Path(os.path.normpath(path)), Path(os.path.normpath(root)))]
    with contextlib.suppress(OSError):  # a root reached through a symbolic link
        pairs.append((Path(path).resolve(), Path(root).resolve()))
    for absolute, base in pairs:
        if absolute.is_relative_to(base) and absolute != base:
            return absolute.relative_to(base).as_posix()
    return path


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
        if (
            self._client is not None
            and self.connection is not None
            and self.connection.pid is not None
            and not _pid_alive(self.connection.pid)
        ):  # the embedded server we used has gone: find (or start) the current one
            self._client.close()
            self._client = None
            self.connection = None
        if self._client is None:
            from ..client import MoleClient

            found = connection.resolve(self.connection)
            client = MoleClient(found.url, **found.client_options())
            self._client, self.connection = client, found
        return self._client

    # -- the magic ---------------------------------------------------------------------
    @line_cell_magic
    def mole(self, line: str, cell: str | None = None) -> Any:
        """Run a workflow script on the server (cell), or manage executions (line).

        Cell: ``%%mole script.oms [--no-wait] [-o NAME] [--timeout S] [--download PATH ...] [--tag k=v]``
        writes the cell to ``script.oms`` in the notebook's folder, sends the folder and
        runs it; the cell's value is the execution. Waiting, a run that fails (or that
        someone cancels) fails the cell: ``ExecutionFailed``, with the run's error.

        Line: ``%mole list | status | connect URL | state ID | output ID | download ID [PATH] [--to DIR]
        | cancel ID | remove ID``.
        """
        if line.strip() in ("-h", "--help", "help"):
            print(self.mole.__doc__)
            return None
        if cell is not None:
            with _reported("%%mole"):
                args, execution, view = self.submit(line, cell, wait_here=True)
                if args.no_wait:
                    return execution
                return self.after(args, execution, self._wait(execution, view, args.timeout))
            return None  # not reached: _reported raises
        words = shlex.split(line)
        if not words:
            print(self.mole.__doc__)
            return None
        command, rest = words[0], " ".join(shlex.quote(w) for w in words[1:])
        handler = getattr(self, f"line_{command}", None)
        if handler is None:
            raise UsageError(
                f"%mole {command}: unknown command; try %mole list, status, connect, state, "
                "output, download, cancel or remove"
            )
        about = words[1] if command in _ABOUT_AN_EXECUTION and len(words) > 1 else None
        with _reported(f"%mole {command}", about):
            return handler(rest)
        return None  # not reached: _reported raises

    @magic_arguments(name="%mole")
    @argument("script", help="the script file to write the cell to, in the notebook's folder")
    @argument("--no-wait", action="store_true", help="return at once; the view keeps updating")
    @argument("-o", "--output", metavar="NAME", help="store the execution handle in this variable")
    @argument(
        "--timeout",
        type=float,
        metavar="S",
        help="stop waiting after this many seconds (the run goes on)",
    )
    @argument("--download", nargs="+", default=[], metavar="PATH", help="fetch these when finished")
    @argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="tag the execution")
    def run_cell(self, line: str, cell: str) -> Execution | None:
        """``%%mole script.oms``: write, send, run, watch."""
        return self.mole(line, cell)

    async def awaited_cell(self, line: str, cell: str) -> Execution | None:
        """``%%mole`` in a kernel: the same, but waiting by awaiting (see ``awaiting``)."""
        if line.strip() in ("-h", "--help", "help"):
            print(self.mole.__doc__)
            return None
        with _reported("%%mole"):
            args, execution, view = self.submit(line, cell, wait_here=False)
            if args.no_wait:
                return execution
            ended = await wait_in_loop(execution, view, args.timeout)
            return self.after(args, execution, ended)
        return None  # not reached: _reported raises

    def submit(self, line: str, cell: str, wait_here: bool) -> tuple[Any, Execution, Any]:
        """Write the script, pack and send the folder, show the view: (args, execution, view).

        ``wait_here``: the caller polls for the view (a blocking wait); else the view polls
        from the event loop.
        """
        args = parse_argstring(self.run_cell, line)
        folder = Path.cwd().resolve()
        script = (folder / args.script).resolve()
        if not script.is_relative_to(folder) or script == folder:
            raise ValueError(
                f"{args.script}: the script must be a file inside the notebook's folder ({folder})"
            )
        tags = _tags(args.tag)
        notebook = _notebook_path(self.shell.user_ns)
        if notebook:
            tags.setdefault("notebook", notebook)
        max_upload = _max_upload()
        script.parent.mkdir(parents=True, exist_ok=True)
        tmp = script.with_name(f".{script.name}.tmp")
        tmp.write_text(cell)
        tmp.replace(script)
        client = self.client()
        with tempfile.TemporaryDirectory(prefix="mole-upload-") as scratch:
            upload = Path(scratch) / "workDirectory.tgz"
            try:
                archive.pack(
                    folder, upload, max_bytes=max_upload, progress=_Progress("packing").update
                )
            except archive.ArchiveTooLarge as e:
                raise archive.ArchiveTooLarge(
                    f"{e}\n(or raise the cap: MOLE_MAX_UPLOAD=2G, in the environment)",
                    total=e.total,
                    limit=e.limit,
                    largest=e.largest,
                ) from None
            execution_id = client.start(
                upload,
                str(script.relative_to(folder)),
                tags=tags,
                progress=_Progress("sending").update,
            )
        execution = Execution(client, execution_id, str(script.relative_to(folder)), folder)
        if args.output:
            self.shell.user_ns[args.output] = execution
        view = show(execution, background=args.no_wait or not wait_here)
        return args, execution, view

    def after(self, args: Any, execution: Execution, ended: ExecutionState | None) -> Execution:
        """Once waited: fail the cell if the run did not finish, else download; the handle."""
        if ended is not None and ended.state != "finished":
            # The view shows the end already; failing the cell stops "Run all" here.
            raise ExecutionFailed(execution, ended)
        if args.download:
            state = ended or execution.state()
            if state.state == "finished":
                for path in args.download:
                    print(f"downloaded {execution.download(path)}")
            else:
                print(f"nothing downloaded: the execution is {state.state}")
        return execution

    def _wait(
        self, execution: Execution, view: Any, timeout: float | None
    ) -> ExecutionState | None:
        """Drive the view until the end, and return the last state (None after ``timeout``).

        Ctrl-C cancels the execution, lets the view show it, and re-raises; if the server
        cannot cancel it (OpenMOLE cancels only by removing), the view polls on, from the
        event loop where there is one.
        """
        follower: Follower = view.follower
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not follower.step():
                if deadline is not None and time.monotonic() > deadline:
                    print(
                        f"still running after {timeout:g} s; the execution goes on: {execution.id}"
                    )
                    follower.start_background()
                    return None
                time.sleep(0.5)
            return follower.state
        except KeyboardInterrupt:
            print(f"interrupted: cancelling {execution.id}", file=sys.stderr)
            try:
                execution.cancel()
                follower.step()
            except Exception as e:  # say so, and still raise: queued cells must stop
                print(f"could not cancel {execution.id}: {e}", file=sys.stderr)
                follower.start_background()  # it runs on: so must its view
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
            # OpenMOLE lists ids only: no state, no counts (blank, not 0/0)
            total = info.ready + info.running + info.completed
            jobs = f"{info.completed}/{total}" if info.state is not None else ""
            rows.append(
                (info.id, info.state or "", info.script or "", jobs,
                 (info.tags or {}).get("notebook", ""), age)
            )  # fmt: skip
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip())

    def line_status(self, rest: str) -> None:
        client = self.client()
        info = client.service_info()
        found = self.connection
        assert found is not None
        kind = _KINDS.get(client.kind, client.kind)
        how = _SOURCES.get(found.source, found.source)
        if found.kind == "embedded":
            how = f"embedded server (pid {found.pid}), {how}"
        print(f"connected to {kind} at {found.url} ({how})")
        version = f"version {info.version}; " if info.version else ""
        print(f"{version}API generation: {', '.join(info.generations)}; engine: {info.engine}")

    # The options of the command-line client's "connecting to the server" group, minus --url.
    @magic_arguments(name="mole connect")
    @argument("url", help="the server's address, e.g. https://host:8443")
    @argument("--password-file", metavar="FILE", help="a file whose first line is the password")
    @argument(
        "--fingerprint",
        metavar="AB:CD:...",
        help="accept only the certificate with this SHA-256 fingerprint (a self-signed server)",
    )
    @argument("--ca-file", metavar="PEM", help="trust the certificates in this file")
    @argument(
        "--insecure", action="store_true", help="do not check the server's certificate at all"
    )
    @argument(
        "--api",
        choices=connection.APIS,
        default="auto",
        help="the API to speak: found out by default; 'job' or 'token' for OpenMOLE's",
    )
    def line_connect(self, rest: str) -> None:
        """``%mole connect URL [--password-file F] [--fingerprint FP | --ca-file PEM | --insecure] [--api A]``"""
        from ..client import MoleClient
        from ..client.base import read_password_file

        args = parse_argstring(self.line_connect, rest)
        if args.insecure and (args.fingerprint or args.ca_file):
            raise UsageError("--insecure checks nothing: give it alone, or pin or trust instead")
        if args.ca_file and not Path(args.ca_file).expanduser().is_file():
            raise UsageError(f"--ca-file: there is no file {args.ca_file}")
        password = read_password_file(args.password_file) if args.password_file else None
        wanted = connection.Connection(
            args.url.rstrip("/"),
            password,
            args.fingerprint,
            str(Path(args.ca_file).expanduser()) if args.ca_file else None,
            source="connect",
            verify_tls=not args.insecure,
            api=args.api,
        )
        if args.insecure and wanted.url.startswith("https:"):
            print("warning: --insecure: the server's certificate is not checked", file=sys.stderr)
        client = MoleClient(wanted.url, **wanted.client_options())
        try:
            client.list()  # an authenticated call: a wrong password says so now, not later
        except BaseException:
            client.close()
            raise
        if self._client is not None:
            self._client.close()
        self._client, self.connection = client, wanted
        self.line_status("")

    def _execution(self, execution_id: str) -> Execution:
        return Execution(self.client(), execution_id, folder=Path.cwd())

    def line_state(self, rest: str) -> None:
        execution = self._execution(rest.strip())
        state = execution.state()
        print(progress_line(state))
        if state.error is not None:
            print(state.error.message)

    def line_output(self, rest: str) -> None:
        print(self._execution(rest.strip()).output(), end="")

    @magic_arguments(name="mole download")
    @argument("id", help="the execution")
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


# ``%mole?`` (and ``%mole -h``) show the options of every form, as magic_arguments wrote them.
MoleMagics.mole.__doc__ = "\n".join(
    [
        inspect.cleandoc(MoleMagics.mole.__doc__ or ""),
        f"\nThe cell magic's options{MoleMagics.run_cell.__doc__}",
        f"``%mole connect``{MoleMagics.line_connect.__doc__}",
        f"``%mole download``{MoleMagics.line_download.__doc__}",
    ]
)


@contextlib.contextmanager
def _reported(what: str, execution_id: str | None = None) -> Iterator[None]:
    """What the user got wrong (or the server refused) fails the cell with one line, no traceback."""
    from ..client import MoleClientError, NotFound

    try:
        yield
    except NotFound as e:
        about = f"execution {execution_id}: " if execution_id else ""
        raise UsageError(f"{what}: {about}{e}") from None
    except (
        MoleClientError,
        archive.ArchiveError,
        connection.NoServerError,
        ValueError,
        OSError,
    ) as e:
        # A UsageError shows as one line, without a traceback, and still fails the cell,
        # so that a notebook's queued cells stop.
        raise UsageError(f"{what}: {e}") from None
    except UsageError as e:
        if str(e).startswith(what):
            raise
        raise UsageError(f"{what}: {e}") from None


class _Progress:
    """Upload and packing progress, printed once a large transfer is under way."""

    def __init__(self, what: str, threshold: int | None = None) -> None:
        self.what = what
        self.threshold = PROGRESS_THRESHOLD if threshold is None else threshold
        self.last = 0.0
        self.ended = False

    def update(self, done: int, total: int) -> None:
        if total < self.threshold or self.ended:
            return
        now = time.monotonic()
        if now - self.last >= 1 or done >= total:
            self.last = now
            self.ended = done >= total
            percent = 100 * done // total if total else 100
            print(
                f"\r{self.what}: {archive.format_size(done)} / {archive.format_size(total)} "
                f"({percent}%)",
                end="" if done < total else "\n",
                flush=True,
            )
