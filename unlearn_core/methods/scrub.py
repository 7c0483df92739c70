"""SCRUB: a student moves away from a frozen teacher on the forget set and stays close on the rest."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn_core.methods._loops import Batch, Pass, make_sgd, train_passes
from unlearn_core.methods.base import (
    PassConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register,
)
from unlearn_core.models.architectures import Classifier


@dataclass
class ScrubConfig(PassConfig):
    epochs: int = option(3, "SCRUB epochs; each has a min-pass over the remain set (reference sgda_epochs: 3).",
                         min=1, max=500)
    msteps: int = option(2, "How many of the first epochs also start with a max-pass over the forget set "
                         "(reference: 2).", min=0, max=500)
    lr: float = option(5e-4, "SGD learning rate, constant (reference: 5e-4).", min=1e-7, max=10.0)
    momentum: float = option(0.9, "SGD momentum (reference: 0.9).", min=0.0, max=0.999)
    weight_decay: float = option(5e-4, "L2 weight decay (reference: 5e-4).", min=0.0, max=0.1)
    alpha: float = option(0.001, "Weight α of the KL(teacher‖student) term on remain batches (reference: 0.001).",
                          min=0.0, max=100.0)
    gamma: float = option(0.99, "Weight γ of the cross entropy on remain batches (reference: 0.99).",
                          min=0.0, max=100.0)
    temperature: float = option(4.0, "Distillation temperature T of the softmaxes in the KL terms (reference: 4).",
                                min=0.1, max=100.0)
    batch_size: int = option(128, "Remain images per min-step (reference: 128).", min=1, max=4096)
    forget_batch_size: int = option(32, "Forget images per max-step (reference: 32).", min=1, max=4096)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) of the temperature-softened outputs, × T², averaged over the batch.

    The knowledge-distillation loss of Hinton et al. as in the reference (RepDistiller ``DistillKL``).
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="sum") * temperature ** 2 / student_logits.shape[0]


def frozen_teacher(model: Classifier) -> Classifier:
    """A deep copy of the original model that cannot change: eval mode, no gradients.

    Eval mode keeps its BatchNorm statistics fixed; ``requires_grad=False`` keeps the optimizer
    (built on the student only) and autograd away from its weights.
    """
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@register
class Scrub(UnlearnMethod):
    """SCRUB: alternate max-steps on ``D_f`` and min-steps on ``D_r`` against a frozen teacher.

    The teacher is the original model, frozen. The student (the model being unlearned) takes,
    in each of the first ``msteps`` epochs, a pass over ``D_f`` *maximizing*
    ``KL(teacher‖student)`` (moving away from what the original said about the forget images),
    then in every epoch a pass over ``D_r`` minimizing ``γ·CE + α·KL(teacher‖student)`` (staying
    faithful elsewhere). Kurmanji et al., NeurIPS 2023 (meghdadk/SCRUB: SGD momentum 0.9,
    weight decay 5e-4, lr 5e-4, α 0.001, γ 0.99, T 4, msteps 2, 3 epochs, batches 128/32).
    """

    name = "scrub"
    title = "SCRUB"
    summary = ("A copy of the model learns to disagree with the original on the forget images while agreeing "
               "with it on everything else.")
    citation = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023."
    config_class = ScrubConfig

    def unlearn(self, model: Classifier, data: UnlearnData, config: ScrubConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        teacher = frozen_teacher(model)
        student = model
        temperature = config.temperature

        def teacher_logits(pixels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return teacher(pixels)

        def max_step(net: Classifier, batch: Batch) -> torch.Tensor:
            return -distill_kl(net(batch.pixels), teacher_logits(batch.pixels), temperature)

        def min_step(net: Classifier, batch: Batch) -> torch.Tensor:
            logits = net(batch.pixels)
            return (config.gamma * F.cross_entropy(logits, batch.labels)
                    + config.alpha * distill_kl(logits, teacher_logits(batch.pixels), temperature))

        def plan(epoch: int) -> list[Pass]:
            maximize = [Pass("max", "forget", max_step, batch_size=config.forget_batch_size)]
            return (maximize if epoch <= config.msteps else []) + [Pass("min", "remain", min_step)]

        optimizer = make_sgd(student.parameters(), config.lr, config.momentum, config.weight_decay)
        history = train_passes(student, data, config, device, hooks, epochs=config.epochs, optimizer=optimizer,
                               plan=plan, where="SCRUB")
        return UnlearnResult(model=student, history=history,
                             diagnostics={"max_epochs": min(config.msteps, config.epochs)})
