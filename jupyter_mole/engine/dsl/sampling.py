"""Samplings: the points a method explores, produced lazily.

``x.in_(domain)`` is a factor; ``a * b`` (or ``a.x(b)``) their cross product,
``a.zip(b)`` their zip. A sampling yields tuples of values in the order of its
``vals`` and never builds its list of points: a million-point cross product
holds only its factors in memory.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from ..errors import WorkflowError
from .puzzle import describe
from .values import Val, check_value

__all__ = ["Cross", "Factor", "LogRange", "Range", "Sampling", "Zip"]


def _number(value: Any, label: str) -> int | float:
    """A finite Python int or float from any real number (numpy's included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise WorkflowError(f"Range {label} must be a number, got {describe(value)}")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise WorkflowError(f"Range {label} must be a finite number, got {value!r}")
    return value


class Range:
    """An inclusive numeric range: OpenMOLE's ``0.0 to 1.0 by 0.1`` is ``Range(0.0, 1.0, by=0.1)``.

    Values are computed as ``start + i * by`` in decimal arithmetic from the
    numbers as written, so ``Range(0.0, 1.0, by=0.1)`` is exactly the eleven
    values 0.0, 0.1, ..., 1.0 with no floating-point drift. ``size=n`` gives n
    evenly spaced values instead. Integers in, integers out.
    """

    def __init__(
        self, start: float, stop: float, by: float | None = None, *, size: int | None = None
    ) -> None:
        start, stop = _number(start, "start"), _number(stop, "stop")
        if by is not None and size is not None:
            raise WorkflowError(
                "give a Range either by= (a step) or size= (a number of values), not both"
            )
        self.integral = isinstance(start, int) and isinstance(stop, int)
        self._start = Decimal(repr(start))
        self._stop = Decimal(repr(stop))
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise WorkflowError(f"Range size must be a whole number of 1 or more, got {size!r}")
            self._count = size
            self._step = (self._stop - self._start) / (size - 1) if size > 1 else Decimal(0)
            self.integral = self.integral and self._step % 1 == 0
        else:
            if by is None:
                by = 1
            if isinstance(by, bool) or not isinstance(by, numbers.Real) or by == 0:
                raise WorkflowError(f"Range step (by=) must be a non-zero number, got {by!r}")
            by = _number(by, "step (by=)")
            self.integral = self.integral and isinstance(by, int)
            self._step = Decimal(repr(by))
            span = (self._stop - self._start) / self._step
            # One extra value when the stop is hit within rounding of the step.
            self._count = max(0, math.floor(span + Decimal("1e-9")) + 1)

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> float | int:
        if not 0 <= i < self._count:
            raise IndexError(i)
        value = self._start + i * self._step
        return int(value) if self.integral else float(value)

    def __iter__(self) -> Iterator[float | int]:
        return (self[i] for i in range(self._count))

    def __repr__(self) -> str:
        return f"Range({self._start}, {self._stop}, by={self._step})"


class LogRange:
    """``size`` values from ``start`` to ``stop`` (both included), evenly spaced on a log scale."""

    def __init__(self, start: float, stop: float, size: int) -> None:
        if start <= 0 or stop <= 0:
            raise WorkflowError(f"LogRange bounds must be positive, got {start!r} and {stop!r}")
        if not isinstance(size, int) or size < 2:
            raise WorkflowError(f"LogRange size must be a whole number of 2 or more, got {size!r}")
        self.start, self.stop, self.size = float(start), float(stop), size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[float]:
        lo, hi = math.log(self.start), math.log(self.stop)
        for i in range(self.size):
            if i == 0:
                yield self.start
            elif i == self.size - 1:
                yield self.stop
            else:
                yield math.exp(lo + (hi - lo) * i / (self.size - 1))


class Sampling:
    """A lazy sequence of points; each point gives a value to every Val of ``vals``."""

    vals: tuple[Val, ...] = ()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def size(self) -> int | None:
        """The number of points, when it is known without producing them."""
        return None

    def __mul__(self, other: Sampling) -> Cross:
        return Cross(self, other)

    def x(self, other: Sampling) -> Cross:
        """OpenMOLE's ``a x b``: every point of ``a`` with every point of ``b``."""
        return Cross(self, other)

    def zip(self, other: Sampling) -> Zip:
        """OpenMOLE's ``a zip b``: the i-th point of ``a`` with the i-th point of ``b``."""
        return Zip(self, other)


class _Recorded:
    """A one-shot iterator made walkable again: values are kept as they are first drawn.

    The engine walks a sampling more than once: a cross product walks its later
    factors once per point of the earlier ones, a method nested in another walks
    its sampling once per enclosing point, and a workflow may use a method
    twice. A generator gives its values once, so they are kept; but only as far
    as a walk has gone, so the first point is drawn without running the
    generator to its end (an endless ``itertools.count()`` zipped with a finite
    factor works), and a walk that stops early holds only what it drew. A domain
    too large to hold should be one that starts afresh at each walk: a
    ``range``, a ``Range``, or an object whose ``__iter__`` makes a new generator.
    """

    def __init__(self, source: Iterator[Any]) -> None:
        self._source: Iterator[Any] | None = source
        self._values: list[Any] = []

    def __iter__(self) -> Iterator[Any]:
        values, i = self._values, 0
        while True:
            # Walks may interleave (two methods drawing from one factor): each reads by index.
            if i < len(values):
                yield values[i]
                i += 1
                continue
            if self._source is None:
                return
            try:
                values.append(next(self._source))
            except StopIteration:
                self._source = None
                return

    def size(self) -> int | None:
        """Known once the iterator has been walked to its end."""
        return len(self._values) if self._source is None else None

    def __repr__(self) -> str:
        return f"<{type(self._source).__name__ if self._source else 'iterator'}>"


class Factor(Sampling):
    """``x.in_(domain)``: the Val ``x`` taking each value of ``domain`` in turn.

    A domain with a length (a list, a ``range``, a ``Range``) gives the factor
    its size; any other iterable is walked as it is needed, never listed first
    (a one-shot iterator keeps the values drawn, see :class:`_Recorded`).
    """

    def __init__(self, val: Val, domain: Iterable[Any]) -> None:
        if isinstance(domain, (str, bytes)) or not isinstance(domain, Iterable):
            raise WorkflowError(
                f"{val.name}.in_() takes values to explore (a list, a range, Range(0.0, 1.0, "
                f"by=0.1)...), got {describe(domain)}"
            )
        if isinstance(domain, Iterator):
            domain = _Recorded(domain)
        self.val = val
        self.domain = domain
        self.vals = (val,)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        val = self.val
        if isinstance(self.domain, range) and val.type in (int, object):
            return zip(self.domain)  # ints already: one-tuples made in C
        return self._checked()

    def _checked(self) -> Iterator[tuple[Any, ...]]:
        val = self.val
        where = f"the sampling of {val.name}"
        exact = val.type if val.type in (int, float, str, bool) else None
        for value in self.domain:
            # The type test inline: a call per value would cost more than the rest of the point.
            yield (value,) if type(value) is exact else (check_value(val, value, where),)

    def size(self) -> int | None:
        if isinstance(self.domain, _Recorded):
            return self.domain.size()
        try:
            return len(self.domain)  # type: ignore[arg-type]
        except TypeError:  # an iterable with no length: only walking it would tell
            return None

    def __repr__(self) -> str:
        return f"{self.val.name}.in_({self.domain!r})"


def _samplings(parts: tuple[Any, ...], kind: type) -> tuple[Sampling, ...]:
    flat: list[Sampling] = []
    for part in parts:
        if not isinstance(part, Sampling):
            raise WorkflowError(
                f"{kind.__name__} combines samplings such as x.in_(...), got {describe(part)}"
            )
        flat.extend(part.parts if isinstance(part, kind) else [part])
    return tuple(flat)


def _check_distinct(vals: tuple[Val, ...]) -> None:
    seen: set[str] = set()
    for val in vals:
        if val.name in seen:
            raise WorkflowError(
                f"the sampling gives {val.name} a value twice; sample each Val once"
            )
        seen.add(val.name)


class Cross(Sampling):
    """The cross product of samplings; the last one varies fastest."""

    def __init__(self, *parts: Sampling) -> None:
        self.parts = _samplings(parts, Cross)
        self.vals = tuple(v for p in self.parts for v in p.vals)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        _check_distinct(self.vals)
        return _product(self.parts)

    def size(self) -> int | None:
        sizes = [p.size() for p in self.parts]
        return None if None in sizes else math.prod(sizes)  # type: ignore[arg-type]


def _product(parts: tuple[Sampling, ...]) -> Iterator[tuple[Any, ...]]:
    """The cross product, walking the inner samplings again for each outer point.

    ``itertools.product`` would first list every factor whole; this holds one
    point of each factor at a time, whatever their lengths.
    """
    if not parts:
        yield ()
        return
    first, rest = parts[0], parts[1:]
    if not rest:
        yield from first
        return
    for head in first:
        for tail in _product(rest):
            yield head + tail


class Zip(Sampling):
    """Samplings walked side by side; stops with the shortest."""

    def __init__(self, *parts: Sampling) -> None:
        self.parts = _samplings(parts, Zip)
        self.vals = tuple(v for p in self.parts for v in p.vals)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        _check_distinct(self.vals)
        chain = itertools.chain.from_iterable
        return (tuple(chain(point)) for point in zip(*self.parts))

    def size(self) -> int | None:
        sizes = [p.size() for p in self.parts]
        return None if None in sizes else min(sizes)  # type: ignore[type-var]
