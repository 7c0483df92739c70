"""Score a model on the four index sets with every metric (original, retrain, unlearned alike)."""

from __future__ import annotations

import dataclasses

import numpy as np

from unlearn_core.data.criteria import ForgetSplit
from unlearn_core.data.imageset import ImageSet
from unlearn_core.metrics import SplitOutputs, avg_gap, distance_to_retrain, is_collapsed, metric_block
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.inference import predict_logits


#: Most kept images scored per set (``D_r`` and ``T_r`` each); above it a seeded sample is scored.
#: Why: scoring every image of a 100,000-image set twice (original and unlearned model) was most
#: of a large run's time; 10,000 images put an accuracy's standard error under 0.005. The forget
#: sets (``D_f``, ``T_f``) are always scored whole. Every built-in set is smaller (no change there).
SCORED_REMAIN_MAX = 10_000


def scored_split(split: ForgetSplit, seed: int = 0) -> ForgetSplit:
    """The images a model is scored on: ``D_f`` and ``T_f`` whole, ``D_r`` and ``T_r`` capped at
    :data:`SCORED_REMAIN_MAX` each by a sample seeded with ``seed`` (sorted; the same for every
    model of a run, so their blocks compare, and for every rank under torchrun).

    ``split`` itself when nothing is over the cap (so calling it twice changes nothing).
    """
    cap = SCORED_REMAIN_MAX
    if len(split.remain_train) <= cap and len(split.remain_test) <= cap:
        return split
    rng = np.random.default_rng(seed)

    def sample(indices: np.ndarray) -> np.ndarray:
        return indices if len(indices) <= cap else np.sort(rng.choice(indices, cap, replace=False))

    return dataclasses.replace(split, remain_train=sample(np.asarray(split.remain_train)),
                               remain_test=sample(np.asarray(split.remain_test)))


def split_outputs(model: Classifier, data: ImageSet, split: ForgetSplit,
                  sharded: bool = False) -> SplitOutputs | None:
    """Eval-mode logits of ``model`` on ``D_f, D_r, T_f, T_r`` (one batched pass over each).

    ``sharded`` (every rank of a torchrun run calls it): each rank scores every ``size``-th
    image of each set and rank 0 gathers the logits back in order; other ranks get ``None``.
    """
    from unlearn_core.distributed import SINGLE, world

    w = world() if sharded else SINGLE
    labels = data.labels.numpy()
    parts = {}
    for key in ("forget_train", "remain_train", "forget_test", "remain_test"):
        indices = np.asarray(getattr(split, key))
        mine = indices[w.rank :: w.size] if w.active else indices
        logits = predict_logits(model, data.images, mine)
        if w.active:
            gathered = w.gather(logits)
            if gathered is None:
                continue
            logits = np.empty((len(indices), logits.shape[1]), dtype=logits.dtype)
            for rank, part in enumerate(gathered):
                logits[rank :: w.size] = part
        parts[f"{key}_logits"] = logits
        parts[f"{key}_labels"] = labels[indices]
    return SplitOutputs(**parts) if w.is_main else None


def evaluate_model(model: Classifier, data: ImageSet, split: ForgetSplit, seed: int = 0) -> dict:
    """The standard metric block (see :data:`unlearn_core.metrics.METRIC_DEFINITIONS`), on
    :func:`scored_split` (the block's ``n_*`` say how many images were scored)."""
    return metric_block(split_outputs(model, data, scored_split(split, seed)), data.num_classes, seed=seed)


def compare_blocks(original: dict, unlearned: dict, retrain: dict | None = None) -> dict:
    """Comparison figures: the collapse flag and, with a retrain reference, the distances to it
    (of the unlearned and of the original model) and SalUn's Avg. Gap (``None`` if undefined)."""
    summary = {"collapsed": bool(is_collapsed(original, unlearned))}
    if retrain is not None:
        summary["distance_to_retrain"] = distance_to_retrain(
            unlearned["remain_test_acc"], unlearned["forget_test_acc"],
            retrain["remain_test_acc"], retrain["forget_test_acc"],
        )
        summary["original_distance_to_retrain"] = distance_to_retrain(
            original["remain_test_acc"], original["forget_test_acc"],
            retrain["remain_test_acc"], retrain["forget_test_acc"],
        )
        gap = avg_gap(unlearned, retrain)
        summary["avg_gap"] = None if np.isnan(gap) else gap
    return summary
