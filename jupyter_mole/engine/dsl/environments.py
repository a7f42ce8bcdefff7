"""Environments as a script names them: where a capsule's jobs run.

These are descriptions only. The engine turns each into a runtime on Dask when
an execution starts (``jupyter_mole.engine.environments``), so a script can be
loaded, checked and shown without starting any cluster.
"""

from __future__ import annotations

from typing import Any

from ..errors import WorkflowError

__all__ = ["Environment", "LocalEnvironment"]


def _whole(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise WorkflowError(f"{what} must be a whole number of {minimum} or more, got {value!r}")
    return value


class Environment:
    """Base of environments.

    ``retry``: how many times a job whose task raised is run again before the
    execution fails (OpenMOLE's local environment fails at once: 0).
    ``max_resubmissions``: how many times a job lost with its worker is resubmitted.
    """

    kind = "environment"

    def __init__(self, name: str | None = None, retry: int = 0, max_resubmissions: int = 3) -> None:
        self._name = name
        self.retry = _whole(retry, "retry", 0)
        self.max_resubmissions = _whole(max_resubmissions, "max_resubmissions", 0)

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
        self.n = None if n is None else _whole(n, "LocalEnvironment(n): n", 1)
