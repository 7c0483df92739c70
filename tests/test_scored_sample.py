"""Scoring caps the kept sets: D_f and T_f whole, D_r and T_r a seeded sample above the cap."""

from __future__ import annotations

import numpy as np

from unlearn_core import evaluate, pipeline
from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.methods.base import UnlearnResult
from unlearn_core.runs.requests import UnlearnRequest
from unlearn_core.runs.result import RunResult


def test_kept_sets_are_scored_on_a_seeded_sample_and_the_counts_are_recorded(monkeypatch):
    from unlearn_core.assets import load_demo_model

    data = load_builtin("digits")
    criteria = ForgetCriteria.parse('label == "3"')
    split = split_sets(data, criteria)
    assert evaluate.scored_split(split, 0) is split  # under the real cap: nothing changes
    monkeypatch.setattr(evaluate, "SCORED_REMAIN_MAX", 100)
    first, again, other = (evaluate.scored_split(split, seed) for seed in (0, 0, 1))
    assert np.array_equal(first.forget_train, split.forget_train)
    assert np.array_equal(first.forget_test, split.forget_test)
    for key in ("remain_train", "remain_test"):
        sample = getattr(first, key)
        assert len(sample) == 100 and np.all(np.diff(sample) > 0) and np.isin(sample, getattr(split, key)).all()
        assert np.array_equal(sample, getattr(again, key)) and not np.array_equal(sample, getattr(other, key))

    model = load_demo_model(data)
    request = UnlearnRequest(dataset="digits", forget=criteria.to_text())
    result = pipeline.build_result(data, split, criteria, request, model, UnlearnResult(model=model), None, None)
    assert result.sizes == split.sizes()
    assert result.scored_sizes == {**split.sizes(), "remain_train": 100, "remain_test": 100}
    for block in result.blocks.values():  # every model on the same sample, the MIA features included
        assert (block["n_remain_train"], block["n_remain_test"]) == (100, 100)
        assert block["n_forget_train"] == len(split.forget_train)
    assert result.blocks["original"] == result.blocks["unlearned"]
    read_back = RunResult.from_dict(result.to_dict())
    assert read_back.scored_sizes == result.scored_sizes
    assert f"100 of {len(split.remain_train):,} kept training images" in read_back.scored_note()


def test_a_recorded_retrain_reference_says_it_was_scored_on_a_sample(monkeypatch, tmp_path):
    from unlearn_core.assets import load_demo_model
    from unlearn_core.pipeline import retrain_recipe
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace

    data = load_builtin("digits")
    criteria = ForgetCriteria.parse('label == "3"')
    split = split_sets(data, criteria)
    monkeypatch.setattr(evaluate, "SCORED_REMAIN_MAX", 100)
    model = load_demo_model(data)
    request = UnlearnRequest(dataset="digits", forget=criteria.to_text())
    workspace = Workspace(tmp_path)
    config = retrain_recipe(data, model, request.seed, "cpu", None)
    run_id = workflows._record_retrain(workspace, data, model, request, config, split, model, 1.0)
    result = RunResult.of(workspace.get(run_id))
    assert result.sizes == split.sizes()
    assert result.scored_sizes == {**split.sizes(), "remain_train": 100, "remain_test": 100}
    assert (result.blocks["retrain"]["n_remain_train"], result.blocks["retrain"]["n_remain_test"]) == (100, 100)
