"""The live view of an execution: the ipywidgets panel's model values against a real server.

ipywidgets builds its models without a front end, so these tests read exactly
what a front end would render (``progress.value``, ``errors.value``...) while a
real execution runs on the session's HTTPS server, and click the buttons the way
a person does (``button.click()``).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import types
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import IPython
import pytest

from jupyter_mole.client import MoleClient, NotFound
from jupyter_mole.kernel import Execution
from jupyter_mole.kernel.view import Follower, Poll, TextView, show, widgets_available
from jupyter_mole.kernel.widget import WidgetView, counts_table
from jupyter_mole.protocol import CapsuleState, EnvironmentStatus, ExecutionState
from tests.servers import SLEEPY_SCRIPT, ServerProcess

# Jobs that print, take a moment, and fail once for x = 0, 3, 6, 9 before a retry succeeds:
# each failure is a WARNING of its own in the error log.
FLAKY_SCRIPT = """
import time
x, y = Val(int), Val(int)
marks = work_directory / "marks"
marks.mkdir()

@PythonTask(inputs=[x], outputs=[y])
def flaky(x):
    time.sleep(0.3)
    print(f"line {x}")
    mark = marks / str(x)
    if x % 3 == 0 and not mark.exists():
        mark.touch()
        raise RuntimeError(f"transient failure {x}")
    return {"y": x * 10}

DirectSampling(
    evaluation=flaky.on(LocalEnvironment(2, retry=2)), sampling=x.in_(range(12))
).hook(work_directory / "r.csv")
"""

QUICK_SCRIPT = """
x, y = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def double(x):
    return {"y": 2 * x}

DirectSampling(evaluation=double, sampling=x.in_(range(4))).hook(work_directory / "r.csv")
"""

FLAKY = (0, 3, 6, 9)


@pytest.fixture
def client(mole_server: ServerProcess) -> Iterator[MoleClient]:
    with MoleClient(
        mole_server.url, mole_server.password, fingerprint=mole_server.fingerprint
    ) as mole:
        yield mole


@pytest.fixture
def start(client: MoleClient, tmp_path: Path) -> Iterator[Callable[[str, str], Execution]]:
    """Start a script from a fresh notebook folder; what is still running at the end is removed."""
    started: list[Execution] = []

    def run(script: str, name: str = "model.oms") -> Execution:
        folder = tmp_path / f"notebook{len(started)}"
        folder.mkdir()
        (folder / name).write_text(script)
        execution = Execution(client, client.start(folder, name), name, folder)
        started.append(execution)
        return execution

    yield run
    for execution in started:
        try:
            if not execution.state().done:
                execution.cancel()
            execution.remove()
        except NotFound:
            pass


def follow(execution: Execution) -> tuple[WidgetView, Follower]:
    view = WidgetView(execution)
    follower = Follower(execution, view)
    view.follower = follower
    return view, follower


class Cells(HTMLParser):
    """The cells of an HTML table, row by row: (tag, text, inline style)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str, str]]] = []
        self.tables = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables += 1
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = [tag, "", dict(attrs).get("style") or ""]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None:
            self.rows[-1].append((self._cell[0], self._cell[1], self._cell[2]))
            self._cell = None


def cells(table: str) -> Cells:
    parser = Cells()
    parser.feed(table)
    return parser


def texts(table: str) -> list[list[str]]:
    return [[text for _, text, _ in row] for row in cells(table).rows]


def style_of(style: str) -> dict[str, str]:
    pairs = (part.split(":", 1) for part in style.split(";") if ":" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_count_tables_line_up_in_the_theme_colours() -> None:
    state = ExecutionState(
        "running",
        capsules=[("model", CapsuleState(3, 2, 10)), ("<stats>", CapsuleState(0, 0, 1))],
        environments=[EnvironmentStatus("cluster", 4, 2, 9, 1), EnvironmentStatus(None, 0, 1)],
    )
    table = cells(counts_table(state))
    assert table.tables == 1  # one grid: the environments' columns under the tasks'
    assert texts(counts_table(state)) == [
        ["task", "ready", "running", "completed", ""],
        ["model", "3", "2", "10", ""],
        ["<stats>", "0", "0", "1", ""],  # escaped in the HTML, read back as text
        ["environment", "submitted", "running", "done", "failed"],
        ["cluster", "4", "2", "9", "1"],
        ["environment", "0", "1", "0", "0"],
    ]
    for row in table.rows:
        _, _, first = row[0]
        assert style_of(first)["text-align"] == "left"
        for tag, text, style in row[1:]:
            if text:  # every number, and every header above numbers, on the right edge
                assert style_of(style)["text-align"] == "right", (tag, text)
    headers = [style_of(style) for row in table.rows for tag, _, style in row if tag == "th"]
    assert all("var(--jp-border-color2" in h["border-bottom"] for h in headers if h)
    whole = style_of(re.search(r"<table[^>]*style='([^']*)'", counts_table(state)).group(1))
    assert whole["color"].startswith("var(--jp-ui-font-color1")
    assert whole["font-size"].startswith("var(--jp-ui-font-size1")
    failed = {row[0][1]: style_of(row[4][2]) for row in table.rows[4:]}
    assert failed["cluster"]["color"].startswith("var(--jp-error-color1")  # 1 failed job
    assert "color" not in failed["environment"]  # none failed: not alarming
    assert counts_table(ExecutionState("running")) == ""


def error_messages(view: WidgetView) -> list[str]:
    return re.findall(r"<summary><b>WARNING</b> (.*?)</summary>", view.errors.value)


def step_until(follower: Follower, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not there after {timeout} s: {follower.state}"
        follower.step()
        time.sleep(0.05)


def test_the_widget_follows_an_execution_until_it_ends(start: Callable[..., Execution]) -> None:
    execution = start(FLAKY_SCRIPT)
    view, follower = follow(execution)
    assert view.execution.id in view.title.value
    snapshots = []
    deadline = time.monotonic() + 90
    while True:
        done = follower.step()
        state = follower.state
        assert state is not None
        snapshots.append(
            {
                "state": state,
                "value": view.progress.value,
                "max": view.progress.max,
                "errors": error_messages(view),
                "output": view.output.value,
                "label": view.state_label.value,
                "counts": view.counts.value,
            }
        )
        if done:
            break
        assert time.monotonic() < deadline, f"still running: {state}"
        time.sleep(0.05)

    live = [s for s in snapshots if s["state"].state == "running"]
    assert live, "the first poll already saw the end: the workflow is too quick to watch"
    for snap in live:
        # The bar is completed jobs over every job known so far, as the server counts them.
        assert snap["value"] == snap["state"].completed
        assert snap["max"] == max(snap["state"].total, 1)
        assert ">running<" in snap["label"]
    assert any(0 < s["value"] < s["max"] for s in live), "no poll saw the run half done"
    table = texts(next(s["counts"] for s in live if s["state"].capsules))
    assert ["task", "ready", "running", "completed", ""] in table
    assert any(row[0] == "flaky" for row in table)
    assert ["environment", "submitted", "running", "done", "failed"] in texts(
        next(s["counts"] for s in live if s["state"].environments)
    )

    # Errors accumulate (each poll keeps what the last one showed) and the output only grows.
    for before, after in itertools.pairwise(snapshots):
        assert set(before["errors"]) <= set(after["errors"])
        assert after["output"].startswith(before["output"])
    assert any(0 < len(s["errors"]) < len(FLAKY) for s in snapshots), "errors came all at once"
    assert any(s["output"] and s["output"] != snapshots[-1]["output"] for s in snapshots)

    # The end: every error is still there, with its stack trace behind a click.
    final = snapshots[-1]
    assert final["state"].state == "finished"
    assert sorted(error_messages(view)) == sorted(
        f"a job of task flaky failed and is run again (1/2): RuntimeError: transient failure {x}"
        for x in FLAKY
    )
    assert view.errors.value.count("<details>") == len(FLAKY)
    assert "<pre>Traceback (most recent call last)" in view.errors.value
    assert "raise RuntimeError(f&quot;transient failure {x}&quot;)" in view.errors.value
    lines = view.output.value.splitlines()
    assert sorted(lines) == sorted([f"line {x}" for x in range(12)] + [f"line {x}" for x in FLAKY])
    assert (view.progress.value, view.progress.max) == (12, 12)
    assert view.progress_text.value == "12 / 12"
    assert view.progress.bar_style == "success"
    assert ">finished<" in view.state_label.value
    local = next(row for row in texts(view.counts.value) if row[0] == "local")
    assert local[:3] == ["local", "0", "0"] and local[4] == "4" and local[3].isdigit()
    assert view.cancel.button.disabled


def test_a_failed_execution_shows_its_error(start: Callable[..., Execution]) -> None:
    execution = start(
        'x = Val(int)\n@PythonTask(inputs=[x])\ndef bad(x):\n    raise ValueError("no good value")\n'
        "DirectSampling(evaluation=bad, sampling=x.in_([1]))\n"
    )
    view, follower = follow(execution)
    step_until(follower, lambda: follower.state is not None and follower.state.done)
    assert ">failed<" in view.state_label.value
    assert view.progress.bar_style == "danger"
    assert "no good value" in view.message.value


def test_cancel_asks_first(start: Callable[..., Execution]) -> None:
    execution = start(SLEEPY_SCRIPT)
    view, follower = follow(execution)
    step_until(follower, lambda: follower.state is not None and follower.state.running > 0)

    view.cancel.button.click()  # asks, and does nothing else
    assert view.cancel.question.layout.display == "flex"
    assert "Cancel this execution?" in view.cancel.question.children[0].value
    time.sleep(0.3)
    assert execution.state().state == "running"
    view.cancel.no.click()  # changed their mind
    assert view.cancel.question.layout.display == "none"
    assert execution.state().state == "running"

    view.cancel.button.click()
    view.cancel.yes.click()
    assert view.cancel.question.layout.display == "none"
    assert execution.state().state == "cancelled"
    assert view.message.value == "cancelled"
    assert ">cancelled<" in view.state_label.value
    assert view.cancel.button.disabled


def test_downloads_land_in_a_folder_named_after_the_execution_and_never_overwrite(
    start: Callable[..., Execution],
) -> None:
    execution = start(QUICK_SCRIPT)
    assert execution.wait(timeout=60).state == "finished"
    view, follower = follow(execution)
    follower.step()
    assert view.downloads.layout.display == "none"

    view.download_button.click()  # opens the picker: the work directory's files
    assert view.downloads.layout.display == "flex"
    assert view.files.options[0] == "(the whole work directory)"
    assert {"r.csv", "model.oms"} <= set(view.files.options)
    folder = execution.folder
    assert view.destination.value == str(folder / f"mole-{execution.id[:8]}")

    view.files.value = ("r.csv",)
    view.fetch.click()
    result = folder / f"mole-{execution.id[:8]}" / "r.csv"
    lines = result.read_text().split()  # in the order the jobs ended
    assert lines[0] == "x,y" and sorted(lines[1:]) == ["0,0", "1,2", "2,4", "3,6"]
    assert view.message.value == f"downloaded: {result}"

    result.write_text("my edits\n")  # the same file again: refused, the edits kept
    view.fetch.click()
    assert "already exists" in view.message.value
    assert result.read_text() == "my edits\n"

    view.files.value = ()  # nothing picked: the whole work directory, where the person says
    view.destination.value = "elsewhere"
    view.fetch.click()
    assert (folder / "elsewhere" / "r.csv").read_text().startswith("x,y")
    assert (folder / "elsewhere" / "model.oms").read_text() == QUICK_SCRIPT
    view.fetch.click()
    assert "already exists" in view.message.value


def test_remove_asks_first_then_removes(start: Callable[..., Execution]) -> None:
    execution = start(QUICK_SCRIPT)
    execution.wait(timeout=60)
    view, follower = follow(execution)
    follower.step()

    view.remove.button.click()
    assert view.remove.question.layout.display == "flex"
    assert execution.state().state == "finished"
    view.remove.no.click()
    assert execution.state().state == "finished"

    view.remove.button.click()
    view.remove.yes.click()
    with pytest.raises(NotFound):
        execution.state()
    assert ">removed<" in view.state_label.value
    assert view.message.value == "removed from the server"
    assert view.remove.button.disabled and view.download_button.disabled


@pytest.fixture
def kernel_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``get_ipython()`` look like a Jupyter kernel's shell: widgets can render."""
    monkeypatch.delenv("MOLE_NO_WIDGETS", raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(kernel=object()))


def test_widgets_render_only_in_a_kernel(
    monkeypatch: pytest.MonkeyPatch, kernel_shell: None
) -> None:
    assert widgets_available()
    monkeypatch.setenv("MOLE_NO_WIDGETS", "1")
    assert not widgets_available()
    monkeypatch.delenv("MOLE_NO_WIDGETS")
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace())  # terminal
    assert not widgets_available()
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # plain Python
    assert not widgets_available()


def test_the_widget_polls_from_the_event_loop_and_stops_at_the_end(
    start: Callable[..., Execution], kernel_shell: None
) -> None:
    execution = start(FLAKY_SCRIPT.replace("range(12)", "range(4)"))

    async def notebook() -> tuple[WidgetView, int, int, list[int]]:
        view = execution.widget(poll=0.1)  # returns at once: the polling is a task of this loop
        assert isinstance(view, WidgetView)
        task = view.follower.task
        assert task is not None and not task.done()
        steps = []
        original = view.follower.apply

        def counted(poll: Poll) -> bool:
            steps.append(len(steps))
            return original(poll)

        view.follower.apply = counted
        seen = []
        for _ in range(600):  # other cells run meanwhile: the loop is never blocked
            await asyncio.sleep(0.05)
            seen.append(view.progress.value)
            if task.done():
                break
        assert task.done() and task.exception() is None
        polls = len(steps)
        await asyncio.sleep(0.5)  # after the end: no more polling
        return view, polls, len(steps), seen

    view, polls, later, seen = asyncio.run(notebook())
    assert polls >= 2 and later == polls
    assert ">finished<" in view.state_label.value
    assert view.progress.value == view.progress.max == 4
    assert seen[0] < 4 and seen == sorted(seen), seen  # it moved while the coroutine slept


def test_background_polling_stops_when_the_execution_is_removed_elsewhere(
    start: Callable[..., Execution], client: MoleClient
) -> None:
    execution = start(SLEEPY_SCRIPT)

    async def notebook() -> WidgetView:
        view, follower = follow(execution)
        follower.start_background(poll=0.1)
        assert follower.task is not None
        await asyncio.sleep(0.3)
        client.cancel(execution.id)  # the sidebar, say
        client.remove(execution.id)
        await asyncio.wait_for(follower.task, 30)
        return view

    view = asyncio.run(notebook())
    assert view.message.value == f"<i>execution {execution.id} is no longer on the server</i>"


def test_show_falls_back_to_text_without_widgets(
    start: Callable[..., Execution], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    execution = start(FLAKY_SCRIPT.replace("range(12)", "range(4)"))
    view = show(execution, background=False)
    assert isinstance(view, TextView)
    view.every = 0  # a progress line at every poll
    while not view.follower.step():
        time.sleep(0.1)
    out = capsys.readouterr().out
    assert re.search(r"^running: \d+/\d+ jobs \(flaky: \d+ ready", out, re.MULTILINE)
    assert "[WARNING] a job of task flaky failed and is run again (1/2): " in out
    assert out.count("transient failure 0") == 1  # each error once, not at every poll
    assert "line 1\n" in out and "line 3\n" in out
    assert out.rstrip().endswith(f"finished: 4 jobs completed ({execution.id})")


def test_background_polling_says_when_the_server_is_away_and_keeps_trying() -> None:
    with MoleClient("http://127.0.0.1:9") as nowhere:  # nothing listens on the discard port
        execution = Execution(nowhere, "some-id", "model.oms")

        async def notebook() -> tuple[WidgetView, bool]:
            view, follower = follow(execution)
            follower.start_background(poll=0.05)
            await asyncio.sleep(0.5)
            assert follower.task is not None
            still_trying = not follower.task.done()
            follower.stop()
            return view, still_trying

        view, still_trying = asyncio.run(notebook())
    assert still_trying
    assert view.message.value.startswith(
        "<i>cannot reach the server: cannot reach http://127.0.0.1:9"
    )


def test_errors_accumulate_from_an_openmole_server_too(
    mole_server: ServerProcess, tmp_path: Path
) -> None:
    # OpenMOLE keeps no whole error log: each /state answer carries the errors since the last
    # one, so the view must add them up itself. Our server speaks OpenMOLE's /job API too.
    with MoleClient(
        mole_server.url, mole_server.password, fingerprint=mole_server.fingerprint, api="job"
    ) as openmole:
        (tmp_path / "flaky.oms").write_text(FLAKY_SCRIPT)
        ident = openmole.start(tmp_path, "flaky.oms")
        execution = Execution(openmole, ident, "flaky.oms", tmp_path)
        try:
            view, follower = follow(execution)
            seen = []
            deadline = time.monotonic() + 90
            while not follower.step():
                seen.append(len(error_messages(view)))
                assert time.monotonic() < deadline, follower.state
                time.sleep(0.05)
            assert follower.state is not None and follower.state.state == "finished"
            assert seen == sorted(seen) and max(seen) > 0  # they came over time, none lost
            assert sorted(error_messages(view)) == sorted(
                "a job of task flaky failed and is run again (1/2): "
                f"RuntimeError: transient failure {x}"
                for x in FLAKY
            )
            assert "(x2)" not in view.errors.value  # each came once: no repeat counted
        finally:
            execution.remove()
