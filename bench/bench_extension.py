"""Jupyter extension: backend state queries with many browser tabs polling many executions.

Why: every JupyterLab tab (sidebar) and every widget polls the extension, and
the extension must not multiply that load onto the backend: it keeps one
cached state per execution, asked of the backend at most once per poll
interval, however many views ask. Measured on a real ``jupyter server``
process (the venv's, loopback, a token, its own Jupyter directories, the
embedded backend with 2 workers, ``Mole.poll_interval = 1``):

1. 20 executions are started through ``POST /mole/api/executions`` from a
   folder of Jupyter's file tree; each runs one ``SystemExecTask("sleep 120")``
   job, so all stay running for the whole measurement (two run, the others
   queue on the 2 workers).
2. ``--clients`` browser-like clients (httpx, async, one connection pool
   each, the token in an ``Authorization`` header) each poll, every second for
   ``--seconds``, the list and the state of every execution, concurrently.
3. The extension's counters of backend queries (``queries`` in
   ``GET /mole/api/service``: state queries, list queries) are read before and
   after. The naive figure is what a proxy without the cache would send: one
   backend query per request that arrived.

Target: state queries per execution per poll interval <= 1 (the interval
being the measured time divided by ``Mole.poll_interval``); the list likewise.
Latency of the clients' requests is reported too, beside the latency of as
many requests per second to Jupyter's own ``GET /api/status`` (same token
check, same logging: the cost of being a Jupyter handler at all).

This is a report, not a test: it prints PASS/FAIL and always exits 0. At the
end the executions are removed, the Jupyter server stopped, and the embedded
server it started (its pid is in the connection file) stopped with its workers.

Run: ``.venv/bin/python bench/bench_extension.py [--executions N] [--clients N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SCRIPT = """
x = Val(int)
DirectSampling(evaluation=SystemExecTask("sleep 120", inputs=[x]), sampling=x.in_([1]))
"""
POLL_INTERVAL = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_jupyter(base: Path, token: str) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A real ``jupyter server`` with the extension and its own Jupyter directories."""
    dirs = {name: base / name for name in ("config", "data", "runtime", "root", "home")}
    for path in dirs.values():
        path.mkdir(parents=True)
    config = {
        "ServerApp": {"jpserver_extensions": {"jupyter_mole": True}},
        "Mole": {"embedded_workers": 2, "poll_interval": POLL_INTERVAL},
    }
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(config))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "MOLE_"))},
        "HOME": str(dirs["home"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
    }
    port = free_port()
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    assert jupyter is not None, "no jupyter in the virtualenv"
    args = [
        jupyter, "server", "--no-browser", "--allow-root", "--ip", "127.0.0.1",
        "--port", str(port), f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={dirs['root']}",
    ]  # fmt: skip
    log = open(base / "jupyter.log", "wb")
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    return process, f"http://127.0.0.1:{port}", {k: str(v) for k, v in dirs.items()}


async def wait_ready(http: httpx.AsyncClient, process: subprocess.Popen, timeout: float) -> dict:
    """Wait until Jupyter answers and the extension has its backend; the service answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter server exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            answer = await http.get("/mole/api/service")
            if answer.status_code == 200 and answer.json().get("kind"):
                return answer.json()
        await asyncio.sleep(0.25)
    raise RuntimeError("the extension did not get its backend in time")


async def client_loop(
    url: str,
    token: str,
    ids: list[str],
    seconds: float,
    latencies: list[float],
    counts: dict,
    peer: bool = False,
) -> None:
    """One browser tab: every second, the list and every execution's state, concurrently
    (``peer``: as many requests to Jupyter's own ``/api/status``, for comparison)."""
    headers = {"Authorization": f"token {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def get(path: str, what: str) -> None:
            started = time.perf_counter()
            answer = await http.get(path)
            latencies.append(time.perf_counter() - started)
            answer.raise_for_status()
            counts[what] += 1

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tick = time.monotonic()
            if peer:
                await asyncio.gather(*(get("/api/status", "state") for _ in range(len(ids) + 1)))
            else:
                await asyncio.gather(
                    get("/mole/api/executions", "list"),
                    *(get(f"/mole/api/executions/{i}/state", "state") for i in ids),
                )
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p95, in milliseconds."""
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def stop_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-extension-"))
    token = secrets.token_hex(24)
    process, url, dirs = start_jupyter(base, token)
    ids: list[str] = []
    headers = {"Authorization": f"token {token}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            started = time.monotonic()
            service = await wait_ready(http, process, 120)
            print(
                f"jupyter server and embedded backend ready in {time.monotonic() - started:.1f} s "
                f"({service['kind']} at {service['url']}, poll interval {service['poll_interval']} s)"
            )
            project = Path(dirs["root"]) / "bench"
            project.mkdir()
            (project / "sleepy.oms").write_text(SCRIPT)
            for _ in range(args.executions):
                answer = await http.post("/mole/api/executions", json={"path": "bench/sleepy.oms"})
                answer.raise_for_status()
                ids.append(answer.json()["id"])
            states = [(await http.get(f"/mole/api/executions/{i}/state")).json() for i in ids]
            assert all(s["state"] == "running" for s in states), states
            await asyncio.sleep(POLL_INTERVAL * 1.5)  # let the start-up queries age out
            before = (await http.get("/mole/api/service")).json()["queries"]

            latencies: list[float] = []
            counts = {"list": 0, "state": 0}
            t0 = time.monotonic()
            await asyncio.gather(
                *(
                    client_loop(url, token, ids, args.seconds, latencies, counts)
                    for _ in range(args.clients)
                )
            )
            elapsed = time.monotonic() - t0
            after = (await http.get("/mole/api/service")).json()["queries"]
            still = [(await http.get(f"/mole/api/executions/{i}/state")).json() for i in ids]
            running = sum(s["state"] == "running" for s in still)

            intervals = elapsed / POLL_INTERVAL
            state_queries = after["state"] - before["state"]
            list_queries = after["list"] - before["list"]
            per_execution = state_queries / (len(ids) * intervals)
            naive = counts["state"] / (len(ids) * intervals)
            list_rate = list_queries / intervals
            p50, p95 = percentiles(latencies)

            # the peer: as many requests to a trivial Jupyter handler (same auth, same logging)
            peer_latencies: list[float] = []
            peer_counts = {"list": 0, "state": 0}
            await asyncio.gather(
                *(
                    client_loop(url, token, ids, args.seconds, peer_latencies, peer_counts, True)
                    for _ in range(args.clients)
                )
            )
            peer50, peer95 = percentiles(peer_latencies)
            print()
            print(f"{args.executions} executions (still running at the end: {running}), "
                  f"{args.clients} clients, {elapsed:.1f} s = {intervals:.1f} poll intervals")  # fmt: skip
            print(f"requests that arrived: {counts['state']} state, {counts['list']} list "
                  f"(latency p50 {p50:.1f} ms, p95 {p95:.1f} ms)")  # fmt: skip
            print(f"backend queries made: {state_queries} state, {list_queries} list")
            print(f"peer, Jupyter's /api/status at the same rate: {peer_counts['state']} requests "
                  f"(latency p50 {peer50:.1f} ms, p95 {peer95:.1f} ms)")  # fmt: skip
            print()
            print("| figure | naive (one query per request) | extension | target |")
            print("|---|---|---|---|")
            print(f"| state queries / execution / poll interval | {naive:.2f} | "
                  f"{per_execution:.2f} | <= 1 |")  # fmt: skip
            print(f"| list queries / poll interval | {counts['list'] / intervals:.2f} | "
                  f"{list_rate:.2f} | <= 1 |")  # fmt: skip
            verdict = per_execution <= 1 and list_rate <= 1 and running == len(ids)
            print()
            print(f"{'PASS' if verdict else 'FAIL'}: at most one backend state query per "
                  f"execution per poll interval ({per_execution:.2f}), "
                  f"{counts['state'] / max(state_queries, 1):.0f} times fewer than naive")  # fmt: skip

            for i in ids:  # cancel and delete
                with contextlib.suppress(httpx.HTTPError):
                    await http.delete(f"/mole/api/executions/{i}")
    finally:
        recorded = Path(dirs["runtime"]) / "jupyter-mole-server.json"
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads(recorded.read_text())["pid"]
            stop_group(int(pid))
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as e:  # a report: say what went wrong, exit 0
        print(f"FAIL: the benchmark could not run: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
