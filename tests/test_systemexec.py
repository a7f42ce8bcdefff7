"""SystemExecTask: real subprocesses in real job folders."""

from __future__ import annotations

import ctypes
import pickle
import shlex
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import psutil
import pytest

from jupyter_mole.engine.dsl.systemexec import SystemExecTask
from jupyter_mole.engine.dsl.values import File, Val
from jupyter_mole.engine.errors import WorkflowError
from jupyter_mole.engine.job import JobCancelled, JobContext

PY = shlex.quote(sys.executable)


@pytest.fixture
def job(tmp_path: Path) -> JobContext:
    (tmp_path / "work").mkdir()
    return JobContext(work_directory=tmp_path / "work", scratch_directory=tmp_path / "scratch")


def job_folders(job: JobContext) -> list[Path]:
    jobs = job.scratch_directory / "jobs"
    return list(jobs.iterdir()) if jobs.exists() else []


def test_substitution_keeps_a_value_with_spaces_as_one_argument(job: JobContext) -> None:
    x, label, out = Val(float, name="x"), Val(str, name="label"), Val(str, name="out")
    task = SystemExecTask(
        f'{PY} -c "import sys, json; print(json.dumps(sys.argv[1:]))" ${{x}} ${{label}} a${{x}}',
        inputs=[x, label],
        stdout=out,
    )
    result = task.perform({"x": 0.5, "label": "two words"}, job)
    assert result == {"out": '["0.5", "two words", "a0.5"]\n'}
    assert job_folders(job) == []


def test_list_of_commands_run_in_order_in_one_folder(job: JobContext) -> None:
    out = Val(str, name="out")
    task = SystemExecTask(
        ["sh -c 'echo first > f.txt'", "sh -c 'echo second >> f.txt'", "cat f.txt"], stdout=out
    )
    assert task.perform({}, job) == {"out": "first\nsecond\n"}


def test_shell_runs_a_pipe_with_quoted_values(job: JobContext) -> None:
    word, out = Val(str, name="word"), Val(str, name="out")
    task = SystemExecTask(
        "echo ${word} | tr a-z A-Z | tr -d ';'", inputs=[word], stdout=out, shell=True
    )
    assert task.perform({"word": "hello; rm -rf x"}, job) == {"out": "HELLO RM -RF X\n"}


def test_resources_are_copied_and_run(job: JobContext, tmp_path: Path) -> None:
    (job.work_directory / "model.py").write_text("import sys\nprint(float(sys.argv[1]) * 2)\n")
    data = job.work_directory / "data"
    data.mkdir()
    (data / "values.txt").write_text("42\n")
    elsewhere = tmp_path / "abs.txt"
    elsewhere.write_text("absolute\n")
    x, out = Val(float, name="x"), Val(str, name="out")
    task = SystemExecTask(
        [f"{PY} model.py ${{x}}", "cat data/values.txt abs.txt"],
        inputs=[x],
        resources=["model.py", data, str(elsewhere)],
        stdout=out,
    )
    assert task.perform({"x": 1.5}, job) == {"out": "3.0\n42\nabsolute\n"}


def test_missing_resource_is_a_clear_error(job: JobContext) -> None:
    task = SystemExecTask("true", resources=["nope.py"])
    with pytest.raises(WorkflowError, match=r"resource 'nope.py' does not exist"):
        task.perform({}, job)
    assert job_folders(job) == []


def test_input_files_copied_under_a_templated_name(job: JobContext, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    data, seed, out = Val(File, name="data"), Val(int, name="seed"), Val(str, name="out")
    task = SystemExecTask(
        "cat input_${seed}.csv", inputs=[seed], input_files={data: "input_${seed}.csv"}, stdout=out
    )
    assert data in task.inputs
    assert task.perform({"data": source, "seed": 7}, job) == {"out": "a,b\n1,2\n"}


def test_output_files_collected_into_a_persistent_path(job: JobContext) -> None:
    x, result = Val(int, name="x"), Val(File, name="result")
    task = SystemExecTask(
        "sh -c 'mkdir -p out && echo value=${x} > out/result.txt'",
        inputs=[x],
        output_files={"out/result.txt": result},
    )
    assert result in task.outputs
    outputs = task.perform({"x": 3}, job)
    path = outputs["result"]
    assert isinstance(path, Path)
    assert path.read_text() == "value=3\n"
    assert path.name == "result.txt"
    assert job.scratch_directory / "files" in path.parents
    assert job_folders(job) == []


def test_missing_output_file_lists_the_job_folder(job: JobContext) -> None:
    result = Val(File, name="result")
    task = SystemExecTask(
        "sh -c 'mkdir sub && touch other.txt sub/x'", output_files={"res.txt": result}
    )
    with pytest.raises(WorkflowError) as info:
        task.perform({}, job)
    message = str(info.value)
    assert "'res.txt'" in message and "result" in message
    assert "other.txt, sub/, sub/x" in message
    assert job_folders(job) == []


def test_stdout_stderr_and_return_value_captured(job: JobContext) -> None:
    out, err, code = Val(str, name="out"), Val(str, name="err"), Val(int, name="code")
    task = SystemExecTask(
        "echo to-out; echo to-err >&2; exit 4",
        shell=True,
        stdout=out,
        stderr=err,
        return_value=code,
    )
    assert [v.name for v in task.outputs] == ["out", "err", "code"]
    result = task.perform({}, job)
    assert result == {"out": "to-out\n", "err": "to-err\n", "code": 4}
    assert type(result["code"]) is int and type(result["out"]) is str


def test_declared_captured_outputs_pass_the_type_checks(job: JobContext) -> None:
    out, code, x = Val(str, name="out"), Val(int, name="code"), Val(float, name="x")
    task = SystemExecTask(
        "echo ${x}", inputs=[x], outputs=[x, out, code], stdout=out, return_value=code
    )
    assert len(task.outputs) == 3
    assert task.perform({"x": 2}, job) == {"x": 2.0, "out": "2.0\n", "code": 0}


def test_non_zero_exit_is_an_error_with_code_and_stderr(job: JobContext) -> None:
    x = Val(float, name="x")
    script = "import sys; sys.stderr.write('x' * 5000 + 'model diverged'); sys.exit(3)"
    task = SystemExecTask(f"{PY} -c {shlex.quote(script)} ${{x}}", inputs=[x], name="model")
    with pytest.raises(WorkflowError) as info:
        task.perform({"x": 0.5}, job)
    message = str(info.value)
    assert message.startswith("task model: command `")
    assert "0.5` exited with code 3; its stderr ends with:\n" in message
    assert message.endswith("model diverged")
    assert len(message) < 2600
    assert job_folders(job) == []


def test_failing_command_stops_a_list(job: JobContext) -> None:
    task = SystemExecTask(["false", "touch never"], name="t")
    with pytest.raises(WorkflowError, match="`false` exited with code 1"):
        task.perform({}, job)


def test_non_zero_exit_with_return_value_is_not_an_error(job: JobContext) -> None:
    code = Val(int, name="code")
    task = SystemExecTask(["false", "sh -c 'exit 5'"], return_value=code)
    assert task.perform({}, job) == {"code": 5}


def test_program_not_found(job: JobContext) -> None:
    task = SystemExecTask("no-such-program-xyz --flag", name="t")
    with pytest.raises(
        WorkflowError, match=r"'no-such-program-xyz'.*not on the PATH of the machine"
    ):
        task.perform({}, job)
    assert job_folders(job) == []


def test_uncaptured_output_is_printed(job: JobContext, capsys: pytest.CaptureFixture) -> None:
    err = Val(str, name="err")
    task = SystemExecTask("echo printed; echo kept >&2", shell=True, stderr=err)
    assert task.perform({}, job) == {"err": "kept\n"}
    assert capsys.readouterr().out == "printed\n"
    task = SystemExecTask("echo out; echo err >&2", shell=True)
    assert task.perform({}, job) == {}
    assert capsys.readouterr().out == "out\nerr\n"


def test_environment_and_working_directory(job: JobContext) -> None:
    x, out, result = Val(int, name="x"), Val(str, name="out"), Val(File, name="result")
    task = SystemExecTask(
        "sh -c 'echo \"$MODEL_X $OMP_NUM_THREADS\" > here.txt; cat here.txt'",
        inputs=[x],
        environment={"MODEL_X": "x is ${x}", "OMP_NUM_THREADS": "1"},
        working_directory="run/dir",
        stdout=out,
        output_files={"run/dir/here.txt": result},
    )
    outputs = task.perform({"x": 9}, job)
    assert outputs["out"] == "x is 9 1\n"
    assert outputs["result"].read_text() == "x is 9 1\n"


def test_cancellation_kills_the_whole_process_group(job: JobContext, tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"
    code = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen('sleep 30', shell=True)\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(30)\n"
    )
    task = SystemExecTask(shlex.join([sys.executable, "-c", code]), name="slow")
    raised: list[BaseException] = []

    def run() -> None:
        try:
            task.perform({}, job)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not (pids.exists() and " " in pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    leader, child = (int(p) for p in pids.read_text().split())
    assert psutil.pid_exists(leader) and psutil.pid_exists(child)
    time.sleep(0.5)
    started = time.monotonic()
    job.cancel()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2
    assert len(raised) == 1 and isinstance(raised[0], JobCancelled)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_alive(p) for p in (leader, child)):
        time.sleep(0.05)
    assert not _alive(leader) and not _alive(child)
    assert job_folders(job) == []


class _Injected(Exception):
    pass


def test_an_exception_injected_into_the_thread_kills_the_group(
    job: JobContext, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid.txt"
    task = SystemExecTask(f"echo $$ > {shlex.quote(str(pid_file))}; exec sleep 30", shell=True)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            task.perform({}, job)
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    leader = int(pid_file.read_text())
    assert _alive(leader)
    set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
    assert set_async_exc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Injected)) == 1
    thread.join(timeout=3)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], _Injected)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and _alive(leader):
        time.sleep(0.05)
    assert not _alive(leader)
    assert job.process_groups == set()
    assert job_folders(job) == []


def test_cancelled_before_start_runs_nothing(job: JobContext) -> None:
    job.cancel()
    with pytest.raises(JobCancelled):
        SystemExecTask("touch x").perform({}, job)
    assert job_folders(job) == []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"command": 3}, "command string or a list"),
        ({"command": ["ls", 3]}, "non-empty command string"),
        ({"command": ""}, "non-empty command string"),
        ({"command": "ls", "stdout": "out"}, r"stdout= takes a Val, got a `str`"),
        ({"command": "ls", "return_value": Val(str)}, r"return_value= takes a Val\(int\)"),
        ({"command": "ls", "output_files": {Val(File): "x"}}, "output_files maps a path"),
        ({"command": "ls", "output_files": {"/abs/x": Val(File)}}, "relative path inside"),
        ({"command": "ls", "input_files": {"x": "y"}}, "input_files maps a file Val"),
        ({"command": "ls", "resources": [3]}, "resources are paths"),
        ({"command": "ls", "environment": {"A": 1}}, "environment maps variable names"),
        ({"command": "ls", "working_directory": "../up"}, "relative path inside"),
    ],
)
def test_arguments_are_validated(kwargs: dict, pattern: str) -> None:
    command = kwargs.pop("command")
    with pytest.raises(WorkflowError, match=pattern):
        SystemExecTask(command, **kwargs)


def test_unnamed_vals_are_fine_until_the_task_runs() -> None:
    x, out = Val(float), Val(str)
    task = SystemExecTask("echo ${x}", inputs=[x], stdout=out)
    assert task.name == "SystemExecTask" and task.kind == "SystemExecTask"
    assert task.outputs == (out,)


def test_check_available_names_an_unknown_template_value() -> None:
    x = Val(float, name="x")
    task = SystemExecTask("model ${x} ${y}", inputs=[x], name="model")
    with pytest.raises(WorkflowError, match=r"\$\{y\} in 'model \$\{x\} \$\{y\}' is not one"):
        task.check_available({"x": x})
    SystemExecTask("model ${x}", inputs=[x]).check_available({"x": x})


def test_pickles_and_runs_after(job: JobContext) -> None:
    x, out = Val(int, name="x"), Val(str, name="out")
    task = SystemExecTask("echo ${x}", inputs=[x], stdout=out)
    task.perform({"x": 1}, job)
    copy = pickle.loads(cloudpickle.dumps(task))
    assert copy.perform({"x": 2}, job) == {"out": "2\n"}


def test_a_cancel_while_a_process_starts_waits_for_it_to_be_watched(job: JobContext) -> None:
    """The exception that interrupts a job must not land between fork and watch."""
    inside, cancelled, left = threading.Event(), threading.Event(), threading.Event()
    raised_inside: list[BaseException] = []
    raised_after: list[BaseException] = []

    def run() -> None:
        try:
            with job.starting_process():
                inside.set()
                cancelled.wait(5)
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:  # bytecode: where an injected exception lands
                    pass
        except BaseException as error:
            raised_inside.append(error)
            return
        left.set()
        try:
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                pass
        except BaseException as error:
            raised_after.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(5)
    job.cancel(thread.ident)
    cancelled.set()
    thread.join(5)
    assert raised_inside == [] and left.is_set()
    assert job.cancelled.is_set()
    assert raised_after == []


def test_a_cancel_outside_a_process_start_interrupts_the_thread(job: JobContext) -> None:
    raised: list[BaseException] = []
    running = threading.Event()

    def run() -> None:
        try:
            running.set()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pass
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert running.wait(5)
    job.cancel(thread.ident)
    thread.join(5)
    assert len(raised) == 1 and isinstance(raised[0], JobCancelled)
