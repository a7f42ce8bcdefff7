"""Shared fixtures: one real engine (and so one real Dask LocalCluster) per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_mole.engine import Engine


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A real engine with a two-worker LocalCluster, shared by the tests that run workflows."""
    with Engine(tmp_path_factory.mktemp("engine-state"), n_workers=2) as eng:
        yield eng


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty work directory for one execution."""
    path = tmp_path / "work"
    path.mkdir()
    return path


pytest_plugins = ["tests.servers", "tests.batch_systems", "tests.kernels", "tests.sidebar"]
