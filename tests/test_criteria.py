"""Forget criteria: parsing, round trips, exact masks, fraction sampling, errors, splitting.

Masks are checked against a plain-Python oracle over the fixture rows (and, for the README
examples, against hand-written index lists), so a vectorization mistake cannot hide.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unlearn_core.data.criteria as criteria_module
from unlearn_core.data.criteria import (
    SPLIT_KEYS,
    Comparison,
    ForgetCriteria,
    ForgetSplit,
    Fraction,
    RangeClause,
    ValueSet,
    parse_criteria,
    split_sets,
)
from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError

CLASSES = ["healthy", "ptosis", "thyroid eye disease"]
DEVICES = ["Spectralis", "Cirrus 800 FA", "Topcon", "Cirrus 800 FA"]
N = 40
NAN_ROW = 6  # vpf_mm would be 14.0 here; it is NaN so it must never match


def make_imageset() -> ImageSet:
    """40 zero images: rows 0-19 train, 20-39 test; label i % 3; vpf_mm 8 + i % 10 (row 6 NaN)."""
    metadata = pd.DataFrame({
        "sample_id": [f"s{i}" for i in range(N)],
        "label": [i % 3 for i in range(N)],
        "split": ["train" if i < 20 else "test" for i in range(N)],
        "vpf_mm": [math.nan if i == NAN_ROW else 8.0 + i % 10 for i in range(N)],
        "device": [DEVICES[i % 4] for i in range(N)],
        "age": [20 + i for i in range(N)],
        "lid height": [i % 5 for i in range(N)],
    })
    images = torch.zeros(N, 3, 4, 4, dtype=torch.uint8)
    return ImageSet("tiny", images, metadata, list(CLASSES), units={"vpf_mm": "mm"})


IMAGESET = make_imageset()
ROWS = IMAGESET.metadata.to_dict("records")


@pytest.fixture
def imageset() -> ImageSet:
    return make_imageset()


def oracle(predicate) -> np.ndarray:
    """Row-by-row reference mask in plain Python."""
    return np.array([bool(predicate(row)) for row in ROWS])


def rows_of(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask).tolist()


# --- parse / to_text round trips ------------------------------------------------------------
ROUND_TRIPS = {
    'vpf_mm >= 12 and label == "healthy"': 'vpf_mm >= 12 and label == "healthy"',
    'device == "Cirrus 800 FA"': 'device == "Cirrus 800 FA"',
    "age < 40": "age < 40",
    "vpf_mm > 11.5": "vpf_mm > 11.5",
    "age = 30": "age == 30",
    "age != 30": "age != 30",
    "vpf_mm <= -0.5": "vpf_mm <= -0.5",
    "vpf_mm >= 1e-3": "vpf_mm >= 0.001",
    "vpf_mm >= .5": "vpf_mm >= 0.5",
    "12 <= vpf_mm <= 14": "12 <= vpf_mm <= 14",
    "12 < vpf_mm < 14": "12 < vpf_mm < 14",
    "12 <= vpf_mm < 14.5": "12 <= vpf_mm < 14.5",
    "14 >= vpf_mm > 12": "12 < vpf_mm <= 14",
    "12 <= vpf_mm": "vpf_mm >= 12",
    '"Topcon" == device': 'device == "Topcon"',
    "device != 'Topcon'": 'device != "Topcon"',
    'device in ("Spectralis", "Topcon")': 'device in ("Spectralis", "Topcon")',
    "device NOT IN ('Spectralis',)": 'device not in ("Spectralis")',
    "label == 2": "label == 2",
    'label in ("healthy", "ptosis")': 'label in ("healthy", "ptosis")',
    "label in (0, 'ptosis')": 'label in (0, "ptosis")',
    "`lid height` >= 3": "`lid height` >= 3",
    "`odd``name` == 1": "`odd``name` == 1",
    "`and` == 1": "`and` == 1",
    "fraction(0.1, seed=3)": "fraction(0.1, seed=3)",
    "fraction(0.1)": "fraction(0.1, seed=0)",
    "FRACTION(1, 7)": "fraction(1.0, seed=7)",
    "`fraction` == 1": "fraction == 1",
    r'device == "say \"hi\"\\ \n\t"': r'device == "say \"hi\"\\ \n\t"',
    "device == 'it\\'s'": 'device == "it\'s"',
    'vpf_mm>=12 AND device=="Topcon"AND fraction(0.5,seed=2)':
        'vpf_mm >= 12 and device == "Topcon" and fraction(0.5, seed=2)',
}


@pytest.mark.parametrize("text, canonical", ROUND_TRIPS.items())
def test_parse_gives_canonical_text_that_parses_back_equal(text: str, canonical: str) -> None:
    parsed = parse_criteria(text)
    assert parsed.to_text() == canonical
    assert parse_criteria(canonical) == parsed
    assert ForgetCriteria.parse(parsed.to_text()).to_text() == canonical
    assert str(parsed) == canonical


def test_parse_builds_the_expected_objects() -> None:
    assert parse_criteria('12 <= vpf_mm < 14 and device not in ("A", "B")') == ForgetCriteria((
        RangeClause("vpf_mm", 12, 14, low_inclusive=True, high_inclusive=False),
        ValueSet("device", ("A", "B"), negate=True),
    ))
    assert parse_criteria("14 > vpf_mm >= 12").clauses == (
        RangeClause("vpf_mm", 12, 14, True, False),)
    assert parse_criteria("label == 2").clauses == (Comparison("label", "==", 2),)
    assert parse_criteria('label == "healthy"').clauses == (Comparison("label", "==", "healthy"),)
    assert parse_criteria("fraction(0.25, seed=9)").clauses == (Fraction(0.25, 9),)
    assert isinstance(parse_criteria("age == 3").clauses[0].value, int)
    assert isinstance(parse_criteria("age == 3.0").clauses[0].value, float)


def test_numpy_values_are_normalized_so_text_stays_readable() -> None:
    clause = Comparison("vpf_mm", ">=", np.float64(12.5))
    assert clause.to_text() == "vpf_mm >= 12.5"
    assert type(Comparison("age", "==", np.int64(3)).value) is int


# generated criteria ------------------------------------------------------------------------
names = st.text(min_size=1, max_size=12)
numbers = st.one_of(st.integers(min_value=-10**20, max_value=10**20),
                    st.floats(allow_nan=False, allow_infinity=False))
values = st.one_of(numbers, st.text(max_size=10))


@st.composite
def comparisons(draw) -> Comparison:
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    value = draw(values if op in ("==", "!=") else numbers)
    return Comparison(draw(names), op, value)


@st.composite
def ranges(draw) -> RangeClause:
    low, high = sorted([draw(numbers), draw(numbers)])
    if low == high:
        return RangeClause(draw(names), low, high, True, True)
    return RangeClause(draw(names), low, high, draw(st.booleans()), draw(st.booleans()))


value_sets = st.builds(ValueSet, names, st.lists(values, min_size=1, max_size=4).map(tuple),
                       st.booleans())
fractions = st.builds(Fraction, st.floats(min_value=0, max_value=1, exclude_min=True),
                      st.integers(min_value=0, max_value=2**40))


@st.composite
def criteria_objects(draw) -> ForgetCriteria:
    clauses = draw(st.lists(st.one_of(comparisons(), ranges(), value_sets), max_size=4))
    share = draw(st.none() | fractions)
    if share is not None or not clauses:
        clauses.insert(draw(st.integers(0, len(clauses))), share or draw(fractions))
    return ForgetCriteria(tuple(clauses))


@settings(max_examples=300, deadline=None)
@given(criteria_objects())
def test_generated_criteria_round_trip_through_text_and_json(criteria: ForgetCriteria) -> None:
    text = criteria.to_text()
    assert parse_criteria(text) == criteria
    assert parse_criteria(text).to_text() == text
    stored = json.loads(json.dumps(criteria.to_dict()))
    assert ForgetCriteria.from_dict(stored) == criteria
    assert stored["text"] == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab_ `'\"\\0123456789.-e<>=!(),&|@ ")
                               + [" and ", " in ", " not ", " or ", "fraction", "seed"]),
                max_size=30).map("".join))
def test_parser_fails_only_with_user_error(text: str) -> None:
    try:
        parsed = parse_criteria(text)
    except UserError as error:
        assert str(error)
    else:
        assert parse_criteria(parsed.to_text()) == parsed


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(
    st.sampled_from(["vpf_mm", "device", "age", "label", "lid height", "sample_id", "nope",
                     "split"]),
    st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]),
    st.lists(st.sampled_from([12, 3.5, -1, 0, 2, "Topcon", "healthy", "x", "12", "s3"]),
             min_size=1, max_size=3),
), min_size=1, max_size=3))
def test_mask_on_generated_criteria_returns_bool_mask_or_user_error(parts) -> None:
    clauses = []
    for column, op, vals in parts:
        try:
            if op in ("in", "not in"):
                clauses.append(ValueSet(column, tuple(vals), op == "not in"))
            else:
                clauses.append(Comparison(column, op, vals[0]))
        except UserError:
            return
    try:
        mask = ForgetCriteria(tuple(clauses)).mask(IMAGESET.metadata, CLASSES)
    except UserError:
        return
    assert mask.dtype == bool and mask.shape == (N,)
    assert not mask[NAN_ROW] or all(c.column != "vpf_mm" for c in clauses)


# --- exact masks ----------------------------------------------------------------------------
def test_readme_example_vpf_and_class(imageset: ImageSet) -> None:
    mask = parse_criteria('vpf_mm >= 12 and label == "healthy"').mask(imageset.metadata, CLASSES)
    # label 0 rows: multiples of 3; vpf_mm >= 12 needs i % 10 >= 4; row 6 is NaN.
    assert rows_of(mask) == [9, 15, 18, 24, 27, 36, 39]


def test_readme_example_device(imageset: ImageSet) -> None:
    mask = parse_criteria('device == "Cirrus 800 FA"').mask(imageset.metadata, CLASSES)
    assert rows_of(mask) == list(range(1, N, 2))


MASK_CASES = {
    "vpf_mm >= 12": lambda r: r["vpf_mm"] >= 12,
    "vpf_mm > 11.5": lambda r: r["vpf_mm"] > 11.5,
    "age < 40": lambda r: r["age"] < 40,
    "age == 30": lambda r: r["age"] == 30,
    "vpf_mm != 9": lambda r: not math.isnan(r["vpf_mm"]) and r["vpf_mm"] != 9,
    "12 <= vpf_mm <= 14": lambda r: 12 <= r["vpf_mm"] <= 14,
    "12 < vpf_mm < 14": lambda r: 12 < r["vpf_mm"] < 14,
    "12 <= vpf_mm < 14": lambda r: 12 <= r["vpf_mm"] < 14,
    "14 >= vpf_mm > 12": lambda r: 12 < r["vpf_mm"] <= 14,
    "vpf_mm in (8, 17)": lambda r: r["vpf_mm"] in (8, 17),
    "vpf_mm not in (8, 17)": lambda r: not math.isnan(r["vpf_mm"]) and r["vpf_mm"] not in (8, 17),
    'device != "Topcon"': lambda r: r["device"] != "Topcon",
    'device in ("Spectralis", "Topcon")': lambda r: r["device"] in ("Spectralis", "Topcon"),
    'device not in ("Spectralis", "Topcon")': lambda r: r["device"] == "Cirrus 800 FA",
    'label == "ptosis"': lambda r: r["label"] == 1,
    "label == 2": lambda r: r["label"] == 2,
    'label != "healthy"': lambda r: r["label"] != 0,
    'label in ("healthy", 2)': lambda r: r["label"] in (0, 2),
    'label not in ("healthy")': lambda r: r["label"] != 0,
    "`lid height` >= 3": lambda r: r["lid height"] >= 3,
    'sample_id in ("s1", "s22")': lambda r: r["sample_id"] in ("s1", "s22"),
    'age >= 25 and age < 35 and device == "Topcon" and label != 0':
        lambda r: 25 <= r["age"] < 35 and r["device"] == "Topcon" and r["label"] != 0,
}


@pytest.mark.parametrize("text", MASK_CASES)
def test_mask_matches_plain_python_oracle(text: str, imageset: ImageSet) -> None:
    mask = parse_criteria(text).mask(imageset.metadata, CLASSES)
    assert mask.dtype == bool
    assert rows_of(mask) == rows_of(oracle(MASK_CASES[text]))
    assert mask.any(), "each case should select something, or it proves little"


@pytest.mark.parametrize("text", ["vpf_mm >= 0", "vpf_mm < 100", "vpf_mm != 9",
                                  "vpf_mm not in (9)", "0 <= vpf_mm <= 100"])
def test_nan_never_matches(text: str, imageset: ImageSet) -> None:
    mask = parse_criteria(text).mask(imageset.metadata, CLASSES)
    assert not mask[NAN_ROW]
    assert mask.sum() >= N - 5


def test_missing_text_value_never_matches_even_with_not_equal(imageset: ImageSet) -> None:
    metadata = imageset.metadata.copy()
    metadata["device"] = metadata["device"].astype(object)
    metadata.loc[3, "device"] = None
    mask = parse_criteria('device != "Topcon"').mask(metadata, CLASSES)
    assert not mask[3] and mask[0]


# --- fraction -------------------------------------------------------------------------------
def _pool(text: str) -> np.ndarray:
    return parse_criteria(text).mask(IMAGESET.metadata, CLASSES)


def test_fraction_draws_round_p_n_within_other_clauses_in_both_splits() -> None:
    pool = _pool('device == "Cirrus 800 FA"')  # 10 train + 10 test candidates
    mask = _pool('device == "Cirrus 800 FA" and fraction(0.3, seed=3)')
    assert not (mask & ~pool).any()
    split = IMAGESET.metadata["split"].to_numpy()
    assert (mask & (split == "train")).sum() == 3
    assert (mask & (split == "test")).sum() == 3


def test_fraction_is_seeded_and_random_not_the_first_rows() -> None:
    first = _pool("fraction(0.25, seed=3)")
    assert rows_of(first) == rows_of(_pool("fraction(0.25, seed=3)"))
    draws = {tuple(rows_of(_pool(f"fraction(0.25, seed={seed})"))) for seed in range(8)}
    assert len(draws) > 4
    head = tuple(list(range(5)) + list(range(20, 25)))  # the reference's "first p·N" per split
    assert sum(draw == head for draw in draws) == 0


def test_fraction_position_in_text_does_not_matter_for_the_mask() -> None:
    a = _pool('fraction(0.5, seed=1) and label == "ptosis"')
    b = _pool('label == "ptosis" and fraction(0.5, seed=1)')
    assert rows_of(a) == rows_of(b)


def test_fraction_keeps_at_least_one_and_one_means_all() -> None:
    tiny = _pool("age == 21 and fraction(0.01, seed=0)")
    assert rows_of(tiny) == [1]
    assert rows_of(_pool("label == 2 and fraction(1.0)")) == rows_of(_pool("label == 2"))


def test_fraction_rounds_to_nearest() -> None:
    # 7 training rows of label 0 (0,3,...,18) -> round(0.5 * 7) = 4 (half up), 7 test rows too.
    mask = _pool("label == 0 and fraction(0.5, seed=5)")
    assert mask[:20].sum() == 4 and mask[20:].sum() == 4


# --- errors ---------------------------------------------------------------------------------
VALIDATION_ERRORS = {
    "foo == 1": ["'foo'", "vpf_mm", "device", "lid height"],
    "vpf == 1": ["'vpf'", "Did you mean 'vpf_mm'"],
    'vpf_mm >= 12 and vpf_mm == "abc"': ["'vpf_mm'", "float64", '"abc"'],
    'vpf_mm == "12"': ["'vpf_mm'", "without quotes", "vpf_mm == 12"],
    'age in (30, "x")': ["'age'", "int64", '"x"'],
    "device >= 3": ["'device'", "text", "3"],
    "10 <= device <= 14": ["'device'", "text", "10"],
    "device == 3": ["'device'", '"3"'],
    'device == "Cirus 800 FA"': ["'Cirus 800 FA'", "Did you mean 'Cirrus 800 FA'", "'Topcon'"],
    'device not in ("Topcon", "nikon")': ["'nikon'", "Spectralis"],
    'label == "helthy"': ["'helthy'", "Did you mean 'healthy'", "thyroid eye disease"],
    "label == 3": ["3", "0 to 2", "'ptosis'"],
    "label == -1": ["-1", "'healthy'"],
    "label == 1.0": ["1.0", "whole number"],
    'label in ("healthy", "flu")': ["'flu'", "ptosis"],
    "label >= 1": ["label >= 1", "no order"],
    'split == "train"': ["split"],
}


@pytest.mark.parametrize("text", VALIDATION_ERRORS)
def test_validation_errors_name_the_bad_column_or_value(text: str, imageset: ImageSet) -> None:
    criteria = parse_criteria(text)
    with pytest.raises(UserError) as caught:
        criteria.validate(imageset)
    for fragment in VALIDATION_ERRORS[text]:
        assert fragment in str(caught.value)
    with pytest.raises(UserError):
        split_sets(imageset, criteria)


SYNTAX_ERRORS = {
    "vpf_mm >=": "Expected a value after '>=' at the end of: vpf_mm >=",
    "vpf_mm >= and age < 3": "Expected a value after '>=', found 'and' at position 11",
    "vpf_mm 12": "Expected an operator",
    "device == Topcon": 'put text in quotes, e.g. "Topcon"',
    'device == "Topcon': "never closed",
    "`lid height >= 3": "never closed",
    'device == "a\\qb"': "Unknown escape",
    "a == 1 or b == 2": "'or' is not supported",
    "a == 1 && b == 2": "write 'and'",
    "a == 1 b == 2": "Expected 'and' or the end",
    "a == 1 and": "Expected a condition",
    "a in ()": "Expected a value after 'in ('",
    "a in (1, 2": "Expected ',' or ')'",
    "a not (1)": "Expected 'in' after 'not'",
    "not a == 1": "'not' is only allowed",
    "vpf_mm >= 12mm": "without units",
    '"x" <= a <= 3': "A range needs numbers",
    "12 <= a >= 3": "A range needs",
    "a >= 'x'": "compares numbers",
    "14 <= a <= 12": "contains no value",
    "fraction(2)": "at most 1",
    "fraction(0)": "above 0",
    "fraction(0.1, seed=-1)": "whole number seed",
    "fraction(0.1, seed=1.5)": "whole number seed",
    "fraction(x)": "Expected a number",
    "fraction(0.1) and fraction(0.2)": "at most once",
    "a @ 3": "Unexpected character '@'",
    "`` == 1": "Empty column name",
    "": "empty",
    "   ": "empty",
}


@pytest.mark.parametrize("text", SYNTAX_ERRORS)
def test_syntax_errors_say_where_and_what_was_expected(text: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_criteria(text)
    assert SYNTAX_ERRORS[text] in str(caught.value)


def test_syntax_error_position_is_one_based_character() -> None:
    with pytest.raises(UserError, match=r"at position 8 in: age >= \$"):
        parse_criteria("age >= $")


@pytest.mark.parametrize("text", [
    '__import__("os").system("x")',
    "__import__('os').system('touch /tmp/pwned')",
    "age > 1; import os",
    "@pd.eval('1')",
    "(lambda: 1)()",
    "age.__class__ == 1",
    "age == 1 if True else 2",
])
def test_code_is_never_executed(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("criteria must never evaluate code")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(pd.DataFrame, "query", forbidden)
    monkeypatch.setattr(pd.DataFrame, "eval", forbidden)
    monkeypatch.setattr(pd, "eval", forbidden)
    with pytest.raises(UserError):
        parse_criteria(text).validate(IMAGESET)
    # legitimate criteria evaluate fine under the same ban
    parse_criteria('vpf_mm >= 12 and label == "healthy" and fraction(0.5)').mask(
        IMAGESET.metadata, CLASSES)


def test_module_calls_no_eval_exec_or_query() -> None:
    tree = ast.parse(Path(criteria_module.__file__).read_text())
    names, methods = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            names.add(node.func.id)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            methods.add(node.func.attr)
    assert "Comparison" in names and "flatnonzero" in methods  # the walk does see calls
    assert not names & {"eval", "exec", "compile", "__import__"}
    assert not methods & {"eval", "query", "exec"}


@pytest.mark.parametrize("build, fragment", [
    (lambda: ForgetCriteria(()), "empty"),
    (lambda: ForgetCriteria((Fraction(0.1), Fraction(0.2))), "at most once"),
    (lambda: RangeClause("age", 5, 3), "no value"),
    (lambda: RangeClause("age", 3, 3, True, False), "no value"),
    (lambda: Comparison("device", ">=", "a"), "compares numbers"),
    (lambda: Comparison("age", "~", 1), "Unknown comparison"),
    (lambda: Comparison("age", "==", True), "yes/no"),
    (lambda: Comparison("age", "==", float("nan")), "finite"),
    (lambda: Comparison("", "==", 1), "column name"),
    (lambda: ValueSet("device", ()), "at least one value"),
    (lambda: Fraction(1.5), "at most 1"),
    (lambda: Fraction(0.5, seed=-2), "seed"),
])
def test_constructors_reject_bad_parts(build, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        build()


# --- split_sets -----------------------------------------------------------------------------
def test_split_sets_indices_sizes_and_per_class(imageset: ImageSet) -> None:
    split = split_sets(imageset, parse_criteria('vpf_mm >= 12 and label == "healthy"'))
    assert list(split.sizes()) == list(SPLIT_KEYS) == [
        "forget_train", "remain_train", "forget_test", "remain_test"]
    assert split.sizes() == {"forget_train": 3, "remain_train": 17,
                             "forget_test": 4, "remain_test": 16}
    assert split.forget_train.tolist() == [9, 15, 18]
    assert split.forget_test.tolist() == [24, 27, 36, 39]
    everything = np.concatenate([getattr(split, key) for key in SPLIT_KEYS])
    assert sorted(everything.tolist()) == list(range(N))
    for key in SPLIT_KEYS:
        indices = getattr(split, key)
        assert indices.dtype == np.int64 and (np.diff(indices) > 0).all()
    table = split.per_class(imageset)
    assert list(table.index) == CLASSES and list(table.columns) == list(SPLIT_KEYS)
    assert table.loc["healthy", "forget_train"] == 3
    assert table.loc["ptosis", "forget_train"] == 0
    assert table.to_numpy().sum() == N
    assert table["remain_train"].sum() == 17


def test_selects_nothing_says_widen_and_counts_each_condition(imageset: ImageSet) -> None:
    with pytest.raises(UserError, match="selects? nothing") as caught:
        split_sets(imageset, parse_criteria('vpf_mm >= 17 and label == "thyroid eye disease"'))
    message = str(caught.value)
    assert "widen" in message
    assert "vpf_mm >= 17: 2" in message and 'label == "thyroid eye disease": 6' in message


def test_selects_only_test_images_is_still_nothing_to_forget(imageset: ImageSet) -> None:
    with pytest.raises(UserError, match="nothing"):
        split_sets(imageset, parse_criteria("age >= 40"))


def test_selects_everything_says_nothing_would_remain(imageset: ImageSet) -> None:
    with pytest.raises(UserError, match="nothing would remain to learn from"):
        split_sets(imageset, parse_criteria("age >= 0"))


def test_empty_test_forget_set_is_allowed_but_visible(imageset: ImageSet) -> None:
    criteria = parse_criteria("age < 25")
    split = split_sets(imageset, criteria)
    assert split.sizes()["forget_test"] == 0 and split.sizes()["forget_train"] == 5
    with pytest.raises(UserError, match="no test image"):
        split_sets(imageset, criteria, allow_empty_test=False)


def test_fraction_split_samples_both_splits(imageset: ImageSet) -> None:
    split = split_sets(imageset, parse_criteria("fraction(0.1, seed=4)"))
    assert split.sizes() == {"forget_train": 2, "remain_train": 18,
                             "forget_test": 2, "remain_test": 18}


def test_forget_split_can_be_built_directly() -> None:
    empty = np.array([], dtype=np.int64)
    split = ForgetSplit(np.array([1]), np.array([0, 2]), empty, np.array([3]))
    assert split.sizes() == {"forget_train": 1, "remain_train": 2, "forget_test": 0,
                             "remain_test": 1}


# --- dashboard helpers ----------------------------------------------------------------------
def test_from_parts_builds_canonical_criteria() -> None:
    built = ForgetCriteria.from_parts(
        ranges={"vpf_mm": (12, 14.5), "age": (None, 40), "lid height": (None, None)},
        value_sets={"device": ["Topcon", "Spectralis"], "eye": []},
        classes=["thyroid eye disease"],
        fraction=0.5, seed=2,
    )
    assert built.to_text() == (
        'label == "thyroid eye disease" and 12 <= vpf_mm <= 14.5 and age <= 40 and '
        'device in ("Topcon", "Spectralis") and fraction(0.5, seed=2)'
    )
    assert parse_criteria(built.to_text()) == built
    one = ForgetCriteria.from_parts(value_sets={"device": [np.str_("Topcon")]}, classes=[0, 1])
    assert one.to_text() == 'label in (0, 1) and device == "Topcon"'
    assert ForgetCriteria.from_parts(ranges={"vpf_mm": (np.float64(12.0), None)}).to_text() \
        == "vpf_mm >= 12.0"


def test_from_parts_without_any_condition_is_an_error() -> None:
    with pytest.raises(UserError, match="No forget condition"):
        ForgetCriteria.from_parts(ranges={"age": (None, None)}, value_sets={"device": []})


def test_describe_reads_as_plain_english() -> None:
    units = {"vpf_mm": "mm"}
    assert parse_criteria('label == "thyroid eye disease" and vpf_mm >= 12').describe(
        CLASSES, units) == "training images of class 'thyroid eye disease' with vpf_mm ≥ 12 mm"
    assert parse_criteria('device == "Cirrus 800 FA"').describe(CLASSES) == (
        "training images with device 'Cirrus 800 FA'")
    assert parse_criteria("label in (0, 1) and 12 <= vpf_mm < 14 and fraction(0.1, seed=3)"
                          ).describe(CLASSES, units) == (
        "a random 10% (seed 3) of the training images of classes 'healthy' or 'ptosis' "
        "with 12 mm ≤ vpf_mm < 14 mm")
    assert parse_criteria('device not in ("Topcon") and label != 2').describe(CLASSES) == (
        "training images not of class 'thyroid eye disease' with device other than 'Topcon'")


def test_to_dict_is_json_and_from_dict_rejects_malformed() -> None:
    criteria = parse_criteria(
        '12 < vpf_mm <= 14 and device in ("A", "B") and fraction(0.2, seed=1)')
    stored = json.loads(json.dumps(criteria.to_dict()))
    assert stored["version"] == 1
    assert [c["kind"] for c in stored["clauses"]] == ["range", "in", "fraction"]
    assert ForgetCriteria.from_dict(stored) == criteria
    for bad in ({}, {"clauses": [{"kind": "magic"}]}, {"clauses": [{"kind": "compare"}]},
                {"version": 99, "clauses": []}, "age > 3"):
        with pytest.raises(UserError):
            ForgetCriteria.from_dict(bad)


def test_criteria_are_hashable_and_report_their_columns() -> None:
    criteria = parse_criteria('vpf_mm >= 12 and label == 0 and vpf_mm < 15 and fraction(0.5)')
    assert criteria.columns == ("vpf_mm", "label")
    assert criteria.fraction == Fraction(0.5, 0)
    assert len(criteria.conditions) == 3
    assert len({criteria, parse_criteria(criteria.to_text())}) == 1


def test_mask_speed_on_20000_rows_is_printed_not_asserted() -> None:
    """The dashboard recomputes counts live; this shows the cost (vectorized, a few ms)."""
    metadata = pd.concat([IMAGESET.metadata] * 500, ignore_index=True)
    criteria = parse_criteria('vpf_mm >= 12 and label in ("healthy", "ptosis") and '
                              'device != "Topcon" and 20 <= age < 50 and fraction(0.3, seed=2)')
    start = time.perf_counter()
    mask = criteria.mask(metadata, CLASSES)
    print(f"mask on {len(metadata)} rows: {(time.perf_counter() - start) * 1000:.1f} ms")
    assert mask.shape == (20_000,) and mask.any()
