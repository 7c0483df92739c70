"""A model trained here earlier can be chosen again (issue 14, item 4): on Data & model, and from
Runs ("Use this model"), without downloading its weights and uploading them again."""

from __future__ import annotations

import json

import pytest

from test_pages import DIGITS, _app, workspace_home  # noqa: F401 - the module's workspace fixture
from unlearn_core.runs.attach import trained_model_label, trained_models
from unlearn_core.runs.registry import RunRecord
from unlearn_core.ui.state import ModelChoice


def _record(run_id: str, **fields) -> RunRecord:
    base = {"kind": "train", "status": "done", "dataset": "digits", "created_at": "2026-12-01T10:00:00"}
    return RunRecord(id=run_id, **{**base, **fields})


def test_only_finished_training_runs_with_weights_on_the_data_set_newest_first():
    records = [
        _record("old", created_at="2026-11-01T09:00:00"),
        _record("new", created_at="2026-12-01T09:00:00"),
        _record("running", status="running"),
        _record("unlearn", kind="unlearn"),
        _record("fundus", dataset="fundus"),
        _record("no_weights"),
    ]
    found = trained_models(records, lambda r: r.id != "no_weights", "digits")
    assert [r.id for r in found] == ["new", "old"]
    assert {r.id for r in trained_models(records, lambda r: True)} == {"old", "new", "fundus", "no_weights"}


def test_a_training_run_is_named_by_architecture_epochs_and_accuracy():
    record = _record("abc123", config={"arch": "small_cnn", "epochs": 8}, metrics={"train": {"test_acc": 0.934}})
    label = trained_model_label(record)
    assert label.startswith("run abc123") and "small_cnn" in label and "8 epochs" in label
    assert "test accuracy 93%" in label and "2026-12-01 10:00" in label
    assert trained_model_label(_record("bare")).startswith("run bare")  # nothing recorded: still named


@pytest.fixture(scope="module")
def trained_run(workspace_home):  # noqa: F811 - the fixture imported above
    """A finished digits training run with the shipped model's weights."""
    from unlearn_core.assets import load_demo_model
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.models.weights import SPEC_KEY
    from unlearn_core.runs.registry import Workspace

    model = load_demo_model(load_builtin("digits"))
    ws = Workspace()
    run = ws.create_run("train", status="running", dataset="digits", config={"arch": "small_cnn", "epochs": 3})
    ws.save_weights(run.id, model.state_dict(), {SPEC_KEY: json.dumps(model.spec.to_dict())})
    ws.set_status(run.id, "done", metrics={"train": {"test_acc": 0.9}})
    return run.id


def test_data_and_model_offers_a_model_trained_earlier(trained_run):
    at = _app("pages/1_data_model.py", **DIGITS)
    at.radio(key="dm_model_source").set_value("run").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(o.startswith(f"run {trained_run} · small_cnn") for o in at.selectbox(key="dm_earlier").options)
    at.selectbox(key="dm_earlier").set_value(trained_run).run()
    at.button(key="dm_use_earlier").click().run()
    assert not at.exception, [e.value for e in at.exception]
    chosen = at.session_state["us.model"]
    assert isinstance(chosen, ModelChoice) and chosen.kind == "run" and chosen.run_id == trained_run
    assert chosen.path.endswith("model.safetensors")


def test_runs_page_uses_a_trained_model(trained_run):
    at = _app("pages/6_runs.py", us__dataset="fundus", us__dataset_label="Fundus")
    at.selectbox(key="rn_run").set_value(trained_run).run()
    at.button(key="rn_use_model").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["us.dataset"] == "digits"  # the run's own data set comes with its model
    chosen = at.session_state["us.model"]
    assert chosen.kind == "run" and chosen.run_id == trained_run
