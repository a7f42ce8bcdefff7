"""Which files of a work directory get packed: default ignores and ``.moleignore`` files.

Why a module of its own: these rules are the part users tune ("why is my upload 3 GB?"), and
they copy git's so that nobody learns a new syntax. Patterns are gitignore patterns (matched by
`pathspec`, which replicates git's edge cases); a ``.moleignore`` in a subfolder applies to that
subfolder; later and deeper rules override earlier ones; ``!pattern`` re-includes; and a folder
that is left out is not descended into, so (as with git) nothing inside it can be re-included.

The walk also decides what happens to symbolic links, because that depends on where they point:
a link to something inside the folder is kept as a link (rewritten as a relative link, so it
still works once unpacked elsewhere); a link to a file outside is followed (its content is
packed) when ``follow_outside`` is true, and anything else is skipped with a warning.
"""

from __future__ import annotations

import heapq
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pathspec

__all__ = [
    "DEFAULT_IGNORES",
    "IGNORE_FILE",
    "Entry",
    "Scan",
    "format_size",
    "largest_entries",
    "scan",
    "walk",
]

IGNORE_FILE = ".moleignore"

DEFAULT_IGNORES: tuple[str, ...] = (
    ".ipynb_checkpoints/",
    ".git",
    "__pycache__/",
    ".venv/",
    "venv/",
    "node_modules/",
    "*.pyc",
    ".DS_Store",
    # Results downloaded by the magics and the widget (mole-<first 8 of the id>/): sending
    # them back with the next run would grow every upload with the last results.
    "/mole-" + "[0-9a-f]" * 8 + "/",
)
"""gitignore patterns applied before any ``.moleignore`` (which may re-include with ``!``).
Any folder that holds a ``pyvenv.cfg`` (a virtual environment, whatever its name: ``env``,
``myenv``...) or a ``conda-meta/`` folder (a conda environment) is always skipped as well."""


def _is_environment(folder: str) -> bool:
    """A Python environment, whatever its name: gigabytes that a workflow never needs sent."""
    return Path(folder, "pyvenv.cfg").exists() or Path(folder, "conda-meta").is_dir()


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing to pack: ``path`` is relative to the folder, with ``/`` separators."""

    path: str
    size: int
    kind: Literal["file", "dir", "link"] = "file"
    link: str = ""
    """For ``kind == "link"``: the relative target stored in the archive."""
    source: str = ""
    """For ``kind == "file"``: where the content is read from (differs from the folder's own
    path for a followed link)."""


@dataclass
class Scan:
    """What a walk found: files and links to pack, folders (so empty ones survive), warnings."""

    entries: list[Entry] = field(default_factory=list)
    folders: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries)


class _Rules:
    """The stack of ignore specs in force in one folder: (base folder, spec), outermost first."""

    def __init__(self, levels: tuple[tuple[str, pathspec.GitIgnoreSpec], ...] = ()) -> None:
        self.levels = levels

    def enter(self, rel: str, dirpath: str, extra: Iterable[str] = ()) -> _Rules:
        """The rules inside folder ``rel``: ours plus its own ``.moleignore``, if any."""
        lines = list(extra)
        ignore_file = Path(dirpath, IGNORE_FILE)
        if ignore_file.is_file():
            lines += ignore_file.read_text(encoding="utf-8", errors="replace").splitlines()
        if not lines:
            return self
        try:
            spec = pathspec.GitIgnoreSpec.from_lines(lines)
        except ValueError as exc:
            raise ValueError(f"{ignore_file}: {exc} (the syntax is gitignore's)") from exc
        return _Rules((*self.levels, (rel, spec)))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        decision: bool | None = None
        for base, spec in self.levels:
            sub = rel[len(base) + 1 :] if base else rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:
                decision = result.include
        return bool(decision)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan(
    folder: str | os.PathLike[str],
    extra_ignores: Iterable[str] = (),
    *,
    use_ignores: bool = True,
    follow_outside: bool = True,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> Scan:
    """Walk ``folder`` (sorted, deterministic) and classify what to pack.

    ``use_ignores=False`` packs everything (server downloads of results); ``follow_outside=False``
    never reads outside ``folder`` (links out of it are skipped): the server must not leak files
    that a workflow linked to. ``exclude`` lists paths never to pack (the archive being written).
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder (nothing to pack)")
    real_root = os.path.realpath(root)
    excluded = {os.path.realpath(p) for p in exclude}
    rules = (
        _Rules().enter("", str(root), [*DEFAULT_IGNORES, *extra_ignores])
        if use_ignores
        else _Rules()
    )
    found = Scan()
    stack: list[tuple[str, str, _Rules]] = [(str(root), "", rules)]
    while stack:
        dirpath, rel_dir, rules = stack.pop()
        try:
            items = sorted(os.scandir(dirpath), key=lambda item: item.name)
        except OSError as exc:
            found.warnings.append(f"{rel_dir or '.'}: cannot be read ({exc.strerror}); skipped")
            continue
        subfolders: list[tuple[str, str, _Rules]] = []
        for item in items:
            rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
            if item.is_symlink():
                _link(item, rel, real_root, rules, follow_outside, excluded, found)
            elif item.is_dir(follow_symlinks=False):
                if rules.ignored(rel, True) or (use_ignores and _is_environment(item.path)):
                    continue
                found.folders.append(Entry(rel, 0, "dir", source=item.path))
                sub_rules = rules.enter(rel, item.path) if use_ignores else rules
                subfolders.append((item.path, rel, sub_rules))
            elif item.is_file(follow_symlinks=False):
                if rules.ignored(rel, False) or os.path.realpath(item.path) in excluded:
                    continue
                size = item.stat(follow_symlinks=False).st_size
                found.entries.append(Entry(rel, size, "file", source=item.path))
            else:
                found.warnings.append(
                    f"{rel}: not a regular file (a socket, FIFO or device); skipped"
                )
        stack.extend(reversed(subfolders))
    return found


def _link(
    item: os.DirEntry[str],
    rel: str,
    real_root: str,
    rules: _Rules,
    follow_outside: bool,
    excluded: set[str],
    found: Scan,
) -> None:
    """Classify one symbolic link (see the module docstring)."""
    target = os.path.realpath(item.path)
    resolved = Path(target)
    if rules.ignored(rel, resolved.is_dir()) or target in excluded:
        return
    if _within(target, real_root):
        inside = Path(os.path.relpath(target, real_root)).as_posix()
        link = posixpath.relpath(inside, posixpath.dirname(rel) or ".")
        found.entries.append(Entry(rel, 0, "link", link=link))
    elif follow_outside and resolved.is_file():
        found.entries.append(Entry(rel, resolved.stat().st_size, "file", source=target))
    else:
        kind = "folder" if resolved.is_dir() else "file" if resolved.exists() else "missing path"
        link = Path(item.path).readlink()
        found.warnings.append(
            f"{rel}: a link to a {kind} outside the packed folder ({link}); skipped"
        )


def walk(folder: str | os.PathLike[str], extra_ignores: Iterable[str] = ()) -> list[Entry]:
    """The files (and links) that `pack` would put in the archive, with their sizes.

    Honours `DEFAULT_IGNORES`, ``extra_ignores`` (gitignore patterns relative to ``folder``)
    and every ``.moleignore`` in the folder tree. Folders are not listed.
    """
    return scan(folder, extra_ignores).entries


def largest_entries(entries: Iterable[Entry], n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` largest top-level entries (a folder, shown as ``name/``, counts as the sum of
    what it holds): what to suggest for ``.moleignore`` when a folder is too big to send."""
    sizes: dict[str, int] = {}
    for entry in entries:
        top, sep, _ = entry.path.partition("/")
        key = top + "/" if sep else top
        sizes[key] = sizes.get(key, 0) + entry.size
    return heapq.nsmallest(n, sizes.items(), key=lambda kv: (-kv[1], kv[0]))


def format_size(n: float) -> str:
    """A human-readable size: ``512 bytes``, ``1.5 MiB``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"
