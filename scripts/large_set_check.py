"""A set larger than the process should hold, end to end: generate, split, unlearn, score, page.

Why: issue 12 asks that 100,000 images at 64 px (1.2 GB of pixels) stored on disk go through the
split, a short unlearning run with its metrics, and the forget-set page, with each process's
resident memory under 2 GB. Each stage runs in its own process (the figure is that process's
peak RSS, ``ru_maxrss``, which counts every page the process ever held; the page cache of the
pixel file does not count, which is the point of reading it with ``preadv``).

    python scripts/large_set_check.py all DIR [--n 100000] [--size 64]   # the three, one JSON line
    python scripts/large_set_check.py generate|run|page DIR               # one stage

``run`` is the library workflow (:func:`unlearn_core.runs.workflows.unlearn`): an untrained
``small_cnn`` saved as the original (the check needs a model, not a good one; the fingerprint
is the import's, not recomputed), then gradient ascent on a tiny forget set (``batch == 7 and site == "A"``, about 25
training images), then the standard metrics of the original and the unlearned model on the four
sets (the forget sets whole, the kept sets as the workflow samples them: ``evaluate.scored_split``). ``page`` renders the Forget set page under
Streamlit's AppTest, applies the same criteria as text and reads the counts. The figures for
docs/performance.md come from this script; tests/test_disk_images.py runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRITERIA = 'batch == 7 and site == "A"'


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(folder: Path, n: int, size: int) -> dict:
    from unlearn_core.data.image_dir import generate_image_dir

    started = time.perf_counter()
    generate_image_dir(folder, n=n, size=size)
    pixels = (folder / "pixels.u8").stat().st_size
    return {"generate_seconds": time.perf_counter() - started, "pixel_bytes": pixels, "generate_peak_mib": _peak_mib()}


def run(folder: Path) -> dict:
    import torch

    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.data.criteria import ForgetCriteria, split_sets
    from unlearn_core.models.weights import save_model
    from unlearn_core.runs.requests import UnlearnRequest
    from unlearn_core.runs.workflows import unlearn
    from unlearn_core.models.architectures import build_model, spec_for

    torch.manual_seed(0)
    times = {}
    started = time.perf_counter()
    data = load_dataset(str(folder))
    times["load_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    split = split_sets(data, ForgetCriteria.parse(CRITERIA))
    times["split_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    original = build_model(spec_for(data, "small_cnn"))  # untrained: this check is about memory, not accuracy
    weights = folder.parent / "original.safetensors"
    save_model(original, weights, {"data_fingerprint": data.fingerprint(), "dataset": data.name})
    times["original_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    summary = unlearn(UnlearnRequest(dataset=str(folder), forget=CRITERIA, method="gradient_ascent",
                                     overrides={"epochs": 2}, weights=str(weights), device="cpu"))
    times["unlearn_workflow_seconds"] = time.perf_counter() - started
    blocks = summary["result"]["blocks"]
    return {**times, "sizes": {k: int(v) for k, v in split.sizes().items()},
            "metrics": {name: {k: blocks[name][k] for k in ("forget_train_acc", "remain_test_acc")}
                        for name in ("original", "unlearned")},
            "run_peak_mib": _peak_mib()}


def page(folder: Path) -> dict:
    from streamlit.testing.v1 import AppTest

    started = time.perf_counter()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["us.dataset"] = str(folder)
    at.session_state["us.dataset_label"] = folder.name
    at.switch_page("pages/2_forget_set.py")
    at.run()
    first = time.perf_counter() - started
    errors = [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
    started = time.perf_counter()
    at.text_input(key="fs_text").set_value(CRITERIA)
    at.button(key="fs_apply_text").click().run()
    errors += [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]
    counts = {m.label: m.value for m in at.metric}
    return {"page_first_seconds": first, "page_apply_seconds": time.perf_counter() - started,
            "page_criteria": at.session_state["us.criteria"] if "us.criteria" in at.session_state else None,
            "page_counts": counts, "page_errors": errors, "page_peak_mib": _peak_mib()}


def _stage(stage: str, folder: Path, extra: list[str] | None = None, timeout: float = 900) -> dict:
    """One stage in a fresh process (its own peak RSS); its last stdout line is its JSON."""
    done = subprocess.run([sys.executable, __file__, stage, str(folder), *(extra or [])], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("all", "generate", "run", "page"))
    parser.add_argument("folder", type=Path, help="where the set is (or is written: a new folder)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.stage == "generate":
        result = generate(args.folder, args.n, args.size)
    elif args.stage == "run":
        result = run(args.folder)
    elif args.stage == "page":
        result = page(args.folder)
    else:
        started = time.perf_counter()
        result = _stage("generate", args.folder, ["--n", str(args.n), "--size", str(args.size)])
        result.update(_stage("run", args.folder))
        result.update(_stage("page", args.folder))
        result["total_seconds"] = time.perf_counter() - started
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
