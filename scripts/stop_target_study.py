"""Compare the retrain-free stop-target estimators against real retrains (the table in docs/method.md).

Usage::

    python scripts/stop_target_study.py --part tuning|held-out [--cache-dir DIR] [--seed 0]
        [--scenarios NAME ...] [--cached-only]

For each benchmark scenario (``unlearn_core.bench_scenarios``): the original model and the
retrain reference exactly as ``bench`` makes them (the same on-disk cache, so after a bench run
nothing is retrained), then every estimator of ``unlearn_core.stop_target`` against the
retrain's accuracy on ``D_f``. Prints a Markdown table and each estimator's mean absolute error.
The default estimator is chosen on the tuning part only; the held-out part is reported as is.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from unlearn_core.bench import cached_retrain, prepare
from unlearn_core.bench_data import default_cache_dir
from unlearn_core.bench_scenarios import scenarios_of
from unlearn_core.models.inference import predict_logits
from unlearn_core.stop_target import ESTIMATORS, estimate_all


def accuracy(model, data, indices: np.ndarray) -> float:
    logits = predict_logits(model, data.images, indices, device=torch.device("cpu"))
    return float((logits.argmax(1) == data.labels.numpy()[indices]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="tuning", choices=["tuning", "held-out", "all"])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="*", help="only these scenarios")
    parser.add_argument("--cached-only", action="store_true", help="skip scenarios whose retrain is not cached")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = args.cache_dir or default_cache_dir()
    names = list(ESTIMATORS)
    print("| scenario (part) | original on D_f | retrain on D_f | " + " | ".join(names) + " | seconds |")
    print("|---|---|---|" + "---|" * len(names) + "---|")
    errors: dict[str, list[float]] = {name: [] for name in names}
    for scenario in scenarios_of(args.part):
        if args.scenarios and scenario.name not in args.scenarios:
            continue
        prepared = prepare(scenario, "cpu", cache, log=lambda _: None)
        try:
            retrained, _, _ = cached_retrain(prepared, cache, train_missing=not args.cached_only)
        except LookupError:
            print(f"| {scenario.name} ({scenario.part}) | not measured: no cached retrain yet |")
            continue
        started = time.perf_counter()
        values = estimate_all(prepared.original, prepared.data, prepared.split, "cpu", seed=args.seed)
        seconds = time.perf_counter() - started
        truth = accuracy(retrained, prepared.data, prepared.split.forget_train)
        for name in names:
            errors[name].append(abs(values[name] - truth))
        print(f"| {scenario.name} ({scenario.part}) | {values['original']:.3f} | {truth:.3f} | "
              + " | ".join(f"{values[name]:.3f}" for name in names) + f" | {seconds:.0f} |", flush=True)
    print("| mean absolute error | | | " + " | ".join(f"{np.mean(errors[n]):.3f}" for n in names) + " | |")


if __name__ == "__main__":
    main()
