"""Run registry, artifacts, progress reporters and the ``runs`` command line (no subprocesses).

Background jobs with real processes are in ``test_jobs.py``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import sqlite3
from pathlib import Path

import pytest

from unlearn_core.runs import registry as runs
from unlearn_core.cli import main
from unlearn_core.errors import UserError
from unlearn_core.progress import (
    CancelToken,
    Cancelled,
    ProgressEvent,
    RegistryReporter,
    StderrReporter,
)
from unlearn_core import files
from unlearn_core.exports import metrics_rows
from unlearn_core.runs.registry import MIGRATIONS, Workspace, recipe_hash


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


def _done_run(ws: Workspace, kind: str = "unlearn", **fields) -> runs.RunRecord:
    record = ws.create_run(kind, **fields)
    ws.set_status(record.id, "running")
    ws.set_status(record.id, "done")
    return ws.get(record.id)


# ---------------------------------------------------------------------- schema


def test_fresh_workspace_is_migrated_and_in_wal_mode(tmp_path, monkeypatch):
    monkeypatch.setenv(runs.HOME_ENV, str(tmp_path / "home"))
    ws = Workspace()
    assert ws.path == (tmp_path / "home").resolve()
    assert ws.db_path.is_file()
    assert ws.schema_version == len(MIGRATIONS)
    with sqlite3.connect(ws.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Workspace(ws.path)  # reopening runs no migration twice
    assert ws.schema_version == len(MIGRATIONS)


def test_new_migration_upgrades_an_existing_registry_and_keeps_runs(ws, monkeypatch):
    kept = ws.create_run("train", dataset="fundus")
    upgraded = (*MIGRATIONS, ("ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT 'x'",))
    monkeypatch.setattr(runs, "MIGRATIONS", upgraded)
    reopened = Workspace(ws.path)
    assert reopened.schema_version == len(upgraded)
    assert reopened.get(kept.id).dataset == "fundus"
    with sqlite3.connect(ws.db_path) as conn:
        assert conn.execute("SELECT note FROM runs").fetchone()[0] == "x"


def test_registry_from_a_newer_version_is_refused(ws):
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(UserError, match="newer"):
        Workspace(ws.path)


def test_corrupt_database_is_a_user_error_naming_the_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / runs.REGISTRY_NAME).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match=r"registry at .*registry\.sqlite is damaged"):
        Workspace(folder)


def test_database_damaged_after_opening_is_a_user_error(ws):
    ws.create_run("train")
    ws.db_path.write_bytes(b"\0garbage" * 512)
    for suffix in ("-wal", "-shm"):
        Path(f"{ws.db_path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(UserError, match="damaged"):
        ws.list_runs()


def test_locked_database_is_a_user_error(tmp_path):
    ws = Workspace(tmp_path / "ws", busy_timeout=0.1)
    record = ws.create_run("train")
    holder = sqlite3.connect(ws.db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(UserError, match="is locked"):
            ws.update(record.id, label="x")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ws.update(record.id, label="x").label == "x"


# ---------------------------------------------------------------------- records


def test_create_get_update_and_list(ws):
    first = ws.create_run(
        "train", dataset="fundus", dataset_fingerprint="fp1", seed=3,
        criteria_text='device == "Cirrus 800 FA"', criteria={"device": ["Cirrus 800 FA"]},
        config={"epochs": 2, "lr": 0.1}, command=runs.cli_command(["train", "--seed", "3"]),
        label="original",
    )
    second = ws.create_run("unlearn", method="psg", parents=[first.id])
    assert ws.get(first.id) == first
    assert first.status == "queued" and first.created_at.endswith("+00:00")
    assert first.versions["python"] and "torch" in first.versions
    assert first.command_text == "python -m unlearn_core train --seed 3"
    assert ws.run_dir(first.id).is_dir()

    updated = ws.update(first.id, metrics={"original": {"test_acc": 0.9}}, device="cpu")
    assert updated.metrics == {"original": {"test_acc": 0.9}} and updated.device == "cpu"
    assert ws.get(first.id).config == {"epochs": 2, "lr": 0.1}

    assert [r.id for r in ws.list_runs()] == [second.id, first.id]  # newest first
    assert [r.id for r in ws.list_runs(kind="unlearn")] == [second.id]
    assert ws.list_runs(status="done") == []
    with pytest.raises(UserError, match="kind"):
        ws.list_runs(kind="nonsense")
    with pytest.raises(TypeError, match="bogus"):
        ws.update(first.id, bogus=1)


def test_unknown_run_id_says_how_to_list_ids(ws):
    with pytest.raises(UserError, match="runs list"):
        ws.get("20990101-000000-beef")
    with pytest.raises(UserError, match="runs list"):
        ws.create_run("compose", parents=["20990101-000000-beef"])


def test_set_status_stamps_times_and_never_reopens_a_finished_run(ws):
    record = ws.create_run("train")
    assert ws.set_status(record.id, "running", pid=123)
    running = ws.get(record.id)
    assert running.started_at and running.pid == 123 and running.finished_at is None
    assert ws.set_status(record.id, "done")
    assert ws.get(record.id).finished_at
    assert not ws.set_status(record.id, "interrupted", error="late")
    assert ws.get(record.id).status == "done" and ws.get(record.id).error == ""


def test_progress_events_round_trip(ws):
    record = ws.create_run("unlearn")
    events = [ProgressEvent(phase="unlearn", epoch=1, epochs=2, step=s, steps=3, fraction=s / 6,
                            metrics={"forget_acc": 1.0 - s / 10, "remain_acc": 0.9})
              for s in (1, 2, 3)]
    seqs = [ws.record_progress(record.id, event) for event in events]
    assert seqs == [1, 2, 3]
    stored = ws.progress_events(record.id)
    assert [ProgressEvent.from_dict(e) for e in stored] == events
    assert [e["seq"] for e in ws.progress_events(record.id, since_seq=2)] == [3]
    assert ws.get(record.id).progress["step"] == 3
    assert ws.progress_events(ws.create_run("train").id) == []


def test_delete_is_refused_for_a_parent_unless_forced(ws):
    parent = _done_run(ws, "train")
    child = _done_run(ws, "unlearn", parents=[parent.id])
    ws.save_json(parent.id, "split", {"forget": [1, 2]})
    with pytest.raises(UserError, match=child.id):
        ws.delete(parent.id)
    assert ws.exists(parent.id) and ws.run_dir(parent.id).is_dir()
    ws.delete(parent.id, force=True)
    assert not ws.exists(parent.id) and not ws.run_dir(parent.id).exists()
    assert ws.get(child.id).parents == [parent.id]  # the audit trail still says where it came from


def test_delete_removes_events_and_refuses_active_runs(ws):
    active = ws.create_run("train")
    with pytest.raises(UserError, match="cancel it first"):
        ws.delete(active.id)
    done = _done_run(ws, "train")
    ws.record_progress(done.id, {"phase": "train"})
    ws.delete(done.id)
    with sqlite3.connect(ws.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM run_events").fetchone()[0] == 0


def test_find_reusable_returns_the_newest_matching_finished_retrain_with_weights(ws):
    import torch

    key = dict(dataset_fingerprint="fp", criteria_text="vpf_mm >= 12", seed=0,
               recipe_hash=recipe_hash({"epochs": 3, "arch": "small"}))
    assert ws.find_reusable("retrain", **key) is None
    older, newer = _done_run(ws, "retrain", **key), _done_run(ws, "retrain", **key)
    no_weights = _done_run(ws, "retrain", **key)
    for record in (older, newer):
        ws.save_weights(record.id, {"w": torch.zeros(2)})
    failed = ws.create_run("retrain", **key)
    ws.save_weights(failed.id, {"w": torch.zeros(2)})
    ws.set_status(failed.id, "failed")
    assert ws.find_reusable("retrain", **key).id == newer.id != no_weights.id
    assert ws.find_reusable("retrain", **{**key, "seed": 1}) is None
    assert ws.find_reusable("retrain", **{**key, "recipe_hash": recipe_hash({"epochs": 4})}) is None
    assert ws.find_reusable("unlearn", **key) is None
    assert recipe_hash({"a": 1, "b": 2}) == recipe_hash({"b": 2, "a": 1})


# ---------------------------------------------------------------------- artifacts


def test_weights_round_trip_with_metadata(ws):
    import torch

    record = ws.create_run("train")
    linear = torch.nn.Linear(3, 2)
    path = ws.save_weights(record.id, linear.state_dict(), {"architecture": "linear"})
    assert path == ws.artifact_path(record.id, runs.WEIGHTS_NAME)
    loaded = ws.load_weights(record.id)
    assert torch.equal(loaded["weight"], linear.weight.detach())
    metadata = ws.weights_metadata(record.id)
    assert metadata.pop("unlearn_studio.sha256")  # the content hash recorded at save
    assert metadata == {"architecture": "linear"}
    with pytest.raises(TypeError, match="str"):
        ws.save_weights(record.id, linear.state_dict(), {"epochs": 3})
    with pytest.raises(UserError, match="no saved model"):
        ws.load_weights(ws.create_run("train").id)


def test_interrupted_write_leaves_the_previous_artifact_and_no_partial_file(ws, monkeypatch):
    record = ws.create_run("train")
    ws.save_json(record.id, "metrics", {"version": 1})

    def crash_halfway(path: Path, data: bytes) -> None:
        path.write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt  # the process dies mid-write

    monkeypatch.setattr(files, "write_file", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        ws.save_json(record.id, "metrics", {"version": 2, "padding": "x" * 1000})
    with pytest.raises(KeyboardInterrupt):
        ws.save_json(record.id, "new", {"a": 1})
    assert ws.load_json(record.id, "metrics") == {"version": 1}
    assert not ws.artifact_path(record.id, "new.json").exists()
    assert [p.name for p in ws.artifacts(record.id)] == ["metrics.json"]
    assert list(ws.run_dir(record.id).iterdir()) == [ws.artifact_path(record.id, "metrics.json")]


def test_disk_full_fails_the_run_and_leaves_other_runs_intact(ws, monkeypatch):
    import torch

    earlier = _done_run(ws, "train")
    ws.save_weights(earlier.id, {"w": torch.ones(3)})
    current = ws.create_run("unlearn")
    ws.set_status(current.id, "running")

    def disk_full(path: Path, data: bytes) -> None:
        path.write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_file", disk_full)
    with pytest.raises(UserError, match="disk is full"):
        ws.save_weights(current.id, {"w": torch.zeros(3)})
    failed = ws.get(current.id)
    assert failed.status == "failed" and "No space left on device" in failed.error
    assert ws.artifacts(current.id) == []
    assert ws.get(earlier.id).status == "done"
    assert torch.equal(ws.load_weights(earlier.id)["w"], torch.ones(3))


def test_artifact_names_and_log(ws):
    record = ws.create_run("train")
    with pytest.raises(ValueError):
        ws.artifact_path(record.id, "../escape.json")
    with pytest.raises(UserError):
        ws.run_dir("../../etc")
    ws.append_log(record.id, "line one\nline two")
    lines = ws.log_path(record.id).read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith("line two")


# ---------------------------------------------------------------------- progress


def test_registry_reporter_throttles_but_keeps_phase_changes_final_and_flush(ws):
    record = ws.create_run("unlearn")
    reporter = RegistryReporter(ws, record.id, max_per_second=5)
    for step in range(1, 51):
        reporter(ProgressEvent(phase="search", step=step, steps=100, fraction=step / 200))
    reporter(ProgressEvent(phase="unlearn", step=1, steps=100, fraction=0.6))
    reporter(ProgressEvent(phase="unlearn", step=2, steps=100, fraction=0.7))
    stored = ws.progress_events(record.id)
    assert 2 <= len(stored) < 10
    assert [e["phase"] for e in stored].count("unlearn") == 1
    reporter.flush()
    assert ws.progress_events(record.id)[-1]["step"] == 2
    reporter(ProgressEvent(phase="unlearn", fraction=1.0))
    assert ws.get(record.id).progress["fraction"] == 1.0


def test_stderr_reporter_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    reporter = StderrReporter(stream)
    reporter(ProgressEvent(phase="train", epoch=1, epochs=2, step=5, steps=10, fraction=0.25,
                           eta_seconds=75, metrics={"loss": 0.5}))
    reporter(ProgressEvent(phase="train", fraction=0.3))  # throttled
    reporter(ProgressEvent(phase="train", fraction=1.0))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert "25%" in lines[0] and "epoch 1/2" in lines[0] and "eta 1:15" in lines[0]
    assert "loss=0.500" in lines[0] and "100%" in lines[1]


def test_cancel_token_sees_the_registry_flag(ws):
    record = ws.create_run("train")
    token = CancelToken(ws, record.id, interval=0.0)
    assert not token()
    ws.request_cancel(record.id)
    assert token()
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()
    local = CancelToken()
    local.cancel()
    assert local()


# ---------------------------------------------------------------------- command line


def _cli(capsys, ws: Workspace, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--workspace", str(ws.path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture()
def finished(ws: Workspace) -> runs.RunRecord:
    import torch

    record = _done_run(ws, "unlearn", dataset="oculoplastic", criteria_text="vpf_mm >= 12",
                       method="psg", seed=0, command=runs.cli_command(["unlearn", "--seed", "0"]))
    ws.update(record.id, metrics={
        "original": {"forget_acc": 1.0, "remain_acc": 0.95},
        "unlearned": {"forget_acc": 0.2, "remain_acc": 0.93, "per_class": {"ptosis": 0.5}},
    })
    ws.save_weights(record.id, {"w": torch.arange(4.0)}, {"architecture": "tiny"})
    return ws.get(record.id)


def test_cli_list_and_show(capsys, ws, finished):
    code, out, _ = _cli(capsys, ws, "runs", "list", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [finished.id]
    code, out, _ = _cli(capsys, ws, "runs", "list")
    assert code == 0 and finished.id in out and "forget_acc=0.2" in out and "vpf_mm >= 12" in out
    code, out, _ = _cli(capsys, ws, "runs", "show", finished.id, "--json")
    assert json.loads(out)["metrics"]["unlearned"]["remain_acc"] == 0.93
    code, out, _ = _cli(capsys, ws, "runs", "show", finished.id)
    assert "model.safetensors" in out and "python -m unlearn_core unlearn --seed 0" in out
    code, _, err = _cli(capsys, ws, "runs", "show", "20990101-000000-beef")
    assert code == 2 and "runs list" in err


def test_cli_delete_previews_without_yes(capsys, ws, finished):
    code, out, _ = _cli(capsys, ws, "runs", "delete", finished.id)
    assert code == 1 and "--yes" in out and "Would delete" in out
    assert ws.exists(finished.id)
    child = _done_run(ws, "compose", parents=[finished.id])
    code, out, _ = _cli(capsys, ws, "runs", "delete", finished.id)
    assert child.id in out and "--force" in out
    code, _, err = _cli(capsys, ws, "runs", "delete", finished.id, "--yes")
    assert code == 2 and child.id in err and ws.exists(finished.id)
    ws.delete(child.id)
    code, out, _ = _cli(capsys, ws, "runs", "delete", finished.id, "--yes")
    assert code == 0 and not ws.exists(finished.id) and not ws.run_dir(finished.id).exists()


def test_cli_export_json_csv_weights(capsys, ws, finished, tmp_path):
    code, out, _ = _cli(capsys, ws, "runs", "export", finished.id, "--format", "json",
                        "--out", str(tmp_path / "run.json"))
    assert code == 0 and json.loads((tmp_path / "run.json").read_text())["id"] == finished.id

    _cli(capsys, ws, "runs", "export", finished.id, "--format", "csv", "--out", str(tmp_path))
    rows = list(csv.DictReader((tmp_path / f"{finished.id}.csv").open()))
    assert len(rows) == len(metrics_rows(finished)) == 5
    assert {"run_id": finished.id, "model": "unlearned", "metric": "per_class.ptosis",
            "value": "0.5"} in rows

    target = tmp_path / "model.safetensors"
    _cli(capsys, ws, "runs", "export", finished.id, "--format", "weights", "--out", str(target))
    assert target.read_bytes() == ws.artifact_path(finished.id, runs.WEIGHTS_NAME).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_export_to_unwritable_path_names_it(capsys, ws, finished, tmp_path):
    bad = tmp_path / "no_such_folder" / "run.json"
    code, _, err = _cli(capsys, ws, "runs", "export", finished.id, "--format", "json",
                        "--out", str(bad))
    assert code == 2 and str(bad) in err and "--out" in err


def test_a_registry_from_before_migration_2_gets_its_run_facts_from_command_and_metrics(tmp_path):
    """Runs recorded by the first schema keep opening: base weights/arch come from the recorded
    command, the retrain run from the old flat metrics (NaN and all), a composition inherits."""
    from unlearn_core.runs.result import RunResult

    path = tmp_path / "old"
    path.mkdir()
    with sqlite3.connect(path / runs.REGISTRY_NAME) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        old_metrics = ('{"original": {"forget_test_acc": 0.9, "remain_test_acc": 0.95, "forget_train_acc": 1.0, '
                       '"remain_train_acc": 1.0, "mia_svc_efficacy": NaN}, "unlearned": {"forget_test_acc": 0.1, '
                       '"remain_test_acc": 0.9, "forget_train_acc": 0.0, "remain_train_acc": 0.95, '
                       '"mia_svc_efficacy": 0.8}, "retrain": {"forget_test_acc": 0.0, "remain_test_acc": 0.93, '
                       '"forget_train_acc": 0.0, "remain_train_acc": 0.97, "mia_svc_efficacy": 1.0}, '
                       '"distance_to_retrain": 0.1, "seconds_unlearn": 2.0, "seconds_retrain": 8.0, '
                       '"retrain_run": "r-1", "retrain_reused": true, "flip_rate": 0.5}')
        rows = [
            ("r-1", "retrain", '{"retrain": {"test_acc": 0.9}, "seconds_retrain": 8.0}', '[]',
             '["python", "-m", "unlearn_core", "train", "--dataset", "digits", "--retrain"]'),
            ("u-1", "unlearn", old_metrics, '["r-1"]',
             '["python", "-m", "unlearn_core", "unlearn", "--dataset", "digits", "--weights", "/w/m.pt", '
             '"--arch", "allcnn", "--forget", "label == 3", "--retrain"]'),
            ("c-1", "compose", '{"original": {}, "unlearned": {}, "retrain": {}, "candidates": [], "chosen": "a"}',
             '["u-1"]', '["python", "-m", "unlearn_core", "compose", "--runs", "u-1"]'),
        ]
        for i, (run_id, kind, metrics, parents, command) in enumerate(rows):
            conn.execute("INSERT INTO runs (id, kind, status, created_at, metrics, parents, command) "
                         "VALUES (?, ?, 'done', ?, ?, ?, ?)", (run_id, kind, f"2026-01-0{i + 1}", metrics, parents,
                                                               command))
    ws = Workspace(path)
    assert ws.schema_version == len(MIGRATIONS)
    unlearned, composed, reference = ws.get("u-1"), ws.get("c-1"), ws.get("r-1")
    assert (unlearned.base_weights, unlearned.base_arch, unlearned.retrain_run) == ("/w/m.pt", "allcnn", "r-1")
    assert (composed.base_weights, composed.base_arch, composed.retrain_run) == ("/w/m.pt", "allcnn", "r-1")
    assert (reference.base_weights, reference.retrain_run) == ("", "")
    result = RunResult.of(unlearned)
    assert list(result.ordered_blocks()) == ["original", "retrain", "unlearned"]
    assert result.comparison.distance_to_retrain == 0.1 and result.comparison.avg_gap == pytest.approx(0.0625)
    assert result.timing.pct_of_retrain == 25.0 and result.diagnostics["flip_rate"] == 0.5
    assert result.retrain_reused is True
    assert RunResult.of(reference).main_block() == ("retrain", {"test_acc": 0.9})
    assert RunResult.of(composed).chosen == "a"


def test_a_run_result_reads_back_from_its_stored_shape():
    from unlearn_core.runs.result import Comparison, RunResult, Timing

    result = RunResult(blocks={"original": {"a": 1.0}, "unlearned": {"a": 0.5}},
                       comparison=Comparison(distance_to_retrain=0.2, avg_gap=0.1, collapsed=False),
                       timing=Timing(unlearn=1.0, retrain=4.0), sizes={"forget_train": 3},
                       candidates=[{"label": "x"}], chosen="x")
    stored = json.loads(json.dumps(result.to_dict()))
    assert stored["timing"]["speedup"] == 4.0
    assert RunResult.from_dict(stored) == result
    assert result.main_block() == ("unlearned", {"a": 0.5})
