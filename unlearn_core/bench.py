"""Benchmark: every registered method against retraining on every built-in demo scenario.

A script, not a test: it prints and writes figures (Markdown + CSV, with the machine they ran
on) so speed and quality targets are checked on real runs rather than asserted in unit tests.
The retrain reference of each scenario is trained once, in the same process and on the same
device as the methods, so "time as % of retrain" compares like with like.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from unlearn_core.assets import load_demo_model
from unlearn_core.data.builtin import SCENARIOS, load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.device import resolve_device
from unlearn_core.evaluate import compare_blocks, evaluate_model
from unlearn_core.methods.base import UnlearnData, get_method, list_methods
from unlearn_core.pipeline import retrain_recipe, train_retrain

COLUMNS = ("scenario", "method", "forget_test_acc", "remain_test_acc", "forget_train_acc", "mia_loss_lr",
           "mia_svc_efficacy", "mia_membership_auc", "distance_to_retrain", "seconds", "pct_of_retrain",
           "cost_pct_of_retrain", "collapsed", "flip_rate")


@dataclass
class BenchRow:
    scenario: str
    method: str
    metrics: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "method": self.method, **self.metrics}


def scenario_overrides(method_name: str, scenario: str) -> dict[str, Any]:
    """Per-scenario settings a method ships with (PSG's tuned presets), else none."""
    module = __import__(f"unlearn_core.methods.{method_name}", fromlist=["SCENARIO_PRESETS"]) \
        if method_name in ("psg",) else None
    presets = getattr(module, "SCENARIO_PRESETS", {}) if module else {}
    return dict(presets.get(scenario, {}))


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""
    return (f"{platform.system()} {platform.machine()} ({cpu}), {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}{gpu}")


def run_scenario(scenario: str, methods: Sequence[str], device: str = "auto", seed: int = 0,
                 log: Callable[[str], None] = print) -> list[BenchRow]:
    """Retrain once, then run each method from the shipped model; one row per model."""
    dataset, criteria_text = SCENARIOS[scenario]
    data = load_builtin(dataset)
    split = split_sets(data, ForgetCriteria.parse(criteria_text))
    original = load_demo_model(data)
    recipe = retrain_recipe(data, original, seed, device)
    retrained, retrain_seconds = train_retrain(data, split, recipe)
    retrain_images = retrain_cost(recipe.epochs, len(split.remain_train))
    retrain_block = evaluate_model(retrained, data, split, seed=seed)
    original_block = evaluate_model(original, data, split, seed=seed)
    log(f"[{scenario}] retrain {retrain_seconds:.1f} s: F {retrain_block['forget_test_acc']:.3f} "
        f"R {retrain_block['remain_test_acc']:.3f}")
    retrain_diagnostics = {"forward_images": retrain_images // 2, "backward_images": retrain_images // 2}
    rows = [_row(scenario, "original (no unlearning)", original_block, original_block, retrain_block, None,
                 retrain_seconds, {}, retrain_images),
            _row(scenario, "retrain", retrain_block, original_block, retrain_block, retrain_seconds,
                 retrain_seconds, retrain_diagnostics, retrain_images)]
    for name in methods:
        if name == "retrain":
            continue
        method = get_method(name)
        config = method.make_config({**scenario_overrides(name, scenario), "seed": seed, "device": device})
        try:
            result = method.run(original, UnlearnData(data, split), config)
        except Exception as error:  # noqa: BLE001 - a failing method is a row, not a crashed benchmark
            log(f"[{scenario}] {name} failed: {error}")
            rows.append(BenchRow(scenario, name, {"error": str(error)}))
            continue
        block = evaluate_model(result.model, data, split, seed=seed)
        row = _row(scenario, name, block, original_block, retrain_block, result.seconds, retrain_seconds,
                   result.diagnostics, retrain_images)
        log(f"[{scenario}] {name}: F {block['forget_test_acc']:.3f} R {block['remain_test_acc']:.3f} "
            f"distance {row.metrics['distance_to_retrain']:.3f} in {result.seconds:.1f} s")
        rows.append(row)
    return rows


def retrain_cost(epochs: int, remain_images: int) -> int:
    """Images through forward plus backward of the retrain: every remain image, each epoch, both ways."""
    return 2 * epochs * remain_images


def cost_pct(diagnostics: dict[str, Any], retrain_images: int) -> float | None:
    """A method's images through forward plus backward as a percentage of the retrain's.

    Why beside the time: counts do not depend on the machine or its load. Each backward
    counts as one image like a forward (it costs about two), so the figure is a lower bound
    for methods heavy in backward passes and comparable across methods all the same.
    """
    if "forward_images" not in diagnostics or not retrain_images:
        return None
    return 100.0 * (diagnostics["forward_images"] + diagnostics["backward_images"]) / retrain_images


def _row(scenario, name, block, original_block, retrain_block, seconds, retrain_seconds, diagnostics,
         retrain_images) -> BenchRow:
    comparison = compare_blocks(original_block, block, retrain_block)
    return BenchRow(scenario, name, {
        "forget_test_acc": block["forget_test_acc"], "remain_test_acc": block["remain_test_acc"],
        "forget_train_acc": block["forget_train_acc"], "mia_loss_lr": block["mia_loss_lr"],
        "mia_svc_efficacy": block["mia_svc_efficacy"], "mia_membership_auc": block["mia_membership_auc"],
        "distance_to_retrain": comparison["distance_to_retrain"], "seconds": seconds,
        "pct_of_retrain": None if seconds is None else 100.0 * seconds / retrain_seconds,
        "cost_pct_of_retrain": cost_pct(diagnostics, retrain_images),
        "collapsed": comparison["collapsed"], "flip_rate": diagnostics.get("flip_rate"),
    })


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "**collapsed**" if value else "ok"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def to_markdown(rows: list[BenchRow], machine: str, seconds_total: float, pending: Sequence[str] = ()) -> str:
    lines = [
        "# Benchmark: unlearning methods against retraining",
        "",
        f"Generated by `python -m unlearn_core bench` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{seconds_total / 60:.1f} min in all.",
        f"Machine: {machine}.",
        "",
        "Every method starts from the shipped demo model; the retrain reference is trained once per scenario "
        "with the original model's recipe on the remain set, on the same machine in the same process. "
        "F / R = accuracy on the forget / remain part of the test set; distance = "
        "√((R − R_retrain)² + (F − F_retrain)²); `seconds` = wall clock of the whole run (start to unlearned "
        "model, live monitoring included); `pct_of_retrain` = that time as a percentage of retraining time; "
        "`cost_pct_of_retrain` = images through forward plus backward as a percentage of the retrain's (the "
        "same on any machine); `collapsed` flags remain test accuracy more than 10 points below the original. "
        "MIA columns are defined in `unlearn_core/metrics.py` (`METRIC_DEFINITIONS`).",
        "",
    ]
    if pending:
        lines += [f"**Incomplete:** not yet run: {', '.join(pending)} "
                  f"(`python -m unlearn_core bench --scenarios {' '.join(pending)}`).", ""]
    for scenario in dict.fromkeys(r.scenario for r in rows):
        dataset, criteria = SCENARIOS[scenario]
        lines += [f"## {scenario}: `{criteria}` on {dataset}", "",
                  "| " + " | ".join(COLUMNS[1:]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
        for row in (r for r in rows if r.scenario == scenario):
            if "error" in row.metrics:
                lines.append(f"| {row.method} | failed: {row.metrics['error']} |")
                continue
            lines.append("| " + " | ".join([row.method] + [_fmt(row.metrics.get(c)) for c in COLUMNS[2:]]) + " |")
        lines.append("")
    return "\n".join(lines)


def to_csv(rows: list[BenchRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, "error"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.as_dict())
    return buffer.getvalue()


def run_benchmark(scenarios: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                  device: str = "auto", seed: int = 0, out_dir: str | Path | None = "docs",
                  log: Callable[[str], None] = print) -> list[BenchRow]:
    """Run the whole table and write ``benchmark.md`` / ``benchmark.csv`` into ``out_dir``."""
    scenarios = list(scenarios or SCENARIOS)
    methods = list(methods or [m.name for m in list_methods()])
    started = time.perf_counter()
    rows: list[BenchRow] = []
    machine = machine_description(resolve_device(device))
    for scenario in scenarios:
        rows += run_scenario(scenario, methods, device=device, seed=seed, log=log)
        if out_dir is not None:  # after every scenario, so a long run leaves usable partial tables
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            pending = scenarios[scenarios.index(scenario) + 1:]
            (out / "benchmark.md").write_text(to_markdown(rows, machine, time.perf_counter() - started, pending))
            (out / "benchmark.csv").write_text(to_csv(rows))
    return rows
