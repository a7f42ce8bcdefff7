"""``%%mole`` in a real kernel, its widget driven as a browser drives it.

A kernel handles the front end's messages from its event loop: a cell that
waits must leave that loop free, or the widget's buttons do nothing until the
cell ends. Here a real ipykernel (jupyter_client over ZeroMQ) runs the cells,
and the test sends what a browser sends on a click (``comm_msg``, ``click``)
to the buttons the kernel opened, while the cell still waits. Ctrl-C is the
kernel's interrupt. The fixtures are in ``tests/kernels.py``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from jupyter_mole.client import MoleClient
from tests.kernels import RealKernel
from tests.servers import PASSWORD, ServerProcess

pytestmark = pytest.mark.timeout(300)

# Two jobs that would sleep far longer than any test waits.
LONG_SCRIPT = """
x = Val(int)
DirectSampling(evaluation=SystemExecTask("sleep 120", inputs=[x]), sampling=x.in_([1, 2]))
"""

# Two jobs of a few seconds: long enough to interrupt, short enough to see the end.
NAP_SCRIPT = """
x = Val(int)
DirectSampling(evaluation=SystemExecTask("sleep 6", inputs=[x]), sampling=x.in_([1, 2]))
"""

TITLE = re.compile(r"<code>([0-9a-f-]{36})</code>")


def execution_shown(kernel: RealKernel) -> str:
    """The id of the execution the widget shows (its title), once the widget is there."""

    def found() -> str | None:
        for state in kernel.models.values():
            match = TITLE.search(str(state.get("value", "")))
            if state.get("_model_name") == "HTMLModel" and match:
                return match.group(1)
        return None

    return kernel.wait_for(found, what="the widget's title")


def progress_bar(kernel: RealKernel) -> dict:
    ident = kernel.widget("IntProgressModel", description="jobs")
    assert ident is not None
    return kernel.models[ident]


def test_cancel_in_the_widget_works_while_the_cell_waits(
    served: ServerProcess, client: MoleClient, real_kernel: RealKernel
) -> None:
    kernel = real_kernel
    kernel.run("%load_ext jupyter_mole")
    waiting = kernel.execute("%%mole long.oms -o run\n" + LONG_SCRIPT)
    ident = execution_shown(kernel)
    try:
        deadline = time.monotonic() + 60
        while client.state(ident).running == 0:  # until its jobs run
            assert time.monotonic() < deadline, "the jobs never started"
            time.sleep(0.2)
        cancel = kernel.wait_for(lambda: kernel.widget("ButtonModel", description="Cancel"))

        def question() -> str | None:  # the "Cancel this execution?" row: Label, Yes, No
            label = kernel.widget("LabelModel", value="Cancel this execution?")
            for box, state in kernel.models.items():
                if state.get("_model_name") == "HBoxModel" and label in kernel.children(box):
                    return box
            return None

        row = kernel.wait_for(question, what="the question")
        layout = kernel.models[row]["layout"].removeprefix("IPY_MODEL_")
        yes = kernel.children(row)[1]
        assert kernel.models[yes]["description"] == "Yes"

        kernel.click(cancel)  # asks first...
        kernel.wait_for(lambda: kernel.models[layout].get("display") == "flex", 20, "the question")
        assert client.state(ident).state == "running"
        kernel.click(yes)  # ...and cancels: while the cell still waits

        reply = kernel.reply(waiting, timeout=30)
        assert reply["status"] == "error" and reply["ename"] == "ExecutionFailed", reply
        assert "was cancelled" in reply["evalue"]
        assert client.state(ident).state == "cancelled"
        assert ">cancelled<" in str(kernel.models.values())  # the widget says so
        assert kernel.models[cancel]["disabled"] is True
    finally:
        if client.state(ident).state == "running":
            client.cancel(ident)


def test_an_interrupted_cell_whose_cancel_fails_keeps_its_widget_following(
    jupyter_dirs: dict[str, Path],
    mole_server: ServerProcess,
    real_kernel: RealKernel,
) -> None:
    # OpenMOLE's API cancels only by removing: Ctrl-C cannot cancel, the run goes on, and the
    # widget must go on following it to its end, not stay "running" forever.
    kernel = real_kernel
    password = mole_server.state_dir / "password.txt"
    kernel.run("%load_ext jupyter_mole")
    kernel.run(
        f"%mole connect {mole_server.url} --password-file {password} "
        f"--fingerprint {mole_server.fingerprint} --api job"
    )
    waiting = kernel.execute("%%mole nap.oms -o run\n" + NAP_SCRIPT)
    ident = execution_shown(kernel)
    with MoleClient(mole_server.url, PASSWORD, fingerprint=mole_server.fingerprint) as client:
        try:
            deadline = time.monotonic() + 60
            while client.state(ident).running == 0:
                assert time.monotonic() < deadline, "the jobs never started"
                time.sleep(0.2)
            kernel.manager.interrupt_kernel()  # Ctrl-C
            reply = kernel.reply(waiting, timeout=30)
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
            assert f"could not cancel {ident}" in kernel.streams["stderr"]
            assert client.state(ident).state == "running"  # it could not be cancelled

            # The cell has ended; the widget follows the run to its end all the same.
            kernel.wait_for(lambda: progress_bar(kernel).get("bar_style") == "success", 60)
            assert client.state(ident).state == "finished"
            bar = progress_bar(kernel)
            assert bar["value"] == bar["max"] == 2
        finally:
            client.remove(ident)
