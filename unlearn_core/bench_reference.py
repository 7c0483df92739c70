"""``bench --vs-reference``: our ``psg_reference`` preset against a naive copy of the published loop.

Why a naive loop in the library: "faster than the reference" needs the reference on the same
model, data, seed, device and process. :func:`reference_loop` is written from the description
of what the published code does per step (``docs/method.md``, "What the published loop does per
step"), not from our implementation, and keeps its costs on purpose:

1. the next forget batch and the next remain batch (drawn even when φ = 0, then unused);
2. one attacker forward and ``loss.backward()`` with the batch-mean cross entropy, so the
   attacker's parameter gradients are computed too;
3. ``x_adv = x + ε·sign(∇x + γ·z)``, clipped to the ε-ball and [0, 1], rounded to 1/255;
4. a second attacker forward on ``x_adv``; the new labels are its argmax, unfiltered;
5. a learner forward and backward in train mode on the clean forget images, one SGD step;
6. no evaluation inside the loop.

Two deliberate alignments, so that the two loops can be compared label for label: the forget
batches come in the same order (:func:`~unlearn_core.methods.psg.balanced_batches` from the
same seed) and the noise ``z`` is drawn per batch from a generator seeded like ours. The
second attacker forward runs under ``torch.no_grad`` (the cheaper reading of the description),
so the baseline is, if anything, slightly flattered.

The timing is end to end: from the original model to the unlearned one, everything included
(copies, monitoring), repeats interleaved so both loops see the same machine load.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_core.assets import load_demo_model
from unlearn_core.data.builtin import SCENARIOS, load_builtin
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.device import resolve_device
from unlearn_core.methods.base import UnlearnData, get_method, load_pixels, make_generator
from unlearn_core.methods.psg import PSGConfig, balanced_batches
from unlearn_core.models.architectures import Classifier
from unlearn_core.training import iterate_batches


@dataclass
class ReferenceRun:
    """What the naive loop produced: the learner, ``[passes, n_forget]`` new labels, its time."""

    model: Classifier
    new_labels: torch.Tensor
    seconds: float


def _cycle(indices: np.ndarray, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """An endlessly cycling shuffled loader (the published code's ``inf_generator``)."""
    while True:
        yield from iterate_batches(indices, batch_size, generator)


def reference_loop(model: Classifier, data: UnlearnData, config: PSGConfig) -> ReferenceRun:
    """The published PSG loop, naive on purpose (see the module docstring); nothing is cached."""
    started = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    attacker = copy.deepcopy(model).to(device).eval()   # frozen by convention only: requires_grad stays on
    learner = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(learner.parameters(), lr=config.lr, momentum=config.momentum)
    forget = data.forget_indices
    order = make_generator(config.seed)
    noise = torch.Generator(device=device)
    noise.manual_seed(config.seed)
    remain_stream = _cycle(data.remain_indices, config.remain_batch_size, make_generator(config.seed + 1))
    labels_per_pass = torch.full((config.epochs, len(forget)), -1, dtype=torch.long)
    for epoch in range(config.epochs):
        for positions in balanced_batches(np.arange(len(forget)), config.batch_size, order):
            x, y = load_pixels(data, forget[positions], device)
            load_pixels(data, next(remain_stream), device)           # drawn even when φ = 0, unused
            x_in = x.clone().requires_grad_(True)
            attacker.zero_grad()
            F.cross_entropy(attacker(x_in), y).backward()          # batch mean; parameter grads too
            z = torch.randn(x.shape, generator=noise, device=device)
            x_adv = x + config.eps * torch.sign(x_in.grad + config.gamma * z)
            x_adv = torch.min(torch.max(x_adv, x - config.eps), x + config.eps).clamp(0, 1)
            x_adv = torch.round(x_adv * 255) / 255
            with torch.no_grad():
                new_labels = attacker(x_adv).argmax(1)
            labels_per_pass[epoch, torch.as_tensor(positions)] = new_labels.cpu()
            loss = F.cross_entropy(learner(x), new_labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    learner.eval()
    return ReferenceRun(learner, labels_per_pass, time.perf_counter() - started)


@dataclass
class VsReference:
    """Interleaved timings of both loops and how often they chose the same new label."""

    scenario: str
    device: str
    forget_images: int
    repeats: int
    reference_seconds: list[float] = field(default_factory=list)
    ours_seconds: list[float] = field(default_factory=list)
    agreement: float = float("nan")
    reference_flip_rate: float = float("nan")
    ours_flip_rate: float = float("nan")
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """Median reference time over median time of ours (> 1: ours is faster)."""
        return statistics.median(self.reference_seconds) / statistics.median(self.ours_seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "device": self.device, "forget_images": self.forget_images,
                "repeats": self.repeats, "reference_seconds": self.reference_seconds,
                "ours_seconds": self.ours_seconds, "speedup": self.speedup, "agreement": self.agreement,
                "reference_flip_rate": self.reference_flip_rate, "ours_flip_rate": self.ours_flip_rate,
                "diagnostics": self.diagnostics}


def label_agreement(reference: torch.Tensor, ours: torch.Tensor) -> float:
    """Share of (pass, image) pairs where both loops chose the same new label."""
    if reference.shape != ours.shape:
        raise ValueError(f"label tables differ in shape: {tuple(reference.shape)} vs {tuple(ours.shape)}")
    return float((reference == ours).float().mean())


def run_vs_reference(scenario: str = "digits_class", device: str = "cpu", repeats: int = 3, seed: int = 0,
                     log: Callable[[str], None] = print) -> VsReference:
    """Time ``reference_loop`` and ``get_method("psg").run`` with ``psg_reference``, interleaved.

    Both start from the shipped demo model of the scenario's data set. The order of the two
    alternates between repeats so a machine that slows down or speeds up favours neither.
    """
    dataset, criteria = SCENARIOS[scenario]
    imageset = load_builtin(dataset)
    data = UnlearnData(imageset, split_sets(imageset, ForgetCriteria.parse(criteria)))
    original = load_demo_model(imageset)
    method = get_method("psg")
    config = method.make_config({"device": device, "seed": seed}, preset="psg_reference")
    method.record_labels = True  # type: ignore[attr-defined]  (a label table for the agreement; bench only)
    report = VsReference(scenario, str(resolve_device(device)), len(data.forget_indices), repeats)
    for repeat in range(repeats):
        for which in (("reference", "ours") if repeat % 2 == 0 else ("ours", "reference")):
            if which == "reference":
                ran = reference_loop(original, data, config)
                report.reference_seconds.append(ran.seconds)
                reference_labels = ran.new_labels
            else:
                result = method.run(original, data, config)
                report.ours_seconds.append(result.seconds)
                ours_labels = result.diagnostics.pop("new_labels_per_pass")
                report.diagnostics = result.diagnostics
            seconds = (report.reference_seconds if which == "reference" else report.ours_seconds)[-1]
            log(f"repeat {repeat + 1}/{repeats} {which}: {seconds:.2f} s")
    true_labels = imageset.labels[torch.as_tensor(data.forget_indices)]
    report.agreement = label_agreement(reference_labels, ours_labels)
    report.reference_flip_rate = float((reference_labels != true_labels).float().mean())
    report.ours_flip_rate = float((ours_labels != true_labels).float().mean())
    return report


def format_vs_reference(report: VsReference) -> str:
    """The figures of :func:`run_vs_reference` as a few readable lines."""
    cost = report.diagnostics
    work = cost.get("forward_images", 0) + cost.get("backward_images", 0)
    return "\n".join([
        f"{report.scenario} on {report.device}: {report.forget_images} forget images, {report.repeats} repeats "
        f"interleaved, {torch.get_num_threads()} threads",
        f"reference loop: median {statistics.median(report.reference_seconds):.2f} s "
        f"({', '.join(f'{s:.2f}' for s in report.reference_seconds)})",
        f"psg_reference:  median {statistics.median(report.ours_seconds):.2f} s "
        f"({', '.join(f'{s:.2f}' for s in report.ours_seconds)}), end to end",
        f"speed-up: {report.speedup:.2f}x",
        f"new-label agreement (same noise): {report.agreement:.1%}; flip rate reference {report.reference_flip_rate:.1%}, "
        f"ours {report.ours_flip_rate:.1%}",
        f"ours: {cost.get('forward_images', 0)} forward + {cost.get('backward_images', 0)} backward images; live monitor "
        f"{cost.get('monitor_images', 0)} images ({cost.get('monitor_images', 0) / max(work, 1):.1%} of them), "
        f"{cost.get('monitor_seconds', 0.0):.2f} s of the last run",
    ])
