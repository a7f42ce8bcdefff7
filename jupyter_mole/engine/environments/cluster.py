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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from .worker import START_TOPIC, MoleWorkerPlugin

__all__ = ["ClusterConnection", "LocalClusterManager"]

# Our engine resubmits jobs lost with a worker itself, so it can count and report them.
DASK_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.1,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.gil.enabled": False,
}


class ClusterConnection:
    """A Dask client plus the routing of chunk-start events to whoever waits for them.

    ``broken`` is set (with the error) when the cluster can no longer run
    anything, such as a batch system refusing every job: the runtime stops
    waiting for results then, instead of waiting forever for workers.
    """

    def __init__(self, client: Client, slots: int) -> None:
        self.client = client
        self.slots = slots
        self.broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_start: dict[str, Callable[[str | None], None]] = {}
        client.subscribe_topic(START_TOPIC, self._started)

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


class LocalClusterManager:
    """Starts the shared LocalCluster lazily in the engine's event loop and closes it at the end."""

    def __init__(self, directory: Path, n_workers: int | None = None) -> None:
        self.directory = directory
        self.n_workers = n_workers or os.cpu_count() or 1
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
                        silence_logs=logging.ERROR,
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
