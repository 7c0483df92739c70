"""Compare the retrain-free stop-target estimators against real retrains (figures for docs/method.md).

Usage: python scripts/stop_target_study.py [--part tuning|held-out] [--cache DIR]

For each scenario: the shipped demo model, the split, a retrain on D_r with the original's recipe
(cached on disk by data fingerprint + criteria + recipe), then every estimator of
``unlearn_core.stop_target`` against the retrain's accuracy on D_f (train) and on T_f (test).
Prints a Markdown table. The estimator is chosen on the tuning part only.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch

from unlearn_core.assets import load_demo_model
from unlearn_core.data.builtin import load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.models.weights import load_model, save_model
from unlearn_core.pipeline import retrain_recipe, train_retrain
from unlearn_core.stop_target import _accuracy, estimate_all

PARTS = {
    "tuning": [("digits_class", "digits", 'label == "3"'),
               ("digits_random10", "digits", "fraction(0.1, seed=0)"),
               ("oculoplastic_vpf", "oculoplastic", 'vpf_mm >= 12 and label == "thyroid eye disease"'),
               ("fundus_device", "fundus", None)],
    "held-out": [("digits_class7", "digits", 'label == "7"'),
                 ("digits_random5", "digits", "fraction(0.05, seed=1)"),
                 ("fundus_glaucoma_2016", "fundus", 'exam_year <= 2016 and label == "glaucoma"')],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", default="tuning", choices=list(PARTS))
    parser.add_argument("--cache", default="/tmp/us_retrains")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print("| scenario | original D_f | retrain D_f | retrain T_f | test_match | remain_probe | remain_knn | proxy_retrain | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, dataset, criteria in PARTS[args.part]:
        data = load_builtin(dataset)
        from unlearn_core.data.builtin import BUILTIN_SETS
        criteria = criteria or BUILTIN_SETS[dataset].demo_forget
        split = split_sets(data, ForgetCriteria.parse(criteria))
        original = load_demo_model(data)
        recipe = retrain_recipe(data, original, 0, "cpu")
        key = hashlib.sha256(f"{data.fingerprint()}|{criteria}|{recipe.recipe_key()}".encode()).hexdigest()[:16]
        path = cache / f"{name}-{key}.safetensors"
        if path.exists():
            retrained = load_model(path)
        else:
            retrained, _ = train_retrain(data, split, recipe)
            save_model(retrained, path)
        started = time.perf_counter()
        values = estimate_all(original, data, split, "cpu", seed=0)
        seconds = time.perf_counter() - started
        device = torch.device("cpu")
        r_train = _accuracy(retrained, data, split.forget_train, device)
        r_test = _accuracy(retrained, data, split.forget_test, device)
        print(f"| {name} | {values['original']:.3f} | {r_train:.3f} | {r_test:.3f} | {values['test_match']:.3f} | "
              f"{values['remain_probe']:.3f} | {values['remain_knn']:.3f} | {values['proxy_retrain']:.3f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
