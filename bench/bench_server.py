"""Server: /state latency under 50 pollers, and a 1 GiB work directory up and down.

Why: the REST server shares one process (and one tornado loop) with the
engine's loop and the Dask scheduler, and it moves work directories that can
weigh a gigabyte. Two promises are measured against peers taken in the same
run on the same machine, on a real ``jupyter-mole serve`` process (plain HTTP,
with a password, so every request checks a token):

1. ``GET /job/{id}/state`` stays quick while executions run: 50 concurrent
   pollers (one keep-alive connection each, as fast as they can, spread over 4
   running executions whose jobs sleep 0.2 s each) for ``--seconds``; every
   latency is recorded. The peer is a trivial tornado handler (a constant
   small JSON) in a separate process, hammered by the same poller code for the
   same time, while the same executions run. Target: ``p99(/state) /
   p99(trivial) <= 3``.
2. A work directory of incompressible files (``--gib``, 16 files by default
   1 GiB) goes up as a tar.gz (``POST /job``, multipart, streamed from the
   file) and comes back (``GET /job/{id}/workDirectory/``, a tar.gz stream).
   The server process's peak RSS may grow by less than 100 MB over its
   baseline (RSS once the server is up and a tiny execution has run, so its
   Dask cluster exists) in both directions, and upload plus unpack (request
   start to the 200 answer, the script loaded and started) may take at most 2
   times ``tar xzf`` of the same archive into a fresh folder. Peak RSS is read
   both from the kernel's high-water mark (``VmHWM``, reset through
   ``/proc/PID/clear_refs`` before each phase) and from psutil samples every
   50 ms; the larger is judged.

This is a report, not a test: it prints PASS/FAIL against the targets and
always exits 0. The temporary data (about 6 times ``--gib`` on disk) is removed
at the end, even on failure.

Run: ``.venv/bin/python bench/bench_server.py [--seconds S] [--pollers N] [--gib G] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import tornado

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.servers

from bench.server_load import (  # noqa: E402
    Api,
    PollResult,
    RssWatch,
    TimedFile,
    _load,
    _mb,
    _ms,
    _percentile,
    _run,
    _table,
    _tar_xzf,
    _tiny_archive,
    _verdict,
    poll,
)
from tests.servers import PASSWORD, serve_process  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
N_FILES = 16
SLEEP_S = 0.2
POINTS = 400
TARGET_P99_RATIO = 3.0
TARGET_RSS_MB = 100.0
TARGET_UPLOAD_RATIO = 2.0
PEER_BODY = json.dumps({"state": "running", "ready": 0, "running": 2, "completed": 10})

SLEEPY_SCRIPT = f"""
import time

x = Val(int)


@PythonTask(inputs=[x])
def nap(x):
    time.sleep({SLEEP_S})
    return {{}}


DirectSampling(evaluation=nap.on(LocalEnvironment(2)), sampling=x.in_(range({POINTS})))
"""

TINY_SCRIPT = """
x = Val(int)
y = Val(int)


@PythonTask(inputs=[x], outputs=[y])
def double(x):
    return {"y": 2 * x}


DirectSampling(evaluation=double.on(LocalEnvironment(2)), sampling=x.in_(range(4)))
"""

EMPTY_SCRIPT = "EmptyTask()\n"


# -- part 1: pollers ----------------------------------------------------------------------
def peer_server(url_file: Path) -> None:
    """The trivial tornado app: any GET answers a constant small JSON (runs in a child)."""
    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    class Trivial(tornado.web.RequestHandler):
        def get(self, *_: str) -> None:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(PEER_BODY)

    async def serve() -> None:
        app = tornado.web.Application([(r"/.*", Trivial)])
        http = tornado.httpserver.HTTPServer(app)
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        http.add_sockets(sockets)
        tmp = url_file.with_suffix(".tmp")
        tmp.write_text(f"http://127.0.0.1:{sockets[0].getsockname()[1]}\n")
        tmp.replace(url_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        http.stop()

    asyncio.run(serve())


@contextlib.contextmanager
def started_peer(folder: Path) -> Iterator[tuple[str, int]]:
    """The trivial tornado app in a child process: (url, pid)."""
    folder.mkdir(parents=True, exist_ok=True)
    url_file = folder / "peer-url.txt"
    process = subprocess.Popen(
        [sys.executable, __file__, "--peer-server", str(url_file)], stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not url_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the trivial tornado server did not start")
            time.sleep(0.05)
        yield url_file.read_text().strip(), process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _poll_row(name: str, r: PollResult) -> tuple[str, ...]:
    lat = r.latencies
    return (
        name,
        f"{len(lat):,}",
        f"{len(lat) / r.seconds:,.0f}",
        _ms(_percentile(lat, 50)),
        _ms(_percentile(lat, 90)),
        _ms(_percentile(lat, 99)),
        _ms(lat[-1]) if lat else "nan",
        f"{r.server_cpu / r.seconds * 100:.0f}%",
        f"{r.client_cpu / r.seconds * 100:.0f}%",
        ", ".join(f"{k} x{v}" for k, v in r.errors.items()) or "0",
    )


def bench_state(args: argparse.Namespace, root: Path) -> list[tuple[str, ...]]:
    """Part 1; returns its ratio row for the summary."""
    print(
        f"part 1: GET /job/{{id}}/state, {args.pollers} pollers ({args.client} client, "
        f"{'as fast as they can' if not args.interval else f'every {args.interval * 1000:g} ms'}) "
        f"for {args.seconds:g} s each, in {args.rounds} alternating rounds, over "
        f"{args.executions} running executions; peer: a trivial tornado handler in its own process",
        flush=True,
    )
    server = serve_process(root / "state-server", password=PASSWORD, https=False)
    api = None
    ids: list[str] = []
    try:
        api = Api(server)
        sleepy = _tiny_archive(root / "sleepy", SLEEPY_SCRIPT)
        ids = [api.start(sleepy) for _ in range(args.executions)]
        time.sleep(2)  # the executions' first chunks are out
        before = [api.state(i) for i in ids]
        paths = [f"/job/{i}/state" for i in ids]
        common: dict[str, Any] = {
            "pollers": args.pollers,
            "seconds": args.seconds / args.rounds,
            "interval": args.interval,
            "client": args.client,
        }
        with started_peer(root / "peer") as (peer_url, peer_pid):
            warm = {**common, "seconds": min(1.0, args.seconds)}
            poll(peer_url, paths, api.headers, peer_pid, **warm)
            poll(server.url, paths, api.headers, server.process.pid, **warm)
            peer, state = PollResult(), PollResult()
            for i in range(args.rounds):  # alternate, so that a disturbance hits both alike
                print(f"  round {i + 1} of {args.rounds}: trivial handler, /state ...", flush=True)
                poll(peer_url, paths, api.headers, peer_pid, **common, out=peer)
                poll(server.url, paths, api.headers, server.process.pid, **common, out=state)
        after = [api.state(i) for i in ids]
    finally:
        if api is not None:
            for i in ids:
                api.remove(i)
            api.close()
        server.stop()

    running = [a["state"] == "running" for a in after]
    progress = sum(a["completed"] for a in after) - sum(b["completed"] for b in before)
    print()
    _table(
        [
            (
                "endpoint",
                "requests",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "server CPU",
                "client CPU",
                "errors",
            ),
            _poll_row("GET /job/{id}/state (jupyter-mole serve)", state),
            _poll_row("trivial tornado handler (peer)", peer),
        ]
    )
    ratio = _percentile(state.latencies, 99) / _percentile(peer.latencies, 99)
    ok = ratio <= TARGET_P99_RATIO and not state.errors and all(running)
    print(
        f"executions still running at the end: {sum(running)} of {len(ids)}; jobs completed "
        f"during the measurements: {progress} ({SLEEP_S} s each, {POINTS} points per execution)"
    )
    p50_ratio = _percentile(state.latencies, 50) / _percentile(peer.latencies, 50)
    print(f"p50 ratio /state / trivial: {p50_ratio:.2f}")
    return [
        (
            "p99 /state / p99 trivial",
            f"{ratio:.2f}",
            f"<= {TARGET_P99_RATIO:g}",
            _verdict(ok),
            "" if all(running) else "the executions did not run throughout",
        )
    ]


# -- part 2: a big work directory ------------------------------------------------------
def _make_folder(folder: Path, total: int) -> None:
    """``N_FILES`` files of random bytes adding up to ``total``, and ``main.oms``."""
    (folder / "data").mkdir(parents=True)
    (folder / "main.oms").write_text(EMPTY_SCRIPT)
    size, block = total // N_FILES, 8 * MIB
    for i in range(N_FILES):
        with open(folder / "data" / f"random-{i:02d}.bin", "wb") as f:
            left = size
            while left > 0:
                f.write(os.urandom(min(block, left)))
                left -= min(block, left)


def bench_transfer(args: argparse.Namespace, root: Path) -> list[tuple[str, ...]]:
    """Part 2; returns its ratio rows for the summary."""
    total = int(args.gib * GIB)
    print(
        f"part 2: a {total / MIB:,.0f} MiB work directory ({N_FILES} files of os.urandom) "
        f"uploaded to POST /job and downloaded from GET /job/{{id}}/workDirectory/; "
        f"peer: tar xzf of the same archive",
        flush=True,
    )
    folder, archive = root / "folder", root / "folder.tgz"
    print("  writing the files ...", flush=True)
    _make_folder(folder, total)
    print("  tar czf ...", flush=True)
    tar_czf = _run(["tar", "czf", str(archive), "-C", str(folder), "."])
    archive_bytes = archive.stat().st_size
    shutil.rmtree(folder)
    print("  tar xzf (the peer) ...", flush=True)
    peer_runs = [_tar_xzf(archive, root / "peer-extract")]

    max_upload = max(2 * GIB, 2 * archive_bytes)
    server = serve_process(
        root / "transfer-server",
        password=PASSWORD,
        https=False,
        extra=("--max-upload", str(max_upload)),
    )
    api = None
    execution_id = None
    try:
        api = Api(server)
        print("  a tiny execution (the Dask cluster starts) ...", flush=True)
        tiny = api.start(_tiny_archive(root / "tiny", TINY_SCRIPT))
        tiny_state = api.wait(tiny)
        if tiny_state["state"] != "finished":
            raise SystemExit(f"the tiny execution ended {tiny_state}")
        api.remove(tiny)
        time.sleep(1)
        watch = RssWatch(server.process.pid)
        baseline = watch.rss()

        print("  upload ...", flush=True)
        os.sync()
        with RssWatch(server.process.pid) as up_watch:
            with TimedFile(archive, "rb") as f:
                start = time.perf_counter()
                answer = api.client.post(
                    "/job",
                    headers=api.headers,
                    data={"script": "main.oms"},
                    files={"workDirectory": ("folder.tgz", f, "application/gzip")},
                )
                upload = time.perf_counter() - start
                sent = (f.eof_at or time.perf_counter()) - start
            if answer.status_code != 200:
                raise SystemExit(f"the upload answered {answer.status_code}: {answer.text[:2000]}")
            execution_id = answer.json()["id"]
        up_state = api.wait(execution_id)
        if up_state["state"] != "finished":
            raise SystemExit(f"the uploaded execution ended {up_state}")
        up_peak, up_sampled = up_watch.peak(), up_watch.sampled_peak()

        print("  download ...", flush=True)
        downloaded = root / "download.tgz"
        time.sleep(1)
        os.sync()
        with RssWatch(server.process.pid) as down_watch:
            start = time.perf_counter()
            with (
                api.client.stream(
                    "GET", f"/job/{execution_id}/workDirectory/", headers=api.headers
                ) as response,
                open(downloaded, "wb") as out,
            ):
                if response.status_code != 200:
                    response.read()
                    raise SystemExit(f"the download answered {response.status_code}")
                first_byte = time.perf_counter() - start
                for chunk in response.iter_raw(1 * MIB):
                    out.write(chunk)
            download = time.perf_counter() - start
        down_peak, down_sampled = down_watch.peak(), down_watch.sampled_peak()
        download_bytes = downloaded.stat().st_size
        listing = subprocess.run(
            ["tar", "tzvf", str(downloaded)], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        downloaded.unlink()
        listed_bytes = sum(int(line.split()[2]) for line in listing if line.startswith("-"))
        listed_files = sum(1 for line in listing if line.startswith("-"))
        end_rss = watch.rss()
        print("  tar xzf again (the peer, second run) ...", flush=True)
        peer_runs.append(_tar_xzf(archive, root / "peer-extract"))
    finally:
        if api is not None:
            if execution_id is not None:
                api.remove(execution_id)
            api.close()
        server.stop()

    up_growth, down_growth = up_peak - baseline, down_peak - baseline
    tar_xzf = sum(peer_runs) / len(peer_runs)
    ratio = upload / tar_xzf
    print()
    _table(
        [
            ("phase", "seconds", "MiB/s", "notes"),
            (
                "tar czf (packing, once)",
                f"{tar_czf:.2f}",
                f"{total / MIB / tar_czf:.0f}",
                f"archive {archive_bytes / MIB:,.1f} MiB",
            ),
            (
                "tar xzf into a fresh folder (peer, mean)",
                f"{tar_xzf:.2f}",
                f"{total / MIB / tar_xzf:.0f}",
                "before the upload, after the download: "
                + ", ".join(f"{r:.2f}" for r in peer_runs),
            ),
            (
                "POST /job: upload + unpack + start",
                f"{upload:.2f}",
                f"{total / MIB / upload:.0f}",
                f"body all sent at {sent:.2f} s, answer {upload - sent:.2f} s later",
            ),
            (
                "GET /job/{id}/workDirectory/",
                f"{download:.2f}",
                f"{total / MIB / download:.0f}",
                f"first byte at {first_byte:.2f} s; {download_bytes / MIB:,.1f} MiB; "
                f"{listed_files} files, {listed_bytes / MIB:,.1f} MiB in it",
            ),
        ]
    )
    print()
    print(
        f"server RSS (MB): baseline {_mb(baseline)}; upload peak {_mb(up_peak)} "
        f"(sampled {_mb(up_sampled)}); download peak {_mb(down_peak)} (sampled "
        f"{_mb(down_sampled)}); at the end {_mb(end_rss)}; VmHWM reset: "
        f"{'yes' if up_watch.hwm_reset else 'no, sampled only'}"
    )
    print(f"download / tar czf: {download / tar_czf:.2f} (no target)")
    content_ok = listed_files == N_FILES + 1 and listed_bytes == total - total % N_FILES + len(
        EMPTY_SCRIPT
    )
    if not content_ok:
        print("WARNING: the downloaded archive does not hold what was uploaded")
    return [
        (
            "(upload + unpack) / tar xzf",
            f"{ratio:.2f}",
            f"<= {TARGET_UPLOAD_RATIO:g}",
            _verdict(ratio <= TARGET_UPLOAD_RATIO),
            f"{upload:.2f} s / {tar_xzf:.2f} s",
        ),
        (
            "server RSS growth, upload (MB)",
            f"{up_growth / 1e6:.1f}",
            f"< {TARGET_RSS_MB:g}",
            _verdict(up_growth / 1e6 < TARGET_RSS_MB),
            f"peak {up_peak / 1e6:.1f} MB over baseline {baseline / 1e6:.1f} MB",
        ),
        (
            "server RSS growth, download (MB)",
            f"{down_growth / 1e6:.1f}",
            f"< {TARGET_RSS_MB:g}",
            _verdict(down_growth / 1e6 < TARGET_RSS_MB and content_ok),
            f"peak {down_peak / 1e6:.1f} MB" + ("" if content_ok else "; CONTENT WRONG"),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="polling time per endpoint, all rounds"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="alternating rounds (trivial handler, then /state) sharing --seconds",
    )
    parser.add_argument("--pollers", type=int, default=50, help="concurrent pollers")
    parser.add_argument("--executions", type=int, default=4, help="running executions polled")
    parser.add_argument(
        "--interval", type=float, default=0.0, help="seconds between a poller's requests (0: none)"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="raw: hand-written HTTP/1.1 on asyncio streams (light); httpx: httpx.AsyncClient",
    )
    parser.add_argument("--gib", type=float, default=1.0, help="size of the work directory, GiB")
    parser.add_argument(
        "--quick", action="store_true", help="64 MiB and 3 s of polling (smoke run)"
    )
    parser.add_argument("--only", choices=("state", "transfer"), help="run one part only")
    parser.add_argument("--peer-server", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer_server:
        peer_server(args.peer_server)
        return 0
    if args.quick:
        args.gib, args.seconds = 64 / 1024, 3.0

    print(
        f"bench_server: Python {platform.python_version()}, tornado {tornado.version}, "
        f"httpx {httpx.__version__}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / GIB:.0f} GiB RAM; load average {_load()}",
        flush=True,
    )
    ratios: list[tuple[str, ...]] = [("ratio", "value", "target", "verdict", "notes")]
    root = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        if args.only in (None, "state"):
            ratios += bench_state(args, root)
            print(flush=True)
        if args.only in (None, "transfer"):
            ratios += bench_transfer(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    _table(ratios)
    print(f"load average at the end (1, 5, 15 min): {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
