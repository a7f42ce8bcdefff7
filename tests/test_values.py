"""Typed values: ``Val``, its naming, ``check_value``'s checks and coercions, aggregations."""

from __future__ import annotations

import collections.abc
import pickle
import statistics
import typing
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupyter_mole.engine.dsl import Aggregation, File, Val
from jupyter_mole.engine.dsl.values import as_aggregation, check_value, type_label
from jupyter_mole.engine.errors import MoleError, WorkflowError


class Point:
    """A user's own class, to type a Val with."""

    def __init__(self, x: float) -> None:
        self.x = x


def check(tp: Any, value: Any, name: str = "x", where: str = "here") -> Any:
    return check_value(Val(tp, name=name), value, where)


def rejected(tp: Any, value: Any, name: str = "x", where: str = "here") -> str:
    with pytest.raises(WorkflowError) as info:
        check(tp, value, name, where)
    return str(info.value)


# -- Val and its name ------------------------------------------------------------------------------


def test_val_holds_its_type_and_name() -> None:
    v = Val(int, name="seed")
    assert v.type is int
    assert v.name == "seed"
    assert v.named
    assert repr(v) == "Val(int, name='seed')"


def test_val_type_defaults_to_float() -> None:
    assert Val(name="x").type is float


def test_unnamed_val_says_how_to_name_it() -> None:
    v = Val(int)
    assert not v.named
    assert repr(v) == "Val(int, name=None)"
    with pytest.raises(WorkflowError) as info:
        _ = v.name
    assert str(info.value) == (
        "a Val(int) has no name: assign it to a variable in the script, "
        "or give one with Val(int, name='x')"
    )


def test_unnamed_val_error_shows_a_generic_type_as_written() -> None:
    with pytest.raises(WorkflowError, match=r"a Val\(list\[float\]\) has no name"):
        _ = Val(list[float]).name


def test_assigned_name_is_only_given_once() -> None:
    v = Val(float)
    v._assign_name("first")
    v._assign_name("second")
    assert v.name == "first"
    explicit = Val(float, name="speed")
    explicit._assign_name("v")
    assert explicit.name == "speed"


def test_vals_are_identified_by_object_not_name() -> None:
    a, b = Val(float, name="x"), Val(float, name="x")
    assert a != b
    assert len({a, b}) == 2
    assert {a: 1}[a] == 1


def test_val_survives_pickle() -> None:
    v = Val(list[float], name="xs")
    clone = pickle.loads(pickle.dumps(v))
    assert clone.name == "xs"
    assert clone.type == list[float]


def test_errors_are_mole_errors() -> None:
    assert issubclass(WorkflowError, MoleError)
    with pytest.raises(MoleError):
        check(int, "a")


# -- type labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "label"),
    [
        (float, "float"),
        (int, "int"),
        (str, "str"),
        (bool, "bool"),
        (File, "File"),
        (Path, "File"),
        (list[int], "list[int]"),
        (list[list[float]], "list[list[float]]"),
        (dict[str, int], "dict[str, int]"),
        (int | None, "int | None"),
        (typing.Optional[int], "Optional[int]"),  # noqa: UP045 - the typing spelling on purpose
        (object, "object"),
        (Point, "Point"),
    ],
)
def test_type_label_writes_types_as_a_person_does(tp: Any, label: str) -> None:
    assert type_label(tp) == label


def test_type_label_spells_file_inside_generics() -> None:
    assert type_label(list[File]) == "list[File]"


# -- check_value: exact types and numbers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tp", "value"), [(float, 1.5), (int, 3), (str, "a"), (bool, True), (bool, False)]
)
def test_values_of_the_exact_type_pass_unchanged(tp: type, value: Any) -> None:
    result = check(tp, value)
    assert result == value
    assert type(result) is tp


def test_an_int_fits_a_float_and_becomes_a_float() -> None:
    result = check(float, 3)
    assert result == 3.0
    assert type(result) is float


def test_a_fraction_fits_a_float() -> None:
    result = check(float, Fraction(1, 4))
    assert result == 0.25
    assert type(result) is float


@pytest.mark.parametrize("tp", [int, float])
@pytest.mark.parametrize("value", [True, False])
def test_a_bool_is_not_a_number(tp: type, value: bool) -> None:
    message = rejected(tp, value)
    assert message == f"here: x should be {tp.__name__}, got bool {value!r}"


def test_a_float_does_not_fit_an_int() -> None:
    assert rejected(int, 2.5) == "here: x should be int, got float 2.5"


def test_a_whole_float_does_not_fit_an_int_either() -> None:
    assert rejected(int, 2.0) == "here: x should be int, got float 2.0"


def test_a_number_is_not_a_bool() -> None:
    assert rejected(bool, 1) == "here: x should be bool, got int 1"


def test_a_number_is_not_a_str() -> None:
    assert rejected(str, 3) == "here: x should be str, got int 3"


def test_a_str_is_not_a_number() -> None:
    assert rejected(float, "1.5") == "here: x should be float, got str '1.5'"


def test_the_error_names_where_the_value_and_both_types() -> None:
    message = rejected(float, "abc", name="speed", where="task model, input")
    assert message == "task model, input: speed should be float, got str 'abc'"


def test_a_long_value_is_shortened_in_the_error() -> None:
    message = rejected(int, "a" * 500)
    assert message.startswith("here: x should be int, got str 'aaa")
    assert message.endswith("...")
    assert len(message) < 150


# -- check_value: numpy scalars --------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.float64(1.5), np.float32(1.5), np.int64(3), np.int8(3)])
def test_numpy_numbers_fit_a_float_as_python_floats(value: Any) -> None:
    result = check(float, value)
    assert result == float(value)
    assert type(result) is float


@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), np.uint8(3)])
def test_numpy_integers_fit_an_int_as_python_ints(value: Any) -> None:
    result = check(int, value)
    assert result == 3
    assert type(result) is int


def test_a_numpy_float_does_not_fit_an_int() -> None:
    message = rejected(int, np.float64(2.0))
    assert message.startswith("here: x should be int, got float64 ")


@pytest.mark.parametrize("tp", [int, float])
def test_a_numpy_bool_is_not_a_number(tp: type) -> None:
    assert f"x should be {tp.__name__}, got bool" in rejected(tp, np.True_)


def test_a_numpy_bool_fits_a_bool() -> None:
    result = check(bool, np.True_)
    assert result is True


# -- check_value: files ----------------------------------------------------------------------------


def test_a_str_fits_a_file_and_becomes_a_path() -> None:
    result = check(File, "data/in.txt")
    assert result == Path("data/in.txt")
    assert isinstance(result, Path)


def test_a_path_fits_a_file(tmp_path: Path) -> None:
    assert check(File, tmp_path) == tmp_path


def test_a_number_is_not_a_file() -> None:
    assert rejected(File, 3) == "here: x should be File, got int 3"


# -- check_value: lists, dicts, unions, object, classes --------------------------------------------


def test_list_elements_are_coerced() -> None:
    result = check(list[float], [1, 2.5])
    assert result == [1.0, 2.5]
    assert [type(v) for v in result] == [float, float]


def test_a_tuple_fits_a_list_and_becomes_a_list() -> None:
    assert check(list[float], (1, 2)) == [1.0, 2.0]


def test_a_numpy_array_fits_a_list_of_floats() -> None:
    result = check(list[float], np.array([1, 2]))
    assert result == [1.0, 2.0]
    assert type(result) is list
    assert type(result[0]) is float


def test_a_list_with_a_bad_element_is_rejected_whole() -> None:
    assert rejected(list[float], [1.0, "a"]) == "here: x should be list[float], got list [1.0, 'a']"


def test_a_list_of_bools_is_not_a_list_of_numbers() -> None:
    assert "x should be list[int], got list [True]" in rejected(list[int], [True])


@pytest.mark.parametrize("value", ["12", b"12", 3, None])
def test_non_lists_are_not_lists(value: Any) -> None:
    assert "x should be list[float]" in rejected(list[float], value)


def test_nested_lists_are_checked_all_the_way_down() -> None:
    assert check(list[list[float]], [[1], [2, 3]]) == [[1.0], [2.0, 3.0]]
    assert "should be list[list[float]]" in rejected(list[list[float]], [[1], ["b"]])


def test_an_empty_list_fits() -> None:
    assert check(list[int], []) == []


def test_a_dict_fits_a_dict_and_nothing_else_does() -> None:
    assert check(dict[str, int], {"a": 1}) == {"a": 1}
    assert "should be dict[str, int], got list" in rejected(dict[str, int], [("a", 1)])


def test_a_union_takes_any_of_its_types() -> None:
    assert check(int | str, 3) == 3
    assert check(int | str, "a") == "a"
    assert rejected(int | str, 2.5) == "here: x should be int | str, got float 2.5"


def test_an_optional_float_takes_none_and_coerces_ints() -> None:
    assert check(float | None, None) is None
    result = check(float | None, 1)
    assert result == 1.0
    assert type(result) is float
    assert check(typing.Optional[int], None) is None  # noqa: UP045 - the typing spelling on purpose
    assert "should be Optional[int], got str" in rejected(typing.Optional[int], "a")  # noqa: UP045


@pytest.mark.parametrize("value", [None, "a", 3, [1], {"k": "v"}, Point(1.0)])
def test_object_accepts_anything_unchanged(value: Any) -> None:
    assert check(object, value) is value


def test_any_accepts_anything_unchanged() -> None:
    value = Point(2.0)
    assert check(Any, value) is value


def test_a_class_of_the_user_is_checked_by_isinstance() -> None:
    p = Point(1.0)
    assert check(Point, p) is p
    assert rejected(Point, 1.0) == "here: x should be Point, got float 1.0"


@pytest.mark.parametrize(
    ("tp", "value"),
    [
        (tuple[int, int], ("a", "b", "c")),
        (collections.abc.Sequence[float], 3),
        (typing.Sequence[float], ["a"]),
    ],
)
def test_generic_tuples_and_sequences_are_checked(tp: Any, value: Any) -> None:
    with pytest.raises(WorkflowError, match="x should be"):
        check(tp, value)


# -- aggregations ----------------------------------------------------------------------------------


def test_evaluate_builds_an_aggregation_without_a_target() -> None:
    pi = Val(float, name="pi")
    agg = pi.evaluate(statistics.mean)
    assert isinstance(agg, Aggregation)
    assert agg.source is pi
    assert agg.function is statistics.mean
    assert agg.target is None
    assert repr(agg) == "pi.evaluate(mean)"


def test_as_gives_a_new_aggregation_with_a_target() -> None:
    pi, pi_avg = Val(float, name="pi"), Val(float, name="pi_avg")
    agg = pi.evaluate(statistics.mean)
    targeted = agg.as_(pi_avg)
    assert targeted is not agg
    assert agg.target is None
    assert targeted.target is pi_avg
    assert targeted.source is pi
    assert targeted.output is pi_avg
    assert repr(targeted) == "pi.evaluate(mean).as_(pi_avg)"


def test_an_aggregation_applies_its_function_to_the_values_in_order() -> None:
    pi = Val(float, name="pi")
    assert pi.evaluate(statistics.mean).apply([1.0, 2.0, 6.0]) == 3.0
    assert pi.evaluate(lambda vs: vs[0]).apply([5.0, 1.0]) == 5.0


def test_without_a_target_the_output_keeps_the_source_name_untyped() -> None:
    pi = Val(float, name="pi")
    out = pi.evaluate(statistics.median).output
    assert out.name == "pi"
    assert out.type is object


def test_a_plain_val_collects_its_values_into_a_list() -> None:
    pi = Val(float, name="pi")
    agg = as_aggregation(pi)
    assert agg.source is pi
    assert agg.function is None
    values = [3.1, 3.2]
    collected = agg.apply(values)
    assert collected == [3.1, 3.2]
    assert collected is not values
    out = agg.output
    assert out.name == "pi"
    assert out.type == list[float]
    assert check_value(out, [1, 2], "here") == [1.0, 2.0]


def test_as_aggregation_keeps_an_aggregation() -> None:
    agg = Val(float, name="pi").evaluate(max)
    assert as_aggregation(agg) is agg


def test_as_aggregation_rejects_other_things() -> None:
    with pytest.raises(WorkflowError) as info:
        as_aggregation("pi")  # type: ignore[arg-type]
    assert str(info.value) == "an aggregation must be a Val or v.evaluate(f).as_(w), got str"
