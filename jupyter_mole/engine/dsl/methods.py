"""Methods: explorations of an evaluation (OpenMOLE's ``DirectSampling``, ``Replication``).

A method runs its evaluation once per point of a sampling. Each result *row*
holds the values of the enclosing context, the point, and the evaluation's
outputs; hooks on the method see those rows (filtered by ``condition``). With an
``aggregation``, the method also produces, once per enclosing context, the
aggregated values: ``pi.evaluate(mean).as_(pi_avg)`` applies ``mean`` to the
list of ``pi`` values in sample order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..errors import WorkflowError
from .hooks import Hook
from .puzzle import Capsule, Puzzle, as_hook, as_puzzle, describe
from .sampling import Factor, Sampling, Zip
from .values import Aggregation, Val, as_aggregation, type_label

__all__ = ["DirectSampling", "Method", "Replication"]


class Method(Puzzle):
    """Base of methods: an evaluation explored over ``sampling``."""

    def __init__(
        self,
        evaluation: Any,
        sampling: Sampling,
        aggregation: Iterable[Val | Aggregation] | Val | Aggregation | None = None,
        condition: Callable[[Mapping[str, Any]], bool] | str | None = None,
        hooks: tuple = (),
    ) -> None:
        self.evaluation = as_puzzle(evaluation)
        if not isinstance(sampling, Sampling):
            raise WorkflowError(
                f"{type(self).__name__} needs a sampling such as x.in_(...) or "
                f"x.in_(...) * y.in_(...), got {describe(sampling)}"
            )
        self.sampling = sampling
        if aggregation is None:
            aggregation = ()
        elif isinstance(aggregation, (Val, Aggregation)):
            aggregation = (aggregation,)
        self.aggregation = tuple(as_aggregation(a) for a in aggregation)
        if condition is not None and not (callable(condition) or isinstance(condition, str)):
            raise WorkflowError(
                f"condition takes a function of the results or an expression such as "
                f"'pi > 3', got {describe(condition)}"
            )
        self.condition = condition
        self._condition_code: Any = None
        self.hooks = tuple(hooks)

    def _copy(self, **changes: Any) -> Method:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__.update(changes)
        return clone

    def hook(self, *hooks: Any) -> Method:
        return self._copy(hooks=self.hooks + tuple(as_hook(h) for h in hooks))

    def capsules(self) -> Iterator[Capsule]:
        yield from self.evaluation.capsules()

    def all_hooks(self) -> Iterator[Hook]:
        yield from self.hooks
        yield from self.evaluation.all_hooks()

    def _map_capsules(self, f: Callable[[Capsule], Capsule]) -> Method:
        return self._copy(evaluation=self.evaluation._map_capsules(f))

    # -- what a method produces ---------------------------------------------------
    def row_columns(self, available: dict[str, Val]) -> dict[str, Val]:
        """The values in each result row: context, then the point, then the evaluation's outputs."""
        inner = dict(available)
        inner.update((v.name, v) for v in self.sampling.vals)
        row = dict(inner)
        row.update(self.evaluation.provides(inner))
        return row

    def provides(self, available: dict[str, Val]) -> dict[str, Val]:
        row = self.row_columns(available)
        for agg in self.aggregation:
            if agg.source.name not in row:
                names = ", ".join(row)
                raise WorkflowError(
                    f"{type(self).__name__} aggregates {agg.source.name}, which the evaluation "
                    f"does not produce (produced: {names}); add it to the task's outputs"
                )
        for hook in self.hooks:
            hook.check(row, where=f"the hook of {type(self).__name__}")
        out = dict(available)
        out.update((a.output.name, a.output) for a in self.aggregation)
        return out

    def keeps(self, row: Mapping[str, Any]) -> bool:
        """Whether a result row passes the ``condition`` (all do without one)."""
        if self.condition is None:
            return True
        if callable(self.condition):
            return bool(self.condition(row))
        if self._condition_code is None:
            self._condition_code = compile(self.condition, "<condition>", "eval")
        try:
            return bool(eval(self._condition_code, {"__builtins__": __builtins__}, dict(row)))
        except NameError as e:
            raise WorkflowError(f"condition {self.condition!r}: {e}") from None

    def points(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.sampling)

    def size(self) -> int | None:
        return self.sampling.size()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.evaluation!r})"


class DirectSampling(Method):
    """Run ``evaluation`` on every point of ``sampling``.

    ``DirectSampling(evaluation=model, sampling=x.in_(0.0, 1.0, by=0.1) * y.in_([1, 2]),
    aggregation=[z.evaluate(mean).as_(z_mean)], condition="z > 0")``
    """

    def __init__(
        self,
        evaluation: Any,
        sampling: Sampling,
        aggregation: Iterable[Val | Aggregation] | Val | Aggregation | None = None,
        condition: Callable[[Mapping[str, Any]], bool] | str | None = None,
    ) -> None:
        super().__init__(evaluation, sampling, aggregation, condition)


class _Seeds:
    """``size`` random seeds drawn from ``distribution_seed``, drawn anew at each walk.

    A million replications are a million seeds: listing them would hold them
    all from the start. Each walk re-seeds its own generator instead, so every
    walk gives the same seeds in the same order (the sampling may be walked
    once per enclosing point) and the length is known without drawing them.
    """

    def __init__(self, distribution_seed: int, size: int) -> None:
        self.distribution_seed = distribution_seed
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        draw = random.Random(self.distribution_seed).randrange
        return (draw(2**31) for _ in range(self.size))

    def __repr__(self) -> str:
        return f"_Seeds({self.distribution_seed}, {self.size})"


class Replication(Method):
    """Run ``evaluation`` ``sample`` times, each with a different random ``seed``.

    Seeds are drawn from ``distribution_seed`` (random when not given), so a
    replication is reproducible when it is set. ``index`` (an ``int`` Val), if
    given, numbers the replications from 0.
    """

    def __init__(
        self,
        evaluation: Any,
        seed: Val,
        sample: int,
        aggregation: Iterable[Val | Aggregation] | Val | Aggregation | None = None,
        distribution_seed: int | None = None,
        index: Val | None = None,
        condition: Callable[[Mapping[str, Any]], bool] | str | None = None,
    ) -> None:
        if not isinstance(seed, Val):
            raise WorkflowError(
                f"Replication's seed must be a Val (Val(int)), got {describe(seed)}"
            )
        if seed.type not in (int, object):
            raise WorkflowError(
                f"Replication's seed {seed.name} must be Val(int), not Val({type_label(seed.type)})"
            )
        if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
            raise WorkflowError(
                f"Replication's sample must be a whole number of 1 or more, got {sample!r}"
            )
        if distribution_seed is None:
            distribution_seed = random.SystemRandom().randrange(2**31)
        sampling: Sampling = Factor(seed, _Seeds(distribution_seed, sample))
        if index is not None:
            sampling = Zip(sampling, Factor(index, range(sample)))
        super().__init__(evaluation, sampling, aggregation, condition)
        self.seed = seed
        self.sample = sample
        self.distribution_seed = distribution_seed
