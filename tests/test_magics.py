"""``%%mole`` and ``%mole`` in a real IPython shell, against real servers.

Every test runs with Jupyter's runtime, data and config directories in its own
temporary folder (so the connection file and the embedded server's state never
touch the real home), and any embedded server a test starts is stopped at its
end (the fixtures are in ``tests/kernels.py``). Ctrl-C and the kernel-restart promise are checked with IPython running in a
child process, the way a kernel would.

Which server the magics talk to (and a kernel's Ctrl-C) is tested in
``test_magics_servers.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_mole.client import DestinationExists, MoleClient, NotFound, WaitTimeout
from jupyter_mole.kernel import Execution
from jupyter_mole.kernel import magics as magics_module
from tests.kernels import QUICK_SCRIPT, info_of
from tests.servers import PI_SCRIPT, SLEEPY_SCRIPT, ServerProcess


# -- %%mole -------------------------------------------------------------------------------
def test_a_cell_runs_waits_downloads_and_returns_its_execution(
    shell: InteractiveShell,
    served: ServerProcess,
    client: MoleClient,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/analysis.ipynb")
    run = shell.run_cell_magic(
        "mole",
        "pi.oms -o run --tag team=ants --tag purpose=demo --download result.csv pi.oms",
        PI_SCRIPT,
    )

    assert isinstance(run, Execution) and shell.user_ns["run"] is run
    assert (folder / "pi.oms").read_text() == PI_SCRIPT  # the cell, written to the folder
    assert run.state().state == "finished"
    out = capsys.readouterr().out
    assert "pi_avg" in out  # the display hook's output, shown as it came
    assert f"finished: 100 jobs completed ({run.id})" in out
    result = folder / f"mole-{run.id[:8]}" / "result.csv"
    assert f"downloaded {result}" in out
    assert result.read_text().startswith("pi_avg,pi_med")
    script = folder / f"mole-{run.id[:8]}" / "pi.oms"  # every path given, beside each other
    assert f"downloaded {script}" in out
    assert script.read_text() == PI_SCRIPT

    info = info_of(client, run.id)
    assert info.script == "pi.oms"
    assert info.tags == {"team": "ants", "purpose": "demo", "notebook": "/home/me/analysis.ipynb"}

    frame = run.results("result.csv")  # the file already downloaded is read
    assert list(frame.columns) == ["pi_avg", "pi_med"]
    assert frame["pi_avg"][0] == pytest.approx(3.14, abs=0.05)


def test_no_wait_returns_at_once_and_cancel_remove_line_magics(
    shell: InteractiveShell,
    served: ServerProcess,
    client: MoleClient,
    capsys: pytest.CaptureFixture,
) -> None:
    started = time.monotonic()
    run = shell.run_cell_magic("mole", "sleepy.oms --no-wait -o run", SLEEPY_SCRIPT)
    assert time.monotonic() - started < 15  # the jobs sleep 30 s
    assert shell.user_ns["run"] is run
    assert run.state().state == "running"
    capsys.readouterr()

    shell.run_line_magic("mole", f"cancel {run.id}")
    assert capsys.readouterr().out == f"cancelled {run.id}\n"
    assert run.state().state == "cancelled"
    shell.run_line_magic("mole", f"state {run.id}")
    assert capsys.readouterr().out.startswith("cancelled: ")

    shell.run_line_magic("mole", f"remove {run.id}")
    assert capsys.readouterr().out == f"removed {run.id}\n"
    with pytest.raises(NotFound):
        run.state()
    assert run.id not in client.list()
    with pytest.raises(UsageError, match=f"%mole state: .*{run.id}"):
        shell.run_line_magic("mole", f"state {run.id}")


def test_timeout_stops_waiting_while_the_run_goes_on(
    shell: InteractiveShell, served: ServerProcess, capsys: pytest.CaptureFixture
) -> None:
    started = time.monotonic()
    run = shell.run_cell_magic("mole", "sleepy.oms --timeout 1 --download r.csv", SLEEPY_SCRIPT)
    try:
        assert time.monotonic() - started < 15
        out = capsys.readouterr().out
        assert f"still running after 1 s; the execution goes on: {run.id}" in out
        assert "nothing downloaded: the execution is running" in out
        assert run.state().state == "running"
    finally:
        run.cancel()


@pytest.fixture
def finished(served: ServerProcess, client: MoleClient, tmp_path: Path) -> Execution:
    """A finished execution of QUICK_SCRIPT, started by another notebook."""
    other = tmp_path / "other-notebook"
    other.mkdir()
    (other / "quick.oms").write_text(QUICK_SCRIPT)
    execution = Execution(
        client, client.start(other, "quick.oms", tags={"notebook": "other.ipynb"})
    )
    assert execution.wait(timeout=60).state == "finished"
    return execution


def test_line_magics_print_for_a_person(
    shell: InteractiveShell, finished: Execution, folder: Path, capsys: pytest.CaptureFixture
) -> None:
    ident = finished.id
    shell.run_line_magic("mole", "list")
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"id\s+state\s+script\s+jobs\s+notebook\s+age$", lines[0])
    row = next(line for line in lines if line.startswith(ident))
    assert re.match(rf"{ident}\s+finished\s+quick\.oms\s+4/4\s+other\.ipynb\s+\d+ s$", row)
    assert not any(line.lstrip().startswith(("{", "[")) for line in lines)  # not JSON

    shell.run_line_magic("mole", f"state {ident}")
    assert capsys.readouterr().out.startswith(
        "finished: 4/4 jobs (double: 0 ready 0 running 4 completed; local: "
    )

    shell.run_line_magic("mole", f"output {ident}")
    assert sorted(capsys.readouterr().out.splitlines()) == [f"hello {x}" for x in range(4)]

    shell.run_line_magic("mole", f"download {ident} r.csv")
    target = folder / f"mole-{ident[:8]}" / "r.csv"
    assert capsys.readouterr().out == f"downloaded {target}\n"
    lines = target.read_text().split()
    assert lines[0] == "x,y" and sorted(lines[1:]) == ["0,0", "1,2", "2,4", "3,6"]
    target.write_text("edited\n")
    with pytest.raises(UsageError, match="already exists"):
        shell.run_line_magic("mole", f"download {ident} r.csv")
    assert target.read_text() == "edited\n"
    shell.run_line_magic("mole", f"download {ident} r.csv --overwrite")
    assert target.read_text().startswith("x,y")

    shell.run_line_magic("mole", f"download {ident} --to everything")  # the whole work directory
    assert capsys.readouterr().out.endswith(f"downloaded {folder / 'everything'}\n")
    assert (folder / "everything" / "quick.oms").read_text() == QUICK_SCRIPT
    assert (folder / "everything" / "r.csv").is_file()

    shell.run_line_magic("mole", "")  # the help, options included
    help_text = capsys.readouterr().out
    assert "%mole list" in help_text and "--no-wait" in help_text and "--password-file" in help_text
    with pytest.raises(UsageError, match="unknown command"):
        shell.run_line_magic("mole", "frobnicate")
    with pytest.raises(UsageError, match=r"%mole download: execution no-such-id: "):
        shell.run_line_magic("mole", "download no-such-id")


def test_mistakes_stop_the_cell_with_a_message(
    shell: InteractiveShell, served: ServerProcess, folder: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(UsageError, match="the script must be a file inside the notebook's folder"):
        shell.run_cell_magic("mole", "../escape.oms", "EmptyTask()")
    assert not (folder.parent / "escape.oms").exists()
    with pytest.raises(UsageError, match="--tag takes key=value"):
        shell.run_cell_magic("mole", "a.oms --tag oops", "EmptyTask()")
    shell.run_cell_magic("mole", "--help", "EmptyTask()")  # the options, with their help
    help_text = capsys.readouterr().out
    assert "--timeout S           stop waiting after this many seconds" in help_text
    assert "-o NAME, --output NAME" in help_text and "--tag <KEY=VALUE>" in help_text
    with pytest.raises(UsageError, match="required: script"):
        shell.run_cell_magic("mole", "", "EmptyTask()")
    # A script the server cannot load: refused, and the cell fails (queued cells stop).
    with pytest.raises(UsageError, match=r"%%mole: .*this_is_not_defined"):
        shell.run_cell_magic("mole", "broken.oms", "this_is_not_defined")
    # As a kernel runs a cell: one line of error, no traceback, and the cell counts as failed.
    result = shell.run_cell("%%mole broken.oms\nthis_is_not_defined\n")
    assert isinstance(result.error_in_exec, UsageError)


# -- the execution handle ------------------------------------------------------------------
def test_the_execution_handle(finished: Execution, folder: Path) -> None:
    run = Execution(finished.client, finished.id, "quick.oms", folder)  # as a new kernel would
    assert repr(run) == f"<Execution {run.id} quick.oms>"
    assert run.state().state == "finished"
    assert run.wait(timeout=5).completed == 4
    assert sorted(run.output().splitlines()) == [f"hello {x}" for x in range(4)]

    frame = run.results()  # the only result file of the work directory
    assert sorted(frame["y"]) == [0, 2, 4, 6] and list(frame.columns) == ["x", "y"]
    assert (folder / f"mole-{run.id[:8]}" / "r.csv").is_file()
    assert run.download("r.csv", to="copies") == folder / "copies" / "r.csv"
    assert run.download(to=folder / "all") == folder / "all"
    assert (folder / "all" / "quick.oms").read_text() == QUICK_SCRIPT
    with pytest.raises(DestinationExists):
        run.download(to=folder / "all")


def test_wait_gives_up_after_its_timeout(shell: InteractiveShell, served: ServerProcess) -> None:
    run = shell.run_cell_magic("mole", "sleepy.oms --no-wait", SLEEPY_SCRIPT)
    try:
        started = time.monotonic()
        with pytest.raises(WaitTimeout, match=r"still running after 0\.5 s"):
            run.wait(timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        run.cancel()
    assert run.wait(timeout=30).state == "cancelled"


def write_gzip_json(path: Path, obj: object, text: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress((json.dumps(obj) if text is None else text).encode()))


def omr_index(data_file: str, mode: str, names: list[str]) -> dict[str, Any]:
    """An OpenMOLE result index, as OpenMOLE 15+ writes it (the fields read back)."""
    return {
        "format-version": "1.0",
        "openmole-version": "16.0",
        "method": {"method": "evolution"},
        "data-file": [data_file],
        "data-mode": mode,
        "data-content": {
            "section": [{"name": None, "variables": [{"name": n, "type": "Double"} for n in names]}]
        },
    }


def test_results_load_openmole_omr_files(
    shell: InteractiveShell, served: ServerProcess, folder: Path
) -> None:
    # One array per variable ("create" mode), and one entry per save ("append" mode).
    write_gzip_json(folder / "sweep.omr", omr_index("sweep.omr-data/1.omd", "create", ["x", "y"]))
    write_gzip_json(folder / "sweep.omr-data" / "1.omd", [[[0.0, 0.5, 1.0], [1.0, 2.5, 4.0]]])
    write_gzip_json(
        folder / "saves" / "evolution.omr",
        omr_index("evolution.omr-data/2.omd", "append", ["generation", "fitness"]),
    )
    write_gzip_json(
        folder / "saves" / "evolution.omr-data" / "2.omd",
        None,
        text="[[1, 0.9]],\n[[2, 0.4]],\n[[3, 0.1]]",
    )
    (folder / "summary.csv").write_text("a,b\n1,2\n")
    run = shell.run_cell_magic("mole", "results.oms", "EmptyTask()")
    # Results are read from what the server holds: not from the local copies.
    (folder / "sweep.omr").unlink()
    shutil.rmtree(folder / "sweep.omr-data")
    shutil.rmtree(folder / "saves")

    sweep = run.results("sweep.omr")  # the index, and the data file it names, are fetched
    assert sweep.to_dict("list") == {"x": [0.0, 0.5, 1.0], "y": [1.0, 2.5, 4.0]}
    assert (folder / f"mole-{run.id[:8]}" / "sweep.omr-data" / "1.omd").is_file()
    evolution = run.results("saves/evolution.omr")
    assert evolution.to_dict("list") == {"generation": [1, 2, 3], "fitness": [0.9, 0.4, 0.1]}
    with pytest.raises(ValueError, match=r"result files found: (summary\.csv|sweep\.omr), "):
        run.results()  # with no name, only when there is one result file
    assert run.results("summary.csv").to_dict("list") == {"a": [1], "b": [2]}


def test_an_omr_without_its_data_file_says_what_to_fetch(tmp_path: Path) -> None:
    from jupyter_mole.kernel.omr import read_omr

    index = tmp_path / "lost.omr"
    write_gzip_json(index, omr_index("lost.omr-data/9.omd", "create", ["x"]))
    with pytest.raises(
        ValueError, match=r"its data file 9\.omd is missing; download the lost\.omr-data"
    ):
        read_omr(index)
    index.write_text("not an index")
    with pytest.raises(ValueError, match=r"lost\.omr is not an OpenMOLE \.omr result we can read"):
        read_omr(index)


# -- what gets uploaded ---------------------------------------------------------------------
def work_directory(client: MoleClient, execution_id: str, path: str = "") -> set[str]:
    names = set()
    for entry in client.listing(execution_id, path):
        name = f"{path}/{entry.name}".strip("/")
        if entry.type == "directory":
            names.add(name + "/")
            names |= work_directory(client, execution_id, name)
        else:
            names.add(name)
    return names


def test_uploads_leave_out_default_ignores_and_what_moleignore_says(
    shell: InteractiveShell, served: ServerProcess, client: MoleClient, folder: Path
) -> None:
    files = [
        "keep.txt",
        "data/input.csv",
        "important.log",
        "run.log",  # *.log, by .moleignore
        "big/blob.bin",  # big/, by .moleignore
        ".ipynb_checkpoints/analysis-checkpoint.ipynb",
        ".git/config",
        "__pycache__/model.cpython-311.pyc",
        "sub/__pycache__/helper.cpython-311.pyc",
        ".venv/lib/site.py",
        "venv/lib/site.py",
        "myenv/pyvenv.cfg",  # a virtual environment under any name
        "myenv/lib/site.py",
        "mamba/conda-meta/history",  # a conda environment under any name
        "mamba/lib/python3.11/site.py",
        "mole-1234abcd/result.csv",  # what an earlier download brought back
    ]
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    (folder / ".moleignore").write_text("*.log\nbig/\n!important.log\n")

    run = shell.run_cell_magic("mole", "check.oms", "EmptyTask()")
    assert run.state().state == "finished"
    assert work_directory(client, run.id) == {
        ".moleignore",
        "check.oms",
        "data/",
        "data/input.csv",
        "important.log",
        "keep.txt",
        "sub/",
    }


def test_a_folder_above_the_size_cap_stops_with_the_largest_entries(
    shell: InteractiveShell,
    served: ServerProcess,
    client: MoleClient,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (folder / "huge.bin").write_bytes(os.urandom(30_000))
    (folder / "data").mkdir()
    (folder / "data" / "medium.bin").write_bytes(os.urandom(12_000))
    (folder / "small.txt").write_text("small")
    monkeypatch.setenv("MOLE_MAX_UPLOAD", "20K")
    before = set(client.list())
    with pytest.raises(UsageError) as refused:
        shell.run_cell_magic("mole", "capped.oms", "EmptyTask()")
    message = str(refused.value)
    assert "more than the 20.0 KiB limit" in message
    # The largest first, then how to leave them out.
    assert re.search(r"largest entries:\n +huge\.bin +29\.3 KiB\n +data/ +11\.7 KiB\n", message)
    assert "add them to .moleignore (gitignore syntax)" in message
    assert "\n  /huge.bin\n  /data/\n" in message
    assert "MOLE_MAX_UPLOAD" in message
    assert set(client.list()) == before  # nothing was sent

    (folder / ".moleignore").write_text("/huge.bin\n")  # as the message suggests
    run = shell.run_cell_magic("mole", "capped.oms", "EmptyTask()")
    assert "huge.bin" not in work_directory(client, run.id)
    run.remove()

    monkeypatch.setenv("MOLE_MAX_UPLOAD", "a lot")
    with pytest.raises(UsageError, match="MOLE_MAX_UPLOAD='a lot': give a size in bytes"):
        shell.run_cell_magic("mole", "capped.oms", "EmptyTask()")


def test_a_large_upload_shows_its_progress(
    shell: InteractiveShell,
    served: ServerProcess,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    (folder / "data.bin").write_bytes(os.urandom(300_000))
    shell.run_cell_magic("mole", "small.oms", "EmptyTask()")
    assert "sending" not in capsys.readouterr().out  # small folders say nothing

    monkeypatch.setattr(magics_module, "PROGRESS_THRESHOLD", 100_000)  # "large", for this test
    shell.run_cell_magic("mole", "small.oms", "EmptyTask()")
    out = capsys.readouterr().out
    assert re.search(r"packing: [\d.]+ KiB / 293\.\d KiB \(100%\)\n", out)
    assert re.search(r"sending: [\d.]+ KiB / [\d.]+ KiB \(100%\)\n", out)


# -- the live view in a cell -------------------------------------------------------------
def test_the_cell_shows_a_widget_in_a_kernel_and_text_without_one(
    shell: InteractiveShell,
    served: ServerProcess,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import IPython.display
    import ipywidgets

    shown: list[object] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setattr(shell, "kernel", object(), raising=False)  # as in ipykernel

    run = shell.run_cell_magic("mole", "quick.oms", QUICK_SCRIPT)
    assert len(shown) == 1 and isinstance(shown[0], ipywidgets.VBox)
    panel = shown[0]
    header, bar = panel.children[0], panel.children[1]
    assert run.id in header.children[0].value and ">finished<" in header.children[1].value
    assert (bar.children[0].value, bar.children[0].max) == (4, 4)
    assert "finished:" not in capsys.readouterr().out  # no text progress beside a widget

    monkeypatch.setenv("MOLE_NO_WIDGETS", "1")  # a front end without widgets
    run = shell.run_cell_magic("mole", "quick.oms", QUICK_SCRIPT)
    assert len(shown) == 1
    out = capsys.readouterr().out
    assert "hello 3" in out
    assert out.rstrip().endswith(f"finished: 4 jobs completed ({run.id})")
