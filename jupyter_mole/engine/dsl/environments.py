"""Environments as a script names them: where a capsule's jobs run.

These are descriptions only. The engine turns each into a runtime on Dask when
an execution starts (``jupyter_mole.engine.environments``), so a script can be
loaded, checked and shown without starting any cluster. The batch systems
(SLURM, PBS, ...) are in ``dsl.batch_environments``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import WorkflowError

__all__ = ["DaskEnvironment", "Environment", "LocalEnvironment", "SSHEnvironment"]


def whole(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise WorkflowError(f"{what} must be a whole number of {minimum} or more, got {value!r}")
    return value


def text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise WorkflowError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def optional_text(value: Any, what: str) -> str | None:
    return None if value is None else text(value, what)


class Environment:
    """Base of environments.

    ``retry``: how many times a job whose task raised is run again before the
    execution fails (OpenMOLE's local environment fails at once: 0).
    ``max_resubmissions``: how many times a job lost with its worker is resubmitted.
    """

    kind = "environment"

    def __init__(self, name: str | None = None, retry: int = 0, max_resubmissions: int = 3) -> None:
        self._name = optional_text(name, "name")
        self.retry = whole(retry, "retry", 0)
        self.max_resubmissions = whole(max_resubmissions, "max_resubmissions", 0)

    @property
    def name(self) -> str:
        return self._name or self.kind

    def _assign_name(self, name: str) -> None:
        if self._name is None:
            self._name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class LocalEnvironment(Environment):
    """This machine's cores, through a Dask LocalCluster shared by all executions.

    ``LocalEnvironment(n)`` lets this execution run at most ``n`` jobs at once
    (default: one per core).
    """

    kind = "local"

    def __init__(
        self,
        n: int | None = None,
        *,
        name: str | None = None,
        retry: int = 0,
        max_resubmissions: int = 3,
    ) -> None:
        super().__init__(name, retry, max_resubmissions)
        self.n = None if n is None else whole(n, "LocalEnvironment(n): n", 1)


class DaskEnvironment(Environment):
    """A Dask cluster the user runs already (``dask scheduler`` + ``dask worker``).

    Its workers must be able to import ``jupyter_mole`` (the same version as the
    engine's), since the jobs are run by its worker code. ``slots`` caps how
    many jobs of this execution are on the cluster at once (default: one per
    worker thread). The cluster is never closed by us; cancelling an execution
    stops its jobs only.
    """

    kind = "dask"

    def __init__(
        self,
        address: str,
        *,
        slots: int | None = None,
        name: str | None = None,
        retry: int = 0,
        max_resubmissions: int = 3,
    ) -> None:
        super().__init__(name, retry, max_resubmissions)
        self.address = text(address, "DaskEnvironment(address): address")
        if "://" not in self.address:
            self.address = f"tcp://{self.address}"
        self.slots = None if slots is None else whole(slots, "DaskEnvironment: slots", 1)


class SSHEnvironment(Environment):
    """Workers started over SSH on one machine, through Dask's SSH deployment.

    ``slots`` worker processes of one thread each run on ``host``; the Dask
    scheduler runs there too, so the engine only needs to reach ``host``.
    ``key`` is a private key file (default: the SSH agent and ``~/.ssh``);
    ``known_hosts`` a known-hosts file, or ``None`` to skip host verification,
    which is only wise on a trusted network. ``python`` is the remote Python,
    which must have ``jupyter_mole`` installed.
    """

    kind = "ssh"

    def __init__(
        self,
        user: str,
        host: str,
        slots: int = 1,
        *,
        port: int = 22,
        key: str | Path | None = None,
        known_hosts: str | Path | None = "~/.ssh/known_hosts",
        python: str | None = None,
        name: str | None = None,
        retry: int = 0,
        max_resubmissions: int = 3,
    ) -> None:
        super().__init__(name, retry, max_resubmissions)
        self.user = text(user, "SSHEnvironment: user")
        self.host = text(host, "SSHEnvironment: host")
        self.slots = whole(slots, "SSHEnvironment: slots", 1)
        self.port = whole(port, "SSHEnvironment: port", 1)
        self.key = None if key is None else Path(key).expanduser()
        self.known_hosts = None if known_hosts is None else Path(known_hosts).expanduser()
        self.python = optional_text(python, "SSHEnvironment: python")
