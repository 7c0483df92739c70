"""EU-k: re-initialize the last k blocks and train them from scratch on the remain set."""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_core.methods._loops import reinitialize
from unlearn_core.methods.base import option, register
from unlearn_core.methods.cf_k import CFk, CFkConfig
from unlearn_core.models.architectures import Classifier


@dataclass
class EUkConfig(CFkConfig):
    k: int = option(2, "How many blocks to re-initialize and retrain, counted from the output over blocks with "
                    "weights (the head is one): 2 = the last feature block and the head.", min=1, max=64)


def reinitialize_blocks(model: Classifier, blocks: list[str]) -> int:
    """Fresh random weights (and cleared BatchNorm statistics) for ``blocks``; returns modules reset.

    Why really reset: a block that keeps its trained weights still carries what it learned from
    ``D_f`` (the reference code "reset" them by copying the same model onto itself).
    """
    return sum(reinitialize(model.get_submodule(name)) for name in blocks)


@register
class EUk(CFk):
    """Exact-unlearning-k: re-initialize the last ``k`` blocks, then train them on ``D_r`` with the rest frozen.

    If the frozen lower blocks are taken as a fixed feature extractor, retraining the top from
    scratch on ``D_r`` is exact unlearning for that part: nothing of ``D_f`` survives in it.
    Same training as CF-k (10 epochs, plain SGD lr 0.01). Goel et al., 2022.
    """

    name = "eu_k"
    title = "EU-k (retrain last k blocks)"
    summary = "Reset the last few layers to random weights and retrain them on the remain set only."
    config_class = EUkConfig

    def prepare(self, model: Classifier, blocks: list[str]) -> dict:
        return {"reinitialized_modules": reinitialize_blocks(model, blocks)}
