"""The HTML audit report: contents, escaping, self-containedness, failures, comparison, CLI.

No training here: runs are registered by hand with a realistic metrics dict (the shape
``unlearn`` records) and a tiny safetensors file, so every test takes milliseconds.
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_core import report
from unlearn_core.cli import main as cli_main
from unlearn_core.labels import METRIC_DEFINITIONS
from unlearn_core.runs.artifacts import EMBEDDING_ARTIFACT
from unlearn_core.runs.registry import HOME_ENV, Workspace, cli_command
from unlearn_core.runs.result import RunResult

EVIL = "<script>alert('x')</script>"
CRITERIA = 'vpf_mm >= 12 and camera == "' + EVIL + '"'
CLASSES = ["healthy", "ptosis", "thyroid eye disease"]


def _block(forget_train, remain_train, forget_test, remain_test, test, per_class, lr, svc, auc):
    return {
        "forget_train_acc": forget_train, "remain_train_acc": remain_train,
        "forget_test_acc": forget_test, "remain_test_acc": remain_test, "test_acc": test,
        "per_class_test_acc": per_class, "mia_loss_lr": lr, "mia_loss_lr_std": 0.0213,
        "mia_svc_efficacy": svc, "mia_membership_auc": auc,
        "n_forget_train": 412, "n_remain_train": 1988, "n_forget_test": 97, "n_remain_test": 503,
    }


def _metrics(retrain: bool = True, collapsed: bool = False) -> dict:
    metrics = {
        "original": _block(0.9927, 0.9969, 0.9485, 0.9781, 0.9733, [0.981, 0.962, 0.977], 0.512, 0.048, 0.5291),
        "unlearned": _block(0.2534, 0.9953, 0.2433, 0.9689, 0.8542, [0.975, 0.951, 0.412], 0.857, 1.0, 0.4652),
        "collapsed": collapsed,
        "seconds_unlearn": 41.27,
        "seconds_retrain": None,
        "flip_rate": 0.9612,
        "method": "psg",
        "preset": None,
        "config": {"seed": 0, "device": "auto", "batch_size": 64, "epochs": 3, "lr": 0.02},
        "dataset": "oculoplastic",
        "dataset_fingerprint": "93ec2cb9f07c71de",
        "base_model_hash": "50a4cf39950806bf",
        "criteria": CRITERIA,
        "criteria_description": "training images with vpf_mm ≥ 12 mm and camera " + EVIL,
        "sizes": {"forget_train": 412, "remain_train": 1988, "forget_test": 97, "remain_test": 503},
        "forget_classes": {"thyroid eye disease": 301, "healthy": 111},
        "history": [{"epoch": e, "loss": 1.0 / e, "forget_acc": 1 - 0.3 * e, "remain_acc": 0.99}
                    for e in (1, 2, 3)],
        "diagnostics": {"flip_rate": 0.9612},
        "distance_to_retrain": None,
    }
    if retrain:
        metrics["retrain"] = _block(0.0, 0.9946, 0.0, 0.9752, 0.8301, [0.979, 0.958, 0.0], 0.961, 1.0, 0.3713)
        metrics.update(distance_to_retrain=0.24332, original_distance_to_retrain=0.94595,
                       seconds_retrain=223.9, time_pct_of_retrain=18.43, speedup=5.4252)
    return metrics


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def _unlearn_run(ws: Workspace, *, retrain: bool = True, collapsed: bool = False, label: str = "demo " + EVIL,
                 metrics: dict | None = None):
    parents = []
    metrics = metrics or _metrics(retrain=retrain, collapsed=collapsed)
    if retrain:
        reference = ws.create_run("retrain", status="done", dataset="oculoplastic", method="retrain",
                                  criteria_text=CRITERIA, metrics={"retrain": metrics["retrain"]})
        ws.save_weights(reference.id, {"w": torch.zeros(3)})
        parents = [reference.id]
        metrics.update(retrain_run=reference.id, retrain_reused=True)
    argv = ["unlearn", "--dataset", "oculoplastic", "--forget", CRITERIA, "--method", "psg"]
    argv += ["--retrain"] if retrain else []
    record = ws.create_run(
        "unlearn", status="running", dataset="oculoplastic", dataset_fingerprint="93ec2cb9f07c71de",
        base_model_hash="50a4cf39950806bf", criteria_text=CRITERIA,
        criteria={"version": 1, "text": CRITERIA, "clauses": [{"kind": "compare", "column": "vpf_mm"}]},
        method="psg", config=metrics["config"], seed=0, device="cpu", command=cli_command(argv),
        parents=parents, label=label, retrain_run=parents[0] if parents else "",
    )
    ws.save_weights(record.id, {"weight": torch.arange(6.0).reshape(2, 3)}, {"method": "psg"})
    ws.save_json(record.id, "history.json", metrics["history"])
    ws.set_status(record.id, "done", metrics=metrics)
    return ws.get(record.id)


def _script_tags(text: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", text, flags=re.I)


# ------------------------------------------------------------------------------ contents
def test_report_has_criteria_metrics_definitions_numbers_command_and_hashes(ws):
    record = _unlearn_run(ws)
    page = report.render_run_report(record, ws)

    assert page.startswith("<!DOCTYPE html>")
    assert html.escape(CRITERIA) in page
    assert html.escape(record.metrics["criteria_description"]) in page
    # every metric by name with its definition (the report capitalises the definition's start)
    for key in report.RESULT_METRICS + ("distance_to_retrain", "avg_gap", "collapsed", "per_class_test_acc"):
        name, definition = METRIC_DEFINITIONS[key].split(": ", 1)
        assert html.escape(name) in page, key
        assert html.escape(definition[0].upper() + definition[1:]) in page, key
    for key in ("n_forget_train", "n_remain_train", "n_forget_test", "n_remain_test"):
        assert html.escape(METRIC_DEFINITIONS[key]) in page, key
    # numbers, formatted: accuracies in %, scores with 3 decimals, counts with separators
    for text in ("99.3\u00a0%", "25.3\u00a0%", "0.0\u00a0%", "96.9\u00a0%", "0.465", "0.371", "0.243",
                 "0.946", "1,988", "+25.3\u00a0pts", "5.43×", "18.4 %", "41.3 s", "3 min 44 s"):
        assert text in page, text
    # per-class labels come from the built-in set's class names; forget classes are counted
    for name in CLASSES:
        assert html.escape(name) in page
    assert '<td class="num"><span class="num">301</span></td>' in page
    # the exact command and its parts, escaped
    assert html.escape(record.command_text) in page
    assert "--retrain" in record.command_text
    # hashes: data, original model, the unlearned weights file and the retrain reference's
    weights = ws.artifact_path(record.id, "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() in page
    parent_weights = ws.artifact_path(record.parents[0], "model.safetensors").read_bytes()
    assert hashlib.sha256(parent_weights).hexdigest() in page
    assert "93ec2cb9f07c71de" in page and "50a4cf39950806bf" in page
    assert record.parents[0] in page and "reused from" in page
    assert record.versions["python"] in page and "cpu" in page
    # method settings with their meaning (from the method registry)
    assert "PSG" in page and "Full configuration" in page and "(changed)" in page
    assert "No retrain reference was computed" not in page
    assert "Collapsed:" not in page
    assert "already behaved like the retrained one" not in page


def test_nothing_to_unlearn_is_said_when_the_original_already_matches_retrain(ws):
    record = _unlearn_run(ws)
    ws.update(record.id, metrics={**record.metrics, "original_distance_to_retrain": 0.004})
    page = report.render_run_report(ws.get(record.id), ws)
    assert "The original model already behaved like the retrained one" in page


def test_user_strings_are_escaped(ws):
    record = _unlearn_run(ws)
    page = report.render_run_report(record, ws)
    assert EVIL not in page
    assert "alert('x')" not in page
    assert html.escape(EVIL) in page
    assert html.escape("demo " + EVIL) in page  # the label
    # only our own script tags: plotly.js once, its config, and one per figure; none from users
    tags = _script_tags(page)
    assert tags and all(t in ('<script>', '<script type="text/javascript">') for t in tags), tags


def test_report_is_self_contained(ws):
    record = _unlearn_run(ws)
    page = report.render_run_report(record, ws)
    network = re.compile(r"<(script|link|img|iframe|source|embed|object)\b[^>]*\b(src|href|data)\s*=\s*"
                         r"[\"']?\s*(https?:)?//", re.I)
    assert not network.search(page)
    assert not re.search(r"@import|url\(\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "cdn.plot.ly/plotly" not in page.split("<script", 1)[0]  # nothing in the head loads it
    # plotly.js is inlined exactly once, and every figure uses it
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert page.count(bundle[:400]) == 1
    assert page.count("Plotly.newPlot(") >= 3
    assert len(page) < 5_300_000


def test_text_only_report_is_small_and_has_no_javascript(ws):
    record = _unlearn_run(ws)
    page = report.render_run_report(record, ws, charts=False)
    assert _script_tags(page) == []
    assert len(page) < 200_000
    assert html.escape(CRITERIA) in page and "99.3\u00a0%" in page


def test_no_retrain_and_collapse_are_said_in_words(ws):
    record = _unlearn_run(ws, retrain=False, collapsed=True)
    page = report.render_run_report(record, ws)
    assert "No retrain reference was computed; run with <code>--retrain</code> to compare" in page
    assert "Retrained reference" not in page.split("Each model on each set", 1)[1].split("</thead>", 1)[0]
    assert re.search(r'class="note error"><strong>Collapsed:</strong>', page)
    assert "Do not deploy it" in page


def test_failed_run_renders_with_its_error(ws):
    record = ws.create_run("unlearn", status="running", dataset="digits", criteria_text='label == "3"',
                           method="psg", seed=0, command=cli_command(["unlearn", "--method", "psg"]))
    ws.append_log(record.id, "loss=nan at step 3 <b>boom</b>")
    ws.set_status(record.id, "failed", error="The loss became nan <b>during</b> PSG unlearning.")
    page = report.render_run_report(ws.get(record.id), ws)
    assert "This run failed:" in page
    assert "The loss became nan &lt;b&gt;during&lt;/b&gt; PSG unlearning." in page
    assert "<b>during</b>" not in page and "<b>boom</b>" not in page
    assert "loss=nan at step 3 &lt;b&gt;boom&lt;/b&gt;" in page  # the log tail
    assert "No results were recorded: it failed." in page
    assert "none saved (the run did not finish)" in page
    assert "Plotly.newPlot(" not in page  # nothing to chart, so no 4.8 MB bundle either


def test_minimal_metrics_render_every_number(ws):
    record = ws.create_run("compose", status="done", dataset="digits", method="interpolate",
                           metrics={"original": {"forget_acc": 1.0}, "composed": {"forget_acc": 0.2, "alpha": 0.4}})
    page = report.render_run_report(ws.get(record.id), ws)
    assert "forget acc" in page and "100.0\u00a0%" in page and "20.0\u00a0%" in page and "0.400" in page


def test_embedding_panels_are_included_when_saved(ws):
    from unlearn_core.embedding import EmbeddingPanel, save_panels

    record = _unlearn_run(ws)
    rng = np.random.default_rng(0)
    n = 9

    def panel(label: str) -> EmbeddingPanel:
        return EmbeddingPanel(
            coords=rng.normal(size=(n, 2)).astype(np.float32), predicted=np.arange(n) % 3,
            true=np.arange(n) % 3, is_forget=np.arange(n) < 3,
            sample_ids=np.array([f"oculo-{i:05d}" for i in range(n)]), indices=np.arange(n),
            grid_x=np.linspace(-2, 2, 4).astype(np.float32), grid_y=np.linspace(-2, 2, 4).astype(np.float32),
            region_labels=np.zeros((4, 4), dtype=np.int64), model_label=label)

    without = report.render_run_report(record, ws)
    assert "No t-SNE panels were saved with this run" in without
    path = save_panels({k: panel(k) for k in ("original", "retrain", "unlearned")},
                       ws.artifact_path(record.id, EMBEDDING_ARTIFACT))
    page = report.render_run_report(record, ws)
    assert "No t-SNE panels were saved" not in page
    assert "All 9 embedded test images are shown." in page
    assert hashlib.sha256(path.read_bytes()).hexdigest() in page
    assert page.count("Plotly.newPlot(") == without.count("Plotly.newPlot(") + 1
    assert "oculo-00004" in page  # hover text names the sample


# ------------------------------------------------------------------------------ comparison
def test_comparison_has_one_column_per_run(ws):
    first = _unlearn_run(ws, label="run A")
    second = _unlearn_run(ws, retrain=False, collapsed=True, label="run B " + EVIL)
    page = report.render_comparison_report([first, second.id], ws)
    header = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    assert header.count('<th class="run">') == 2
    assert first.id in header and second.id in header
    assert EVIL not in page and html.escape("run B " + EVIL) in page
    assert "no retrain reference" in page and "YES" in page
    assert "25.3\u00a0%" in page and '<span class="best">0.243</span>' not in page  # one distance only
    assert page.count("Plotly.newPlot(") == 1
    with pytest.raises(Exception, match="at least one run"):
        report.render_comparison_report([], ws)


def test_comparison_command_line_writes_the_file(ws, tmp_path, capsys):
    first, second = _unlearn_run(ws), _unlearn_run(ws, retrain=False)
    out = tmp_path / "compare.html"
    code = cli_main(["runs", "compare", first.id, second.id, "--out", str(out), "--workspace", str(ws.path)])
    assert code == 0 and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert text.count('<th class="run">') == 2
    code = cli_main(["runs", "compare", "20990101-000000-beef", "--out", str(out), "--workspace", str(ws.path)])
    assert code == 2 and "20990101-000000-beef" in capsys.readouterr().err


# ------------------------------------------------------------------------------ CLI export
def test_runs_export_html_writes_the_report(ws, tmp_path, monkeypatch, capsys):
    record = _unlearn_run(ws)
    monkeypatch.setenv(HOME_ENV, str(ws.path))
    out = tmp_path / "report.html"
    code = cli_main(["runs", "export", record.id, "--format", "html", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert f"Unlearning report — run {record.id}" in text
    assert html.escape(CRITERIA) in text and EVIL not in text


def test_the_stylesheet_ships_as_package_data_with_the_palette_filled_in():
    import tomllib
    from importlib import resources

    from unlearn_core import plots

    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "report.css" in config["tool"]["setuptools"]["package-data"]["unlearn_core.report"]
    assert resources.files("unlearn_core.report").joinpath("report.css").is_file()
    css = report._css()
    assert "%(" not in css.split("*/", 1)[1] and plots.FORGET_COLOR in css and plots.MODEL_COLORS["retrain"] in css


def test_report_states_the_original_and_retrain_test_accuracy_side_by_side(ws):
    record = _unlearn_run(ws)
    page = report.render_run_report(record, ws)
    # the fixture's original test accuracy 97.33 %, the retrain's 83.01 %
    assert html.escape("Test accuracy: original 97.3%, retrain reference 83.0%") in page
    assert "Check the reference" not in page  # kept-image accuracy 97.8 % vs 97.5 %: a fair reference
    metrics = _metrics()
    metrics["retrain"]["remain_test_acc"] = 0.65
    stored = RunResult.from_dict(metrics)
    stored.retrain_recipe, stored.retrain_recipe_source = "arch=small_cnn,epochs=8", "demo"
    page = report.render_run_report(_unlearn_run(ws, metrics={**metrics, **stored.to_dict()}), ws)
    assert "Check the reference" in page and "32.8 points less accurate" in page
    assert "the demo model&#x27;s shipped recipe" in page or "the demo model's shipped recipe" in page


def test_a_sampled_score_is_said_in_the_report(ws):
    from dataclasses import replace

    from unlearn_core.runs.result import RunResult

    record = _unlearn_run(ws)
    assert "seeded sample" not in report.render_run_report(record, ws)
    result = RunResult.of(record)
    sampled = replace(result, scored_sizes={**result.sizes, "remain_train": 1000, "remain_test": 400})
    ws.update(record.id, metrics=sampled.to_dict())
    page = report.render_run_report(ws.get(record.id), ws)
    assert "a seeded sample of the kept ones: 1,000 of 1,988 kept training images and 400 of 503" in page
