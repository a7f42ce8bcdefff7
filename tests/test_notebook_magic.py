"""``notebooks/magic_demo.ipynb``, executed headlessly by nbclient as a person would run it.

Nothing is configured: the kernel's magics start the embedded server themselves
(Jupyter's directories isolated in a temporary folder), the ``%%mole`` cell
waits behind its widget, and the next cells download and load the results. The
embedded server outlives the kernel, as promised, and is stopped at the end.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_mole.client import MoleClient
from jupyter_mole.connection import FILE_NAME, read_connection_file
from tests.kernels import install_python_kernel, isolate_jupyter, stop_embedded

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "magic_demo.ipynb"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Jobs that take a second: the cell has long returned when they end.
SLOW_SCRIPT = """
x = Val(int)
DirectSampling(evaluation=SystemExecTask("sleep 1", inputs=[x]), sampling=x.in_([1, 2, 3, 4]))
"""


@pytest.fixture
def jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Isolated Jupyter directories, with a ``python3`` kernel that is this very Python."""
    dirs = isolate_jupyter(monkeypatch, tmp_path / "jupyter")
    install_python_kernel(dirs["data"])
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    yield dirs
    stop_embedded(dirs["runtime"])


def outputs(cell: Any) -> tuple[str, dict[str, Any]]:
    """A cell's printed text, and its value's data by MIME type."""
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    data: dict[str, Any] = {}
    for o in cell.outputs:
        if o.output_type == "error":
            raise AssertionError(f"{o.ename}: {o.evalue}")
        if o.output_type in ("execute_result", "display_data"):
            data.update(o.data)
    return text, data


def shown_as_text(cell: Any) -> list[str]:
    """The text/plain of a cell's displays: what a front end without widgets shows of them."""
    return [
        o.data["text/plain"]
        for o in cell.outputs
        if o.output_type == "display_data" and WIDGET_VIEW in o.data
    ]


def test_the_demo_notebook_runs_against_the_embedded_server(
    jupyter: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    notebook = folder / NOTEBOOK.name
    shutil.copy(NOTEBOOK, notebook)
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # as Jupyter tells its kernels

    nb = nbformat.read(notebook, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells)  # kept without outputs
    runner = NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(folder)}}
    )
    runner.execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    load, status, mole, download, results, pi, listing = code
    assert outputs(load) == ("", {})  # %load_ext says nothing

    # The magics started the embedded server (loopback, password) and recorded it.
    recorded = read_connection_file(jupyter["runtime"] / FILE_NAME)
    assert recorded is not None and recorded.kind == "embedded" and recorded.pid is not None
    text, _ = outputs(status)
    assert text.startswith(
        f"connected to jupyter-mole (ours) at {recorded.url} "
        f"(embedded server (pid {recorded.pid}), started by this kernel)"
    )

    # The %%mole cell: the script written beside the notebook, a widget, the handle as value.
    assert (folder / "pi.oms").read_text() == (NOTEBOOK.parent / "pi.oms").read_text()
    text, data = outputs(mole)
    assert WIDGET_VIEW in data  # the live view, not text progress
    assert "finished:" not in text
    ident = data["text/plain"].split()[1]
    assert data["text/plain"] == f"<Execution {ident} pi.oms>"
    # A front end without widgets (jupyter console, nbconvert) reads the end, not VBox(...).
    assert shown_as_text(mole) == [f"finished: 100 jobs completed ({ident})"]
    models = nb.metadata["widgets"][WIDGET_STATE]["state"]
    values = [m["state"] for m in models.values()]
    bar = next(v for v in values if v.get("_model_name") == "IntProgressModel")
    assert bar["value"] == bar["max"] == 100 and bar["bar_style"] == "success"
    shown = next(v for v in values if v.get("_model_name") == "TextareaModel")
    assert "pi_avg" in shown["value"]  # the display hook's output, in the widget
    assert any(">finished<" in str(v.get("value", "")) for v in values)

    # Downloaded into the notebook's folder, under a folder named after the execution.
    result = folder / f"mole-{ident[:8]}" / "result.csv"
    assert outputs(download)[1]["text/plain"] == f"PosixPath('{result}')"
    assert result.read_text().startswith("pi_avg,pi_med\n")
    _, data = outputs(results)
    assert "pi_avg" in data["text/html"] and "pi_med" in data["text/html"]
    assert float(outputs(pi)[1]["text/plain"]) == pytest.approx(3.14, abs=0.05)
    text, _ = outputs(listing)
    assert text.splitlines()[0].split() == ["id", "state", "script", "jobs", "notebook", "age"]
    assert f"{ident}  finished  pi.oms  100/100  {notebook}" in text

    # The kernel has gone; the server and its executions have not.
    assert psutil.pid_exists(recorded.pid)

    # The next kernel finds the same server; a --no-wait run's widget keeps updating from the
    # kernel's event loop while other cells run, and stops when the run ends.
    later = new_notebook(
        cells=[
            new_code_cell("%load_ext jupyter_mole"),
            new_code_cell("%mole status"),
            new_code_cell("%%mole slow.oms --no-wait -o bg\n" + SLOW_SCRIPT),
            new_code_cell(
                "import asyncio\n"
                "while not bg.state().done:\n"
                "    await asyncio.sleep(0.1)  # another cell, awaiting: the loop runs\n"
                "await asyncio.sleep(2.5)  # the view polls every second"
            ),
            new_code_cell(
                "from ipywidgets import IntProgress\n"
                "from ipywidgets.widgets.widget import _instances\n"
                "[(w.value, w.max, w.bar_style) for w in list(_instances.values())\n"
                " if isinstance(w, IntProgress)]"
            ),
        ],
        metadata=nb.metadata,
    )
    NotebookClient(
        later, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(folder)}}
    ).execute()
    _, status, started, waited, bars = later.cells
    assert outputs(status)[0].startswith(
        f"connected to jupyter-mole (ours) at {recorded.url} "
        f"(embedded server (pid {recorded.pid}), the connection file)"
    )
    _, data = outputs(started)
    assert WIDGET_VIEW in data and data["text/plain"].endswith(" slow.oms>")
    outputs(waited)
    later_ident = data["text/plain"].split()[1]
    (text,) = shown_as_text(started)  # as the cell left it: it did not wait for the end
    assert text.startswith(f"slow.oms ({later_ident}): ") and "VBox(" not in text
    assert outputs(bars)[1]["text/plain"] == "[(4, 4, 'success')]"
    with MoleClient(recorded.url, recorded.password) as mole_client:
        (info,) = [i for i in mole_client.list(details=True) if i.id == ident]
        assert info.state == "finished" and info.tags == {"notebook": str(notebook)}
    assert stop_embedded(jupyter["runtime"]) == []  # SIGTERM stops it with its workers
    assert not psutil.pid_exists(recorded.pid)
