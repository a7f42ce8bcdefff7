"""An execution's output text, kept on disk and readable from any byte offset.

A display hook over a million rows prints tens of megabytes; keeping that in
memory would make the engine's footprint grow with the run, so the text goes to
a file and readers tail it by offset (what a widget polling for new output does).
"""

from __future__ import annotations

import threading
from pathlib import Path

__all__ = ["OutputLog", "read_output"]


def read_output(
    path: Path, offset: int = 0, limit: int | None = None, size: int | None = None
) -> tuple[str, int]:
    """The text of an output file from byte ``offset`` (at most ``limit`` bytes), and the next offset.

    The returned offset never splits a UTF-8 character, so tailing by offset
    never garbles text. A missing file reads as empty.
    """
    if size is None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "", 0
    offset = max(0, min(offset, size))
    end = size if limit is None else min(size, offset + max(0, limit))
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(end - offset)
    cut = len(data)
    # Back off to a character boundary when the read stopped inside one.
    while cut > 0 and end < size and (data[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut > 0 and end < size and data[cut - 1] >= 0xC0:
        cut -= 1
    return data[:cut].decode("utf-8", errors="replace"), offset + cut


class OutputLog:
    """Append-only UTF-8 text in a file; thread-safe appends, offset reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(path, "ab")
        self._size = self._file.tell()

    def write(self, text: str) -> None:
        if not text:
            return
        data = text.encode("utf-8")
        with self._lock:
            if self._file.closed:
                return
            self._file.write(data)
            self._file.flush()
            self._size += len(data)

    @property
    def size(self) -> int:
        """Bytes written so far: the offset a reader passes to get only what follows."""
        return self._size

    def read(self, offset: int = 0, limit: int | None = None) -> tuple[str, int]:
        """The text from byte ``offset`` (at most ``limit`` bytes), and the offset after it."""
        return read_output(self.path, offset, limit, self._size)

    def close(self) -> None:
        with self._lock:
            self._file.close()
