"""Per-block CKA in the run's HTML report (issue 15, item 4): computed once for Results, saved with
the run, and shown by the report; a run without it says where to compute it."""

from __future__ import annotations

import copy

import pytest
import torch

from fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core.report import render_run_report
from unlearn_core.runs import artifacts
from unlearn_core.runs.registry import Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def finished_run(tmp_path):
    ws = Workspace(tmp_path / "home")
    retrain = ws.create_run("retrain", status="running", dataset="digits")
    ws.set_status(retrain.id, "done")
    run = ws.create_run("unlearn", status="running", dataset="digits", retrain_run=retrain.id, method="psg")
    ws.set_status(run.id, "done", metrics={})
    return ws, ws.get(run.id)


def _models():
    original = tiny_model()
    unlearned = copy.deepcopy(original)
    with torch.no_grad():
        for parameter in unlearned.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return {"original": original, "unlearned": unlearned, "retrain": tiny_model(epochs=2)}


def test_the_comparison_is_saved_once_and_the_report_shows_it(finished_run, monkeypatch):
    ws, record = finished_run
    assert "open the run on the dashboard’s Results page" in render_run_report(record, ws, charts=False)
    rows = artifacts.run_block_similarity(ws, record, tiny_digits(), _models(), tiny_split())
    assert rows and all(0.0 <= r.unlearned_kept <= 1.0 + 1e-9 for r in rows)
    assert (ws.artifact_path(record.id, artifacts.BLOCK_SIMILARITY_ARTIFACT)).is_file()

    import unlearn_core.cka as cka

    monkeypatch.setattr(cka, "per_block_similarity", lambda *a, **k: pytest.fail("computed again"))
    assert artifacts.run_block_similarity(ws, record, tiny_digits(), _models(), tiny_split()) == rows
    html = render_run_report(record, ws, charts=False)
    assert "Where the forgetting lives" in html
    assert all(f"{r.unlearned_forget:.3f}" in html and r.block in html for r in rows)


def test_a_damaged_saved_comparison_is_computed_again(finished_run):
    ws, record = finished_run
    ws.artifact_path(record.id, artifacts.BLOCK_SIMILARITY_ARTIFACT).write_text("[{\"block\": 1")
    assert artifacts.load_block_similarity(ws, record.id) == []
    assert artifacts.run_block_similarity(ws, record, tiny_digits(), _models(), tiny_split())
