"""The benchmark's parts (issue 10): scenario split, user-style set, forgetting checks, tables.

No benchmark number is asserted here: the figures come from ``python -m unlearn_core bench`` and
live in docs/benchmark.md. These tests check what could silently break the benchmark's fairness
or its files: a scenario in both parts, a criterion that selects nothing, a user-style set that
does not go through the upload loader, a check that changes the model it checks, a table that
drops a missing part.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from fixtures_small import tiny_digits, tiny_model, tiny_split
from unlearn_core import bench_table
from unlearn_core.bench_data import GLYPH_CLASSES, SCANNERS, load_glyphs, write_glyphs_zip
from unlearn_core.bench_scenarios import ADDED_TUNING, GLYPHS, HELD_OUT, SCENARIOS, TUNING, scenarios_of, select
from unlearn_core.data.builtin import SCENARIOS as DEMO_SCENARIOS
from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.errors import UserError
from unlearn_core.forgetting_checks import (
    RelearnCheck, RelearnConfig, bn_recalibration_check, relearn, relearning_check,
)
from unlearn_core.models.weights import state_hash

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def glyphs(tmp_path_factory) -> "object":
    return load_glyphs(tmp_path_factory.mktemp("glyphs"), count=150)


# --- the scenario split ---------------------------------------------------------------------------
def test_parts_are_disjoint_and_the_tuning_part_is_the_demo_scenarios():
    tuning, held_out = scenarios_of(TUNING), scenarios_of(HELD_OUT)
    assert {s.name for s in tuning} == set(DEMO_SCENARIOS) | {s.name for s in ADDED_TUNING}
    assert not {s.name for s in tuning} & {s.name for s in held_out}
    assert len(held_out) >= 7 and len(tuning) + len(held_out) >= 10
    assert {(s.dataset, s.criteria) for s in tuning}.isdisjoint({(s.dataset, s.criteria) for s in held_out})
    assert {s.dataset for s in held_out} == {"digits", "fundus", "oculoplastic", GLYPHS}
    assert [s.name for s in scenarios_of("all")] == list(SCENARIOS)
    assert [s.name for s in select(["digits_class7"], TUNING)] == ["digits_class7"]
    with pytest.raises(UserError, match="Unknown scenario"):
        select(["nope"], "all")
    with pytest.raises(UserError, match="Unknown benchmark part"):
        scenarios_of("heldout")


def _share_selected(criteria: str, metadata, classes) -> float:
    return float(ForgetCriteria.parse(criteria).mask(metadata, classes).mean())


def test_every_built_in_criterion_selects_some_but_not_most_images():
    from unlearn_core.data.synthetic import generate_fundus, generate_oculoplastic

    small = {"fundus": generate_fundus(n=300, size=16), "oculoplastic": generate_oculoplastic(n=300, size=16)}
    for scenario in SCENARIOS.values():
        if scenario.dataset == GLYPHS:
            continue
        if scenario.dataset == "digits":  # the real set: count its training images
            split = split_sets(load_builtin("digits"), ForgetCriteria.parse(scenario.criteria))
            share = len(split.forget_train) / (len(split.forget_train) + len(split.remain_train))
        else:  # same generator and columns at a tenth of the size (the full sets take a minute)
            generated = small[scenario.dataset]
            share = _share_selected(scenario.criteria, generated.metadata, generated.classes)
        assert 0 < share < 0.5, (scenario.name, share)


def test_glyph_criteria_select_a_subgroup(glyphs):
    for scenario in (s for s in SCENARIOS.values() if s.dataset == GLYPHS):
        split = split_sets(glyphs, ForgetCriteria.parse(scenario.criteria))
        assert 0 < len(split.forget_train) < 0.5 * len(glyphs.train_indices), scenario.name


# --- the user-style set ---------------------------------------------------------------------------
def test_glyphs_load_through_the_upload_loader_with_their_metadata(glyphs, tmp_path):
    assert glyphs.classes == sorted(GLYPH_CLASSES)
    assert (glyphs.channels, glyphs.image_size, len(glyphs.metadata)) == (3, 32, 150)
    assert {"site", "scanner", "year", "age"} <= set(glyphs.metadata.columns)
    assert set(glyphs.metadata["scanner"]) <= set(SCANNERS) and glyphs.metadata["year"].dtype.kind == "i"
    assert "user's ZIP" in glyphs.description  # loaded as a user's upload is
    # the same seed writes the same data; another seed does not
    again = load_glyphs(tmp_path / "again", count=150)
    assert again.fingerprint() == glyphs.fingerprint()
    assert load_glyphs(tmp_path / "other", count=150, seed=5).fingerprint() != glyphs.fingerprint()


def test_the_hazecam_scanner_is_visible_in_the_images(glyphs):
    pixels = glyphs.images.float()
    haze = torch.tensor((glyphs.metadata["scanner"] == "HazeCam").to_numpy())
    blue_over_red = pixels[:, 2].mean(dim=(1, 2)) / pixels[:, 0].mean(dim=(1, 2))
    assert blue_over_red[haze].max() < blue_over_red[~haze].min()  # a warm tint on every HazeCam image


def test_a_half_written_zip_is_never_used(tmp_path):
    path = write_glyphs_zip(tmp_path / "g.zip", count=10)
    assert path.is_file() and not list(tmp_path.glob(".*partial"))


# --- forgetting checks ----------------------------------------------------------------------------
def _norms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_bn_recalibration_restores_statistics_and_leaves_the_model_alone():
    data, split, model = tiny_digits(), tiny_split(), tiny_model()
    assert _norms(model), "the tiny model has BatchNorm"
    scrambled = copy.deepcopy(model)
    for bn in _norms(scrambled):  # statistics that wash out the digit 3 (as PSG's BN-train passes can)
        bn.running_var.fill_(100.0)
    before = state_hash(scrambled)
    broken, intact = bn_recalibration_check(scrambled, data, split), bn_recalibration_check(model, data, split)
    assert state_hash(scrambled) == before  # a copy was recalibrated
    # same weights, same D_r batches: recalibration gives the same statistics whatever they were
    assert broken.after == pytest.approx(intact.after)
    assert broken.before < intact.before and broken.delta > 0.05 and not broken.kept
    assert broken.has_batchnorm and math.isfinite(intact.delta)


def test_relearning_returns_numbers_and_zero_learning_rate_changes_nothing():
    data, split, model = tiny_digits(), tiny_split(), tiny_model()
    retrained = tiny_model()
    before = state_hash(model)
    check = relearning_check(model, retrained, data, split, recipe_lr=0.05, config=RelearnConfig(steps=3))
    assert state_hash(model) == before
    assert all(0.0 <= v <= 1.0 for v in (check.unlearned_before, check.unlearned_after,
                                         check.retrain_before, check.retrain_after))
    still = relearn(model, data, split.remain_train, recipe_lr=0.0, config=RelearnConfig(steps=2))
    for moved, kept in zip(still.parameters(), model.parameters()):  # only BN statistics may move
        torch.testing.assert_close(moved, kept)


def test_relearning_flag_needs_a_faster_rise_and_a_higher_end():
    assert RelearnCheck(0.0, 0.4, 0.0, 0.1).flagged           # forgotten class comes back
    assert not RelearnCheck(0.0, 0.12, 0.0, 0.1).flagged      # as fast as the retrain
    assert not RelearnCheck(0.83, 0.94, 1.0, 1.0).flagged     # over-forgot, climbs back to the retrain
    assert not RelearnCheck(float("nan"), float("nan"), 0.0, 0.0).flagged


# --- oracle-tuned settings ----------------------------------------------------------------------
def test_oracle_settings_are_valid_and_live_only_in_the_bench_module():
    from unlearn_core.bench import ORACLE_TUNED
    from unlearn_core.methods import get_method

    assert set(ORACLE_TUNED) <= {s.name for s in scenarios_of(TUNING)}
    for values in ORACLE_TUNED.values():
        get_method("psg").make_config(values)
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "unlearn_core").rglob("*.py")
             if "ORACLE_TUNED" in p.read_text() and p.name != "bench.py"]
    assert users == []


# --- tables ---------------------------------------------------------------------------------------
def _rows(part: str, scenario: str, psg_distances=(0.02, 0.04, 0.03)) -> list[dict]:
    base = {"part": part, "scenario": scenario, "dataset": "digits", "criteria": 'label == "7"',
            "n_forget_train": 143, "n_remain_train": 1295, "machine": "test machine", "finished": "2026-12-02 01:00 UTC"}
    rows = []
    for seed, distance in enumerate(psg_distances):
        common = {**base, "seed": seed}
        rows += [{**common, "method": "original (no unlearning)", "test_acc": 0.98, "forget_test_acc": 0.95,
                  "remain_test_acc": 0.98},
                 {**common, "method": "retrain", "test_acc": 0.88, "forget_test_acc": 0.0, "remain_test_acc": 0.97,
                  "mia_loss_lr": 0.9, "mia_svc_efficacy": 1.0, "mia_membership_auc": 0.4, "seconds": 60.0},
                 {**common, "method": "psg", "forget_test_acc": distance, "remain_test_acc": 0.97,
                  "distance_to_retrain": distance, "avg_gap": 0.01, "mia_loss_lr": 0.88, "mia_svc_efficacy": 1.0,
                  "mia_membership_auc": 0.45, "seconds": 5.0, "pct_of_retrain": 8.3, "bn_recal_delta": 0.2,
                  "relearn_excess": 0.0, "relearn_flag": False, "collapsed": False},
                 {**common, "method": "finetune", "forget_test_acc": 0.1, "remain_test_acc": 0.97,
                  "distance_to_retrain": 0.1, "seconds": 30.0, "pct_of_retrain": 50.0}]
    return rows


def test_mean_sd_formatting():
    assert bench_table.fmt_mean_sd([0.4, 0.5, 0.6]) == "0.500 ± 0.100"
    assert bench_table.fmt_mean_sd([0.25]) == "0.250"
    assert bench_table.fmt_mean_sd([]) == "–"
    assert bench_table.fmt_mean_sd([0.01, 0.02], digits=1, scale=100) == "1.5 ± 0.7"


def test_csv_round_trip_keeps_numbers_flags_and_blanks(tmp_path):
    rows = _rows(HELD_OUT, "digits_class7")
    path = tmp_path / "part.csv"
    bench_table.write_rows(path, rows)
    back = bench_table.read_rows(path)
    assert len(back) == len(rows)
    psg = next(r for r in back if r["method"] == "psg")
    assert psg["seed"] == 0 and psg["distance_to_retrain"] == pytest.approx(0.02)
    assert psg["relearn_flag"] is False and psg["error"] is None and psg["criteria"] == 'label == "7"'
    assert bench_table.read_rows(tmp_path / "absent.csv") == []


def test_coverage_names_missing_scenarios_seeds_and_failures():
    rows = _rows(HELD_OUT, "digits_class7") + _rows(HELD_OUT, "glyphs_scanner")
    rows = [r for r in rows if not (r["scenario"] == "glyphs_scanner" and r["method"] == "finetune")]
    rows = [r for r in rows if not (r["method"] == "finetune" and r["seed"] > 0)]
    rows.append({**rows[0], "method": "salun", "seed": 0, "error": "diverged"})
    grouped = {name: {} for name in ("digits_class7", "glyphs_scanner")}
    for row in rows:
        grouped[row["scenario"]].setdefault(row["method"], []).append(row)
    text = "\n".join(bench_table.coverage_lines(grouped))
    assert "- psg: seeds 0, 1, 2 on every scenario" in text
    assert "- finetune: seed 0 on digits_class7; not run on glyphs_scanner" in text
    assert "- salun: no finished run; not run on digits_class7, glyphs_scanner; failed: digits_class7 seed 0" in text
    assert "not run at all: boundary_shrink, random_labels, scrub, l1_sparse" in text


def test_markdown_shows_both_parts_and_names_a_missing_one(tmp_path):
    only_held_out = bench_table.assemble_markdown({HELD_OUT: _rows(HELD_OUT, "digits_class7")})
    assert "## Scenario split" in only_held_out and "no per-scenario tuning" in only_held_out
    tuning_section = only_held_out.split("## Tuning part")[1].split("## Held-out part")[0]
    assert "Not run yet" in tuning_section and "--part tuning" in tuning_section
    held_out = only_held_out.split("## Held-out part")[1]
    assert "0.030 ± 0.010" in held_out  # PSG's distance over three seeds
    assert "0.980 | 0.880" in held_out  # original's and retrain's test accuracy side by side
    assert "**miss**" in held_out and "**missed by" in held_out  # BN recalibration moved F by 0.2
    assert "**1 of 1**" in held_out  # within 0.01 of the best other method, in a sixth of its time
    both = bench_table.assemble_markdown({TUNING: _rows(TUNING, "digits_class"),
                                          HELD_OUT: _rows(HELD_OUT, "digits_class7", (0.3, 0.3, 0.3))})
    assert "Not run yet" not in both and "**0 of 1**" in both.split("## Held-out part")[1]
    coverage = held_out.split("**Coverage.**")[1].split("###")[0]
    assert "- psg: seeds 0, 1, 2 on every scenario" in coverage and "- finetune: seeds 0, 1, 2" in coverage
    assert "not run at all: boundary_shrink" in coverage and "salun" in coverage
    bench_table.write_rows(bench_table.part_csv_path(tmp_path, TUNING), _rows(TUNING, "digits_class"))
    text = bench_table.write_markdown(tmp_path).read_text()
    assert "### digits_class:" in text and "--part held-out" in text.split("## Held-out part")[1]


def test_run_scenario_reuses_its_cached_retrain(tmp_path):
    from unlearn_core.bench import Prepared, run_scenario
    from unlearn_core.bench_scenarios import Scenario
    from unlearn_core.training import TrainConfig

    data, split = tiny_digits(), tiny_split()
    scenario = Scenario("tiny_class3", data.name, 'label == "3"', HELD_OUT, "test")
    prepared = Prepared(scenario, data, split, tiny_model(), TrainConfig(epochs=1, batch_size=32, device="cpu"))
    first = run_scenario(prepared, ["scrub"], [0], "cpu", tmp_path, log=lambda _: None)
    again = run_scenario(prepared, [], [0], "cpu", tmp_path, log=lambda _: None)
    assert [r["method"] for r in first] == ["original (no unlearning)", "retrain", "scrub"]
    assert [r["retrain_reused"] for r in (first[1], again[1])] == [False, True]
    assert first[1]["seconds"] == pytest.approx(again[1]["seconds"], rel=1e-3)  # the recorded time
    assert first[1]["forget_test_acc"] == again[1]["forget_test_acc"]
    row = first[2]
    assert {"bn_recal_delta", "relearn_forget_test_acc", "avg_gap", "cost_pct_of_retrain"} <= set(row)
    assert len(list((tmp_path / "retrains").glob("*.safetensors"))) == 1


def test_cli_runs_the_chosen_part_with_its_seeds_and_threads(monkeypatch, capsys):
    from unlearn_core import bench
    from unlearn_core.cli import main

    seen = {}

    def fake(scenarios, methods, seeds, device, out_dir, cache_dir, log):
        seen.update(names=[s.name for s in scenarios], methods=methods, seeds=seeds, threads=torch.get_num_threads())
        return []

    monkeypatch.setattr(bench, "run_benchmark", fake)
    threads = torch.get_num_threads()
    try:
        assert main(["bench", "--part", "held-out", "--methods", "psg", "--seeds", "0", "1", "--threads", "1",
                     "--out-dir", ""]) == 0
    finally:
        torch.set_num_threads(threads)
    assert seen == {"names": [s.name for s in scenarios_of(HELD_OUT)], "methods": ["psg"], "seeds": [0, 1],
                    "threads": 1}
