"""The Dask LocalCluster that local environments share, started on first use.

One cluster per engine process: starting one costs most of a second and a
process per core, so every execution's ``LocalEnvironment`` runs on the same
workers, each capping only its own concurrency. The cluster listens on
loopback only, writes its scratch files under the engine's state directory,
and its workers carry the plugin that stops cancelled jobs for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from .worker import (
    OUTPUT_TOPIC,
    START_TOPIC,
    MoleWorkerPlugin,
    kill_chunk_processes,
    running_chunks,
)

__all__ = ["ClusterConnection", "LocalClusterManager"]

logger = logging.getLogger(__name__)

STOP_GRACE = 1.0
"""Seconds a cancelled chunk has to return before its worker is restarted under it."""
RESTART_TIMEOUT = 30.0
KILL_TIMEOUT = 0.5
"""Seconds the nanny gives a stuck worker to close before it kills the process."""
LOSS_WINDOW = 0.3
"""Seconds over which the chunks lost with one worker are gathered before judging them."""

# Our engine resubmits jobs lost with a worker itself, so it can count and report them.
DASK_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.1,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    # The scheduler keeps this many of the last events per topic, ours included: the lines
    # running jobs print (worker.OUTPUT_TOPIC), already written to the execution's output.
    # Dask's 1000 would hold the last 500 s of a chatty job's output in the engine's memory.
    "distributed.admin.low-level-log-length": 50,
}


class ClusterConnection:
    """A Dask client plus the routing of chunks' events to whoever waits for them.

    Workers log two kinds of events per chunk: its start, and the lines its
    jobs printed while it runs (streamed, see ``worker.OUTPUT_TOPIC``). Both
    go to the callbacks registered under the chunk's key, so that the output
    of one execution never lands in another's.

    ``broken`` is set (with the error) when the cluster can no longer run
    anything, such as a batch system refusing every job: the runtime stops
    waiting for results then, instead of waiting forever for workers.
    """

    def __init__(self, client: Client, slots: int) -> None:
        self.client = client
        self.slots = slots
        self.broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_start: dict[str, Callable[[str | None], None]] = {}
        self._on_output: dict[str, Callable[[str], None]] = {}
        self._restarting: dict[str, asyncio.Future[None]] = {}
        self.restarted: set[str] = set()  # workers restarted under cancelled chunks
        self._losses: dict[str, list[tuple[bool, asyncio.Future[bool]]]] = {}
        client.subscribe_topic(START_TOPIC, self._started)
        client.subscribe_topic(OUTPUT_TOPIC, self._printed)

    def break_with(self, error: BaseException) -> None:
        if not self.broken.done():
            self.broken.set_exception(error)
            self.broken.exception()  # retrieved: no "never retrieved" warning if nobody waits

    def _started(self, event: Any) -> None:
        _, message = event
        callback = self._on_start.get(message.get("key"))
        if callback is not None:
            callback(message.get("worker"))

    def watch_start(self, key: str, callback: Callable[[str | None], None]) -> None:
        self._on_start[key] = callback

    def unwatch_start(self, key: str) -> None:
        self._on_start.pop(key, None)

    def _printed(self, event: Any) -> None:
        _, message = event
        callback = self._on_output.get(message.get("key"))
        if callback is not None:
            callback(message.get("text", ""))

    def watch_output(self, key: str, callback: Callable[[str], None]) -> None:
        """Pass what chunk ``key`` prints while it runs to ``callback``, until unwatched.

        The worker sends a chunk's streamed lines before its result, so a
        callback unwatched once the result is in has had them all; lines a
        cancelled chunk prints after that are dropped.
        """
        self._on_output[key] = callback

    def unwatch_output(self, key: str) -> None:
        self._on_output.pop(key, None)

    # -- chunks lost with their worker ----------------------------------------------
    def judge_loss(self, worker: str | None, started: bool) -> asyncio.Future[bool]:
        """Whether a chunk lost with ``worker`` counts against its jobs' ``max_resubmissions``.

        Dask fails every chunk the dead worker held with ``KilledWorker``,
        those it was running and those merely queued there, which never ran
        and did nothing wrong. Counting those would fail an execution for
        jobs that were only unlucky in their queue. So the chunks lost with
        one worker are gathered for a moment, and when some of them are known
        to have started (their start event came), only those count. When
        none is known to (the worker died before it could tell), all count:
        each death then costs something, so a job that kills every worker it
        runs on still ends its execution. Chunks lost with a worker that we
        restarted under a cancelled chunk never count.
        """
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[bool] = loop.create_future()
        if worker is None or worker in self.restarted:
            verdict.set_result(worker is None)
            return verdict
        group = self._losses.get(worker)
        if group is None:
            group = self._losses[worker] = []
            loop.call_later(LOSS_WINDOW, self._judge, worker)
        group.append((started, verdict))
        return verdict

    def _judge(self, worker: str) -> None:
        group = self._losses.pop(worker, [])
        culprits = any(started for started, _ in group)
        for started, verdict in group:
            if not verdict.done():
                verdict.set_result(started or not culprits)

    # -- cancelled chunks that do not stop ------------------------------------------
    async def stop_chunks(self, keys: list[str], grace: float = STOP_GRACE) -> list[str]:
        """Make sure the cancelled chunks ``keys`` stop; the workers restarted for it.

        Cancelling kills a chunk's processes and raises an exception in its
        thread, which a job blocked in a C call (``time.sleep(600)``, a lock,
        a socket) never sees: it would hold its worker until it returns. A
        chunk still on its worker ``grace`` seconds later has its processes
        killed once more and its worker restarted (the nanny starts a fresh
        one). Dask counts the other chunks that worker held as lost with it;
        :meth:`judge_loss` spares them.
        """
        if not keys:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            stuck = await self._stuck(keys)
            if not stuck or loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        if not stuck:
            return []
        await asyncio.gather(*(self._restart(worker, held) for worker, held in stuck.items()))
        return sorted(stuck)

    async def _stuck(self, keys: list[str]) -> dict[str, list[str]]:
        """The workers on which some of ``keys`` still run, with those keys."""
        replies = await self.client.run(running_chunks, keys, on_error="return")
        return {worker: held for worker, held in replies.items() if isinstance(held, list) and held}

    async def _restart(self, worker: str, keys: list[str]) -> None:
        """Restart ``worker`` once, however many executions ask at the same time."""
        restarting = self._restarting.get(worker)
        if restarting is None:
            restarting = asyncio.ensure_future(self._kill_and_restart(worker, keys))
            self._restarting[worker] = restarting
            restarting.add_done_callback(lambda _: self._restarting.pop(worker, None))
        await asyncio.shield(restarting)

    async def _kill_and_restart(self, worker: str, keys: list[str]) -> None:
        """Kill the chunks' processes, then the worker's process; its nanny starts a new one.

        Dask's own restart first asks the worker to close and waits seconds for
        its threads, which is what a stuck chunk never lets it do; the nanny's
        ``kill`` with a short timeout stops it at once. A worker without a
        nanny (a bare ``dask worker --no-nanny``) cannot come back: the
        scheduler is asked to remove it, which is all that frees its slot.
        """
        logger.info("restarting worker %s, which did not stop cancelled jobs %s", worker, keys)
        self.restarted.add(worker)
        try:
            replies = await self.client.run(
                kill_chunk_processes, keys, workers=[worker], on_error="return"
            )
            nanny = replies.get(worker)
            if isinstance(nanny, str):
                await self.client.rpc(nanny).kill(
                    timeout=KILL_TIMEOUT, reason="jupyter-mole-cancel"
                )
            else:
                await self.client.scheduler.restart_workers(
                    workers=[worker],
                    timeout=RESTART_TIMEOUT,
                    wait_for_workers=False,
                    on_error="return",
                    stimulus_id=f"jupyter-mole-cancel-{time.time()}",
                )
        except Exception as error:  # the cluster may be closing: nothing left to free
            logger.warning("could not restart worker %s: %s", worker, error)


class LocalClusterManager:
    """Starts the shared LocalCluster lazily in the engine's event loop and closes it at the end."""

    def __init__(
        self, directory: Path, n_workers: int | None = None, log_level: int = logging.ERROR
    ) -> None:
        self.directory = directory
        self.n_workers = n_workers or os.cpu_count() or 1
        self.log_level = log_level  # Dask's own logging, here and in the worker processes
        self._connection: ClusterConnection | None = None
        self._cluster: LocalCluster | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> ClusterConnection:
        async with self._lock:
            if self._connection is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                with dask.config.set(DASK_CONFIG):
                    cluster = await LocalCluster(
                        n_workers=self.n_workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address="127.0.0.1:0",  # loopback only, any free port
                        local_directory=str(self.directory),
                        silence_logs=self.log_level,
                        asynchronous=True,
                    )
                    client = await Client(cluster, asynchronous=True)
                await client.register_plugin(MoleWorkerPlugin())
                self._cluster = cluster
                self._connection = ClusterConnection(client, self.n_workers)
            return self._connection

    @property
    def started(self) -> bool:
        return self._connection is not None

    async def worker_pids(self) -> dict[str, int]:
        """The process id of each worker of the cluster, by address; empty if it is not started.

        For diagnostics and tests: whether executions share the workers, and
        how many there are. It does not start the cluster.
        """
        if self._connection is None:
            return {}
        return await self._connection.client.run(os.getpid, on_error="ignore")

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.client.close()
            if self._cluster is not None:
                with contextlib.suppress(Exception):
                    await self._cluster.close()
            self._connection = None
            self._cluster = None
