"""Automatic stop targets kept in the workspace (unlearn_core.stop_target_cache): one estimate per
model, forget set and seed, reused by the page, a reload and the run; never another one's."""

from __future__ import annotations

import json

import pytest
import torch

from fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core import stop_target, stop_target_cache
from unlearn_core.methods import get_method
from unlearn_core.methods.base import UnlearnData, load_pixels
from unlearn_core.methods.stopping import make_stop_rule
from unlearn_core.stop_target_cache import StopTargetCache, estimate_or_reuse


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def counted(monkeypatch):
    """Counts the real estimates made (each trains proxies); returns the list of calls."""
    calls = []
    real = stop_target_cache.estimate_stop_target

    def counting(model, data, device="cpu", seed=0, estimator=stop_target.DEFAULT_ESTIMATOR):
        calls.append(seed)
        return real(model, data, device, seed=seed, estimator=estimator)

    monkeypatch.setattr(stop_target_cache, "estimate_stop_target", counting)
    return calls


def data_for(criteria: str) -> UnlearnData:
    return UnlearnData(tiny_digits(), tiny_split(criteria))


def test_an_estimate_is_made_once_and_reused(tmp_path, counted):
    cache, model, data = StopTargetCache(tmp_path), tiny_model(), data_for('label == "3"')
    first = estimate_or_reuse(model, data, cache=cache)
    again = estimate_or_reuse(model, data_for('label == "3"'), cache=StopTargetCache(tmp_path))
    assert counted == [0]
    assert not first.reused and again.reused
    assert (again.value, again.keep_case, again.explanation) == (first.value, first.keep_case, first.explanation)


def test_another_seed_forget_set_model_or_procedure_is_a_new_estimate(tmp_path, monkeypatch):
    cache, model, data = StopTargetCache(tmp_path), tiny_model(), data_for('label == "3"')
    key = cache.key(model, data, 0)
    assert cache.key(model, data, 0) == key
    assert cache.key(model, data, 1) != key
    assert cache.key(model, data_for('label == "2"'), 0) != key
    other = tiny_model()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert cache.key(other, data, 0) != key
    monkeypatch.setattr(stop_target, "PROXY_REPEATS", stop_target.PROXY_REPEATS + 2)
    assert cache.key(model, data, 0) != key


def test_an_unreadable_or_unwritable_cache_never_fails_an_estimate(tmp_path, counted):
    model, data = tiny_model(), data_for('label == "3"')
    cache = StopTargetCache(tmp_path)
    key = cache.key(model, data, 0)
    (tmp_path / f"{key}.json").write_text("{ not json")
    assert cache.get(key) is None
    made = estimate_or_reuse(model, data, cache=cache)
    assert counted == [0] and not made.reused
    assert json.loads((tmp_path / f"{key}.json").read_text())["value"] == made.value  # replaced whole
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    estimate_or_reuse(model, data, cache=StopTargetCache(blocked / "inside"))  # cannot be made: still estimates
    assert counted == [0, 0]


def test_the_run_reuses_the_estimate_its_page_made(tmp_path, counted):
    """PSG's stop rule reads the workspace's kept target instead of training the proxies again."""
    model, imageset, split = tiny_model(), tiny_digits(), tiny_split('label == "3"')
    page = estimate_or_reuse(model, UnlearnData(imageset, split), cache=StopTargetCache(tmp_path))
    data = UnlearnData(imageset, split, StopTargetCache(tmp_path))
    device = torch.device("cpu")
    announced = []

    class Hooks:
        def announce(self, stage, message):
            announced.append(stage)

    rule = make_stop_rule(get_method("psg").make_config({}), model, data, device,
                          lambda indices: load_pixels(data, indices, device), Hooks())
    assert counted == [0]  # only the page's
    assert rule.target.reused and rule.target.value == page.value
    assert announced == []  # no "training small proxy models" stage for a kept estimate
