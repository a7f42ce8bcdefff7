"""The live view against the servers it meets besides ours: slow, silent, OpenMOLE's own.

A server that never answers must not freeze the kernel (the view polls from
the kernel's event loop, and must await, not block). OpenMOLE's end states
carry no counters, and its token API lists no files: the view keeps what it
saw, and offers what can be fetched. OpenMOLE's dialect comes from a real HTTP
server on loopback that answers as OpenMOLE does (``OpenMoleLike``), and from
our own server spoken to through OpenMOLE's token API.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from jupyter_mole.client import MoleClient
from jupyter_mole.kernel import Execution
from jupyter_mole.kernel.view import Follower, TextView
from jupyter_mole.kernel.widget import WHOLE, WidgetView
from tests.servers import PASSWORD, ServerProcess
from tests.test_widget import QUICK_SCRIPT, follow, texts

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# -- a server that accepts and never answers -----------------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A loopback server that accepts connections, reads nothing and answers nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_polling_a_server_that_never_answers_never_stalls_the_kernel(
    silent_server: tuple[str, list[socket.socket]],
) -> None:
    url, accepted = silent_server
    with MoleClient(url, api="job", timeout=1.0) as silent:  # each request: 1 s, then gives up
        execution = Execution(silent, "some-id", "model.oms")

        async def notebook() -> tuple[WidgetView, float, int]:
            view, follower = follow(execution)
            follower.start_background(poll=0.05)
            gaps = []
            started = time.monotonic()
            while time.monotonic() - started < 3.0:  # other cells and widgets, meanwhile
                tick = time.monotonic()
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - tick)
            assert follower.task is not None and not follower.task.done()
            follower.stop()
            with pytest.raises(asyncio.CancelledError):
                await follower.task
            return view, max(gaps), len(gaps)

        view, longest, ticks = asyncio.run(notebook())
    assert accepted, "the view never asked the server"
    assert "cannot reach the server" in view.message.value  # it gave up, said so, retried
    assert longest < 0.3, f"the event loop stalled {longest:.2f} s"
    assert ticks > 100


# -- a server that answers as OpenMOLE does ------------------------------------------------------
class OpenMoleLike:
    """OpenMOLE's /job API on loopback, answering each /state with the next of ``states``."""

    def __init__(self, states: list[dict[str, Any]], output: str = "") -> None:
        self.states = list(states)
        self.asked = 0
        answers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/state"):
                    index = min(answers.asked, len(answers.states) - 1)
                    answers.asked += 1
                    self._send(json.dumps(answers.states[index]), "application/json")
                elif self.path.endswith("/output"):
                    self._send(output, "text/plain")
                else:
                    self._send(json.dumps({"message": "Execution not found"}), "", 404)

            def _send(self, body: str, kind: str, status: int = 200) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RUNNING = {
    "state": "running",
    "ready": 1,
    "running": 1,
    "completed": 2,
    "capsules": [["model", {"ready": 1, "running": 1, "completed": 2}]],
    "environments": [
        {
            "name": "local",
            "submitted": 1,
            "running": 1,
            "done": 2,
            "failed": 0,
            "errors": [
                {"message": "a job failed once", "stack-trace": "at model", "level": "WARNING"}
            ],
        }
    ],
}


def test_the_end_keeps_the_counts_that_openmole_no_longer_sends() -> None:
    openmole = OpenMoleLike([RUNNING, {"state": "finished"}], output="hello\n")
    try:
        with MoleClient(openmole.url, api="job") as client:
            execution = Execution(client, "an-id", "model.oms")
            view, follower = follow(execution)
            assert not follower.step()
            assert follower.step()  # {"state": "finished"}: nothing else
            printed = io.StringIO()
            text_follower = Follower(execution, TextView(execution, stream=printed))
            openmole.asked = 0  # again, for the text view
            text_follower.step()
            text_follower.step()
    finally:
        openmole.close()
    assert ">finished<" in view.state_label.value
    assert (view.progress.value, view.progress.max) == (4, 4)  # every job known, completed
    assert view.progress_text.value == "4 / 4"
    table = texts(view.counts.value)
    assert ["model", "1", "1", "2", ""] in table  # the last counts seen, not an empty table
    assert ["local", "1", "1", "2", "0"] in table
    assert "a job failed once" in view.errors.value and "(x2)" not in view.errors.value
    assert "finished: 4 jobs completed (an-id)" in view.text
    assert printed.getvalue().splitlines()[-1] == "finished: 4 jobs completed (an-id)"


# -- OpenMOLE's token API, through our server ----------------------------------------------------
def test_downloads_offer_the_whole_work_directory_where_the_server_lists_no_files(
    mole_server: ServerProcess, tmp_path: Path
) -> None:
    with MoleClient(
        mole_server.url, PASSWORD, fingerprint=mole_server.fingerprint, api="token"
    ) as openmole:
        (tmp_path / "model.oms").write_text(QUICK_SCRIPT)
        execution = Execution(
            openmole, openmole.start(tmp_path, "model.oms"), "model.oms", tmp_path
        )
        try:
            assert execution.wait(timeout=60).state == "finished"
            view, follower = follow(execution)
            follower.step()
            view.download_button.click()  # the token API has no listing: the picker opens anyway
            assert view.downloads.layout.display == "flex"
            assert view.files.options == (WHOLE,)
            view.fetch.click()
            landed = tmp_path / f"mole-{execution.id[:8]}"
            assert view.message.value == f"downloaded: {landed}"
            assert (landed / "model.oms").read_text() == QUICK_SCRIPT
            assert (landed / "r.csv").read_text().startswith("x,y")
        finally:
            execution.remove()


# -- the panel, where no widget renders ----------------------------------------------------------
def test_the_panel_reads_as_text_where_widgets_do_not_render() -> None:
    with MoleClient("http://127.0.0.1:9", api="job") as nowhere:
        view = WidgetView(Execution(nowhere, "an-id", "pi.oms"))
        bundle = view.box._repr_mimebundle_()
        assert WIDGET_VIEW in bundle  # the widget, where it renders
        assert bundle["text/plain"] == "pi.oms (an-id): starting"
        from jupyter_mole.protocol import ExecutionState

        view.update(ExecutionState("running", 1, 2, 3), "", "", [])
        assert view.box._repr_mimebundle_()["text/plain"] == "pi.oms (an-id): running: 3/6 jobs"
        view.finish(ExecutionState("finished", 0, 0, 6))
        assert view.box._repr_mimebundle_()["text/plain"] == "finished: 6 jobs completed (an-id)"
        assert not re.search(r"VBox\(|Panel\(", str(view.box._repr_mimebundle_()))
