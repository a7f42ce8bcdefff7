"""Loading a script: run it with the DSL in scope and take its last expression as the workflow.

As in OpenMOLE, "the last line should be a puzzle". Every way a script can go
wrong at this point is reported as a :class:`ScriptError` that names the
script's own file and line, never a frame of ours: a syntax error, an exception
while it runs, a last line that is not a workflow, or a script that is plainly
OpenMOLE Scala, which only an OpenMOLE server runs.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import traceback
from pathlib import Path
from typing import Any

from .dsl import namespace
from .dsl.puzzle import Puzzle, as_puzzle
from .dsl.site import SCRIPT_MODULE
from .errors import MoleError, ScalaScriptError, ScriptError, WorkflowError
from .local_modules import importable_from
from .naming import name_assignments, name_objects

__all__ = ["Script", "load_script", "load_source"]

# Lines that only Scala (OpenMOLE's own dialect) would have.
_SCALA_LINE = re.compile(
    r"""^\s*(?:
        val\s+\w+\s*(?::\s*[\w\[\]]+\s*)?=     # val x = ...
      | import\s+_file_\.                      # OpenMOLE's script imports
      | def\s+\w+\s*\(.*\)\s*:\s*\w+\s*=       # def f(x: Int): Int =
      | [^#]*\bVal\[\w+                         # Val[Double], outside a Python comment
      | \w+\s*:=                              # x := 3 (a Python walrus needs parentheses)
      | [^#]*\bset\s*\(.*:=                     # model set (x := 3)
    )""",
    re.VERBOSE,
)


@dataclasses.dataclass
class Script:
    """A loaded script: its workflow and the names it defined."""

    path: str
    workflow: Puzzle
    namespace: dict[str, Any]


def load_script(path: str | Path, work_directory: str | Path | None = None) -> Script:
    """Load the script at ``path``; ``work_directory`` defaults to the script's folder."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScriptError(f"there is no script {path}", filename=str(path)) from None
    except IsADirectoryError:
        raise ScriptError(
            f"{path} is a folder, not a script: name the .oms file in it", filename=str(path)
        ) from None
    except UnicodeDecodeError:
        raise ScriptError(f"{path.name} is not UTF-8 text", filename=str(path)) from None
    return load_source(source, str(path), work_directory or path.parent)


def _scala_line(source: str) -> tuple[int, str] | None:
    for number, line in enumerate(source.splitlines(), 1):
        if _SCALA_LINE.match(line):
            return number, line.strip()
    return None


def _script_frames(tb: Any, filename: str) -> int | None:
    """The deepest line of the script itself in a traceback."""
    lineno = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == filename:
            lineno = frame.lineno
    return lineno


def _user_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the script's first frame on: our loader's frames are noise."""
    frames = traceback.extract_tb(exc.__traceback__)
    for i, frame in enumerate(frames):
        if frame.filename == filename:
            frames = frames[i:]
            break
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)


def load_source(source: str, filename: str, work_directory: str | Path = ".") -> Script:
    """Run ``source`` (named ``filename`` in errors) and return its workflow."""
    name = Path(filename).name
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as e:
        scala = _scala_line(source)
        if scala is not None:
            raise ScalaScriptError(
                f"{name} is an OpenMOLE Scala script (line {scala[0]}: `{scala[1]}`); the "
                f"embedded engine runs scripts written in Python. Send it to an OpenMOLE "
                f"server (`jupyter-mole submit FOLDER --script {name} --url "
                f"https://your-openmole:8443`, or in a notebook `%mole connect "
                f"https://your-openmole:8443` before the %%mole cell), or rewrite it in the "
                f"Python dialect (see docs/dialect.md).",
                filename=filename,
                lineno=scala[0],
            ) from None
        raise ScriptError(
            f"syntax error in {name}, line {e.lineno}: {e.msg}" + _excerpt(e.text),
            filename=filename,
            lineno=e.lineno,
        ) from None
    if not tree.body:
        raise ScriptError(
            f"{name} is empty: its last line must be a workflow (a task, a method or a puzzle)",
            filename=filename,
        )
    *body, last = tree.body
    if not isinstance(last, ast.Expr):
        what = _statement_kind(last)
        raise ScriptError(
            f"the last line of {name} (line {last.lineno}) must be a workflow: a task, a method "
            f"or a puzzle; it is {what}. End the script with the workflow itself, e.g. `model` "
            f"or `DirectSampling(...)`",
            filename=filename,
            lineno=last.lineno,
        )
    scope: dict[str, Any] = namespace()
    scope.update(
        {"__name__": SCRIPT_MODULE, "__file__": filename, "work_directory": Path(work_directory)}
    )
    body_code = compile(name_assignments(ast.Module(body=body, type_ignores=[])), filename, "exec")
    try:
        with importable_from(Path(work_directory)):
            exec(body_code, scope)
            value = eval(compile(ast.Expression(last.value), filename, "eval"), scope)
    except MoleError as e:
        lineno = _script_frames(e.__traceback__, filename)
        where = f", line {lineno}" if lineno else ""
        raise ScriptError(
            f"{name}{where}: {e.message}",
            filename=filename,
            lineno=lineno,
            stack_trace=_user_traceback(e, filename),
        ) from None
    except SystemExit as e:
        lineno = _script_frames(e.__traceback__, filename)
        where = f", line {lineno}" if lineno else ""
        raise ScriptError(
            f"{name}{where} calls exit(): a script must end with its workflow, not stop",
            filename=filename,
            lineno=lineno,
        ) from None
    except Exception as e:
        lineno = _script_frames(e.__traceback__, filename)
        where = f", line {lineno}" if lineno else ""
        raise ScriptError(
            f"{name}{where}: {type(e).__name__}: {e}",
            filename=filename,
            lineno=lineno,
            stack_trace=_user_traceback(e, filename),
        ) from None
    name_objects(scope)
    try:
        workflow = as_puzzle(value)
    except WorkflowError:
        raise ScriptError(
            f"the last line of {name} (line {last.lineno}) must be a workflow: a task, a method "
            f"or a puzzle; it is a `{type(value).__name__}`",
            filename=filename,
            lineno=last.lineno,
        ) from None
    for capsule in workflow.capsules():
        if capsule.task.script is None:
            capsule.task.script = (filename, source)
    return Script(path=filename, workflow=workflow, namespace=scope)


def _excerpt(text: str | None) -> str:
    return f": `{text.strip()}`" if text and text.strip() else ""


def _statement_kind(node: ast.stmt) -> str:
    kinds = {
        ast.Assign: "an assignment",
        ast.AnnAssign: "an assignment",
        ast.AugAssign: "an assignment",
        ast.FunctionDef: "a function definition",
        ast.AsyncFunctionDef: "a function definition",
        ast.ClassDef: "a class definition",
        ast.Import: "an import",
        ast.ImportFrom: "an import",
        ast.For: "a for loop",
        ast.If: "an if statement",
    }
    return kinds.get(type(node), f"a `{type(node).__name__}` statement")
