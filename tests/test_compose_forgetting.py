"""Composition keeps what its inputs forgot (issue 10, item 7): a candidate that forgets less
than every input is flagged, and never saved silently as "closest to retrain" (since issue 15,
nothing is saved silently at all: see test_compose_defaults.py)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from unlearn_core.compose import FORGET_TOLERANCE, forgetting_lost
from unlearn_core.runs.workflows import choose, suggest

INPUTS = [{"forget_train_acc": 0.05, "forget_test_acc": 0.10}, {"forget_train_acc": 0.30, "forget_test_acc": 0.20}]


def test_a_candidate_above_every_input_is_flagged_with_why():
    lost, note = forgetting_lost({"forget_train_acc": 0.85, "forget_test_acc": 0.15}, INPUTS)
    assert lost == ("forget_train_acc",)
    assert "85.0%" in note and "at most 30.0%" in note and "not saved automatically" in note


def test_a_candidate_between_its_inputs_or_within_the_tolerance_is_not_flagged():
    assert forgetting_lost({"forget_train_acc": 0.2, "forget_test_acc": 0.2}, INPUTS) == ((), "")
    edge = 0.30 + FORGET_TOLERANCE / 2
    assert forgetting_lost({"forget_train_acc": edge, "forget_test_acc": 0.2}, INPUTS) == ((), "")
    assert forgetting_lost({"forget_train_acc": 0.2, "forget_test_acc": math.nan}, INPUTS) == ((), "")
    lost, _ = forgetting_lost({"forget_train_acc": 0.2, "forget_test_acc": 0.9}, INPUTS)
    assert lost == ("forget_test_acc",)


def _summary(label, distance, lost=False, forget=0.1, remain=0.9):
    return {"label": label, "distance_to_retrain": distance, "forgetting_lost": lost,
            "metrics": {"forget_test_acc": forget, "remain_test_acc": remain}}


def test_nothing_is_chosen_without_a_name_and_the_suggestion_skips_flagged_candidates():
    summaries = [_summary("α=0", 0.01, lost=True), _summary("α=1", 0.20)]
    assert choose(summaries, None) is None  # no automatic save
    assert choose(summaries, "α=0")["label"] == "α=0"  # asked for by name: saved
    label, why = suggest(summaries)
    assert label == "α=1" and "closest to the retrained model" in why  # not the closer one: it undid forgetting
    no_retrain = [_summary("a", None, lost=True, forget=0.0, remain=1.0), _summary("b", None, forget=0.5)]
    assert suggest(no_retrain) is None  # without a retrained model nothing is called "closest" to it
    assert suggest([_summary("α=0", 0.01, lost=True)]) is None
    beaten = [{**_summary("α=0.5", 0.05), "beaten_by": "run-a"}, _summary("α=1", 0.20)]
    assert suggest(beaten)[0] == "α=1"
    unchanged = [{**_summary("α=1", 0.01), "same_as": "run-b"}, _summary("α=0.5", 0.20)]
    assert suggest(unchanged)[0] == "α=0.5"  # an input run saved again gains nothing
    assert suggest(unchanged[:1]) is None


# ---------------------------------------------------------------------- the workflow

@pytest.fixture(scope="module")
def digits_setup(tmp_path_factory):
    """A workspace with one finished unlearn run on digits whose model cannot predict class 3."""
    from unlearn_core.assets import load_demo_model
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.models.weights import SPEC_KEY, state_hash
    from unlearn_core.runs.registry import Workspace

    data = load_builtin("digits")
    original = load_demo_model(data)
    forgot = copy.deepcopy(original)
    head = [m for m in forgot.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias[data.classes.index("3")] = -1e4  # class 3 is never predicted: D_f accuracy 0
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    run = ws.create_run("unlearn", status="running", dataset="digits", dataset_fingerprint=data.fingerprint(),
                        base_model_hash=state_hash(original), criteria_text='label == "3"', method="psg")
    ws.save_weights(run.id, forgot.state_dict(), {SPEC_KEY: json.dumps(forgot.spec.to_dict())})
    ws.set_status(run.id, "done", metrics={"original": {}, "unlearned": {}})
    return ws, run.id


def test_composition_that_undoes_forgetting_saves_nothing(digits_setup):
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import WEIGHTS_NAME
    from unlearn_core.runs.requests import ComposeRequest
    from unlearn_core.runs.result import RunResult

    ws, run_id = digits_setup
    # scale 0 of a task-vector sum is the original model itself: it recognizes every 3 again
    summary = workflows.compose(ComposeRequest(runs=(run_id,), strategy="task_sum", scales=(0.0,),
                                               recalibrate=False), ws)
    result = RunResult.from_dict(summary["result"])
    assert result.chosen is None and result.unlearned is None
    [candidate] = result.candidates
    assert candidate["forgetting_lost"] is True and "Forgets less than every input run" in candidate["forgetting_note"]
    assert not ws.artifact_path(summary["run_id"], WEIGHTS_NAME).exists()
    assert ws.get(summary["run_id"]).status == "done"
    import html

    from unlearn_core.errors import UserError
    from unlearn_core.exports import export_bytes
    from unlearn_core.labels import NOTHING_SAVED

    page = export_bytes(ws, summary["run_id"], "html")[0].decode()  # the report says why there is no model
    assert html.escape(NOTHING_SAVED) in page
    with pytest.raises(UserError):  # and there is no model to download
        export_bytes(ws, summary["run_id"], "weights")


def test_composition_saves_the_candidate_asked_for(digits_setup):
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import WEIGHTS_NAME
    from unlearn_core.runs.requests import ComposeRequest
    from unlearn_core.runs.result import RunResult

    ws, run_id = digits_setup
    summary = workflows.compose(ComposeRequest(runs=(run_id,), strategy="task_sum", scales=(0.0, 1.0),
                                               recalibrate=False, select="scale=1"), ws)
    result = RunResult.from_dict(summary["result"])
    flags = {c["label"]: c["forgetting_lost"] for c in result.candidates}
    assert sorted(flags.values()) == [False, True]
    assert result.chosen == "scale=1" and not flags[result.chosen]
    assert result.unlearned["forget_train_acc"] == pytest.approx(0.0)
    assert ws.artifact_path(summary["run_id"], WEIGHTS_NAME).is_file()
