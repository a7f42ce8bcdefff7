"""The client's local files: the archive to upload, and downloads put in place atomically.

Nothing here speaks HTTP. An upload is read from a file (a folder is packed to
a temporary tar.gz first), through a reader that reports progress. A download
is written to a ``.part`` file beside its destination, then gunzipped or
safely unpacked (``archive.unpack``) and renamed into place: a destination is
either absent or complete, and an existing one is replaced only when asked.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .. import archive
from .errors import DestinationExists

__all__ = [
    "DOWNLOAD_MAX_BYTES",
    "DOWNLOAD_MAX_FILES",
    "ProgressReader",
    "Upload",
    "attachment_name",
    "check_destination",
    "place",
    "scratch_beside",
]

DOWNLOAD_MAX_BYTES = 1 << 40  # a result folder may be large; the cap only guards against bombs
DOWNLOAD_MAX_FILES = 10_000_000
Progress = Callable[[int, int], None]


class ProgressReader:
    """A binary file read by httpx's multipart encoder, calling ``progress(sent, total)``."""

    def __init__(self, raw: BinaryIO, total: int, progress: Progress | None) -> None:
        self._raw = raw
        self.total = total
        self.sent = 0
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.sent += len(chunk)
        if self._progress is not None and chunk:
            self._progress(self.sent, self.total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._raw.seek(offset, whence)
        if whence == os.SEEK_SET:
            self.sent = position  # a resend (after renewing a token) starts over
            if self._progress is not None:
                self._progress(position, self.total)
        return position

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:  # lets httpx know the length, so the upload has a Content-Length
        return self._raw.fileno()


class Upload:
    """The tar.gz to send for ``source``: the archive itself, or ``source`` packed to a temp file."""

    def __init__(self, source: str | os.PathLike[str], script: str) -> None:
        self.source = Path(source)
        self.script = script
        self.path = self.source
        self._scratch: Path | None = None

    def prepare(self) -> Upload:
        """Check the source and pack it if it is a folder (blocking: run it off the loop)."""
        if self.source.is_dir():
            relative = PurePosixPath(self.script)
            if relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"the script {self.script!r} must be a path inside {self.source}")
            if not self.source.joinpath(*relative.parts).is_file():
                raise FileNotFoundError(
                    f"there is no script {self.script} in {self.source}: give its path "
                    "relative to the folder"
                )
            self._scratch = Path(tempfile.mkdtemp(prefix="jupyter-mole-upload-"))
            self.path = self._scratch / "workDirectory.tgz"
            try:
                archive.pack(self.source, self.path)
            except BaseException:
                self.cleanup()
                raise
        elif not self.source.is_file():
            raise FileNotFoundError(f"{self.source}: no such folder or tar.gz archive")
        return self

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def cleanup(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _exists(dest: Path) -> DestinationExists:
    kind = "folder" if dest.is_dir() else "file"
    return DestinationExists(
        f"{dest} already exists ({kind})",
        hint="choose another destination, or pass overwrite=True (--overwrite) to replace it",
    )


def check_destination(dest: Path, overwrite: bool) -> None:
    """Raise :class:`DestinationExists` unless ``dest`` is free (or may be replaced)."""
    if (dest.exists() or dest.is_symlink()) and not overwrite:
        raise _exists(dest)


def scratch_beside(dest: Path, what: str) -> Path:
    """A fresh name in ``dest``'s folder (same file system: renames are atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent / f".{dest.name}.{what}-{secrets.token_hex(4)}"


_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def attachment_name(headers: Mapping[str, str]) -> str | None:
    """The file name of a ``Content-Disposition: attachment; filename=...`` header."""
    match = _FILENAME.search(headers.get("content-disposition", ""))
    return match.group(1).strip() if match else None


def _gunzip(source: Path, target: Path) -> None:
    try:
        with gzip.open(source, "rb") as raw, open(target, "xb") as out:
            shutil.copyfileobj(raw, out, archive.CHUNK_SIZE)
    except (OSError, EOFError) as e:
        raise archive.CorruptArchive(f"the downloaded file is not valid gzip data: {e}") from None


def _put_file(temporary: Path, dest: Path, overwrite: bool) -> None:
    if dest.is_dir() and not dest.is_symlink():
        raise DestinationExists(
            f"{dest} is a folder; the download is a file", hint="choose a file name as destination"
        )
    if overwrite:
        temporary.replace(dest)
        return
    try:
        os.link(temporary, dest)  # atomic, and never replaces what appeared meanwhile
    except FileExistsError:
        raise _exists(dest) from None
    except OSError:  # a file system without hard links
        check_destination(dest, overwrite=False)
        temporary.replace(dest)
        return
    temporary.unlink()


def _put_folder(part: Path, dest: Path, overwrite: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise DestinationExists(
            f"{dest} is a file; the download is a folder",
            hint="choose a folder name as destination",
        )
    fresh = scratch_beside(dest, "new")
    archive.unpack(part, fresh, max_bytes=DOWNLOAD_MAX_BYTES, max_files=DOWNLOAD_MAX_FILES)
    try:
        if not dest.exists():
            fresh.rename(dest)
            return
        check_destination(dest, overwrite)
        old = scratch_beside(dest, "old")
        dest.rename(old)
        fresh.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def place(part: Path, dest: Path, *, folder: bool, gunzip: bool, overwrite: bool) -> Path:
    """Turn the downloaded ``part`` into ``dest``: a file (gunzipped if asked) or a folder."""
    if folder:
        _put_folder(part, dest, overwrite)
    elif gunzip:
        plain = scratch_beside(dest, "gunzip")
        try:
            _gunzip(part, plain)
            _put_file(plain, dest, overwrite)
        finally:
            with contextlib.suppress(FileNotFoundError):
                plain.unlink()
    else:
        _put_file(part, dest, overwrite)
    return dest
