"""Naming a script's values, tasks and environments after the variables they are assigned to.

OpenMOLE names ``val seed = Val[Int]`` "seed". Python objects do not know the
variable they are bound to, so the loader rewrites the script before running
it: ``seed = Val(int)`` becomes ``seed = Val(int, name="seed")`` (tuple
assignments too). Names exist from the start, so an error raised while the
script runs can name the value it is about. Whatever the rewrite cannot see
(a Val built in a function) is named after the script has run, by the first
variable that holds it.
"""

from __future__ import annotations

import ast
from typing import Any

from .dsl.environments import Environment
from .dsl.tasks import Task
from .dsl.values import Val

__all__ = ["name_assignments", "name_objects"]

# DSL constructors taking a name= keyword; Val also takes it as its second argument.
_NAMED = {
    "Val",
    "PythonTask",
    "SystemExecTask",
    "EmptyTask",
    "LocalEnvironment",
    "DaskEnvironment",
    "SSHEnvironment",
    "SLURMEnvironment",
    "PBSEnvironment",
    "SGEEnvironment",
    "HTCondorEnvironment",
    "LSFEnvironment",
    "OAREnvironment",
}


def _with_name(call: ast.expr, name: str) -> None:
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        return
    if call.func.id not in _NAMED or any(k.arg == "name" for k in call.keywords):
        return
    if call.func.id == "Val" and len(call.args) >= 2:
        return
    keyword = ast.keyword(arg="name", value=ast.Constant(name))
    call.keywords.append(ast.copy_location(keyword, call))


def name_assignments(tree: ast.Module) -> ast.Module:
    """Add ``name="x"`` to DSL constructor calls assigned to a variable ``x``."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Name):
            _with_name(value, target.id)
        elif isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)):
            for t, v in zip(target.elts, value.elts):
                if isinstance(t, ast.Name):
                    _with_name(v, t.id)
    return ast.fix_missing_locations(tree)


def name_objects(scope: dict[str, Any]) -> None:
    """Name each still-unnamed Val, task and environment after the first variable holding it."""
    for key, value in scope.items():
        if not key.startswith("__") and isinstance(value, (Val, Task, Environment)):
            value._assign_name(key)
