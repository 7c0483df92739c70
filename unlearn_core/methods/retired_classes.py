"""A class with no kept training image: the unlearned model stops naming it, as a retrain never learned to.

When a request forgets every training image of a class (a whole class, or criteria that happen
to cover one), a model retrained without ``D_f`` never saw a single example of it: training only
ever pushes that class's output down, and fine-tuning on the kept images cannot raise it again
(the retrain's forget test accuracy stays at 0 under any amount of it). PSG instead moves the
forget images' own features across a boundary; the class's row of the head still matches the
features the original learned for it. Ordinary fine-tuning on kept images drifts the features
back, and that row recognizes them again: on the held-out digit 7 two of 36 test sevens came back
after 20 steps, and on the tuning classes 80 steps brought back 3 % on average.

:func:`retire_classes` does what the retrain's training would have done to that row, once, at the
end of a run: its weights become zero (its logit no longer depends on the image, so no feature
drift can raise it) and its bias the kept images' typical lowest logit (the median, over a sample
of kept images, of each one's smallest logit), so the class is all but never named and fine-tuning
on kept images has almost no gradient to move it with. What the body's features still carry of
the class is untouched: the relearning that matters for privacy (with images of the class) is a
different attack, which a retrain does not resist either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from unlearn_core.models.architectures import Classifier

#: Kept images whose logits set the retired classes' bias (a seeded sample).
BIAS_SAMPLE = 512


def _as_numpy(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)


def classes_without_kept_images(labels: np.ndarray | torch.Tensor, forget: np.ndarray,
                                remain: np.ndarray) -> list[int]:
    """Classes that have training images in ``forget`` and none in ``remain`` (sorted)."""
    labels = _as_numpy(labels)
    return sorted(set(labels[forget].tolist()) - set(labels[remain].tolist()))


def whole_classes_only(labels: np.ndarray | torch.Tensor, forget: np.ndarray, retiring: Sequence[int]) -> bool:
    """Whether every forget image belongs to one of ``retiring`` (found by
    :func:`classes_without_kept_images`): the forget set is whole classes and nothing else."""
    return bool(retiring) and bool(np.isin(_as_numpy(labels)[forget], list(retiring)).all())


def retirement_bias(model: Classifier, kept_pixels: torch.Tensor, classes: Sequence[int]) -> float:
    """The median over ``kept_pixels`` of each image's smallest logit among the classes that stay.

    Why the smallest: a retrain pushes a class it never saw below the others on every image; the
    median keeps one odd image from setting it.
    """
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = model(kept_pixels).float()
    model.train(was_training)
    staying = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
    staying[list(classes)] = False
    return float(logits[:, staying].min(dim=1).values.median())


def retire_classes(model: Classifier, classes: Sequence[int], bias: float) -> None:
    """Zero the head's rows of ``classes`` and set their bias to ``bias`` (in place)."""
    rows = torch.as_tensor(list(classes), dtype=torch.long, device=model.head.weight.device)
    with torch.no_grad():
        model.head.weight[rows] = 0.0
        if model.head.bias is not None:
            model.head.bias[rows] = bias
