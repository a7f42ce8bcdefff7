"""Typed values (OpenMOLE's ``Val``) and the aggregations built on them.

A ``Val`` is a name with a type. Scripts rarely give the name: the script loader
names each ``Val`` after the variable it was assigned to, as OpenMOLE does with
``val seed = Val[Int]``. Type checks happen where the value crosses a task's
boundary, so that a mistake names the task, the value and both types.
"""

from __future__ import annotations

import collections.abc
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import WorkflowError
from .site import script_site

__all__ = ["Aggregation", "File", "Val", "check_value", "type_label"]

File = Path
"""OpenMOLE's ``Val[File]``: a value holding a path (``Val(File)``)."""


def type_label(tp: Any) -> str:
    """A type as a person writes it: ``float``, ``list[int]``, ``File``."""
    if tp is Path:
        return "File"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return repr(tp).replace("typing.", "").replace("pathlib.Path", "File")


_EXACT = frozenset({float, int, str, bool})


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits ``tp``, and the value in its canonical form.

    Python's numeric tower is respected the way a modeller expects: an ``int``
    fits a ``float`` value (and becomes a float), numpy scalars fit their Python
    kinds, but a ``bool`` is not taken for a number.
    """
    if tp is Any or tp is object:
        return True, value
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return True, int(value)
        return False, value
    if tp is bool:
        if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
            return True, bool(value)  # numpy's booleans are no bool subclass
        return False, value
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return True, Path(value)
        return False, value
    origin = typing.get_origin(tp)
    if origin in (list, tuple, collections.abc.Sequence):
        return _coerce_items(value, origin, typing.get_args(tp))
    if origin is dict:
        return isinstance(value, dict), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, converted = _coerce(value, arg)
            if ok:
                return True, converted
        return False, value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _coerce_items(value: Any, origin: Any, args: tuple[Any, ...]) -> tuple[bool, Any]:
    """``list[T]``, ``Sequence[T]``, ``tuple[T, ...]`` and ``tuple[A, B]``, item by item."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return False, value
    items = list(value)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            return False, value
        kinds = list(args)
    else:
        kinds = [args[0]] * len(items) if args else [Any] * len(items)
    converted = []
    for item, kind in zip(items, kinds):
        ok, item = _coerce(item, kind)
        if not ok:
            return False, value
        converted.append(item)
    return True, tuple(converted) if origin is tuple else converted


def check_value(val: Val, value: Any, where: str) -> Any:
    """The value converted to ``val``'s type, or a WorkflowError naming ``where``."""
    if type(value) is val.type and val.type in _EXACT:
        return value  # the common case, on the path of every job
    ok, converted = _coerce(value, val.type)
    if not ok:
        raise WorkflowError(
            f"{where}: {val.name} should be {type_label(val.type)}, "
            f"got {type(value).__name__} {_short_repr(value)}"
        )
    return converted


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Val:
    """A named, typed value: OpenMOLE's ``Val[T]``, written ``Val(T)``.

    Identity is the object, not the name, as in a Scala script where two
    ``Val``s of one name are a mistake the loader reports. A ``Val`` made
    without a name keeps the script line that made it, for the error that
    says it has none (found only when the workflow is checked).
    """

    __slots__ = ("_name", "_site", "type")

    def __init__(self, type: Any = float, name: str | None = None) -> None:
        self.type = type
        self._name = name
        self._site = script_site() if name is None else None

    @property
    def name(self) -> str:
        if self._name is None:
            made = f" (made at {self._site})" if self._site else ""
            raise WorkflowError(
                f"a Val({type_label(self.type)}){made} has no name: assign it to a variable "
                f"in the script, or give one with Val({type_label(self.type)}, name='x')"
            )
        return self._name

    @property
    def named(self) -> bool:
        return self._name is not None

    def _assign_name(self, name: str) -> None:
        if self._name is None:
            self._name = name

    def __repr__(self) -> str:
        return f"Val({type_label(self.type)}, name={self._name!r})"

    def __getstate__(self) -> tuple[Any, str | None]:
        return (self.type, self._name)

    def __setstate__(self, state: tuple[Any, str | None]) -> None:
        self.type, self._name = state
        self._site = None

    # -- sampling -------------------------------------------------------------
    def in_(self, domain: Any, stop: Any = None, *, by: Any = None, size: int | None = None):
        """A factor: this value taking each value of ``domain``.

        ``x.in_([1, 2, 3])``, ``x.in_(Range(0.0, 1.0, by=0.1))`` or the short form
        ``x.in_(0.0, 1.0, by=0.1)`` (OpenMOLE's ``x in (0.0 to 1.0 by 0.1)``).
        """
        from .sampling import Factor, Range

        if stop is not None or by is not None or size is not None:
            if stop is None:
                raise WorkflowError(
                    f"{self.name}.in_({domain!r}, by=...) needs an end: {self.name}.in_(start, stop, by=step)"
                )
            domain = Range(domain, stop, by=by, size=size)
        return Factor(self, domain)

    # -- aggregation ----------------------------------------------------------
    def evaluate(self, function: Callable[[list[Any]], Any]) -> Aggregation:
        """Aggregate this value's results with ``function`` (OpenMOLE's ``v evaluate f``)."""
        return Aggregation(self, function)


class Aggregation:
    """``v.evaluate(f).as_(w)``: ``f`` applied to the list of ``v``'s values in sample order."""

    __slots__ = ("function", "source", "target")

    def __init__(
        self, source: Val, function: Callable[[list[Any]], Any] | None, target: Val | None = None
    ) -> None:
        self.source = source
        self.function = function
        self.target = target

    def as_(self, target: Val) -> Aggregation:
        return Aggregation(self.source, self.function, target)

    @property
    def output(self) -> Val:
        """The value the aggregation produces: the target, or the source's name re-typed."""
        if self.target is not None:
            return self.target
        if self.function is None:
            return Val(list[self.source.type], self.source.name)  # type: ignore[name-defined]
        return Val(object, self.source.name)

    def apply(self, values: list[Any]) -> Any:
        if self.function is None:
            return list(values)
        return self.function(values)

    def __repr__(self) -> str:
        fn = getattr(self.function, "__name__", repr(self.function))
        target = f".as_({self.target.name})" if self.target is not None else ""
        return f"{self.source.name}.evaluate({fn}){target}"


def as_aggregation(item: Val | Aggregation) -> Aggregation:
    """A plain ``Val`` in an aggregation list collects its values into a list."""
    if isinstance(item, Aggregation):
        return item
    if isinstance(item, Val):
        return Aggregation(item, None)
    raise WorkflowError(
        f"an aggregation must be a Val or v.evaluate(f).as_(w), got {type(item).__name__}"
    )
