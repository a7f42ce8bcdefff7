"""Clusters an execution reaches over the network: an existing Dask scheduler, or SSH hosts.

Both belong to one execution. For ``DaskEnvironment`` that is only a client:
the user's cluster lives on, and cancelling stops our jobs on it through the
worker plugin. For ``SSHEnvironment`` the scheduler and workers are started
over SSH for the execution and stopped when it ends.

What goes wrong here is the user's to fix (an address, a key, a remote Python
without jupyter_mole), so each failure is reported SEVERE and fails the
execution with a message naming the environment and what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client

from ..errors import EnvironmentFailure
from ..state import ErrorLevel
from .cluster import DASK_CONFIG, ClusterConnection
from .worker import MoleWorkerPlugin

if TYPE_CHECKING:
    from ..context import ExecutionContext
    from ..dsl.environments import DaskEnvironment, Environment, SSHEnvironment

__all__ = ["DaskSchedulerManager", "SSHClusterManager"]

logger = logging.getLogger(__name__)


class _RemoteManager:
    """Connects lazily, once; turns failures into a reported EnvironmentFailure."""

    connect_timeout = 30.0

    def __init__(self, environment: Environment, context: ExecutionContext) -> None:
        self.environment = environment
        self.context = context
        self._connection: ClusterConnection | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> ClusterConnection:
        async with self._lock:
            if self._connection is None:
                try:
                    self._connection = await self._start()
                except EnvironmentFailure:
                    raise
                except Exception as error:
                    raise self._failure(error) from error
            return self._connection

    def _failure(self, error: BaseException) -> EnvironmentFailure:
        explanation = self._explain(error)
        details = f"{type(error).__name__}: {error}"
        self.context.report(self.environment.name, ErrorLevel.SEVERE, explanation, details)
        return EnvironmentFailure(
            self.environment.name, f"environment {self.environment.name}: {explanation}", details
        )

    async def _start(self) -> ClusterConnection:
        raise NotImplementedError

    def _explain(self, error: BaseException) -> str:
        return f"{type(error).__name__}: {error}"

    async def _register(self, client: Client) -> None:
        try:
            await client.register_plugin(MoleWorkerPlugin())
        except Exception as error:
            raise self._failure(
                RuntimeError(
                    "its workers could not load jupyter_mole's worker plugin: install "
                    f"jupyter_mole (the engine's version) in the workers' Python ({error})"
                )
            ) from error

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.client.close()
            self._connection = None


class DaskSchedulerManager(_RemoteManager):
    """A client of the user's Dask scheduler."""

    environment: DaskEnvironment
    connect_timeout = 10.0

    async def _start(self) -> ClusterConnection:
        with dask.config.set({"distributed.comm.timeouts.connect": f"{self.connect_timeout}s"}):
            client = await Client(
                self.environment.address, asynchronous=True, timeout=self.connect_timeout
            )
        await self._register(client)
        slots = self.environment.slots
        if slots is None:
            info = client.scheduler_info()
            slots = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1
        return ClusterConnection(client, slots)

    def _explain(self, error: BaseException) -> str:
        return (
            f"cannot reach the Dask scheduler at {self.environment.address} "
            f"({type(error).__name__}: {error}); check that it runs and that its address "
            f"is the one `dask scheduler` printed"
        )


class SSHClusterManager(_RemoteManager):
    """A scheduler and ``slots`` one-thread workers started over SSH on one host."""

    environment: SSHEnvironment

    def __init__(self, environment: Environment, context: ExecutionContext) -> None:
        super().__init__(environment, context)
        self._cluster: Any = None

    async def _start(self) -> ClusterConnection:
        from distributed.deploy.ssh import SSHCluster

        env = self.environment
        connect_options: dict[str, Any] = {
            "port": env.port,
            "username": env.user,
            "known_hosts": str(env.known_hosts) if env.known_hosts else None,
        }
        if env.key is not None:
            connect_options["client_keys"] = [str(env.key)]
        with dask.config.set(DASK_CONFIG):
            cluster = SSHCluster(
                [env.host] * (env.slots + 1),
                connect_options=connect_options,
                # Bound to the address we reach the host at: Dask would pick the host's
                # default-route interface, which may be one we cannot reach.
                worker_options={"nthreads": 1, "host": env.host},
                scheduler_options={
                    "port": 0,
                    "host": env.host,
                    "dashboard_address": "127.0.0.1:0",
                },
                remote_python=env.python,
                asynchronous=True,
            )
            self._cluster = cluster
            await asyncio.wait_for(cluster, self.connect_timeout * 2)
            client = await Client(cluster, asynchronous=True)
        await self._register(client)
        return ClusterConnection(client, env.slots)

    def _explain(self, error: BaseException) -> str:
        env = self.environment
        where = f"{env.user}@{env.host}:{env.port}"
        name = type(error).__name__
        # SSHCluster wraps asyncssh's errors in a RuntimeError("Cluster failed to start: ...").
        if name == "PermissionDenied" or "Permission denied" in str(error):
            return (
                f"SSH authentication to {where} was refused ({error}): check the user and that "
                f"the key{'' if env.key is None else f' {env.key}'} is in the host's authorized_keys"
            )
        if name == "HostKeyNotVerifiable" or "Host key is not trusted" in str(error):
            return (
                f"the SSH host key of {where} is not in {env.known_hosts} ({error}): connect once "
                f"with `ssh -p {env.port} {where.rsplit(':', 1)[0]}` to add it, or give known_hosts"
            )
        if isinstance(error, (OSError, asyncio.TimeoutError)):
            return f"cannot connect to {where} over SSH ({name}: {error})"
        return f"starting Dask workers over SSH on {where} failed ({name}: {error})"

    async def close(self) -> None:
        await super().close()
        if self._cluster is not None:
            try:
                await self._cluster.close()
            except Exception as e:
                logger.warning("closing the SSH cluster of %s: %s", self.environment.name, e)
            self._cluster = None
