"""A reloaded page takes up only the run of its own selection (issue 14, item 3)."""

from __future__ import annotations

from unlearn_core.runs.attach import compose_runs_in_progress, describe_other, unlearn_runs_in_progress
from unlearn_core.runs.registry import RunRecord


def _run(id_: str, status: str = "running", dataset: str = "digits", criteria: str = 'label == "3"',
         weights: str = "", parents: tuple[str, ...] = ()) -> RunRecord:
    return RunRecord(id=id_, kind="unlearn", status=status, dataset=dataset, criteria_text=criteria,
                     base_weights=weights, method="finetune", parents=list(parents))


def test_only_a_run_of_the_same_data_model_and_criteria_is_taken_up():
    other_data = _run("b", dataset="/uploads/abc/user.zip", criteria='site == "harbour"')
    other_model = _run("c", weights="/ws/runs/x/model.safetensors")
    finished = _run("d", status="done")
    mine = _run("e", criteria="label == '3'")  # other quotes, same images
    found = unlearn_runs_in_progress([other_data, other_model, finished, mine], "digits", 'label == "3"')
    assert found.mine is mine
    assert found.others == (other_data, other_model)


def test_another_tabs_run_is_named_but_never_taken_up():
    theirs = _run("b", dataset="digits", criteria='label == "7"')
    found = unlearn_runs_in_progress([theirs], "digits", 'label == "3"')
    assert found.mine is None and found.others == (theirs,)
    line = describe_other(theirs)
    assert "b" in line and 'label == "7"' in line and "Runs" in line
    upload = describe_other(_run("u", dataset="/ws/uploads/abc123/clinic_scans.zip"))
    assert "on clinic_scans.zip" in upload and "uploads" not in upload  # by its file name, not the path


def test_a_composition_is_taken_up_only_for_the_same_input_runs():
    theirs, mine = _run("x", parents=("r1", "r2")), _run("y", parents=("r2", "r3"))
    found = compose_runs_in_progress([theirs, mine], ["r3", "r2"])
    assert found.mine is mine and found.others == (theirs,)
    assert compose_runs_in_progress([theirs], []).mine is None  # nothing picked: nothing taken up
