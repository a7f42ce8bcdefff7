"""Measurement helpers of bench/bench_server.py: the /job API client, the /state pollers,
peak-RSS watching and timed file reads and unpacks.

Split from bench/bench_server.py (which keeps the two measured scenarios, the peer server and
the command line) to keep each file under 600 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.servers import ServerProcess  # on sys.path: bench_server.py puts the root there

SAMPLE_S = 0.05


# -- helpers ----------------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in [rows[0], tuple("-" * w for w in widths), *rows[1:]]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _load() -> str:
    """The load average, so that a run disturbed by other work shows it."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _tiny_archive(folder: Path, script: str) -> Path:
    """A tar.gz holding ``main.oms`` = ``script``, written beside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.oms").write_text(script)
    target = folder.with_suffix(".tgz")
    with tarfile.open(target, "w:gz") as tar:
        tar.add(folder / "main.oms", arcname="main.oms")
    return target


class Api:
    """The few /job routes the benchmark needs, with a token."""

    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(600.0))
        answer = self.client.post("/token", data={"password": server.password or ""})
        answer.raise_for_status()
        self.token = answer.json()["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def start(self, archive: Path, script: str = "main.oms") -> str:
        with open(archive, "rb") as f:
            answer = self.client.post(
                "/job",
                headers=self.headers,
                data={"script": script},
                files={"workDirectory": (archive.name, f, "application/gzip")},
            )
        if answer.status_code != 200:
            raise SystemExit(f"POST /job answered {answer.status_code}: {answer.text}")
        return answer.json()["id"]

    def state(self, execution_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/job/{execution_id}/state", headers=self.headers)
        answer.raise_for_status()
        return answer.json()

    def wait(self, execution_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(execution_id)
            if state["state"] != "running":
                return state
            time.sleep(0.05)
        raise SystemExit(f"execution {execution_id} still running after {timeout} s")

    def remove(self, execution_id: str) -> None:
        self.client.delete(f"/job/{execution_id}", headers=self.headers)

    def close(self) -> None:
        self.client.close()


# -- part 1: pollers ----------------------------------------------------------------------
class PollResult:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.seconds = 0.0
        self.server_cpu = 0.0
        self.client_cpu = 0.0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _raw_poller(
    host: str, port: int, request: bytes, deadline: float, interval: float, out: PollResult
) -> None:
    """HTTP/1.1 keep-alive GETs on one connection, written by hand: the lightest client."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (start := time.perf_counter()) < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    raise RuntimeError("chunked answers are not expected here")
            await reader.readexactly(length)
            out.latencies.append(time.perf_counter() - start)
            if status != b"200":
                out.error(status.decode())
            if interval:
                await asyncio.sleep(max(0.0, start + interval - time.perf_counter()))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _httpx_poller(
    url: str, path: str, headers: dict[str, str], deadline: float, interval: float, out: PollResult
) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        while (start := time.perf_counter()) < deadline:
            answer = await client.get(path, headers=headers)
            out.latencies.append(time.perf_counter() - start)
            if answer.status_code != 200:
                out.error(str(answer.status_code))
            if interval:
                await asyncio.sleep(max(0.0, start + interval - time.perf_counter()))


async def _poll_all(
    url: str,
    paths: list[str],
    headers: dict[str, str],
    pollers: int,
    seconds: float,
    interval: float,
    client: str,
    out: PollResult,
) -> None:
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    deadline = time.perf_counter() + seconds
    tasks = []
    for i in range(pollers):
        path = paths[i % len(paths)]
        if client == "raw":
            request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
            tasks.append(_raw_poller(host, port, request, deadline, interval, out))
        else:
            tasks.append(_httpx_poller(url, path, headers, deadline, interval, out))
    started = time.perf_counter()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    out.seconds += time.perf_counter() - started
    for result in results:
        if isinstance(result, BaseException):
            out.error(f"{type(result).__name__}: {result}")


def poll(
    url: str,
    paths: list[str],
    headers: dict[str, str],
    server_pid: int,
    *,
    pollers: int,
    seconds: float,
    interval: float,
    client: str,
    out: PollResult | None = None,
) -> PollResult:
    """``pollers`` concurrent pollers for ``seconds``; CPU of the server and of this client.

    With ``out``, this round's figures are added to an earlier round's.
    """
    out = out or PollResult()
    server, me = psutil.Process(server_pid), psutil.Process()
    server_before, me_before = _cpu(server), _cpu(me)
    asyncio.run(_poll_all(url, paths, headers, pollers, seconds, interval, client, out))
    out.server_cpu += _cpu(server) - server_before
    out.client_cpu += _cpu(me) - me_before
    out.latencies.sort()
    return out


# -- part 2: a big work directory ------------------------------------------------------
class RssWatch:
    """Peak RSS of one process during a phase: kernel high-water mark and 50 ms samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.process = psutil.Process(pid)
        self.samples: list[float] = []
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> float:
        return self.process.memory_info().rss

    def hwm(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> RssWatch:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.samples = [self.rss()]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            with contextlib.suppress(psutil.Error):
                self.samples.append(self.rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.samples.append(self.rss())

    def peak(self) -> float:
        """The larger of the sampled peak and (if it could be reset) the kernel's VmHWM."""
        sampled = max(self.samples)
        hwm = self.hwm() if self.hwm_reset else None
        return max(sampled, hwm or 0)

    def sampled_peak(self) -> float:
        return max(self.samples)


class TimedFile(io.FileIO):
    """A file that notes when it was read to its end (when the request body was all sent)."""

    eof_at: float | None = None

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if not data and self.eof_at is None:
            self.eof_at = time.perf_counter()
        return data


def _run(cmd: list[str]) -> float:
    os.sync()  # no writeback of an earlier phase's files left to slow this one
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def _tar_xzf(archive: Path, into: Path) -> float:
    """Seconds to unpack ``archive`` into the fresh folder ``into`` (removed afterwards)."""
    into.mkdir()
    try:
        return _run(["tar", "xzf", str(archive), "-C", str(into)])
    finally:
        shutil.rmtree(into)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"
