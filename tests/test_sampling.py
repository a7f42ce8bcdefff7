"""Samplings: exact ranges, factors, cross products and zips, produced lazily and type-checked."""

from __future__ import annotations

import itertools
import random
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from jupyter_mole.engine.dsl import Cross, Factor, LogRange, Range, Sampling, Val, Zip
from jupyter_mole.engine.errors import WorkflowError

TENTHS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.fixture
def x() -> Val:
    return Val(float, name="x")


@pytest.fixture
def n() -> Val:
    return Val(int, name="n")


@pytest.fixture
def s() -> Val:
    return Val(str, name="s")


def error(f: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(WorkflowError) as info:
        f(*args, **kwargs)
    return str(info.value)


# -- Range -----------------------------------------------------------------------------------------


def test_range_by_a_tenth_is_the_eleven_values_as_written() -> None:
    r = Range(0.0, 1.0, by=0.1)
    assert len(r) == 11
    assert list(r) == TENTHS
    assert all(type(v) is float for v in r)


def test_range_values_do_not_drift() -> None:
    r = Range(0.0, 1.0, by=0.1)
    # Float arithmetic would give 0.30000000000000004 here; the range gives 0.3 as written.
    assert 3 * 0.1 != 0.3
    assert r[3] == 0.3
    assert r[7] == 0.7
    assert r[10] == 1.0


def test_range_keeps_a_stop_that_float_arithmetic_would_overshoot() -> None:
    # 0.1 + 3 * 0.2 == 0.7000000000000001 > 0.7 in floats: a naive range drops the stop.
    assert 0.1 + 3 * 0.2 > 0.7
    assert list(Range(0.1, 0.7, by=0.2)) == [0.1, 0.3, 0.5, 0.7]


def test_range_stops_before_a_stop_it_does_not_land_on() -> None:
    assert list(Range(0.0, 1.0, by=0.3)) == [0.0, 0.3, 0.6, 0.9]


def test_range_of_ints_gives_ints_and_includes_the_stop() -> None:
    r = Range(0, 10)
    assert list(r) == list(range(11))
    assert all(type(v) is int for v in r)
    assert list(Range(0, 10, by=3)) == [0, 3, 6, 9]


def test_range_of_ints_by_a_float_gives_floats() -> None:
    values = list(Range(0, 10, by=2.5))
    assert values == [0.0, 2.5, 5.0, 7.5, 10.0]
    assert all(type(v) is float for v in values)


def test_range_with_one_float_bound_gives_floats() -> None:
    values = list(Range(0, 2.0))
    assert values == [0.0, 1.0, 2.0]
    assert all(type(v) is float for v in values)


def test_range_size_gives_evenly_spaced_values_with_both_ends() -> None:
    assert list(Range(0.0, 1.0, size=5)) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert list(Range(0.0, 1.0, size=11)) == TENTHS


def test_range_size_of_ints_gives_ints_when_the_step_is_whole() -> None:
    values = list(Range(0, 10, size=6))
    assert values == [0, 2, 4, 6, 8, 10]
    assert all(type(v) is int for v in values)


def test_range_size_of_ints_gives_floats_when_the_step_is_not_whole() -> None:
    values = list(Range(0, 10, size=4))
    assert len(values) == 4
    assert all(type(v) is float for v in values)
    assert values[0] == 0.0
    assert values[-1] == 10.0
    assert values[1] == pytest.approx(10 / 3)


def test_range_size_one_is_the_start() -> None:
    assert list(Range(2.5, 7.0, size=1)) == [2.5]


def test_range_with_a_negative_step_counts_down() -> None:
    assert list(Range(1.0, 0.0, by=-0.25)) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert list(Range(10, 0, by=-5)) == [10, 5, 0]
    assert list(Range(1.0, 0.0, by=-0.1)) == TENTHS[::-1]


def test_range_indexing_and_reuse() -> None:
    r = Range(0.0, 1.0, by=0.5)
    assert r[0] == 0.0
    assert r[2] == 1.0
    with pytest.raises(IndexError):
        r[3]
    assert list(r) == list(r)  # a range can be walked any number of times


def test_a_huge_range_is_not_listed() -> None:
    r = Range(0.0, 1.0, by=1e-9)
    assert len(r) == 1_000_000_001
    assert next(iter(r)) == 0.0
    assert r[500_000_000] == 0.5


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("0", 1.0), {}, "Range start must be a number, got a `str`"),
        ((0.0, None), {}, "Range stop must be a number, got a `NoneType`"),
        ((True, 3), {}, "Range start must be a number, got a `bool`"),
        ((0.0, 1.0), {"by": 0}, "Range step (by=) must be a non-zero number, got 0"),
        ((0.0, 1.0), {"by": 0.0}, "Range step (by=) must be a non-zero number, got 0.0"),
        ((0.0, 1.0), {"by": "0.1"}, "Range step (by=) must be a non-zero number, got '0.1'"),
        ((0, 3), {"by": True}, "Range step (by=) must be a non-zero number, got True"),
        (
            (0.0, 1.0),
            {"by": 0.1, "size": 3},
            "give a Range either by= (a step) or size= (a number of values), not both",
        ),
        ((0.0, 1.0), {"size": 0}, "Range size must be a whole number of 1 or more, got 0"),
        ((0.0, 1.0), {"size": 2.5}, "Range size must be a whole number of 1 or more, got 2.5"),
    ],
)
def test_range_bad_arguments_are_explained(
    args: tuple, kwargs: dict[str, Any], message: str
) -> None:
    assert error(Range, *args, **kwargs) == message


def test_range_size_rejects_a_bool() -> None:
    assert "Range size must be a whole number" in error(Range, 0, 1, size=True)


def test_range_takes_numpy_float_bounds() -> None:
    assert list(Range(np.float64(0.0), np.float64(1.0), by=np.float64(0.5))) == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("stop", [float("inf"), float("nan")])
def test_range_rejects_a_non_finite_bound_clearly(stop: float) -> None:
    with pytest.raises(WorkflowError, match="Range"):
        Range(0.0, stop, by=0.1)


# -- LogRange --------------------------------------------------------------------------------------


def test_log_range_is_evenly_spaced_on_a_log_scale_with_exact_ends() -> None:
    r = LogRange(0.001, 1.0, 4)
    values = list(r)
    assert len(r) == 4
    assert values[0] == 0.001
    assert values[-1] == 1.0
    assert values == pytest.approx([0.001, 0.01, 0.1, 1.0])
    assert all(type(v) is float for v in values)


def test_log_range_of_ints_gives_floats() -> None:
    values = list(LogRange(1, 100, 3))
    assert values == pytest.approx([1.0, 10.0, 100.0])
    assert all(type(v) is float for v in values)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0, 3), "LogRange bounds must be positive, got 0 and 1.0"),
        ((1.0, -2.0, 3), "LogRange bounds must be positive, got 1.0 and -2.0"),
        ((0.1, 1.0, 1), "LogRange size must be a whole number of 2 or more, got 1"),
        ((0.1, 1.0, 2.5), "LogRange size must be a whole number of 2 or more, got 2.5"),
    ],
)
def test_log_range_bad_arguments_are_explained(args: tuple, message: str) -> None:
    assert error(LogRange, *args) == message


# -- factors ---------------------------------------------------------------------------------------


def test_a_factor_over_a_list(x: Val) -> None:
    f = x.in_([0.5, 1.5])
    assert isinstance(f, Factor)
    assert isinstance(f, Sampling)
    assert f.vals == (x,)
    assert f.size() == 2
    assert list(f) == [(0.5,), (1.5,)]


def test_a_factor_over_a_python_range(n: Val) -> None:
    f = n.in_(range(3))
    assert f.size() == 3
    assert list(f) == [(0,), (1,), (2,)]


def test_in_shorthand_is_the_range(x: Val) -> None:
    short = x.in_(0.0, 1.0, by=0.1)
    long = x.in_(Range(0.0, 1.0, by=0.1))
    assert list(short) == list(long) == [(v,) for v in TENTHS]
    assert list(short)[3] == (0.3,)
    assert short.size() == 11


def test_in_shorthand_with_size_and_without_a_step(x: Val) -> None:
    assert list(x.in_(0.0, 1.0, size=3)) == [(0.0,), (0.5,), (1.0,)]
    assert list(x.in_(0.0, 2.0)) == [(0.0,), (1.0,), (2.0,)]


def test_in_shorthand_without_an_end_says_so(x: Val) -> None:
    assert error(x.in_, 0.0, by=0.1) == (
        "x.in_(0.0, by=...) needs an end: x.in_(start, stop, by=step)"
    )


def test_a_factor_over_a_log_range(x: Val) -> None:
    f = x.in_(LogRange(1.0, 100.0, 3))
    assert f.size() == 3
    assert [p[0] for p in f] == pytest.approx([1.0, 10.0, 100.0])


def test_a_factor_over_a_generator_can_be_walked_twice(x: Val) -> None:
    f = x.in_(i / 2 for i in range(3))
    assert f.size() is None  # unknown until the generator has been walked to its end
    assert list(f) == [(0.0,), (0.5,), (1.0,)]
    assert list(f) == [(0.0,), (0.5,), (1.0,)]
    assert f.size() == 3


def test_a_factor_over_a_generator_draws_only_what_is_walked(n: Val) -> None:
    drawn = []

    def values() -> Iterator[int]:
        for i in range(1_000_000):
            drawn.append(i)
            yield i

    f = n.in_(values())
    assert drawn == []  # not listed when the factor is made
    assert list(itertools.islice(f, 3)) == [(0,), (1,), (2,)]
    assert drawn == [0, 1, 2]
    # A second walk replays what was drawn, then draws on.
    assert list(itertools.islice(f, 5)) == [(0,), (1,), (2,), (3,), (4,)]
    assert drawn == [0, 1, 2, 3, 4]


def test_a_generator_factor_inside_a_cross_product_is_replayed(n: Val, s: Val) -> None:
    c = n.in_([1, 2]) * s.in_(letter for letter in "ab")
    assert list(c) == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]


def test_a_factor_over_an_unsized_iterable_walks_it_afresh(n: Val) -> None:
    class Evens:
        walks = 0

        def __iter__(self) -> Iterator[int]:
            Evens.walks += 1
            return iter(range(0, 6, 2))

    f = n.in_(Evens())
    assert f.size() is None
    assert list(f) == list(f) == [(0,), (2,), (4,)]
    assert Evens.walks == 2


def test_factor_values_are_coerced_to_the_val_type(x: Val) -> None:
    points = list(x.in_([1, 2]))
    assert points == [(1.0,), (2.0,)]
    assert all(type(p[0]) is float for p in points)


def test_a_factor_value_of_the_wrong_type_is_a_clear_error(n: Val) -> None:
    it = iter(n.in_([1, 2.5]))
    assert next(it) == (1,)  # checked lazily, value by value
    with pytest.raises(WorkflowError) as info:
        next(it)
    assert str(info.value) == "the sampling of n: n should be int, got float 2.5"


def test_a_bool_is_not_a_number_in_a_sampling(x: Val) -> None:
    with pytest.raises(WorkflowError, match="the sampling of x: x should be float, got bool True"):
        list(x.in_([True]))


@pytest.mark.parametrize(
    ("domain", "kind"), [("abc", "str"), (b"abc", "bytes"), (5, "int"), (None, "NoneType")]
)
def test_a_factor_domain_must_be_values_to_explore(x: Val, domain: Any, kind: str) -> None:
    assert error(x.in_, domain) == (
        "x.in_() takes values to explore (a list, a range, Range(0.0, 1.0, by=0.1)...), "
        f"got a `{kind}`"
    )


# -- cross products --------------------------------------------------------------------------------


def test_cross_product_last_factor_varies_fastest(n: Val, s: Val) -> None:
    c = n.in_([1, 2]) * s.in_(["a", "b", "c"])
    assert isinstance(c, Cross)
    assert c.vals == (n, s)
    assert c.size() == 6
    assert list(c) == [(1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c")]


def test_x_is_the_cross_product(n: Val, s: Val) -> None:
    c = n.in_([1, 2]).x(s.in_(["a", "b"]))
    assert isinstance(c, Cross)
    assert list(c) == list(n.in_([1, 2]) * s.in_(["a", "b"]))


def test_nested_crosses_flatten(x: Val, n: Val, s: Val) -> None:
    a, b, c = x.in_([0.5]), n.in_([1, 2]), s.in_(["u", "v"])
    expected = [(0.5, 1, "u"), (0.5, 1, "v"), (0.5, 2, "u"), (0.5, 2, "v")]
    for crossed in ((a * b) * c, a * (b * c), a.x(b).x(c)):
        assert len(crossed.parts) == 3
        assert crossed.vals == (x, n, s)
        assert crossed.size() == 4
        assert list(crossed) == expected


def test_a_cross_product_can_be_walked_twice(n: Val, s: Val) -> None:
    c = n.in_(i for i in range(2)) * s.in_(["a"])
    assert list(c) == list(c) == [(0, "a"), (1, "a")]


def test_a_cross_product_checks_types(x: Val, n: Val) -> None:
    with pytest.raises(WorkflowError, match=r"the sampling of n: n should be int, got str 'z'"):
        list(x.in_([1.0]) * n.in_([1, "z"]))


def test_a_cross_product_of_a_non_sampling_is_explained(x: Val) -> None:
    assert error(lambda: x.in_([1.0]) * [1, 2]) == (
        "Cross combines samplings such as x.in_(...), got a `list`"
    )
    assert error(Cross, x.in_([1.0]), "y") == (
        "Cross combines samplings such as x.in_(...), got a `str`"
    )


def test_cross_product_size_is_unknown_when_a_part_is(x: Val) -> None:
    class Unsized(Sampling):
        vals = (Val(int, name="k"),)

        def __iter__(self) -> Iterator[tuple[Any, ...]]:
            return iter([(1,), (2,)])

    c = x.in_([0.5, 1.5]) * Unsized()
    assert c.size() is None
    assert list(c) == [(0.5, 1), (0.5, 2), (1.5, 1), (1.5, 2)]


# -- zips ------------------------------------------------------------------------------------------


def test_zip_pairs_points_and_stops_with_the_shortest(n: Val, s: Val) -> None:
    z = n.in_([1, 2, 3]).zip(s.in_(["a", "b"]))
    assert isinstance(z, Zip)
    assert z.vals == (n, s)
    assert z.size() == 2
    assert list(z) == [(1, "a"), (2, "b")]


def test_nested_zips_flatten(x: Val, n: Val, s: Val) -> None:
    z = x.in_([0.5, 1.5]).zip(n.in_([1, 2])).zip(s.in_(["a", "b", "c"]))
    assert len(z.parts) == 3
    assert z.size() == 2
    assert list(z) == [(0.5, 1, "a"), (1.5, 2, "b")]


def test_a_zip_crossed_with_a_factor(x: Val, n: Val, s: Val) -> None:
    c = x.in_([0.5, 1.5]).zip(n.in_([1, 2])) * s.in_(["a", "b"])
    assert c.vals == (x, n, s)
    assert c.size() == 4
    assert list(c) == [(0.5, 1, "a"), (0.5, 1, "b"), (1.5, 2, "a"), (1.5, 2, "b")]


def test_a_zip_of_a_non_sampling_is_explained(x: Val) -> None:
    assert error(x.in_([1.0]).zip, [1, 2]) == (
        "Zip combines samplings such as x.in_(...), got a `list`"
    )


# -- one value per Val -----------------------------------------------------------------------------


@pytest.mark.parametrize("combine", [Cross, Zip])
def test_sampling_a_val_twice_is_an_error(x: Val, combine: type) -> None:
    sampling = combine(x.in_([1.0, 2.0]), x.in_([3.0]))
    with pytest.raises(WorkflowError) as info:
        list(sampling)
    assert str(info.value) == "the sampling gives x a value twice; sample each Val once"


def test_two_vals_of_one_name_are_sampled_twice(x: Val) -> None:
    other = Val(float, name="x")
    with pytest.raises(WorkflowError, match="the sampling gives x a value twice"):
        list(x.in_([1.0]) * other.in_([2.0]))


# -- laziness --------------------------------------------------------------------------------------


def test_a_million_point_cross_product_is_not_listed(n: Val) -> None:
    m = Val(int, name="m")
    sampling = n.in_(range(1000)) * m.in_(range(1000))
    assert sampling.size() == 1_000_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        first = list(itertools.islice(sampling, 5))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]
    assert elapsed < 0.5
    # A million 2-tuples would take tens of megabytes.
    assert peak < 2_000_000


def test_the_size_of_a_huge_cross_product_is_known_without_producing_it(n: Val) -> None:
    m, k = Val(int, name="m"), Val(int, name="k")
    sampling = n.in_(range(10**4)) * m.in_(range(10**4)) * k.in_(Range(0, 10**4 - 1))
    started = time.perf_counter()
    assert sampling.size() == 10**12
    assert time.perf_counter() - started < 0.1


def test_the_first_point_of_a_cross_of_long_factors_costs_nothing(n: Val) -> None:
    m = Val(int, name="m")
    sampling = n.in_(range(300_000)) * m.in_(range(300_000))
    tracemalloc.start()
    try:
        first = next(iter(sampling))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == (0, 0)
    assert peak < 5_000_000


def test_a_replication_of_ten_million_does_not_list_its_seeds() -> None:
    from jupyter_mole.engine.dsl import EmptyTask, Replication

    seed = Val(int, name="seed")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        method = Replication(
            evaluation=EmptyTask(inputs=[seed]), seed=seed, sample=10**7, distribution_seed=42
        )
        first = list(itertools.islice(method.points(), 5))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Ten million seeds in a list would take seconds and hundreds of megabytes.
    assert elapsed < 0.5
    assert peak < 2_000_000
    assert method.size() == 10**7
    rng = random.Random(42)
    assert first == [(rng.randrange(2**31),) for _ in range(5)]
    assert list(itertools.islice(method.points(), 5)) == first  # every walk: the same seeds


def test_replication_seeds_with_an_index_walk_the_same_twice() -> None:
    from jupyter_mole.engine.dsl import EmptyTask, Replication

    seed, index = Val(int, name="seed"), Val(int, name="i")
    method = Replication(evaluation=EmptyTask(inputs=[seed]), seed=seed, sample=4, index=index)
    points = list(method.points())
    assert [i for _, i in points] == [0, 1, 2, 3]
    assert list(method.points()) == points
    assert method.size() == 4
