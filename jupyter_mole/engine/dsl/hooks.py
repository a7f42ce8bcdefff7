"""Hooks: where results go as they come (OpenMOLE's ``display``, ``CSVHook``, ``CopyFileHook``).

A hook is a definition in the script. When an execution starts, each hook is
*started* (a CSV hook replaces its file, so that a run that yields no row does
not leave the last run's rows behind); at its first rows it is opened into a
writer bound to that execution (its work directory and output), and rows are
written batch by batch as jobs finish, not at the end.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import WorkflowError
from .puzzle import describe
from .values import Val

__all__ = [
    "CSVHook",
    "CopyFileHook",
    "DisplayHook",
    "Hook",
    "HookContext",
    "HookWriter",
    "display",
    "format_value",
]


class HookContext:
    """What a hook writer may touch: the work directory and the execution's output."""

    def __init__(self, work_directory: Path, write_output: Callable[[str], None]) -> None:
        self.work_directory = work_directory
        self.write_output = write_output

    def resolve(self, path: str | os.PathLike) -> Path:
        """A path of the script made absolute against the work directory."""
        p = Path(path)
        return p if p.is_absolute() else self.work_directory / p


class HookWriter:
    """A hook opened for one execution; rows come as tuples in the order of ``names``."""

    def write(self, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release files; called once, whether the execution succeeded or not."""


class Hook:
    """Base of hooks. ``values`` restricts and orders the columns (default: all outputs)."""

    def __init__(self, values: Iterable[Val] | None = None) -> None:
        self.values: tuple[Val, ...] | None = None if values is None else tuple(values)
        for v in self.values or ():
            if not isinstance(v, Val):
                raise WorkflowError(f"the values of a hook must be Vals, got {describe(v)}")

    def check(self, available: Mapping[str, Val], where: str) -> None:
        """Static check that every value this hook keeps is produced where it is hooked."""
        for v in self.values or ():
            if v.name not in available:
                names = ", ".join(available) or "nothing"
                raise WorkflowError(
                    f"{where} keeps {v.name}, which is not produced there (produced: {names})"
                )

    def columns(self, available: Sequence[str]) -> list[str]:
        return [v.name for v in self.values] if self.values is not None else list(available)

    def start(self, context: HookContext) -> None:
        """The execution starts, before any row: clear what a previous run left."""

    def open(self, context: HookContext, columns: Sequence[str]) -> HookWriter:
        raise NotImplementedError


def _picker(names: Sequence[str], columns: Sequence[str]) -> Callable[[tuple], tuple]:
    """A function taking a row in the order of ``names`` to the values of ``columns``."""
    index = {name: i for i, name in enumerate(names)}
    missing = [c for c in columns if c not in index]
    if missing:
        raise WorkflowError(f"a hook keeps {', '.join(missing)}, which is not produced there")
    if list(columns) == list(names):
        return lambda row: row
    positions = [index[c] for c in columns]
    return lambda row: tuple(row[i] for i in positions)


def format_value(value: Any) -> str:
    """One value as text in a CSV cell or on a display line (lists as JSON arrays)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return json.dumps([_jsonable(v) for v in value])
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


class DisplayHook(Hook):
    """``display``: a header, then one aligned line per result, in the execution's output."""

    def __call__(self, *values: Val) -> DisplayHook:
        """``display(x, y)`` keeps only those values."""
        return DisplayHook(values)

    def open(self, context: HookContext, columns: Sequence[str]) -> HookWriter:
        return _DisplayWriter(context, self.columns(columns))

    def __repr__(self) -> str:
        return "display"


class _DisplayWriter(HookWriter):
    def __init__(self, context: HookContext, columns: list[str]) -> None:
        self.context = context
        self.columns = columns
        self.widths = [max(len(c), 10) for c in columns]
        self.header_written = False

    def write(self, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        lines = []
        if not self.header_written:
            lines.append(self._line(self.columns))
            self.header_written = True
        pick = _picker(names, self.columns)
        lines.extend(self._line([format_value(v) for v in pick(row)]) for row in rows)
        self.context.write_output("\n".join(lines) + "\n")

    def _line(self, cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(w) for cell, w in zip(cells, self.widths)).rstrip()


display = DisplayHook()


class CSVHook(Hook):
    """Rows to a CSV file: ``CSVHook(work_directory / "results.csv", values=[x, y])``.

    ``.hook(work_directory / "results.csv")`` is the same with every value. The
    file is replaced when the execution starts and grows as results come.
    """

    def __init__(
        self, path: str | os.PathLike, values: Iterable[Val] | None = None, header: bool = True
    ) -> None:
        super().__init__(values)
        if not isinstance(path, (str, os.PathLike)):
            raise WorkflowError(f"CSVHook takes a file path, got {describe(path)}")
        if not str(path).endswith(".csv"):
            raise WorkflowError(
                f"a hook to a file writes CSV: name it with .csv (got {str(path)!r}), "
                f"or use display / CopyFileHook"
            )
        self.path = path
        self.header = header

    def start(self, context: HookContext) -> None:
        """Replace the file: with the header alone when the columns are known, else empty.

        Without ``values=`` the columns are those of the first rows, unknown until
        they come; the writer rewrites the file from its header then.
        """
        path = context.resolve(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as file:
                if self.header and self.values is not None:
                    csv.writer(file).writerow(self.columns(()))
        except OSError as e:
            reason = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e)
            raise WorkflowError(f"the CSV hook cannot write {path} ({reason})") from None

    def open(self, context: HookContext, columns: Sequence[str]) -> HookWriter:
        return _CSVWriter(context.resolve(self.path), self.columns(columns), self.header)

    def __repr__(self) -> str:
        return f"CSVHook({str(self.path)!r})"


class _CSVWriter(HookWriter):
    def __init__(self, path: Path, columns: list[str], header: bool) -> None:
        self.path = path
        self.columns = columns
        self.header = header
        self.file: Any = None
        self.writer: Any = None

    def write(self, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.file)
            if self.header:
                self.writer.writerow(self.columns)
        pick = _picker(names, self.columns)
        self.writer.writerows([format_value(v) for v in pick(row)] for row in rows)
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


_TEMPLATE = re.compile(r"\$\{(\w+)\}")


def fill_template(template: str, row: Mapping[str, Any], where: str) -> str:
    """``${x}`` replaced by the value of ``x`` in ``row``; an unknown name is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in row:
            names = ", ".join(row) or "none"
            raise WorkflowError(f"{where}: ${{{name}}} is not a value here (values: {names})")
        return format_value(row[name])

    return _TEMPLATE.sub(value, template)


class CopyFileHook(Hook):
    """Copy a file (or folder) output to ``destination``, which may use ``${x}`` values.

    ``CopyFileHook(result, work_directory / "results" / "out_${seed}.txt")``
    """

    def __init__(self, file: Val, destination: str | os.PathLike, move: bool = False) -> None:
        if not isinstance(file, Val):
            raise WorkflowError(f"CopyFileHook copies a file Val, got {describe(file)}")
        super().__init__([file])
        self.file = file
        self.destination = str(destination)
        self.move = move

    def columns(self, available: Sequence[str]) -> list[str]:
        return list(available)

    def open(self, context: HookContext, columns: Sequence[str]) -> HookWriter:
        return _CopyFileWriter(self, context)

    def __repr__(self) -> str:
        return f"CopyFileHook({self.file.name}, {self.destination!r})"


class _CopyFileWriter(HookWriter):
    def __init__(self, hook: CopyFileHook, context: HookContext) -> None:
        self.hook = hook
        self.context = context

    def write(self, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        name = self.hook.file.name
        for values in rows:
            row = dict(zip(names, values))
            source = Path(row[name])
            target = self.context.resolve(fill_template(self.hook.destination, row, "CopyFileHook"))
            if not source.exists():
                raise WorkflowError(f"CopyFileHook: the file of {name} ({source}) does not exist")
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.hook.move:
                shutil.move(source, target)
            elif source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target)
