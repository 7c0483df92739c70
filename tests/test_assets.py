"""The shipped demo models: they match today's data and classify it well; demo groups are minorities."""

from __future__ import annotations

import copy

import pytest

from unlearn_core.assets import ASSETS_DIR, load_demo_model
from unlearn_core.data.builtin import BUILTIN_SETS, load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.errors import UserError
from unlearn_core.training import accuracy_on


@pytest.mark.parametrize("name", list(BUILTIN_SETS))
def test_shipped_model_matches_the_data_and_is_accurate(name):
    data = load_builtin(name)
    model = load_demo_model(data)
    assert accuracy_on(model, data, data.test_indices) >= 0.90


@pytest.mark.parametrize("name", list(BUILTIN_SETS))
def test_demo_forget_group_is_a_minority(name):
    data = load_builtin(name)
    sizes = split_sets(data, ForgetCriteria.parse(BUILTIN_SETS[name].demo_forget)).sizes()
    share = sizes["forget_train"] / (sizes["forget_train"] + sizes["remain_train"])
    assert 0.05 <= share <= 0.25, f"{name}: forget group is {share:.1%} of the training data"
    assert sizes["forget_test"] > 0, "the demo must be measurable on held-out images"


def test_assets_stay_small():
    total = sum(path.stat().st_size for path in ASSETS_DIR.glob("*") if path.is_file())
    assert total < 5_000_000, f"assets/ is {total / 1e6:.1f} MB; keep it to a few MB"


def test_a_model_for_other_data_is_refused(monkeypatch):
    data = load_builtin("digits")
    changed = copy.copy(data)  # same name, different content (as after editing a generator)
    monkeypatch.setattr(changed, "fingerprint", lambda: "0000000000000000")
    with pytest.raises(UserError, match="trained on different data"):
        load_demo_model(changed)
    assert load_demo_model(data) is not None
