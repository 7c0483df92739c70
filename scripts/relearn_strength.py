"""How firmly does a PSG setting's forgetting hold? Relearning at several strengths, tuning part only.

The benchmark's relearning check (20 SGD steps on ``D_r``, a tenth of the recipe's learning rate)
flags nothing on the tuning scenarios, so it cannot choose between settings there. This script
runs PSG with the given settings and relearns each unlearned model (and the retrain) at the
benchmark's strength and at 2-4 times it, from several relearning seeds, on the forget *test*
images: the signal docs/method.md ("A stronger hold check…") chose ``hold_check_steps`` with.

Run: ``python scripts/relearn_strength.py --scenarios digits_class digits_class5 --seeds 0 1 2
[--set hold_check_steps=40 …] [--out results.jsonl]``. Held-out scenarios are refused: a
setting is chosen on the tuning part and only then confirmed with ``bench --part held-out``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from unlearn_core.bench import Prepared, cached_retrain, default_cache_dir, prepare
from unlearn_core.bench_scenarios import SCENARIOS, TUNING
from unlearn_core.forgetting_checks import RelearnConfig, relearning_check
from unlearn_core.methods import get_method
from unlearn_core.methods.base import UnlearnData
from unlearn_core.models.architectures import Classifier
from unlearn_core.runs.requests import parse_set_arguments
from unlearn_core.training import accuracy_on

#: Relearning strengths: the benchmark's, then twice (steps or learning rate) and four times as long.
STRENGTHS = {"20 steps": RelearnConfig(), "40 steps": RelearnConfig(steps=40),
             "20 steps, 2x lr": RelearnConfig(lr_scale=0.2), "80 steps": RelearnConfig(steps=80)}
RELEARN_SEEDS = (0, 1, 2)


def measure(prepared: Prepared, retrained: Classifier, seed: int, settings: dict) -> dict:
    """One PSG run and its mean forget test accuracy after relearning at every strength."""
    data, split = prepared.data, prepared.split
    recipe = prepared.relearn_args
    method = get_method("psg")
    started = time.perf_counter()
    result = method.run(prepared.original, UnlearnData(data, split),
                        method.make_config({**settings, "seed": seed, "device": "cpu"}))
    row = {"scenario": prepared.scenario.name, "seed": seed, "settings": settings,
           "seconds": time.perf_counter() - started, "passes": result.diagnostics.get("passes"),
           "forget_test_acc": accuracy_on(result.model, data, split.forget_test),
           "remain_test_acc": accuracy_on(result.model, data, split.remain_test)}
    for name, strength in STRENGTHS.items():
        checks = [relearning_check(result.model, retrained, data, split, *recipe, config=replace(strength, seed=s))
                  for s in RELEARN_SEEDS]
        row[name] = sum(c.unlearned_after for c in checks) / len(checks)
        row[f"{name} (retrain)"] = sum(c.retrain_after for c in checks) / len(checks)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="append one JSON line per run")
    args = parser.parse_args()
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        if SCENARIOS[name].part != TUNING:
            parser.error(f"{name} is held out: choose settings on the tuning part only")
    torch.set_num_threads(1)
    settings = parse_set_arguments(args.settings)
    cache_dir = args.cache_dir or default_cache_dir()
    for scenario in args.scenarios:  # data, original and retrain once per scenario, not per seed
        prepared = prepare(SCENARIOS[scenario], device="cpu", cache_dir=cache_dir, log=lambda _: None)
        retrained, _, _ = cached_retrain(prepared, cache_dir)
        for seed in args.seeds:
            row = measure(prepared, retrained, seed, settings)
            print(f"{scenario} seed {seed}: {row['passes']} passes, F {row['forget_test_acc']:.3f} "
                  f"R {row['remain_test_acc']:.3f}; relearned F " + ", ".join(
                      f"{name} {row[name]:.3f} ({row[name + ' (retrain)']:.3f})" for name in STRENGTHS), flush=True)
            if args.out:
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
