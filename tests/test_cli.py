"""``jupyter-mole run``: real subprocesses on real scripts, plus the terminal display's lines."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from jupyter_mole.cli import build_parser
from jupyter_mole.engine.state import (
    CapsuleCounts,
    EnvironmentCounts,
    ErrorLevel,
    ErrorRecord,
    Snapshot,
    State,
)
from jupyter_mole.terminal import (
    LiveDisplay,
    PlainDisplay,
    format_summary,
    open_display,
    render,
)

SWEEP = """\
x, y = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def square(x):
    print("squaring", x)
    return {"y": x * x}

DirectSampling(evaluation=square, sampling=x.in_([1, 2, 3, 4])).hook(display).hook(
    work_directory / "squares.csv"
)
"""

FAILING = """\
x, y = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def explode(x):
    if x == 2:
        raise ValueError("no twos here")
    return {"y": x}

DirectSampling(evaluation=explode, sampling=x.in_([1, 2, 3]))
"""


def run_cli(
    *args: str, cwd: Path, timeout: float = 120, **kw: object
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_mole", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the command, end to end ------------------------------------------------------------
def test_help_lists_run(tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "run" in done.stdout
    assert "a script in the foreground" in done.stdout


def test_finishing_script_prints_rows_and_summary_and_writes_csv(tmp_path: Path) -> None:
    write(tmp_path / "sweep.oms", SWEEP)
    done = run_cli("run", "sweep.oms", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    lines = [line.split() for line in out.splitlines()]
    assert ["x", "y"] in lines
    for x in (1, 2, 3, 4):
        assert [str(x), str(x * x)] in lines
        assert ["squaring", str(x)] in lines
    assert "\x1b" not in out, "no escape codes when stdout is not a terminal"
    assert out.rstrip("\n").splitlines()[-1].startswith("finished: 4 jobs completed in ")
    rows = (tmp_path / "squares.csv").read_text().splitlines()
    assert rows[0] == "x,y"
    assert sorted(rows[1:]) == ["1,1", "2,4", "3,9", "4,16"]
    assert done.stderr == ""


def test_work_dir_and_state_dir(tmp_path: Path) -> None:
    scripts, work, state = tmp_path / "scripts", tmp_path / "work", tmp_path / "state"
    scripts.mkdir()
    work.mkdir()
    write(scripts / "sweep.oms", SWEEP)
    done = run_cli(
        "run",
        str(scripts / "sweep.oms"),
        "--work-dir",
        str(work),
        "--state-dir",
        str(state),
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "squares.csv").exists()
    assert not (scripts / "squares.csv").exists()
    # The state directory given is kept, with the execution's output in it.
    outputs = list(state.glob("executions/*/output.txt"))
    assert len(outputs) == 1
    assert "squaring 3" in outputs[0].read_text()


@pytest.mark.parametrize(
    ("args", "folder"),
    [(["sub/sweep.oms"], "sub"), (["sub/sweep.oms", "--work-dir", "out"], "out")],
    ids=["relative-script", "relative-work-dir"],
)
def test_relative_paths_write_results_in_the_work_directory_once(
    tmp_path: Path, args: list[str], folder: str
) -> None:
    """`work_directory / "x.csv"` must not be joined onto a relative work directory twice."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "out").mkdir()
    write(tmp_path / "sub" / "sweep.oms", SWEEP)
    done = run_cli("run", *args, "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / folder / "squares.csv").is_file()
    assert not (tmp_path / folder / folder).exists()


def test_default_state_dir_is_temporary_and_removed(tmp_path: Path) -> None:
    write(tmp_path / "sweep.oms", SWEEP)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    done = run_cli("run", "sweep.oms", "--workers", "1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert list(tmp.glob("jupyter-mole-*")) == []


def test_failing_task_exits_1_naming_the_task(tmp_path: Path) -> None:
    write(tmp_path / "fail.oms", FAILING)
    done = run_cli("run", "fail.oms", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 1
    assert "error: task explode failed" in done.stderr
    assert "no twos here" in done.stderr
    assert "[SEVERE]" in done.stderr
    assert "Traceback" not in done.stderr, "stack traces only with --verbose"
    assert "failed: " in done.stderr


def test_a_non_zero_exit_names_the_task_once_and_its_script_line(tmp_path: Path) -> None:
    script = "x = Val(int)\nt = SystemExecTask(\"sh -c 'exit 3'\", inputs=[x])\n"
    write(tmp_path / "exit.oms", script + "DirectSampling(evaluation=t, sampling=x.in_([1]))\n")
    done = run_cli("run", "exit.oms", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 1
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert error == (
        "error: task t failed on inputs {x=1}: command `sh -c 'exit 3'` exited with code 3 "
        "(exit.oms, line 2); its stderr ends with:"
    )


def test_failing_task_verbose_prints_the_stack_trace_once(tmp_path: Path) -> None:
    write(tmp_path / "fail.oms", FAILING)
    done = run_cli("run", "-v", "fail.oms", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("Traceback (most recent call last)") == 1
    assert 'File "fail.oms", line 6, in explode' in done.stderr


def test_syntax_error_exits_2_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "broken.oms", "x = Val(int)\ny = (\n")
    done = run_cli("run", "broken.oms", cwd=tmp_path)
    assert done.returncode == 2
    assert "broken.oms, line 2" in done.stderr
    assert done.stdout == ""


def test_scala_script_exits_2_saying_it_is_openmole_scala(tmp_path: Path) -> None:
    write(tmp_path / "model.oms", "val x = Val[Double]\nx\n")
    done = run_cli("run", "model.oms", cwd=tmp_path)
    assert done.returncode == 2
    assert "OpenMOLE Scala" in done.stderr
    assert "line 1" in done.stderr


def test_the_scala_advice_is_a_command_line_that_parses(tmp_path: Path) -> None:
    """The message tells how to send the script to OpenMOLE: that command must exist as written."""
    write(tmp_path / "model.oms", "val x = Val[Double]\nx\n")
    done = run_cli("run", "model.oms", cwd=tmp_path)
    advised = re.search(r"`(jupyter-mole [^`]+)`", done.stderr)
    assert advised is not None, done.stderr
    words = shlex.split(advised.group(1))[1:]
    try:
        args = build_parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"the advised command does not parse: {advised.group(1)}")
    assert (args.command, args.script, args.url) == ("submit", "model.oms", words[-1])
    assert "%mole connect https://" in done.stderr


def test_workflow_that_cannot_run_exits_2(tmp_path: Path) -> None:
    script = "x, y = Val(int), Val(int)\n"
    script += "@PythonTask(inputs=[x], outputs=[y])\ndef f(x):\n    return {'y': x}\nf\n"
    write(tmp_path / "unfed.oms", script)
    done = run_cli("run", "unfed.oms", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert "needs input x" in done.stderr


def test_missing_script_exits_2(tmp_path: Path) -> None:
    done = run_cli("run", "nowhere.oms", cwd=tmp_path)
    assert done.returncode == 2
    assert "there is no script nowhere.oms" in done.stderr


@pytest.mark.parametrize("args", [["run"], ["run", "a.oms", "--workers", "0"], ["frobnicate"]])
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    done = run_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert "usage:" in done.stderr


def _sleeps(duration: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if p.info["cmdline"] == ["sleep", duration]:
            found.append(p)
    return found


@pytest.mark.parametrize("target", ["process", "group"])
def test_ctrl_c_cancels_kills_jobs_and_exits_130(tmp_path: Path, target: str) -> None:
    """SIGINT to the process (kill -INT) or to its group (Ctrl-C in a terminal)."""
    duration = f"30.{uuid.uuid4().int % 10**6:06d}"  # unique, to find our own sleeps only
    script = f"x = Val(int)\nnap = SystemExecTask('sleep {duration}', inputs=[x])\n"
    script += "DirectSampling(evaluation=nap, sampling=x.in_([1, 2])).hook(display)\n"
    write(tmp_path / "nap.oms", script)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_mole", "run", "nap.oms", "--workers", "2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_sleeps(duration)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the jobs never started"
            time.sleep(0.2)
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "cancelling..." in err
    assert "cancelled: 0 jobs completed" in err
    assert "Traceback" not in err, "no worker should die of the Ctrl-C"
    deadline = time.monotonic() + 3
    while _sleeps(duration) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleeps(duration) == []


SLOW_SWEEP = """\
import time
x, y = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def square(x):
    time.sleep(0.3)
    print("squaring", x)
    return {"y": x * x}

DirectSampling(evaluation=square.by(1), sampling=x.in_([1, 2, 3, 4])).hook(display)
"""

_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """Run the command line on a pseudo-terminal of 120 columns: its exit status and screen text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_mole", *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        status = proc.wait(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status, b"".join(chunks).decode("utf-8", errors="replace")


def test_run_on_a_terminal_draws_the_live_progress_bar_and_counters(tmp_path: Path) -> None:
    write(tmp_path / "sweep.oms", SLOW_SWEEP)
    status, screen = run_in_terminal(["run", "sweep.oms", "--workers", "2"], tmp_path)
    assert status == 0, screen
    assert "\x1b[" in screen and "━" in screen  # drawn live, with rich's bar
    lines = [_ESCAPE.sub("", line).strip() for line in re.split(r"\r\n|\r|\n", screen)]
    bars = [line for line in lines if line.startswith("━") or "╺" in line]
    assert any(re.search(r" [0-3]/4 jobs  running  ", line) for line in bars), lines
    assert any(re.search(r" 4/4 jobs  finished  ", line) for line in bars), lines
    rows = [line.split() for line in lines]
    assert ["task", "ready", "running", "completed"] in rows
    assert ["environment", "submitted", "running", "done", "failed"] in rows
    assert ["square", "0", "0", "4"] in rows  # the task's counters at the end
    finals = [row for row in rows if row[:1] == ["local"]]
    assert finals and finals[-1][1:3] == ["0", "0"] and finals[-1][-1] == "0", finals
    for x in (1, 2, 3, 4):
        assert ["squaring", str(x)] in rows
        assert [str(x), str(x * x)] in rows
    assert any(line.startswith("finished: 4 jobs completed in ") for line in lines)


# -- the display ----------------------------------------------------------------------
def snapshot(state: State = State.RUNNING, **counts: int) -> Snapshot:
    return Snapshot(
        id="e",
        state=state,
        capsules={"model": CapsuleCounts(**counts)},
        environments=[EnvironmentCounts("local", submitted=2, running=1, done=5, failed=1)],
        started=100.0,
        ended=101.25 if state is not State.RUNNING else None,
    )


def test_plain_display_keeps_lines_whole_and_prints_errors_to_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    display = PlainDisplay(out, err, every=0.0)
    with display:
        display.output("first li")
        display.update(snapshot(ready=3, running=1, completed=6))
        display.output("ne\nsecond")
        display.errors([ErrorRecord("job lost", ErrorLevel.WARNING, "local", "tb", count=3)])
    progress, *lines = out.getvalue().splitlines()
    assert progress.startswith("running: 6/10 jobs completed (1 running, 3 ready) after ")
    assert lines == ["first line", "second"]
    assert err.getvalue() == "[WARNING] local: job lost (x3)\n"


def test_plain_display_throttles_progress_lines() -> None:
    out = io.StringIO()
    display = PlainDisplay(out, io.StringIO(), every=3600.0, heartbeat=3600.0)
    for i in range(5):
        display.update(snapshot(completed=i))
    assert out.getvalue() == ""


def test_summary_line() -> None:
    done = snapshot(State.FINISHED, completed=100)
    assert format_summary(done) == "finished: 100 jobs completed in 1.2 s"
    assert format_summary(snapshot(State.CANCELLED, completed=1)).startswith("cancelled: 1 job ")


def test_live_panel_shows_tasks_and_environments() -> None:
    out = io.StringIO()
    display = open_display(out, io.StringIO(), live=True)
    assert isinstance(display, LiveDisplay)
    display.console.width = 100
    with display:
        display.update(snapshot(ready=2, running=3, completed=5))
        display.output("a line of output\n")
    text = out.getvalue()
    assert "a line of output" in text
    panel = io.StringIO()
    Console(file=panel, width=100).print(render(snapshot(ready=2, running=3, completed=5)))
    rows = [line.split() for line in panel.getvalue().splitlines()]
    assert ["model", "2", "3", "5"] in rows
    assert ["local", "2", "1", "5", "1"] in rows
    assert any("5/10" in line for line in panel.getvalue().splitlines())
