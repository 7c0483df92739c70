"""Inner solver of PSG unlearning: find a nearby boundary point and the nearest wrong class.

Perturbed sign gradient (PSG) ascent, after Nahass et al., "Targeted Unlearning Using
Perturbed Sign Gradient Methods With Applications On Medical Images" (arXiv 2505.21872); with
``steps=1, step_size=eps, gamma=0`` it is the FGSM neighbour search of Boundary Shrink (Chen et
al., "Boundary Unlearning", CVPR 2023). See ``docs/method.md``, section "Inner solver".

Like a torchattacks attack, the search is an object holding its hyperparameters, called on a
model and a batch::

    search = PerturbedSignGradient(eps=0.1, steps=5, gamma=0.5)     # the PSG defaults
    result = search(model, pixels, labels)      # BoundaryResult
    result.new_labels, result.flipped, result.x_star

The update, for every sample of the batch at once (one forward and one backward per step)::

    x_{t+1} = Π_{B∞(x, ε) ∩ [0,1]} ( x_t + η · sign( ∇_x CE(f(x_t), y) − λ_t (x_t − x) + γ s_t ξ_t ) )

It ascends ``CE(f(x'), y) − (λ/2)‖x' − x‖²``, so the closeness term *pulls back towards x*
(**fix**: the reference code added it with the wrong sign and mixed normalized and pixel
tensors; our models normalize inside themselves, so everything here is in pixel space).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_core.device import autocast
from unlearn_core.errors import UserError

NOISE_FAMILIES = ("normal", "laplace", "cauchy", "uniform")
NOISE_SCALES = ("raw", "relative", "batch_mean")
LAM_SCHEDULES = ("constant", "inverse", "exp", "linear")
FAILED_FLIP_POLICIES = ("next_best", "skip", "true_label")


@dataclass
class BoundaryResult:
    """What the search found for one batch of ``B`` samples with ``K`` classes.

    Attributes:
        x_star: ``[B, C, H, W]`` float pixels in ``[0, 1]``, within ``eps`` of the input
            (detached, no grad).
        new_labels: ``[B]`` int64 target classes ``ŷ``: ``argmax f(x*)``, or, for a failed flip
            under ``next_best``, the top non-true class of ``f(x*)``. Never the true label for a
            kept sample.
        flipped: ``[B]`` bool, True where ``argmax f(x*) != y`` (the search crossed the boundary).
        probs: ``[B, K]`` float32 softmax of ``f(x*)`` (for diagnostics).
        logits: ``[B, K]`` float32 ``f(x*)`` (soft targets need them for a temperature).
        keep: ``[B]`` bool, False for samples excluded by the ``skip`` policy (failed flips);
            all True under ``next_best``.
        steps_taken: ``[B]`` int64 number of updates each sample received (fewer than
            ``steps`` when early stopping froze it).
    """

    x_star: torch.Tensor
    new_labels: torch.Tensor
    flipped: torch.Tensor
    probs: torch.Tensor
    logits: torch.Tensor
    keep: torch.Tensor
    steps_taken: torch.Tensor

    @property
    def flip_rate(self) -> float:
        """Share of the batch whose label the search flipped (nan for an empty batch)."""
        return float(self.flipped.float().mean()) if len(self.flipped) else float("nan")

    @staticmethod
    def concat(parts: list["BoundaryResult"]) -> "BoundaryResult":
        """Join per-batch results in order (e.g. a search over the whole forget set)."""
        return BoundaryResult(*(torch.cat([getattr(p, name) for p in parts]) for name in (
            "x_star", "new_labels", "flipped", "probs", "logits", "keep", "steps_taken")))


def lam_at(lam: float, schedule: str, t: int, steps: int) -> float:
    """λ_t for the 1-based inner step ``t`` of ``steps``.

    ``constant`` λ; ``inverse`` λ/t; ``exp`` λ·e^{−0.01 t}; ``linear`` λ(1 − (t − 1)/T), so the
    first step always uses λ itself and ``linear`` reaches λ/T at the last step (never 0, which
    would silently drop the term on a one-step search).
    """
    if schedule == "constant":
        return lam
    if schedule == "inverse":
        return lam / t
    if schedule == "exp":
        return lam * math.exp(-0.01 * t)
    if schedule == "linear":
        return lam * (1.0 - (t - 1) / steps)
    raise UserError(f"Unknown λ schedule {schedule!r}; choose one of {', '.join(LAM_SCHEDULES)}.")


def sample_noise(family: str, shape: torch.Size, like: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Standard noise ``ξ`` of ``family`` with the dtype/device of ``like``.

    Drawn on the generator's device (so a seeded CPU generator gives the same noise whatever the
    compute device) and moved to ``like``'s device. Laplace uses the inverse CDF because
    ``torch.distributions`` cannot take a generator.
    """
    device = generator.device if generator is not None else like.device
    if family == "normal":
        noise = torch.randn(shape, generator=generator, device=device)
    elif family == "uniform":
        noise = torch.rand(shape, generator=generator, device=device) * 2 - 1
    elif family == "laplace":
        u = torch.rand(shape, generator=generator, device=device) - 0.5
        noise = -torch.sign(u) * torch.log1p(-2 * u.abs().clamp_max(0.5 - 1e-7))  # inverse CDF
    elif family == "cauchy":
        noise = torch.empty(shape, device=device).cauchy_(generator=generator)
    else:
        raise UserError(f"Unknown noise family {family!r}; choose one of {', '.join(NOISE_FAMILIES)}.")
    return noise.to(device=like.device, dtype=like.dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode and restore each module's own flag afterwards.

    Why per module: the outer loop may run with frozen BatchNorm inside a training-mode model;
    ``model.train(was_training)`` would silently unfreeze it.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


class PerturbedSignGradient:
    """Perturbed sign gradient boundary search (torchattacks-style: configure, then call).

    Nahass et al., arXiv 2505.21872 (PSG); ``steps=1, step_size=eps, gamma=0, lam=0`` is the
    FGSM search of Boundary Shrink, Chen et al., CVPR 2023.

    Defaults are those of the ``psg`` method (ε = 0.1, five steps of ε/4, relative noise γ = 0.5).

    Args:
        eps: radius ε of the L∞ ball around each image, in pixel units (1/255 = one grey level).
        step_size: η per inner step; ``0`` means automatic: ε for a single step (the reference),
            else ε/4 (method.md default).
        steps: inner steps ``T_in``.
        gamma: noise weight γ (0 disables noise).
        noise: noise family of ξ: ``normal``, ``laplace``, ``cauchy`` or ``uniform`` (−1, 1).
        noise_scale: ``raw`` (s_t = 1), ``relative`` (s_t = RMS of each sample's input
            gradient; **fix**: raw gradients are often 1e-4..1e-6, so a raw γ means different
            things per model) or ``batch_mean`` (s_t = B, the batch size: the published code
            takes the gradient of the batch-mean loss, ∇/B, so its raw noise weighs B times
            more; ``sign(∇/B + γξ) = sign(∇ + Bγξ)``; the faithful ``psg_reference`` mode).
        lam: closeness weight λ ≥ 0 (0 disables the pull back towards x). It competes with the
            raw input gradient: ``λ(x_t − x)`` is at most λε per pixel, so λ ≈ g/ε (g a typical
            gradient element, e.g. 1e-3 on the digits model) makes it matter near the ball's edge.
        lam_schedule: ``constant``, ``inverse`` (λ/t), ``exp`` (λ e^{−0.01t}) or ``linear``
            (λ(1 − (t−1)/T)); see :func:`lam_at`.
        early_stop_on_flip: freeze a sample once ``argmax f(x_t) != y`` (it sits just past the
            boundary; further steps would only push it deeper into the wrong class).
        round_to_255: keep iterates on the 1/255 grid of 8-bit images (projected onto the grid
            points inside the ball, so the result is a valid image within ε).
        failed_flip: when the search does not flip a sample (``ŷ == y``): ``next_best`` takes the
            top non-true class of ``f(x*)`` (**fix**: the reference reinforced the forget
            label), ``skip`` marks it ``keep=False`` for exclusion, ``true_label`` keeps
            ``ŷ = argmax f(x*)`` even when that is ``y`` (the published code, unfiltered).
        amp: bf16 autocast on CUDA for the forward/backward (ignored elsewhere).
    """

    def __init__(self, *, eps: float = 0.1, step_size: float = 0.0, steps: int = 5,
                 gamma: float = 0.5, noise: str = "normal", noise_scale: str = "relative",
                 lam: float = 0.0, lam_schedule: str = "constant", early_stop_on_flip: bool = True,
                 round_to_255: bool = False, failed_flip: str = "next_best", amp: bool = False) -> None:
        if not eps >= 0 or not math.isfinite(eps):
            raise UserError(f"eps must be a finite number ≥ 0, got {eps}.")
        if not step_size >= 0 or not math.isfinite(step_size):
            raise UserError(f"step_size must be a finite number ≥ 0 (0 = automatic), got {step_size}.")
        if int(steps) < 1:
            raise UserError(f"steps must be at least 1, got {steps}.")
        if not gamma >= 0 or not lam >= 0:
            raise UserError(f"gamma and lam must be ≥ 0, got gamma={gamma}, lam={lam}.")
        for value, allowed, what in ((noise, NOISE_FAMILIES, "noise"), (noise_scale, NOISE_SCALES, "noise_scale"),
                                     (lam_schedule, LAM_SCHEDULES, "lam_schedule"),
                                     (failed_flip, FAILED_FLIP_POLICIES, "failed_flip")):
            if value not in allowed:
                raise UserError(f"{what}={value!r} is not one of {', '.join(allowed)}.")
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size > 0 else (self.eps if self.steps == 1 else self.eps / 4)
        self.gamma = float(gamma)
        self.noise = noise
        self.noise_scale = noise_scale
        self.lam = float(lam)
        self.lam_schedule = lam_schedule
        self.early_stop_on_flip = bool(early_stop_on_flip)
        self.round_to_255 = bool(round_to_255)
        self.failed_flip = failed_flip
        self.amp = bool(amp)

    def __repr__(self) -> str:
        keys = ("eps", "step_size", "steps", "gamma", "noise", "noise_scale", "lam", "lam_schedule",
                "early_stop_on_flip", "round_to_255", "failed_flip")
        return f"PerturbedSignGradient({', '.join(f'{k}={getattr(self, k)!r}' for k in keys)})"

    # --- one inner step -------------------------------------------------------------------
    def _logits_and_grad(self, model: nn.Module, x: torch.Tensor,
                         labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``f(x)`` and ``∇_x CE(f(x), y)`` per sample (input gradient only).

        ``reduction='sum'`` so each sample's gradient is its own, not divided by the batch size;
        ``torch.autograd.grad`` never writes ``.grad`` of the model's parameters.
        """
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), autocast(x.device, self.amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        return logits.detach().float(), grad.float()

    def _direction(self, grad: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor, t: int,
                   generator: torch.Generator | None, mean_over: int = 1) -> torch.Tensor:
        """``∇ − λ_t (x_t − x) + γ s_t ξ_t`` (before the sign)."""
        direction = grad
        lam_t = lam_at(self.lam, self.lam_schedule, t, self.steps)
        if lam_t != 0:
            direction = direction - lam_t * (x_t - x0)
        if self.gamma != 0:
            xi = sample_noise(self.noise, grad.shape, grad, generator)
            if self.noise_scale == "relative":
                scale = grad.pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (grad.dim() - 1)))
                xi = xi * scale
            elif self.noise_scale == "batch_mean":
                xi = xi * float(mean_over)
            direction = direction + self.gamma * xi
        return direction

    def _project(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Π onto ``B∞(x0, ε) ∩ [0,1]`` (``low``/``high`` are its per-pixel bounds)."""
        if self.round_to_255:
            x = torch.round(x * 255) / 255
        return torch.maximum(torch.minimum(x, high), low)

    def _bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = (x0 - self.eps).clamp(0, 1), (x0 + self.eps).clamp(0, 1)
        if self.round_to_255:  # grid points inside the ball, so rounding never leaves it
            low, high = torch.ceil(low * 255 - 1e-4) / 255, torch.floor(high * 255 + 1e-4) / 255
        return low, high

    # --- the search -----------------------------------------------------------------------
    def start_point(self, model: nn.Module, pixels: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(x_1), ∇_x CE(f(x_1), y))`` at the search's deterministic starting point ``x_1``.

        Why: when the attacked model is frozen (the original θ0), the first step's forward and
        backward are the same in every pass; a caller can compute them once and hand them
        back as ``start`` (the published code recomputes them every pass).
        """
        x0 = pixels.detach().float()
        low, high = self._bounds(x0)
        x = self._project(x0.clone(), low, high) if self.round_to_255 else x0
        with eval_mode(model):
            return self._logits_and_grad(model, x, labels.to(x0.device).long())

    def __call__(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, *,
                 generator: torch.Generator | None = None,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None,
                 mean_over: int | None = None) -> BoundaryResult:
        """Search boundary points for a whole batch.

        Args:
            model: classifier taking float pixels ``[B, C, H, W]`` in ``[0, 1]`` (it normalizes
                itself). Run in eval mode here (each module's mode is restored afterwards); its
                parameters get no ``.grad``.
            pixels: ``[B, C, H, W]`` float in ``[0, 1]``, on the model's device.
            labels: ``[B]`` int64 true classes.
            generator: seeds the noise ξ (None: torch's global RNG).
            start: :meth:`start_point` of these samples from the same, unchanged model (skips
                the first step's forward and backward).
            mean_over: the batch size ``B`` of ``noise_scale='batch_mean'`` (default: the
                number of samples given; a whole-set search passes the training batch size).

        Returns:
            :class:`BoundaryResult` for the batch, in input order.
        """
        if pixels.dim() != 4 or labels.dim() != 1 or len(pixels) != len(labels):
            raise ValueError(f"expected pixels [B,C,H,W] and labels [B], got {tuple(pixels.shape)} and "
                             f"{tuple(labels.shape)}")
        x0 = pixels.detach().float()
        labels = labels.to(x0.device).long()
        low, high = self._bounds(x0)
        x = self._project(x0.clone(), low, high) if self.round_to_255 else x0.clone()
        batch = len(x0)
        active = torch.ones(batch, dtype=torch.bool, device=x0.device)
        steps_taken = torch.zeros(batch, dtype=torch.long, device=x0.device)
        num_classes = None
        final_logits: torch.Tensor | None = None
        with eval_mode(model):
            for t in range(1, self.steps + 1):
                idx = active.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                x_t, x0_t = x[idx], x0[idx]
                if t == 1 and start is not None:  # every sample is active at t = 1
                    logits, grad = start
                else:
                    logits, grad = self._logits_and_grad(model, x_t, labels[idx])
                if final_logits is None:
                    num_classes = logits.shape[1]
                    final_logits = torch.empty(batch, num_classes, device=x0.device)
                final_logits[idx] = logits
                if self.early_stop_on_flip:
                    crossed = logits.argmax(1) != labels[idx]
                    if crossed.any():  # frozen where they are: just past the boundary
                        active[idx[crossed]] = False
                        keep_going = ~crossed
                        idx, x_t, x0_t, grad = idx[keep_going], x_t[keep_going], x0_t[keep_going], grad[keep_going]
                        if len(idx) == 0:
                            break
                direction = self._direction(grad, x_t, x0_t, t, generator, mean_over or batch)
                x[idx] = self._project(x_t + self.step_size * direction.sign(), low[idx], high[idx])
                steps_taken[idx] += 1
            # The last update moved the still-active samples: score them where they ended up.
            idx = active.nonzero().squeeze(1)
            if len(idx):
                with torch.inference_mode(), autocast(x0.device, self.amp):
                    final_logits[idx] = model(x[idx]).float()
        return self._labels(x, final_logits, labels, steps_taken)

    def _labels(self, x_star: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
                steps_taken: torch.Tensor) -> BoundaryResult:
        """``ŷ`` from ``f(x*)`` with the failed-flip policy applied."""
        probs = logits.softmax(1)
        predicted = logits.argmax(1)
        flipped = predicted != labels
        keep = torch.ones_like(flipped)
        if self.failed_flip == "next_best":
            masked = logits.scatter(1, labels.view(-1, 1), float("-inf"))
            new_labels = torch.where(flipped, predicted, masked.argmax(1))
        elif self.failed_flip == "skip":
            new_labels = predicted
            keep = flipped.clone()
        else:  # true_label: the published code's unfiltered argmax
            new_labels = predicted
        return BoundaryResult(x_star=x_star.detach(), new_labels=new_labels, flipped=flipped,
                              probs=probs.detach(), logits=logits.detach(), keep=keep, steps_taken=steps_taken)

    def search_one_by_one(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, *,
                          generator: torch.Generator | None = None) -> BoundaryResult:
        """Reference implementation: the same search, one sample at a time.

        Only for tests and the speed benchmark (it shows what batching buys); results equal the
        batched call when ``gamma == 0`` (eval-mode models treat samples independently).
        """
        return BoundaryResult.concat([
            self(model, pixels[i : i + 1], labels[i : i + 1], generator=generator) for i in range(len(pixels))
        ])
