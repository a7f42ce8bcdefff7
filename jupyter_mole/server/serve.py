"""``jupyter-mole serve``: run the REST server in the foreground, as ``openmole --rest`` does.

HTTPS by default with a self-signed certificate made on first start and kept
in the state directory; its SHA-256 fingerprint is printed so that clients can
pin it. The password comes from ``--password-file`` (the way to run it as a
daemon), ``MOLE_PASSWORD``, or a prompt; without one the server does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
from pathlib import Path

from .. import archive
from ..argtypes import positive_int

__all__ = ["add_parser", "cmd_serve", "default_state_directory"]


def default_state_directory() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "jupyter-mole" / "server"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve OpenMOLE's REST API (both generations) with the embedded engine",
        description="Serve OpenMOLE's REST API, the token API and the /job API, on one port, "
        "running workflows on the embedded engine.",
    )
    p.add_argument(
        "--port", type=int, default=8443, help="port to listen on (default 8443; 0: any free port)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)"
    )
    p.add_argument("--password-file", help="file whose first line is the password (for daemons)")
    p.add_argument(
        "--no-password",
        action="store_true",
        help="no password at all (allowed on a loopback address only)",
    )
    p.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    p.add_argument(
        "--certfile",
        help="TLS certificate (PEM); default: a self-signed one in the state directory",
    )
    p.add_argument("--keyfile", help="TLS private key (PEM) of --certfile")
    p.add_argument(
        "--state-dir",
        type=Path,
        help=f"where executions are kept (default {default_state_directory()})",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes of the local Dask cluster (default: one per core)",
    )
    p.add_argument(
        "--max-upload", type=positive_int, default=archive.DEFAULT_MAX_UPLOAD, metavar="BYTES",
        help="largest upload accepted, in bytes (default 1 GiB)",
    )  # fmt: skip
    p.add_argument(
        "--max-unpacked", type=positive_int, default=archive.DEFAULT_MAX_UNPACK, metavar="BYTES",
        help="most bytes an upload may unpack to (default 4 GiB)",
    )  # fmt: skip
    p.add_argument(
        "--max-files", type=positive_int, default=archive.DEFAULT_MAX_FILES, metavar="N",
        help=f"most files and folders an upload may hold (default {archive.DEFAULT_MAX_FILES:,})",
    )  # fmt: skip
    p.add_argument(
        "--token-duration-ms", type=positive_int, default=86_400_000, help=argparse.SUPPRESS
    )  # for tests: how long a token lives
    p.add_argument(
        "--login-block-seconds", type=float, default=60.0, help=argparse.SUPPRESS
    )  # for tests: how long repeated wrong passwords block an address at first
    p.add_argument(
        "--url-file", type=Path, help=argparse.SUPPRESS
    )  # for tests and the Jupyter extension
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import MoleServer, ServerOptions
    from .auth import PasswordError, resolve_password
    from .tls import ensure_self_signed, fingerprint_sha256, ssl_context

    state_dir: Path = (args.state_dir or default_state_directory()).resolve()
    try:
        password = resolve_password(
            password_file=args.password_file,
            env=os.environ,
            interactive=sys.stdin.isatty(),
            prompt=lambda: getpass.getpass("password for the server: "),
            no_password=args.no_password,
            host=args.host,
        )
    except PasswordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    context = None
    fingerprint = None
    if not args.http:
        try:
            if args.certfile or args.keyfile:
                if not (args.certfile and args.keyfile):
                    print("error: give both --certfile and --keyfile", file=sys.stderr)
                    return 2
                certfile, keyfile = Path(args.certfile), Path(args.keyfile)
            else:
                paths = ensure_self_signed(state_dir, [args.host])
                certfile, keyfile = paths.certfile, paths.keyfile
            context = ssl_context(certfile, keyfile)
            fingerprint = fingerprint_sha256(certfile)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    options = ServerOptions(
        state_directory=state_dir,
        host=args.host,
        port=args.port,
        password=password,
        ssl_context=context,
        max_upload=args.max_upload,
        max_unpacked=args.max_unpacked,
        max_files=args.max_files,
        token_duration_ms=args.token_duration_ms,
        login_block_seconds=args.login_block_seconds,
        workers=args.workers,
    )
    return asyncio.run(_serve(MoleServer, options, fingerprint, args.url_file))


async def _serve(
    server_class: type, options: object, fingerprint: str | None, url_file: Path | None
) -> int:
    server = server_class(options)
    try:
        server.start()
    except OSError as e:
        print(
            f"error: cannot listen on {options.host}:{options.port}: {e.strerror}", file=sys.stderr
        )  # type: ignore[attr-defined]
        await server.stop()
        return 2
    print(f"jupyter-mole serving OpenMOLE's REST API (token and /job) at {server.url}", flush=True)
    if fingerprint:
        print(f"certificate SHA-256 fingerprint: {fingerprint}", flush=True)
    print(f"executions kept in {options.state_directory}", flush=True)  # type: ignore[attr-defined]
    if server.manager.interrupted:
        print(
            f"{len(server.manager.interrupted)} execution(s) interrupted by the last stop "
            "are marked failed",
            flush=True,
        )
    if url_file is not None:
        tmp = url_file.with_suffix(".tmp")
        tmp.write_text(server.url + "\n")
        tmp.replace(url_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("stopping: running executions are recorded as interrupted", flush=True)
    await server.stop()
    return 0
