"""The execution manager finds executions in memory, and stays right as they end and go.

Clients poll ``/state`` many times a second: a running execution's state is read
from the engine without an SQLite lookup, and an ended one's record is read from
the registry once, then kept. These tests count the registry's lookups and check
that what is answered is what the registry holds, after an end and after a remove,
including a remove that lands while a reader is between the registry and the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_mole.engine import Engine, State
from jupyter_mole.engine.registry import ExecutionRecord
from jupyter_mole.server.manager import ExecutionManager, NotFound
from tests.servers import make_archive

pytestmark = pytest.mark.timeout(120)

# One job that holds the execution running until the test drops a "release" file.
HOLD_SCRIPT = """
import time
x = Val(int)

@PythonTask(inputs=[x])
def hold(x):
    start = time.time()
    while not (work_directory / "release").exists() and time.time() - start < 60:
        time.sleep(0.02)
    return None

DirectSampling(evaluation=hold.on(LocalEnvironment(1)), sampling=x.in_([0]))
"""


class CountingManager(ExecutionManager):
    """A manager whose registry lookups are counted."""

    def __init__(self, state_directory: Path, engine: Engine) -> None:
        super().__init__(state_directory, engine)
        self.lookups = 0
        get = self.registry.get

        def counted(execution_id: str) -> ExecutionRecord | None:
            self.lookups += 1
            return get(execution_id)

        self.registry.get = counted  # type: ignore[method-assign]


@pytest.fixture
def manager(tmp_path: Path, engine: Engine) -> Iterator[CountingManager]:
    manager = CountingManager(tmp_path / "state", engine)
    yield manager
    for execution_id in manager.ids():
        manager.remove(execution_id)
    manager.close()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "work", {"hold.oms": HOLD_SCRIPT})


def release(manager: ExecutionManager, execution_id: str) -> None:
    (manager.registry.folder(execution_id) / "workDirectory" / "release").write_text("go")


def test_a_running_execution_is_read_without_the_registry(
    manager: CountingManager, archive: Path
) -> None:
    execution_id = manager.start("hold.oms", archive, {"k": "v"})
    manager.lookups = 0
    for _ in range(20):
        assert manager.state(execution_id, "reader").state == "running"
    info = manager.info(execution_id)
    assert (info.state, info.script, info.tags) == ("running", "hold.oms", {"k": "v"})
    assert manager.lookups == 0
    release(manager, execution_id)
    manager.engine.executions[execution_id].wait(60)


def test_an_ended_execution_is_read_from_the_registry_once(
    manager: CountingManager, archive: Path
) -> None:
    execution_id = manager.start("hold.oms", archive, {})
    release(manager, execution_id)
    assert manager.engine.executions[execution_id].wait(60) is State.FINISHED
    manager.lookups = 0
    states = [manager.state(execution_id) for _ in range(20)]
    assert manager.lookups == 1
    assert all(s.state == "finished" and s.completed == 1 for s in states)
    stored = manager.registry.get(execution_id)
    assert stored is not None and manager.info(execution_id) == manager._info(None, stored)


def test_a_removed_execution_is_not_found_even_once_cached(
    manager: CountingManager, archive: Path
) -> None:
    running = manager.start("hold.oms", archive, {})
    ended = manager.start("hold.oms", archive, {})
    release(manager, ended)
    manager.engine.executions[ended].wait(60)
    assert manager.state(ended).state == "finished"  # now cached
    for execution_id in (running, ended):
        manager.remove(execution_id)
        with pytest.raises(NotFound):
            manager.state(execution_id)
        assert execution_id not in manager.ids()


def test_a_record_read_before_a_remove_is_not_cached_after_it(
    manager: CountingManager, archive: Path
) -> None:
    """A reader between the registry and the cache when the remove lands must not revive it."""
    execution_id = manager.start("hold.oms", archive, {})
    release(manager, execution_id)
    manager.engine.executions[execution_id].wait(60)
    get = manager.registry.get

    def get_then_removed(wanted: str) -> ExecutionRecord | None:
        record = get(wanted)
        manager.registry.get = get  # type: ignore[method-assign]
        manager.remove(wanted)  # lands after this reader's lookup, before it caches
        return record

    manager.registry.get = get_then_removed  # type: ignore[method-assign]
    assert manager.state(execution_id).state == "finished"  # read before the remove
    with pytest.raises(NotFound):
        manager.state(execution_id)
