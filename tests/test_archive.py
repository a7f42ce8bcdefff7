"""Packing, unpacking and streaming work directories: real files, real tar.gz archives, real attacks."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from jupyter_mole.archive import (
    ArchiveError,
    ArchiveTooLarge,
    CorruptArchive,
    UnsafeArchive,
    gzip_file_chunks,
    pack,
    stream_directory,
    unpack,
    walk,
)


def write(path: Path, content: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def tree(folder: Path) -> dict[str, object]:
    """Relative path -> file bytes, ("link", target) or "dir"."""
    out: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", str(path.readlink()))
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A notebook folder with nested data, an empty folder, links and odd names."""
    root = tmp_path / "project"
    write(root / "script.oms", "val x = Val[Double]\n")
    write(root / "data" / "x.csv", "a,b\n1,2\n")
    write(root / "data" / "deep" / "blob.bin", os.urandom(70_000))
    write(root / "été naïve.txt", "unicode")
    write(root / ("long-" * 30 + "name.txt"), "long")
    (root / "results").mkdir()
    run = write(root / "run.sh", "#!/bin/sh\n")
    run.chmod(0o755)
    (root / "latest.csv").symlink_to("data/x.csv")
    (root / "inputs").symlink_to("data", target_is_directory=True)
    outside = write(tmp_path / "elsewhere" / "shared.txt", "shared content")
    (root / "shared.txt").symlink_to(outside)
    (root / "elsewhere").symlink_to(outside.parent, target_is_directory=True)
    return root


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty folder to unpack into (as ``out / "dest"``); tests check it stays clean."""
    path = tmp_path / "out"
    path.mkdir()
    return path


# -- packing -------------------------------------------------------------------------------


def test_round_trip_preserves_content_paths_links_and_modes(
    project: Path, tmp_path: Path, out: Path
):
    archive = tmp_path / "work.tgz"
    result = pack(project, archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "script.oms" in names and "data/x.csv" in names
    assert not any(name.startswith(("./", "/")) for name in names)
    assert result.archive_bytes == archive.stat().st_size
    assert any("elsewhere" in warning for warning in result.warnings)

    unpacked = unpack(archive, out / "dest")
    got, expected = tree(out / "dest"), tree(project)
    expected.pop("elsewhere")  # a link to a folder outside: skipped, with a warning
    expected["shared.txt"] = b"shared content"  # a link to a file outside: followed
    assert got == expected
    assert got["latest.csv"] == ("link", "data/x.csv")
    assert got["results"] == "dir"
    assert os.access(out / "dest" / "run.sh", os.X_OK)
    assert unpacked.files == result.files
    assert unpacked.bytes == result.bytes
    assert [p.name for p in out.iterdir()] == ["dest"]


def test_default_ignores(tmp_path: Path):
    root = tmp_path / "nb"
    for name in [
        "keep.py",
        "sub/keep.txt",
        ".ipynb_checkpoints/a-checkpoint.ipynb",
        "sub/.ipynb_checkpoints/b.ipynb",
        ".git/config",
        "__pycache__/m.cpython-311.pyc",
        "stray.pyc",
        ".DS_Store",
        "sub/.DS_Store",
        ".venv/bin/python",
        "venv/lib/x.py",
        "env/pyvenv.cfg",
        "env/lib/site.py",
        "myenv/pyvenv.cfg",
        "node_modules/pkg/index.js",
    ]:
        write(root / name)
    write(root / "sub" / ".git", "gitdir: ../.git/worktrees/sub")  # a worktree's .git file
    assert [e.path for e in walk(root)] == ["keep.py", "sub/keep.txt"]


def test_moleignore_patterns_folders_negation_and_nested(tmp_path: Path):
    root = tmp_path / "nb"
    write(root / ".moleignore", "# comment\n*.log\n!important.log\nresults/\n/top.txt\n!*.pyc\n")
    for name in [
        "a.log",
        "important.log",
        "sub/b.log",
        "results/r.csv",
        "sub/results/r.csv",
        "top.txt",
        "sub/top.txt",
        "special.pyc",
        "sub/x.tmp",
        "sub/deeper/y.tmp",
        "z.tmp",
    ]:
        write(root / name)
    write(root / "sub" / ".moleignore", "*.tmp\n!keep.log\n")
    write(root / "sub" / "keep.log")
    assert sorted(e.path for e in walk(root)) == [
        ".moleignore",
        "important.log",
        "special.pyc",  # a default ignore re-included with "!"
        "sub/.moleignore",
        "sub/keep.log",  # the nested file re-includes what the top one excludes
        "sub/top.txt",  # "/top.txt" is anchored to the top folder
        "z.tmp",  # the nested "*.tmp" applies to sub/ only
    ]
    assert "z.tmp" not in [e.path for e in walk(root, extra_ignores=["z.*"])]
    # as with git, nothing inside an excluded folder can be re-included
    write(root / ".moleignore", "results/\n!results/keep.csv\n")
    write(root / "results" / "keep.csv")
    assert not any(e.path.startswith("results/") for e in walk(root))


def test_size_cap_names_largest_entries_and_moleignore(tmp_path: Path):
    root = tmp_path / "nb"
    write(root / "data" / "a.bin", b"0" * 3000)
    write(root / "data" / "b.bin", b"0" * 2000)
    write(root / "model.bin", b"0" * 4000)
    write(root / "notes.txt", b"0" * 10)
    destination = tmp_path / "up" / "work.tgz"
    destination.parent.mkdir()
    with pytest.raises(ArchiveTooLarge) as caught:
        pack(root, destination, max_bytes=1000)
    message = str(caught.value)
    assert caught.value.largest == [("data/", 5000), ("model.bin", 4000), ("notes.txt", 10)]
    assert caught.value.total == 9010 and caught.value.limit == 1000
    assert "1000 bytes" in message and "8.8 KiB" in message
    assert "data/" in message and "4.9 KiB" in message and "model.bin" in message
    assert f"add them to .moleignore (gitignore syntax) in {root}" in message
    assert list(destination.parent.iterdir()) == []


def test_progress_reaches_total_and_is_throttled(tmp_path: Path):
    root = tmp_path / "nb"
    for i in range(300):
        write(root / f"f{i:03}.bin", os.urandom(1000))
    write(root / "big.bin", os.urandom(3 << 20))
    calls: list[tuple[int, int]] = []
    result = pack(
        root, tmp_path / "w.tgz", progress=lambda done, total: calls.append((done, total))
    )
    total = 300 * 1000 + (3 << 20)
    assert result.bytes == total
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))
    assert len(calls) < 50  # ~20 a second at most, not one per file


def test_failed_pack_leaves_no_temporary_file(project: Path, tmp_path: Path):
    destination = tmp_path / "up" / "work.tgz"
    destination.parent.mkdir()

    def explode(done: int, total: int) -> None:
        if done:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        pack(project, destination, progress=explode)
    assert list(destination.parent.iterdir()) == []


def test_pack_into_the_folder_itself_skips_the_archive(project: Path):
    pack(project, project / "work.tgz")
    pack(project, project / "work.tgz")  # the previous archive is not packed into the new one
    with tarfile.open(project / "work.tgz") as tar:
        assert "work.tgz" not in tar.getnames()


# -- unpacking: attacks --------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def make_archive(path: Path, *members: tuple) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


ATTACKS = {
    "absolute path": [member("/tmp/evil-absolute", data=b"x")],
    "dotdot": [member("../evil", data=b"x")],
    "nested dotdot": [member("a/b.txt", data=b"ok"), member("a/../../evil", data=b"x")],
    "symlink to /etc/passwd": [member("passwd", tarfile.SYMTYPE, linkname="/etc/passwd")],
    "symlink out, then a file through it": [
        member("escape", tarfile.SYMTYPE, linkname=".."),
        member("escape/evil", data=b"x"),
    ],
    "inside symlink, then a file through it": [
        member("here", tarfile.SYMTYPE, linkname="."),
        member("here/evil", data=b"x"),
    ],
    "symlink chain climbing out": [
        member("a/b/c/top", tarfile.SYMTYPE, linkname="../../.."),
        member("a/b/c/up", tarfile.SYMTYPE, linkname="top/.."),
    ],
    "symlink redirected by a later one": [
        member("up", tarfile.SYMTYPE, linkname="s/.."),
        member("s", tarfile.SYMTYPE, linkname="."),
    ],
    "hardlink to outside": [member("h", tarfile.LNKTYPE, linkname="../outside.txt")],
    "hardlink to /etc/passwd": [member("h", tarfile.LNKTYPE, linkname="/etc/passwd")],
    "character device": [member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "block device": [member("sda", tarfile.BLKTYPE, devmajor=8, devminor=0)],
    "fifo": [member("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_attacks_are_refused_and_leave_nothing(attack: str, tmp_path: Path, out: Path):
    archive = make_archive(
        tmp_path / "evil.tgz", member("fine.txt", data=b"fine"), *ATTACKS[attack]
    )
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, out / "dest")
    assert caught.value.member in str(caught.value) and caught.value.reason
    assert list(out.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-absolute").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz", "out"]


def test_unsafe_archive_messages_say_why(tmp_path: Path, out: Path):
    for members, why in [
        (ATTACKS["absolute path"], "absolute path"),
        (ATTACKS["dotdot"], ".."),
        (ATTACKS["symlink to /etc/passwd"], "'/etc/passwd'"),
        (ATTACKS["fifo"], "FIFO"),
        (ATTACKS["character device"], "character device"),
        (ATTACKS["hardlink to outside"], "hard link"),
    ]:
        with pytest.raises(UnsafeArchive, match="Refused to unpack") as caught:
            unpack(make_archive(tmp_path / "evil.tgz", *members), out / "dest")
        assert why in caught.value.reason


def test_setuid_and_group_write_bits_are_dropped(tmp_path: Path, out: Path):
    archive = make_archive(tmp_path / "a.tgz", member("tool", data=b"#!/bin/sh\n", mode=0o6777))
    unpack(archive, out / "dest")
    mode = stat.S_IMODE((out / "dest" / "tool").stat().st_mode)
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH) == 0


def test_harmless_oddities_are_accepted(tmp_path: Path, out: Path):
    archive = make_archive(
        tmp_path / "a.tgz",
        member("./", tarfile.DIRTYPE),
        member("./a/x.txt", data=b"x"),
        member("a/../b.txt", data=b"b"),
        member("a/hard", tarfile.LNKTYPE, linkname="./a/x.txt"),
        member("a/soft", tarfile.SYMTYPE, linkname="../b.txt"),
        member("loop", tarfile.SYMTYPE, linkname="loop"),
    )
    result = unpack(archive, out / "dest")
    assert tree(out / "dest") == {
        "a": "dir",
        "a/hard": b"x",
        "a/soft": ("link", "../b.txt"),
        "a/x.txt": b"x",
        "b.txt": b"b",
        "loop": ("link", "loop"),
    }
    assert result.files == 5


# -- unpacking: caps, corrupt input, destinations ------------------------------------------


def test_too_many_files(tmp_path: Path, out: Path):
    archive = make_archive(tmp_path / "a.tgz", *(member(f"f{i}", data=b"x") for i in range(5)))
    with pytest.raises(ArchiveTooLarge, match="more than 3 entries"):
        unpack(archive, out / "dest", max_files=3)
    assert list(out.iterdir()) == []


def test_too_many_bytes(tmp_path: Path, out: Path):
    archive = make_archive(
        tmp_path / "a.tgz", member("a", data=b"x" * 600), member("b", data=b"x" * 600)
    )
    with pytest.raises(ArchiveTooLarge, match="'b'") as caught:
        unpack(archive, out / "dest", max_bytes=1000)
    assert caught.value.largest[0] == ("a", 600) or ("b", 600) in caught.value.largest
    assert list(out.iterdir()) == []


def test_member_claiming_a_huge_size_is_refused_before_reading(tmp_path: Path, out: Path):
    info = tarfile.TarInfo("huge.bin")
    info.size = 5 << 30  # 5 GiB claimed, a few bytes sent: the default 4 GiB cap refuses it
    archive = tmp_path / "a.tgz"
    archive.write_bytes(gzip.compress(info.tobuf(tarfile.PAX_FORMAT) + b"x" * 512))
    with pytest.raises(ArchiveTooLarge, match=r"4\.0 GiB cap"):
        unpack(archive, out / "dest")
    assert list(out.iterdir()) == []


def test_huge_metadata_header_is_refused_before_reading(tmp_path: Path, out: Path):
    info, data = member("a.txt", data=b"x")
    info.pax_headers = {"comment": "z" * (4 << 20)}  # tarfile would read it whole into memory
    archive = make_archive(tmp_path / "a.tgz", (info, data))
    assert archive.stat().st_size < 100_000  # a small gzip bomb
    with pytest.raises(UnsafeArchive, match="metadata"):
        unpack(archive, out / "dest")
    assert list(out.iterdir()) == []


def test_decompressed_size_is_capped_whatever_the_headers_say(tmp_path: Path, out: Path):
    members = []
    for i in range(3):
        info, data = member(f"f{i}.txt", data=b"x")
        info.pax_headers = {"comment": "z" * (500 << 10)}  # below the metadata cap, adds up
        members.append((info, data))
    archive = make_archive(tmp_path / "a.tgz", *members)
    with pytest.raises(ArchiveTooLarge, match="expands to more than"):
        unpack(archive, out / "dest", max_bytes=1000, max_files=10)
    assert list(out.iterdir()) == []


@pytest.fixture
def good_archive(project: Path, tmp_path: Path) -> bytes:
    pack(project, tmp_path / "good.tgz")
    return (tmp_path / "good.tgz").read_bytes()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda good: b"this is plain text, not an archive\n" * 10, "not gzip-compressed"),
        (lambda good: gzip.compress(b"hello world " * 1000), "not a tar archive"),
        (lambda good: b"", "empty"),
        (lambda good: gzip.compress(b""), "empty"),
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: good[:-4], "truncated"),  # only the gzip trailer (length) is missing
        (lambda good: good[:-8], "truncated"),
        (lambda good: good[:200], "truncated"),
        (lambda good: good[:-100] + bytes(100), "damaged"),
    ],
    ids=[
        "text",
        "gzip-of-text",
        "empty",
        "empty-gzip",
        "half",
        "no-length",
        "no-trailer",
        "200-bytes",
        "zeroed-end",
    ],
)
def test_corrupt_inputs(make, says: str, good_archive: bytes, tmp_path: Path, out: Path):
    path = tmp_path / "bad.tgz"
    path.write_bytes(make(good_archive))
    with pytest.raises(CorruptArchive, match="Cannot unpack") as caught:
        unpack(path, out / "dest")
    assert says in str(caught.value)
    assert list(out.iterdir()) == []


def test_destination_must_be_new_or_empty(good_archive: bytes, tmp_path: Path, out: Path):
    (out / "empty").mkdir()
    unpack(io.BytesIO(good_archive), out / "empty")
    assert (out / "empty" / "script.oms").is_file()
    write(out / "full" / "keep.txt", "mine")
    with pytest.raises(ArchiveError, match="not an empty folder"):
        unpack(io.BytesIO(good_archive), out / "full")
    assert tree(out / "full") == {"keep.txt": b"mine"}
    unpack(io.BytesIO(good_archive), out / "new" / "parents" / "dest")
    assert (out / "new" / "parents" / "dest" / "data" / "x.csv").is_file()


class ReadOnlyStream:
    """A non-seekable stream, like an HTTP request body."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self._data.read(n)


def test_unpack_streams_from_a_file_object(good_archive: bytes, project: Path, out: Path):
    stream = ReadOnlyStream(good_archive)
    unpack(stream, out / "dest")
    assert stream.reads > 1
    assert (out / "dest" / "data" / "deep" / "blob.bin").read_bytes() == (
        project / "data" / "deep" / "blob.bin"
    ).read_bytes()


# -- streaming -----------------------------------------------------------------------------


def test_stream_directory_unpacks_to_the_same_tree(project: Path, tmp_path: Path, out: Path):
    write(project / "__pycache__" / "kept.pyc", "results are never filtered")
    data = b"".join(stream_directory(project))
    unpack(io.BytesIO(data), out / "dest")
    expected = tree(project)
    del expected["shared.txt"], expected["elsewhere"]  # links out of the folder are never followed
    assert tree(out / "dest") == expected


def test_stream_directory_of_a_subfolder_is_relative_to_it(project: Path):
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream_directory(project / "data")))) as tar:
        assert sorted(tar.getnames()) == ["deep", "deep/blob.bin", "x.csv"]


def test_stream_directory_streams_large_files_in_bounded_memory(tmp_path: Path, out: Path):
    folder = tmp_path / "results"
    folder.mkdir()
    digest = hashlib.sha256()
    with open(folder / "big.bin", "wb") as f:
        for _ in range(50):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    archive = tmp_path / "results.tgz"
    chunks = 0
    tracemalloc.start()
    try:
        with open(archive, "wb") as f:
            for chunk in stream_directory(folder):
                f.write(chunk)
                chunks += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert chunks > 50
    unpack(archive, out / "dest")
    assert hashlib.sha256((out / "dest" / "big.bin").read_bytes()).digest() == digest.digest()


def test_gzip_file_chunks_gunzips_to_the_original(tmp_path: Path):
    original = os.urandom(600_000) + b"compressible " * 50_000
    path = write(tmp_path / "f.bin", original)
    chunks = list(gzip_file_chunks(path, chunk_size=64 * 1024))
    assert len(chunks) > 2
    assert gzip.decompress(b"".join(chunks)) == original
    assert gzip.decompress(b"".join(gzip_file_chunks(write(tmp_path / "empty", b"")))) == b""
    with pytest.raises(FileNotFoundError):
        gzip_file_chunks(tmp_path / "missing")  # before any chunk: the server can still 404
    with pytest.raises(NotADirectoryError):
        stream_directory(tmp_path / "missing")


def test_data_filter_refusals_become_unsafe_archive(tmp_path: Path):
    from jupyter_mole.archive import _Guard

    device, _ = member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)
    with pytest.raises(UnsafeArchive, match="device or other special file"):
        _Guard.filter(device, str(tmp_path))
    link, _ = member("up", tarfile.SYMTYPE, linkname="../../x")
    with pytest.raises(UnsafeArchive, match="pointing outside"):
        _Guard.filter(link, str(tmp_path))
