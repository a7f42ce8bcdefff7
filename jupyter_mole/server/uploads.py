"""Request bodies read as they arrive: multipart file parts go to disk, never whole into memory.

A work directory can be a gigabyte. Tornado hands a streaming handler the body
chunk by chunk; this feeds the chunks to ``python-multipart``'s parser, writes
file parts to files in a spool folder as they come, and keeps the (small) text
fields. Both caps are enforced while reading: the whole body, and each text
field.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["BadBody", "BodyTooLarge", "FieldTooLarge", "StreamingBody"]

FIELD_LIMIT = 64 * 1024


class BadBody(Exception):
    """The body is not what its Content-Type says."""


class BodyTooLarge(Exception):
    """The body is larger than the server accepts."""

    @staticmethod
    def message(max_bytes: int) -> str:
        return (
            f"the request body is larger than {max_bytes} bytes, the server's cap; "
            f"exclude large files from the work directory (.moleignore) or raise the cap "
            f"(jupyter-mole serve --max-upload)"
        )


class FieldTooLarge(BodyTooLarge):
    """A text field (or a urlencoded body) is longer than a form field may be."""


class StreamingBody:
    """Receives a request body chunk by chunk; text fields in ``fields``, files in ``files``."""

    def __init__(self, content_type: str, spool: Path, max_bytes: int) -> None:
        self.spool = spool
        self.max_bytes = max_bytes
        self.received = 0
        self.fields: dict[str, str] = {}
        self.files: dict[str, Path] = {}
        self._urlencoded: bytearray | None = None
        self._parser: MultipartParser | None = None
        kind, options = parse_options_header(content_type or "")
        if kind == b"multipart/form-data":
            boundary = options.get(b"boundary")
            if not boundary:
                raise BadBody("a multipart/form-data body needs a boundary in its Content-Type")
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_part_data": self._part_data,
                    "on_part_end": self._part_end,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._open_part,
                },
            )
        elif kind in (b"application/x-www-form-urlencoded", b""):
            self._urlencoded = bytearray()
        # Any other body (JSON, octet-stream) carries no form fields: ignore it.
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name: str | None = None
        self._file: BinaryIO | None = None
        self._text: bytearray | None = None

    # -- feeding -------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise BodyTooLarge(BodyTooLarge.message(self.max_bytes))
        if self._parser is not None:
            try:
                self._parser.write(chunk)
            except FormParserError as e:
                raise BadBody(f"the multipart body is malformed: {e}") from None
        elif self._urlencoded is not None:
            if len(self._urlencoded) + len(chunk) > FIELD_LIMIT:
                raise FieldTooLarge(f"a form body is limited to {FIELD_LIMIT} bytes")
            self._urlencoded.extend(chunk)

    def finish(self) -> None:
        if self._parser is not None:
            try:
                self._parser.finalize()
            except FormParserError as e:
                raise BadBody(f"the multipart body is malformed: {e}") from None
            if self._file is not None or self._text is not None:
                raise BadBody("the multipart body ends in the middle of a part")
        elif self._urlencoded is not None:
            try:
                text = self._urlencoded.decode("utf-8")
            except UnicodeDecodeError:
                raise BadBody("the form body is not UTF-8") from None
            for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
                self.fields.setdefault(key, value)

    def cleanup(self) -> None:
        """Remove the spooled files (once they have been used or refused)."""
        if self._file is not None:
            self._file.close()
        for path in self.files.values():
            with contextlib.suppress(OSError):
                path.unlink()

    # -- multipart callbacks -------------------------------------------------------------
    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _open_part(self) -> None:
        if self._name is not None:
            return
        if b"content-disposition" not in self._headers:
            raise BadBody("a multipart part has no Content-Disposition header")
        _, options = parse_options_header(self._headers[b"content-disposition"])
        name = options.get(b"name")
        if name is None:
            raise BadBody("a multipart part has no name in its Content-Disposition")
        self._name = name.decode("utf-8", errors="replace")
        if b"filename" in options:
            if self._name in self.files:
                raise BadBody(f"the file part {self._name} is sent twice")
            self.spool.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(dir=self.spool, prefix="upload-")
            self.files[self._name] = Path(path)  # registered first: cleanup() removes it
            self._file = os.fdopen(fd, "wb")
        else:
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name is None:
            self._open_part()
        if self._file is not None:
            self._file.write(data[start:end])
        elif self._text is not None:
            if len(self._text) + (end - start) > FIELD_LIMIT:
                raise FieldTooLarge(
                    f"the form field {self._name} is longer than {FIELD_LIMIT} bytes"
                )
            self._text.extend(data[start:end])

    def _part_end(self) -> None:
        if self._name is None:
            self._open_part()
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._text is not None:
            try:
                self.fields.setdefault(self._name or "", self._text.decode("utf-8"))
            except UnicodeDecodeError:
                raise BadBody(f"the form field {self._name} is not UTF-8 text") from None
            self._text = None
        self._name = None
