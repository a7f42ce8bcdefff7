"""A ``%%mole`` cell that waits fails when its execution does not finish.

An execution that fails, or that someone else cancels, makes the cell raise
:class:`ExecutionFailed` once the view shows the end, so that "Run all" stops
there; what IPython shows is the execution's error in a few lines, not the
magic's stack. ``--no-wait`` and ``--timeout`` return before the end: nothing
to raise. (Ctrl-C, which cancels and raises ``KeyboardInterrupt``, is in
test_magics; the fixtures are in ``tests/kernels.py``.)
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_mole.client import MoleClient
from jupyter_mole.kernel import Execution, ExecutionFailed
from tests.servers import FAILING_SCRIPT, SLEEPY_SCRIPT, ServerProcess


def test_a_failed_execution_fails_the_cell_with_its_error_in_a_few_lines(
    shell: InteractiveShell, served: ServerProcess, capsys: pytest.CaptureFixture
) -> None:
    # As a kernel runs a cell: the error is the cell's, so nbclient and "Run all" stop here.
    result = shell.run_cell("%%mole fail.oms -o run --download result.csv\n" + FAILING_SCRIPT)
    error = result.error_in_exec
    assert isinstance(error, ExecutionFailed)
    run = shell.user_ns["run"]  # the handle is kept, to look into the failure
    assert isinstance(run, Execution) and error.execution is run
    assert error.state.state == "failed" and run.state().state == "failed"
    assert str(error).startswith(f"fail.oms failed (execution {run.id}): ")
    assert "no good value here" in str(error)

    shown = error._render_traceback_()
    assert shown[0] == f"ExecutionFailed: {error}".splitlines()[0]
    assert len(shown) <= 3 and "Traceback" not in "\n".join(shown)
    out = capsys.readouterr().out
    assert "Traceback (most recent call last)" not in out  # not the magic's Python stack
    # The view shows the end first, then the cell fails; nothing is downloaded.
    end = out.index(f"failed: 0 jobs completed ({run.id})")
    assert end < out.index("ExecutionFailed: fail.oms failed")
    assert "downloaded" not in out
    # The end says where the job failed: the last lines of its stack trace, indented.
    shown_end = out[end : out.index("ExecutionFailed: fail.oms failed")].splitlines()
    assert "no good value here" in shown_end[1]  # the error's message
    trace = shown_end[2:]
    assert all(t.startswith("  ") for t in trace), out
    assert any(re.fullmatch(r'\s+File ".*fail\.oms", line \d+, in fragile', t) for t in trace), out
    assert 'raise ValueError("no good value here")' in [t.strip() for t in trace]
    assert trace[-1] == "  ValueError: no good value here"


def test_the_widget_shows_the_failure_before_the_cell_fails(
    shell: InteractiveShell, served: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    import IPython.display

    shown: list[Any] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setattr(shell, "kernel", object(), raising=False)  # as in ipykernel
    with pytest.raises(ExecutionFailed, match="no good value here"):
        shell.run_cell_magic("mole", "fail.oms", FAILING_SCRIPT)
    (panel,) = shown
    header, bar = panel.children[0], panel.children[1]
    assert ">failed<" in header.children[1].value
    assert bar.children[0].bar_style == "danger"
    message = panel.children[-1].value
    assert "no good value here" in message


def test_an_execution_cancelled_by_someone_else_fails_the_cell(
    shell: InteractiveShell, served: ServerProcess, client: MoleClient
) -> None:
    def cancel_when_running() -> None:  # the sidebar, another notebook, %mole cancel
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for info in client.list(details=True):
                if info.script == "sleepy.oms" and info.state == "running" and info.running:
                    client.cancel(info.id)
                    return
            time.sleep(0.2)

    other = threading.Thread(target=cancel_when_running)
    other.start()
    try:
        with pytest.raises(ExecutionFailed) as caught:
            shell.run_cell_magic("mole", "sleepy.oms -o run", SLEEPY_SCRIPT)
    finally:
        other.join(90)
    run = shell.user_ns["run"]
    assert caught.value.state.state == "cancelled"
    assert str(caught.value).startswith(f"sleepy.oms was cancelled (execution {run.id})")


def test_without_waiting_there_is_nothing_to_raise(
    shell: InteractiveShell, served: ServerProcess
) -> None:
    run = shell.run_cell_magic("mole", "fail.oms --no-wait", FAILING_SCRIPT)
    assert run.wait(timeout=60).state == "failed"  # the cell returned its handle all the same
