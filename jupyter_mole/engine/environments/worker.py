"""What runs on a Dask worker: a chunk of jobs, their printed output, and their cancellation.

The engine groups jobs into chunks because a Dask task costs milliseconds of
scheduling while a model evaluation may cost microseconds. A chunk is one Dask
task that runs its jobs one after the other and returns every job's outputs and
printed text, so each job is still counted and its output kept.

A task's code comes as cloudpickle bytes: functions defined in a script live in
no importable module, and Dask pickles its own task wrapper with plain pickle
first, so the payload must be opaque bytes unpickled here.

What a chunk's jobs print is streamed while it runs: once a chunk has run for
:data:`STREAM_INTERVAL` seconds, a thread of the worker sends the complete
lines printed so far to the engine every :data:`STREAM_INTERVAL` seconds, as
events on :data:`OUTPUT_TOPIC` (the route chunk starts take, on
:data:`START_TOPIC`); the chunk's result then carries only the rest. A chunk
that ends before its first tick costs nothing more than one that did not
stream, which is what the thousands of tiny chunks of a sweep do.

Cancelling a Dask future does not stop the thread running it. The worker plugin
below watches a chunk leave the ``executing`` state for anything but a result,
then kills the processes its jobs started (the process groups SystemExecTask
watches, and every process the chunk's thread started, with its descendants)
and raises :class:`JobCancelled` in its thread. That exception only lands when
the thread runs Python again: a job blocked in a C call (``time.sleep(600)``,
a lock) keeps it out. The engine then asks, with :func:`running_chunks`,
whether the chunk is still there a moment later, and restarts the worker if so
(see ``ClusterConnection.stop_chunks``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cloudpickle
from distributed import WorkerPlugin

from ..errors import MoleError
from ..job import (
    JobCancelled,
    JobContext,
    children_since,
    kill_process_trees,
    process_clock,
    thread_children,
)

__all__ = [
    "OUTPUT_TOPIC",
    "START_TOPIC",
    "ChunkResult",
    "JobFailure",
    "MoleWorkerPlugin",
    "kill_chunk_processes",
    "run_chunk",
    "running_chunks",
]

START_TOPIC = "jupyter-mole-chunk-start"
OUTPUT_TOPIC = "jupyter-mole-chunk-output"
STREAM_INTERVAL = 0.5
"""Seconds between two sends of a running chunk's printed lines, and before the first."""
_STREAM_TICK = 0.1
"""How often the streaming thread looks for chunks due, while any runs."""


@dataclasses.dataclass
class _Running:
    """A chunk running on this worker: what it takes to stop it."""

    thread: int  # threading.get_ident(): where the cancelling exception is raised
    native: int  # threading.get_native_id(): whose child processes are the chunk's
    since: float  # process_clock() at its start, to date children where threads cannot tell
    job: JobContext
    printed: list[str]  # what its jobs print, not yet sent; only appended to by the chunk's thread
    due: float  # time.perf_counter() at which its printed lines are next sent
    worker: Any  # the Dask worker, whose event log carries the lines
    cancelled: bool = False


_tasks: OrderedDict[bytes, Any] = OrderedDict()
_running: dict[str, _Running] = {}
_cancelled_early: set[str] = set()
_lock = threading.Lock()
_capture = threading.local()
_streaming = threading.Event()  # set while chunks run, so that the streaming thread runs
_streamer: threading.Thread | None = None


@dataclasses.dataclass
class JobFailure:
    """A job that raised: which one in its chunk, the message and the worker's traceback."""

    index: int
    message: str
    stack_trace: str
    user_error: bool  # a MoleError: the workflow is wrong, not the code of the task


@dataclasses.dataclass
class ChunkResult:
    """The outcome of a chunk: outputs of the jobs that completed, in order, then at most one failure."""

    names: tuple[str, ...]
    outputs: list[tuple[Any, ...]]
    printed: str  # what the jobs printed, in order, less what was streamed on OUTPUT_TOPIC
    failure: JobFailure | None = None
    cancelled: bool = False
    seconds: float = 0.0
    worker: str | None = None


class _ThreadStream(io.TextIOBase):
    """sys.stdout/sys.stderr on a worker: text goes to the running job's buffer, if any."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        buffer = getattr(_capture, "buffer", None)
        if buffer is None:
            return self._stream.write(text)
        buffer.append(text)
        return len(text)

    def flush(self) -> None:
        if getattr(_capture, "buffer", None) is None:
            self._stream.flush()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


def _install_capture() -> None:
    if not isinstance(sys.stdout, _ThreadStream):
        sys.stdout = _ThreadStream(sys.stdout)
    if not isinstance(sys.stderr, _ThreadStream):
        sys.stderr = _ThreadStream(sys.stderr)


def _load_task(blob: bytes) -> Any:
    digest = hashlib.blake2b(blob, digest_size=16).digest()
    with _lock:
        task = _tasks.get(digest)
        if task is not None:
            _tasks.move_to_end(digest)
            return task
    task = cloudpickle.loads(blob)
    with _lock:
        _tasks[digest] = task
        while len(_tasks) > 64:
            _tasks.popitem(last=False)
    return task


def _current_key() -> tuple[str | None, Any]:
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker.get_current_task(), worker
    except (ValueError, ImportError):
        return None, None


def run_chunk(
    blob: bytes,
    payload: bytes,
    budget: float | None,
    work_directory: str,
    scratch_directory: str,
) -> ChunkResult:
    """Run the task in ``blob`` on each row of ``payload``, a pickled ``(names, rows)``.

    The rows travel pickled because Dask walks a task's arguments looking for
    futures, which costs more than the jobs themselves for big chunks. Once
    ``budget`` seconds are spent the chunk returns; the engine requeues the
    rows it did not reach.
    """
    started = time.perf_counter()
    names, rows = pickle.loads(payload)
    key, worker = _current_key()
    if worker is not None:
        worker.log_event(START_TOPIC, {"key": key})
    _install_capture()
    task = _load_task(blob)
    out_names = tuple(v.name for v in task.outputs)
    job = JobContext(Path(work_directory), Path(scratch_directory))
    result = ChunkResult(out_names, [], "", worker=getattr(worker, "address", None))
    buffer: list[str] = []  # what the jobs print, in order; the streaming thread takes lines off
    if key is not None:
        with _lock:
            if key in _cancelled_early:  # cancelled before it got here: stop at once
                _cancelled_early.discard(key)
                result.cancelled = True
                return result
            _running[key] = _Running(
                threading.get_ident(),
                threading.get_native_id(),
                process_clock(),
                job,
                buffer,
                started + STREAM_INTERVAL,
                worker,
            )
            if worker is not None and not _streaming.is_set():
                _start_streaming()
    outputs = result.outputs
    deadline = None if budget is None else started + budget
    perform = task.perform
    _capture.buffer = buffer
    try:
        for i, row in enumerate(rows):
            if deadline is not None and i and time.perf_counter() > deadline:
                break
            try:
                out = perform(dict(zip(names, row)), job)
                outputs.append(tuple(map(out.__getitem__, out_names)))
            except JobCancelled:
                result.cancelled = True
                break
            except Exception as e:
                message = e.message if isinstance(e, MoleError) else f"{type(e).__name__}: {e}"
                result.failure = JobFailure(
                    i, message, user_traceback(e, task), isinstance(e, MoleError)
                )
                break
    except JobCancelled:
        result.cancelled = True
    finally:
        _capture.buffer = None
        if key is not None:
            # Once unlisted, the streaming thread no longer touches the buffer, and the
            # lines it sent are already queued on the worker's stream ahead of our result.
            with _lock:
                _running.pop(key, None)
        result.printed = "".join(buffer)
    result.seconds = time.perf_counter() - started
    return result


def _start_streaming() -> None:
    """Wake the streaming thread, starting it on first use (called with ``_lock`` held)."""
    global _streamer
    _streaming.set()
    if _streamer is None:
        _streamer = threading.Thread(target=_stream, name="jupyter-mole-output", daemon=True)
        _streamer.start()


def _stream() -> None:
    """Send the complete lines running chunks printed, each chunk every STREAM_INTERVAL seconds.

    The thread sleeps on an event while no chunk runs. It works under
    ``_lock``, which ``run_chunk`` takes to unlist a finished chunk: a chunk's
    last lines are thus either sent here before it returns, or returned with
    its result, never both nor neither.
    """
    while True:
        _streaming.wait()
        time.sleep(_STREAM_TICK)
        now = time.perf_counter()
        with _lock:
            if not _running:
                _streaming.clear()
                continue
            for key, entry in _running.items():
                if now < entry.due or entry.worker is None:
                    continue
                entry.due = now + STREAM_INTERVAL
                text = _take_lines(entry.printed)
                if text:
                    try:
                        entry.worker.log_event(OUTPUT_TOPIC, {"key": key, "text": text})
                    except Exception:  # a closing worker: the lines go with the chunk then
                        entry.printed.insert(0, text)


def _take_lines(pieces: list[str]) -> str:
    """Remove and return the complete lines at the head of ``pieces``.

    The chunk's thread only appends to ``pieces`` meanwhile; each list
    operation here is atomic, so what it appends lands after the kept rest.
    """
    n = len(pieces)
    if not n:
        return ""
    text = "".join(pieces[:n])
    cut = text.rfind("\n") + 1
    if not cut:
        return ""
    pieces[n - 1] = text[cut:]
    del pieces[: n - 1]
    return text[:cut]


_PACKAGE = str(Path(__file__).resolve().parents[2])


def user_traceback(error: BaseException, task: Any) -> str:
    """The traceback of a job's error as the modeller needs it: their frames, their file.

    Our own frames are dropped, and code from the script (which cloudpickle
    renames ``<dynamic-code>``) is shown with the script's name and lines.
    """
    script: tuple[str, str] | None = getattr(task, "script", None)
    lines = script[1].splitlines() if script else []
    frames = []
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename.startswith(_PACKAGE):
            continue
        if frame.filename == "<dynamic-code>" and script:
            number = frame.lineno or 0
            text = lines[number - 1].strip() if 0 < number <= len(lines) else None
            frame = traceback.FrameSummary(script[0], number, frame.name, line=text)
        frames.append(frame)
    head = (
        ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
    )
    return "".join(head + traceback.format_exception_only(type(error), error))


def cancel_chunk(key: str) -> bool:
    """Stop the chunk running under ``key`` on this worker: kill its processes, interrupt its thread.

    The chunk stays listed until it returns, so that the engine can see it
    did not (:func:`running_chunks`) and that its processes can be killed
    again before its worker is restarted.
    """
    with _lock:
        entry = _running.get(key)
        if entry is None:
            # Dask may release a chunk that has started executing before run_chunk has
            # registered it; remember the key so that run_chunk stops as it starts.
            if key.startswith("mole-"):
                _cancelled_early.add(key)
                if len(_cancelled_early) > 10_000:
                    _cancelled_early.pop()
            return False
        if not entry.cancelled:
            entry.cancelled = True
            entry.job.cancel(entry.thread)
        alone = len(_running) == 1
    kill_process_trees(_chunk_processes(entry, alone))
    return True


def _chunk_processes(entry: _Running, alone: bool) -> list[Any]:
    """The processes a chunk started: its thread's children.

    Where threads' children cannot be listed, the worker's children started
    since the chunk began are its own only if no other chunk runs beside it
    (one thread per worker, as on the local cluster); with others, none are
    taken rather than someone else's.
    """
    found = thread_children(entry.native)
    if found is not None:
        return found
    return children_since(entry.since) if alone else []


def running_chunks(keys: list[str]) -> list[str]:
    """Which of ``keys`` still run on this worker (run by the engine through ``Client.run``)."""
    with _lock:
        return [key for key in keys if key in _running]


def kill_chunk_processes(keys: list[str], dask_worker: Any = None) -> str | None:
    """Kill the processes of chunks ``keys`` here, before the worker is restarted under them.

    Restarting a worker kills its process, not the processes its jobs
    started: they would live on, orphaned. Returns the address of the
    worker's nanny (None without one), which is what restarts it.
    """
    with _lock:
        entries = [_running[key] for key in keys if key in _running]
        alone = len(_running) == 1
    for entry in entries:
        entry.job.kill_processes()
        kill_process_trees(_chunk_processes(entry, alone))
    return getattr(dask_worker, "nanny", None)


class MoleWorkerPlugin(WorkerPlugin):
    """Stops our chunks for real when Dask releases them mid-run, and at worker shutdown."""

    name = "jupyter-mole"

    def setup(self, worker: Any) -> None:
        # A Ctrl-C in the terminal that runs the engine reaches its whole process
        # group; workers must leave it to the engine, which cancels cleanly.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "executing" and finish not in ("memory", "error") and isinstance(key, str):
            cancel_chunk(key)

    def teardown(self, worker: Any) -> None:
        with _lock:
            keys = list(_running)
        for key in keys:
            cancel_chunk(key)
