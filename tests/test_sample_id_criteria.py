"""Criteria that name images one by one (``sample_id in (...)``), e.g. a selection drawn on the
Results page's map: they parse (with ``( )`` or ``[ ]``), round-trip through text and the stored
dict, validate against the data, select exactly the listed images and read as a short sentence."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from unlearn_core.data.criteria import ForgetCriteria, ValueSet, parse_criteria
from unlearn_core.errors import UserError

CLASSES = ["healthy", "ptosis"]
N = 20000


@pytest.fixture(scope="module")
def metadata() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "sample_id": [f"img-{i:05d}" for i in range(N)],
        "label": rng.integers(0, 2, N),
        "vpf_mm": rng.uniform(6, 15, N).round(2),
        "split": np.where(np.arange(N) % 5 == 0, "test", "train"),
    })


def test_an_id_list_parses_with_either_bracket_and_round_trips():
    square = parse_criteria('sample_id in ["img-00012", "img-00040",]')
    round_ = parse_criteria('sample_id in ("img-00012", "img-00040")')
    assert square == round_ == ForgetCriteria((ValueSet("sample_id", ("img-00012", "img-00040")),))
    assert square.to_text() == 'sample_id in ("img-00012", "img-00040")'
    assert parse_criteria(square.to_text()) == square
    assert ForgetCriteria.from_dict(square.to_dict()) == square
    with_class = parse_criteria('sample_id not in ["img-00001"] and label == "ptosis"')
    assert with_class.clauses[0].negate
    assert parse_criteria(with_class.to_text()) == with_class


@pytest.mark.parametrize("text, expected", [
    ('sample_id in ["a")', "Expected ',' or ']'"),
    ('sample_id in ("a"]', "Expected ',' or ')'"),
    ("sample_id in []", "Expected a value"),
])
def test_mismatched_or_empty_brackets_are_refused_with_a_message(text, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        parse_criteria(text)


def test_an_id_list_selects_exactly_those_images(metadata):
    wanted = ["img-00003", "img-00005", "img-19999"]
    criteria = parse_criteria("sample_id in (" + ", ".join(f'"{w}"' for w in wanted) + ")")
    mask = criteria.mask(metadata, CLASSES)
    assert metadata["sample_id"][mask].tolist() == wanted
    excluded = parse_criteria('sample_id not in ("img-00003") and vpf_mm >= 0').mask(metadata, CLASSES)
    assert int(excluded.sum()) == N - 1 and not excluded[3]


def test_an_unknown_id_is_named_in_the_message(metadata):
    criteria = parse_criteria('sample_id in ("img-00003", "img-0003")')
    with pytest.raises(UserError, match="No image has sample_id = 'img-0003'. Did you mean"):
        criteria.mask(metadata, CLASSES)


def test_a_long_id_list_is_checked_quickly(metadata):
    """2,000 ids against 20,000 rows: the membership check must not be ids × rows (~1 s)."""
    ids = metadata["sample_id"].iloc[::10].tolist()
    criteria = ForgetCriteria((ValueSet("sample_id", tuple(ids)),))
    start = time.perf_counter()
    mask = criteria.mask(metadata, CLASSES)
    assert time.perf_counter() - start < 0.3
    assert int(mask.sum()) == len(ids)
    fits = ForgetCriteria((ValueSet("sample_id", tuple(ids[:250])),))  # as many as the text limit takes
    assert parse_criteria(fits.to_text()) == fits


def test_an_id_list_reads_as_a_count_not_a_wall_of_ids():
    many = ForgetCriteria((ValueSet("sample_id", tuple(f"img-{i:05d}" for i in range(40))),))
    assert many.describe(CLASSES) == "training images with sample_id one of 40 listed sample ids"
    few = parse_criteria('sample_id in ("img-00001", "img-00002")')
    assert few.describe(CLASSES) == "training images with sample_id 'img-00001' or 'img-00002'"
