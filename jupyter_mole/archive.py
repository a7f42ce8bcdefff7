"""Pack a work directory into a tar.gz, unpack one safely, and stream folders and files.

Why: OpenMOLE's REST API moves work directories as one tar.gz (the client uploads the notebook's
folder; the server sends result folders back), so both sides need the same packing rules. The
server unpacks archives from untrusted clients, which makes `unpack` a security boundary. It
relies on Python's `tarfile` ``data`` extraction filter (absolute paths, ``..``, links out of the
destination, devices, setuid bits) and adds what the filter does not do: archive-level checks
(no member may go through a link stored earlier, every link must still point inside once all
members are out, which also covers filter bypasses fixed after Python 3.11.7), size and count
caps checked before anything is written, clear errors, and all-or-nothing extraction.

Which files get packed (default ignores, ``.moleignore``, links) is decided in `ignore`.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import BinaryIO

from .ignore import DEFAULT_IGNORES, IGNORE_FILE, Entry, Scan, format_size, scan, walk
from .ignore import largest_entries as _largest_entries

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_IGNORES",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_UNPACK",
    "DEFAULT_MAX_UPLOAD",
    "ArchiveError",
    "ArchiveTooLarge",
    "CorruptArchive",
    "Entry",
    "PackResult",
    "UnpackResult",
    "UnsafeArchive",
    "format_size",
    "gzip_file_chunks",
    "pack",
    "stream_directory",
    "unpack",
    "walk",
]

DEFAULT_MAX_UPLOAD = 1 << 30  # 1 GiB
DEFAULT_MAX_UNPACK = 4 << 30  # 4 GiB
DEFAULT_MAX_FILES = 100_000
CHUNK_SIZE = 256 * 1024
_BLOCK = tarfile.BLOCKSIZE
_HEADER_ALLOWANCE = 8 * 1024  # decompressed bytes allowed per member for headers and padding
_MAX_METADATA = 1 << 20  # largest pax / GNU long-name header accepted (tarfile reads them whole)
_PROGRESS_INTERVAL = 0.05  # seconds: at most ~20 progress calls a second


class ArchiveError(Exception):
    """Something is wrong with an archive, or with what would go into one."""


class ArchiveTooLarge(ArchiveError):
    """A size or file-count cap was exceeded; ``largest`` lists the biggest (path, bytes)."""

    def __init__(
        self, message: str, *, total: int, limit: int, largest: Iterable[tuple[str, int]] = ()
    ) -> None:
        super().__init__(message)
        self.total = total
        self.limit = limit
        self.largest = list(largest)


class UnsafeArchive(ArchiveError):
    """A member would write outside the destination, or is a device, FIFO, ... ."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(
            f"Refused to unpack the archive: member {member!r} {reason}. Nothing was unpacked. "
            "Archives must hold only regular files, folders and links that stay inside; "
            "rebuild it from the folder (jupyter_mole.archive.pack, or `tar czf`)."
        )
        self.member = member
        self.reason = reason


class CorruptArchive(ArchiveError):
    """The data is not gzip, not a tar, or is truncated."""


@dataclass(frozen=True)
class PackResult:
    files: int
    bytes: int
    archive_bytes: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnpackResult:
    files: int
    bytes: int


# -- writing -------------------------------------------------------------------------------


def _header(entry: Entry, st: os.stat_result | None = None) -> bytes:
    info = tarfile.TarInfo(entry.path)
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "link":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
    if st is not None:
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        info.size = st.st_size if entry.kind == "file" else 0
    # Owner names are left empty: nobody needs them, and they would leak local user names.
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _tar_gz(
    found: Scan,
    *,
    chunk_size: int = CHUNK_SIZE,
    compresslevel: int = 6,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """A tar.gz of ``found`` in chunks of about ``chunk_size``, in bounded memory.

    Headers come from `tarfile.TarInfo.tobuf` (PAX, so long and non-ASCII names work); file
    data is read and compressed block by block. A file that shrinks while it is read is padded
    with NULs so that the archive stays well-formed; one that grows is cut at its first size.
    """
    compressor = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)  # 31: gzip container
    out = bytearray()
    for folder in found.folders:
        with contextlib.suppress(OSError):
            out += compressor.compress(_header(folder, os.lstat(folder.source)))
    for entry in found.entries:
        if entry.kind == "link":
            out += compressor.compress(_header(entry))
            continue
        try:  # no following a link swapped in since the walk (sources are never links)
            f = os.fdopen(os.open(entry.source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
        except OSError:
            continue  # deleted or replaced since the walk
        with f:
            st = os.fstat(f.fileno())
            out += compressor.compress(_header(entry, st))
            left = st.st_size
            while left > 0:
                block = f.read(min(chunk_size, left)) or b"\0" * min(chunk_size, left)
                left -= len(block)
                out += compressor.compress(block)
                if on_bytes is not None:
                    on_bytes(len(block))
                if len(out) >= chunk_size:
                    yield bytes(out)
                    out.clear()
            out += compressor.compress(b"\0" * (-st.st_size % _BLOCK))
        if len(out) >= chunk_size:
            yield bytes(out)
            out.clear()
    out += compressor.compress(b"\0" * (2 * _BLOCK))  # end-of-archive marker
    out += compressor.flush()
    yield bytes(out)


def _throttled(progress: Callable[[int, int], None], total: int) -> Callable[[int], None]:
    """Counts bytes; passes ``(done, total)`` to ``progress`` at most ~20 times a second."""
    done, last = 0, 0.0

    def add(n: int) -> None:
        nonlocal done, last
        done, now = min(done + n, total), time.monotonic()
        if now - last >= _PROGRESS_INTERVAL:
            last = now
            progress(done, total)

    return add


def pack(
    folder: str | os.PathLike[str],
    destination_file: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_UPLOAD,
    extra_ignores: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> PackResult:
    """Write a tar.gz of ``folder``'s files (paths relative to it) to ``destination_file``.

    What goes in is what `walk` lists, plus folders (so empty ones survive). Links inside the
    folder stay links; links to files outside are followed; other links are skipped and listed
    in ``PackResult.warnings``. Raises `ArchiveTooLarge` before writing anything if the files
    add up to more than ``max_bytes``. ``progress(bytes_done, bytes_total)`` is called as data
    is added (at most ~20 times a second, and once at the end with the total). The archive is
    written beside the destination and renamed at the end: no half-written file is left.
    """
    root, destination = Path(folder), Path(destination_file)
    found = scan(root, extra_ignores, exclude=[destination])
    total = found.total_bytes
    if total > max_bytes:
        largest = _largest_entries(found.entries)
        listing = "\n".join(f"  {path:<40} {format_size(size)}" for path, size in largest)
        patterns = "\n".join(f"  /{path}" for path, _ in largest)
        raise ArchiveTooLarge(
            f"{root} holds {format_size(total)} to pack, more than the {format_size(max_bytes)} "
            f"limit (max_bytes). The largest entries:\n{listing}\n"
            f"To leave some out, add them to {IGNORE_FILE} (gitignore syntax) in {root}, "
            f"for instance:\n{patterns}",
            total=total,
            limit=max_bytes,
            largest=largest,
        )
    fd, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    try:
        with os.fdopen(fd, "wb") as out:
            if progress is not None:
                progress(0, total)
            for chunk in _tar_gz(found, on_bytes=progress and _throttled(progress, total)):
                out.write(chunk)
        if progress is not None:
            progress(total, total)
        Path(temporary).replace(destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()
        raise
    files = len(found.entries)
    return PackResult(files, total, destination.stat().st_size, tuple(found.warnings))


def stream_directory(folder: str | os.PathLike[str]) -> Iterator[bytes]:
    """A tar.gz of everything in ``folder`` (entries relative to it), in chunks of ~256 KiB.

    Memory stays bounded whatever the file sizes. The folder is walked at once (a missing one
    raises `NotADirectoryError` before the first chunk). Nothing is ignored, and nothing outside
    ``folder`` is ever read: links leading out of it are left out (a workflow must not be able
    to exfiltrate files from the server by linking to them).
    """
    return _tar_gz(scan(folder, use_ignores=False, follow_outside=False))


def gzip_file_chunks(path: str | os.PathLike[str], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The gzip compression of the file at ``path``, in chunks, in bounded memory.

    A missing file raises `FileNotFoundError` here, before the first chunk (so that a server
    can still answer 404)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is not a file")
    return _gzip_chunks(path, chunk_size)


def _gzip_chunks(path: str | os.PathLike[str], chunk_size: int) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            if data := compressor.compress(block):
                yield data
    yield compressor.flush()


# -- reading -------------------------------------------------------------------------------


class _LimitedReader:
    """Caps the decompressed bytes read, whatever the headers claim (gzip bombs)."""

    def __init__(self, raw: BinaryIO, limit: int) -> None:
        self.raw, self.limit, self.done = raw, limit, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n is not None and n >= 0 else CHUNK_SIZE)
        self.done += len(data)
        if self.done > self.limit:
            raise ArchiveTooLarge(
                f"The archive expands to more than {format_size(self.limit)} of tar data, which "
                "its caps (max_bytes, max_files) do not allow. Nothing was unpacked.",
                total=self.done,
                limit=self.limit,
            )
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses huge metadata headers before tarfile reads them whole into memory."""

    _METADATA = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
    _METADATA += (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        info = super().frombuf(buf, encoding, errors)
        if info.type in cls._METADATA and info.size > _MAX_METADATA:
            reason = f"has a {format_size(info.size)} metadata (pax or long name) header"
            raise UnsafeArchive(
                info.name, f"{reason}; at most {format_size(_MAX_METADATA)} is allowed"
            )
        return info


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or bool(PureWindowsPath(name).drive)


def _escapes(path: str, links: dict[str, str]) -> bool:
    """Whether ``path`` (relative to the destination) resolves outside it, following the links
    stored so far the way the OS would. The destination is fresh, so these are the only links."""
    parts, kept, hops = path.split("/"), [], 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not kept:
                return True
            kept.pop()
            continue
        here = "/".join([*kept, part])
        if here in links and hops < 40:  # past 40 hops the OS gives up too (ELOOP)
            hops += 1
            target = links[here]
            if _is_absolute(target):
                return True
            parts = target.split("/") + parts
            continue
        kept.append(part)
    return False


_SPECIAL = {
    tarfile.CHRTYPE: "is a character device",
    tarfile.BLKTYPE: "is a block device",
    tarfile.FIFOTYPE: "is a FIFO (named pipe)",
}

_FILTER_REASONS = {
    "AbsolutePathError": "has an absolute path",
    "OutsideDestinationError": "would be written outside the destination folder",
    "SpecialFileError": "is a device or other special file",
    "AbsoluteLinkError": "is a link to an absolute path",
    "LinkOutsideDestinationError": "is a link pointing outside the destination folder",
}


class _Guard:
    """Checks each member before it is extracted; counts what was extracted."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes, self.max_files = max_bytes, max_files
        self.files: set[str] = set()  # regular files extracted (valid hard-link targets)
        self.links: dict[str, str] = {}  # symbolic links extracted: name -> target
        self.sizes: dict[str, int] = {}
        self.count = self.bytes = 0

    def check(self, member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        name = member.name
        if _is_absolute(name):
            raise UnsafeArchive(name, "has an absolute path")
        norm = posixpath.normpath(name)
        if norm == ".":
            if member.isdir():
                return None  # "./", the destination itself
            raise UnsafeArchive(name, "would replace the destination folder itself")
        if norm == ".." or norm.startswith("../"):
            raise UnsafeArchive(name, "climbs out of the destination folder with '..'")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchive(
                name, _SPECIAL.get(member.type, f"has the unsupported type {member.type!r}")
            )
        self.count += 1
        if self.count > self.max_files:
            raise ArchiveTooLarge(
                f"The archive holds more than {self.max_files:,} entries (the max_files cap). "
                "Pack fewer files (list folders you do not need in .moleignore). Nothing was unpacked.",
                total=self.count,
                limit=self.max_files,
            )
        parts = norm.split("/")
        for i in range(1, len(parts) + 1):
            if (prefix := "/".join(parts[:i])) in self.links:
                raise UnsafeArchive(
                    name, f"would be written through the link {prefix!r} stored before it"
                )
        changes: dict[str, str] = {"name": norm} if norm != name else {}
        if member.isreg():
            self._add_bytes(norm, member.size)
            self.files.add(norm)
        elif member.issym():
            target = member.linkname
            if _is_absolute(target):
                raise UnsafeArchive(name, f"is a link to the absolute path {target!r}")
            self.links[norm] = target
            self.files.discard(norm)
            if _escapes(posixpath.join(posixpath.dirname(norm), target), self.links):
                raise UnsafeArchive(
                    name, f"is a link pointing outside the destination folder ({target!r})"
                )
        elif member.islnk():
            target = posixpath.normpath(member.linkname)
            if target not in self.files:
                raise UnsafeArchive(
                    name,
                    f"is a hard link to {member.linkname!r}, which is not a file stored before it",
                )
            changes["linkname"] = target
            self.files.add(norm)
        return member.replace(**changes) if changes else member

    def _add_bytes(self, name: str, size: int) -> None:
        if self.bytes + size > self.max_bytes:
            self.sizes[name] = size
            raise ArchiveTooLarge(
                f"The archive's files add up to more than the {format_size(self.max_bytes)} cap "
                f"(max_bytes): {name!r} ({format_size(size)}) would bring them to "
                f"{format_size(self.bytes + size)}. Nothing was unpacked.",
                total=self.bytes + size,
                limit=self.max_bytes,
                largest=heapq.nlargest(5, self.sizes.items(), key=lambda kv: kv[1]),
            )
        self.bytes += size
        self.sizes[name] = size
        if len(self.sizes) > 64:  # keep only the largest few, for the error message
            self.sizes = dict(heapq.nlargest(5, self.sizes.items(), key=lambda kv: kv[1]))

    def check_links(self) -> None:
        """Later links can change where earlier ones lead: check them all once every one is out."""
        for name, target in self.links.items():
            if _escapes(posixpath.join(posixpath.dirname(name), target), self.links):
                raise UnsafeArchive(
                    name, f"is a link pointing outside the destination folder ({target!r})"
                )

    @staticmethod
    def filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as exc:
            reason = _FILTER_REASONS.get(type(exc).__name__, f"was refused by tarfile ({exc})")
            raise UnsafeArchive(member.name, reason) from exc


def _extract(raw: BinaryIO, into: Path, max_bytes: int, max_files: int) -> UnpackResult:
    gz = gzip.GzipFile(fileobj=raw, mode="rb")  # checks the CRC and length: catches truncation
    reader = _LimitedReader(gz, max_bytes + max_files * _HEADER_ALLOWANCE + (64 << 10))
    guard, last = _Guard(max_bytes, max_files), None
    try:
        with tarfile.open(fileobj=reader, mode="r|", tarinfo=_BoundedTarInfo) as tar:
            while (member := tar.next()) is not None:
                checked = guard.check(member)
                if checked is not None:
                    tar.extract(checked, into, filter=guard.filter)
                    last = checked.name
                tar.members.clear()  # a stream is read once: keep no member in memory
        guard.check_links()
        for _ in range(64):  # read to the end (within reason) so that the gzip trailer is checked
            if not reader.read(CHUNK_SIZE):
                break
    except gzip.BadGzipFile as exc:
        where = "data after the end of the archive" if last else "the data"
        raise CorruptArchive(
            f"Cannot unpack: {where} is not gzip-compressed ({exc}). Send a tar.gz (`tar czf`)."
        ) from exc
    except (EOFError, zlib.error) as exc:
        raise CorruptArchive(
            f"Cannot unpack: the gzip data is truncated or damaged ({exc}); "
            "the upload or download was probably cut short: send it again."
        ) from exc
    except (tarfile.ReadError, tarfile.StreamError) as exc:
        if last is None and guard.count == 0:
            what = (
                "empty"
                if "empty" in str(exc)
                else "gzip-compressed, but what it holds is not a tar archive"
            )
            raise CorruptArchive(f"Cannot unpack: the archive is {what} ({exc}).") from exc
        raise CorruptArchive(
            f"Cannot unpack: the tar data is truncated or corrupt after member {last!r} ({exc}); "
            "send the archive again."
        ) from exc
    return UnpackResult(len(guard.files) + len(guard.links), guard.bytes)


def unpack(
    source: str | os.PathLike[str] | BinaryIO,
    destination: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_UNPACK,
    max_files: int = DEFAULT_MAX_FILES,
) -> UnpackResult:
    """Safely unpack the tar.gz ``source`` (a path, or a binary file object read as a stream)
    into ``destination``, which must not exist or be an empty folder (missing parents are made).

    Raises `UnsafeArchive`, `ArchiveTooLarge` (more than ``max_bytes`` of files or ``max_files``
    entries, checked before each member is written) or `CorruptArchive`. All or nothing: the
    archive is extracted into a fresh folder beside ``destination``, renamed to it on success
    and removed on any error.
    """
    if not hasattr(tarfile, "data_filter"):
        raise ArchiveError("Safe unpacking needs Python 3.11.4 or newer (tarfile's data filter).")
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ArchiveError(
            f"Cannot unpack into {destination}: it already exists and is not an empty folder. "
            "Choose a new folder, or remove this one first."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = destination.parent / f".{destination.name}.unpacking-{secrets.token_hex(4)}"
        try:
            temporary.mkdir()  # not mkdtemp: its 0o700 mode would end up on the destination
            break
        except FileExistsError:
            continue
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as raw:
                result = _extract(raw, temporary, max_bytes, max_files)
        else:
            result = _extract(source, temporary, max_bytes, max_files)
        if destination.is_dir():
            destination.rmdir()
        temporary.rename(destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return result
