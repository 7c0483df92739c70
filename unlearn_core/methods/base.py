"""One interface for every unlearning method (PSG, Boundary Shrink, baselines, retrain).

Like captum's attribution classes, every method has the same call shape, so the dashboard,
the command line and the benchmark can swap them freely::

    method = get_method("psg")
    config = method.make_config({"epochs": 5})            # validated, typed dataclass
    result = method.run(model, data, config, on_progress=print, should_stop=lambda: False)
    result.model, result.history, result.seconds, result.diagnostics

Configs are dataclasses whose fields carry ``help``, ``min``, ``max`` and ``choices`` in their
``metadata``: the dashboard turns them into widgets with help text and the run registry
stores and reloads them exactly (``dataclasses.asdict`` / ``make_config``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from unlearn_core.data.criteria import ForgetSplit
from unlearn_core.data.imageset import ImageSet
from unlearn_core.device import autocast, channels_last_pays, resolve_device
from unlearn_core.distributed import world
from unlearn_core.errors import UserError
from unlearn_core.methods.boundary_search import eval_mode
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.inference import to_pixels
from unlearn_core.progress import Cancelled, ProgressCallback, ProgressEvent, StopCheck
from unlearn_core.stop_target_cache import StopTargetCache
from unlearn_core.training import iterate_batches


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           choices: tuple | None = None) -> Any:
    """A config field with the metadata the dashboard and validation need.

    ``min``/``max`` are inclusive bounds; ``choices`` lists the allowed values of a text field.
    """
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices})


@dataclass
class CommonConfig:
    """Settings every method shares (device and speed switches, seed)."""

    seed: int = option(0, "Random seed: batch order, noise and sampling; same seed, same result.", min=0)
    device: str = option("auto", "Where to compute: auto (GPU if present), cpu, cuda or mps.",
                         choices=("auto", "cpu", "cuda", "mps"))
    amp: bool = option(True, "Mixed precision (bf16) on CUDA GPUs; ignored on CPU.")
    channels_last: bool = option(True, "channels_last memory layout for images and model (faster convolutions on GPUs, "
                                 "and on the CPU: docs/performance.md).")
    batch_size: int = option(64, "Images per optimization step.", min=1, max=4096)


#: When a run that goes in passes stops (see :mod:`unlearn_core.methods.stopping`).
STOP_RULES = ("auto", "target", "passes")


@dataclass
class PassConfig(CommonConfig):
    """Settings of every method that runs in passes: whether to stop before the last pass."""

    stop_at: str = option("passes", "When to stop: 'passes' = after every pass (the method as published); 'auto' "
                          "= once forget accuracy is near what a model that never saw these images would have, "
                          "estimated without retraining (docs/method.md); 'target' = at target_forget_acc. "
                          "Checked after each pass.", choices=STOP_RULES)
    target_forget_acc: float = option(0.0, "With stop_at='target': stop once the accuracy on a fresh forget batch is "
                                      "at or below this value.", min=0.0, max=1.0)


@dataclass(frozen=True)
class FieldInfo:
    """A config field described for widgets, ``methods --json`` and error messages."""

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class UnlearnData:
    """What a method may see: the data, the four index sets, and nothing else.

    ``stop_targets``: where automatic stop targets already made for this model and forget set
    are kept (the workspace's), so a run does not repeat the estimate its page made; ``None``
    (the benchmark, tests) always makes a new one.
    """

    imageset: ImageSet
    split: ForgetSplit
    stop_targets: StopTargetCache | None = None

    @property
    def forget_indices(self) -> np.ndarray:
        return self.split.forget_train

    @property
    def remain_indices(self) -> np.ndarray:
        return self.split.remain_train


@dataclass
class UnlearnResult:
    """The unlearned model and how it got there.

    Attributes:
        model: the unlearned classifier (eval mode, on the device it ran on).
        history: one dict per epoch/pass (e.g. ``loss``, ``flip_rate``; ``forget_acc`` and
            ``remain_acc`` from the small live-monitor sample when its budget allowed a look).
        seconds: wall-clock time of :meth:`UnlearnMethod.run`, from the call to the unlearned
            model, everything included (copies, live monitoring): what the user waits for.
        diagnostics: method-specific facts (flip rate, new-label distribution, stopped early...)
            plus the device-independent cost of :class:`CostMeter` (``forward_images``,
            ``backward_images``, ``monitor_images``) and ``monitor_seconds``.
    """

    model: Classifier
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    diagnostics: dict[str, Any] = field(default_factory=dict)


class UnlearnMethod(ABC):
    """Base class: subclasses set the class attributes and implement :meth:`unlearn`."""

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]          # one plain sentence for the dashboard
    citation: ClassVar[str] = ""
    config_class: ClassVar[type]
    #: preset name → field overrides (e.g. ``boundary_shrink`` for PSG).
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: whether the method needs the original model (retrain does not use it).
    uses_original: ClassVar[bool] = True

    # --- configs ------------------------------------------------------------------------
    @classmethod
    def fields(cls) -> list[FieldInfo]:
        return config_fields(cls.config_class)

    @classmethod
    def make_config(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None):
        """A validated config: defaults, then ``preset``, then ``overrides`` (strings are parsed)."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise UserError(f"Unknown preset {preset!r} for {cls.name}; presets: {', '.join(cls.presets) or 'none'}.")
            values.update(cls.presets[preset])
        values.update(overrides or {})
        return build_config(cls.config_class, values, method_name=cls.name)

    # --- running ------------------------------------------------------------------------
    def run(
        self,
        model: Classifier,
        data: UnlearnData,
        config: Any,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> UnlearnResult:
        """Unlearn on a deep copy of ``model`` (the original is never modified).

        Raises :class:`~unlearn_core.progress.Cancelled` promptly when ``should_stop()`` turns
        true, and :class:`UserError` when the loss becomes NaN/inf (the original is kept).

        ``result.seconds`` is the wall clock of this whole call; the images each model forwarded
        and back-propagated are counted into ``result.diagnostics`` (see :class:`CostMeter`).
        """
        started = time.perf_counter()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} expects a {self.config_class.__name__}, got {type(config).__name__}")
        validate_config(config, self.name)
        check_split(data)
        working = copy.deepcopy(model)
        device = resolve_device(world().device_name(config.device))
        working.to(device)
        if channels_last_pays(config.channels_last, device):
            working.to(memory_format=torch.channels_last)
        torch.manual_seed(config.seed)
        cost = CostMeter()
        hooks = RunHooks(on_progress, should_stop, self.name, cost)
        cost.attach(working)  # deep copies made by the method (frozen θ0, teachers) inherit the count
        try:
            result = self.unlearn(working, data, config, device, hooks)
        finally:
            cost.detach(working)
        cost.detach(result.model)
        counts = cost.as_dict()
        if world().active:  # every rank did a share of the work: count it all
            counts = {key: value for key, value in zip(counts, world().sum(
                torch.tensor([float(v) for v in counts.values()], dtype=torch.float64)).tolist())}
            counts = {key: value if key == "monitor_seconds" else int(value) for key, value in counts.items()}
        for key, value in counts.items():  # retrain reports its own fresh model's images
            result.diagnostics[key] = result.diagnostics.get(key, 0) + value
        result.model.eval()
        result.seconds = time.perf_counter() - started
        return result

    @abstractmethod
    def unlearn(self, model: Classifier, data: UnlearnData, config: Any, device: torch.device,
                hooks: "RunHooks") -> UnlearnResult:
        """Modify ``model`` (already a copy, on ``device``) and return the result."""


# --- registry --------------------------------------------------------------------------
METHODS: dict[str, type[UnlearnMethod]] = {}


def register(cls: type[UnlearnMethod]) -> type[UnlearnMethod]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise RuntimeError(f"two methods named {cls.name!r}")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> UnlearnMethod:
    from unlearn_core import methods as _  # noqa: F401  (imports every method module)

    if name not in METHODS:
        raise UserError(f"Unknown method {name!r}; available: {', '.join(sorted(METHODS))}.")
    return METHODS[name]()


def list_methods() -> list[type[UnlearnMethod]]:
    from unlearn_core import methods as _  # noqa: F401

    return list(METHODS.values())


# --- config helpers --------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def config_fields(config_class: type) -> list[FieldInfo]:
    hints = typing.get_type_hints(config_class)
    infos = []
    for f in dataclasses.fields(config_class):
        meta = f.metadata
        infos.append(FieldInfo(
            name=f.name, type=_type_name(hints[f.name]), default=f.default, help=meta.get("help", ""),
            min=meta.get("min"), max=meta.get("max"), choices=meta.get("choices"),
        ))
    return infos


def _coerce(value: Any, tp: Any, name: str, method_name: str) -> Any:
    """Parse text from ``--set key=value`` or widgets into the field's type."""
    try:
        if tp is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{method_name}: {name} must be a {_type_name(tp)}, got {value!r}.") from None
    return value


def build_config(config_class: type, values: Mapping[str, Any], method_name: str = "method"):
    """Construct and validate a config; unknown keys are listed with the valid ones."""
    hints = typing.get_type_hints(config_class)
    valid = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UserError(f"{method_name} has no setting {', '.join(unknown)}; valid settings: {', '.join(valid)}.")
    coerced = {k: _coerce(v, hints[k], k, method_name) for k, v in values.items()}
    config = config_class(**coerced)
    validate_config(config, method_name)
    return config


def validate_config(config: Any, method_name: str = "method") -> None:
    """Check every field against its ``min``/``max``/``choices``; name the bad one."""
    for info in config_fields(type(config)):
        value = getattr(config, info.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{method_name}: {info.name} must be a finite number, got {value}.")
        if info.min is not None and value < info.min:
            raise UserError(f"{method_name}: {info.name}={value} is below its minimum {info.min}. {info.help}")
        if info.max is not None and value > info.max:
            raise UserError(f"{method_name}: {info.name}={value} is above its maximum {info.max}. {info.help}")
        if info.choices is not None and value not in info.choices:
            raise UserError(f"{method_name}: {info.name}={value!r} is not one of {', '.join(map(str, info.choices))}.")


def check_split(data: UnlearnData) -> None:
    """Refuse an empty forget set, or a forget set that is the whole training data."""
    if len(data.forget_indices) == 0:
        raise UserError("The forget set is empty: widen the forget criteria so it selects some training images.")
    if len(data.remain_indices) == 0:
        raise UserError("The forget set is the whole training data: nothing would remain to learn from.")


# --- helpers shared by method implementations -------------------------------------------
class CostMeter:
    """Images through each model's forward and backward during a run: cost beside time.

    Why counts: wall time depends on the machine and its load; images forwarded and
    back-propagated compare methods (and the retrain) on any machine. :meth:`attach` puts a
    forward hook on the model; ``copy.deepcopy`` copies hooks, so frozen copies made from it
    (θ0 for the boundary search, SCRUB's teacher) are counted too. A forward whose output
    needs a gradient registers a tensor hook that counts its images once the backward (or
    ``torch.autograd.grad``) passes through it. Forwards of the live monitor are counted apart
    (``monitor_images``) while :attr:`paused`.
    """

    def __init__(self) -> None:
        self.forward_images = 0
        self.backward_images = 0
        self.monitor_images = 0
        self.monitor_seconds = 0.0
        self.paused = False
        meter = self

        def count(module: nn.Module, args: tuple, output: Any) -> None:
            if meter.paused or not args or not isinstance(args[0], torch.Tensor):
                return
            images = int(args[0].shape[0])
            meter.forward_images += images
            if isinstance(output, torch.Tensor) and output.requires_grad:
                output.register_hook(lambda grad: meter._backward(images))

        self._hook = count  # a plain function: deepcopy shares it (and so this meter)

    def _backward(self, images: int) -> None:
        self.backward_images += images

    def attach(self, model: nn.Module) -> None:
        model.register_forward_hook(self._hook)

    def detach(self, model: nn.Module) -> None:
        """Remove this meter's hook from ``model`` (also one it inherited through a copy)."""
        for key, hook in list(model._forward_hooks.items()):
            if hook is self._hook:
                del model._forward_hooks[key]

    @property
    def work_images(self) -> int:
        """Forward plus backward images of the method's own work (the monitor's budget base)."""
        return self.forward_images + self.backward_images

    def as_dict(self) -> dict[str, float]:
        return {"forward_images": self.forward_images, "backward_images": self.backward_images,
                "monitor_images": self.monitor_images, "monitor_seconds": self.monitor_seconds}


class RunHooks:
    """Progress, cancellation, cost counting and live metrics for a method's loop, in one place."""

    def __init__(self, on_progress: ProgressCallback | None, should_stop: StopCheck | None, phase: str,
                 cost: CostMeter | None = None) -> None:
        self._on_progress = on_progress
        self._should_stop = should_stop
        self.phase = phase
        self.cost = cost or CostMeter()
        self._started = time.perf_counter()

    @property
    def listening(self) -> bool:
        """Whether anyone receives progress (if not, a loop need not compute its live numbers)."""
        return self._on_progress is not None

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` once a stop was asked for; under torchrun every rank calls this
        at the same step and all stop together when any of them (rank 0: the user) was asked."""
        stop = self._should_stop is not None and self._should_stop()
        if world().active:
            stop = world().any(stop)
        if stop:
            raise Cancelled(f"{self.phase} cancelled")

    def announce(self, phase: str, message: str) -> None:
        """Say that a step without progress of its own begins (``stop_target``); the method's
        next :meth:`progress` event returns to its own phase."""
        if self._on_progress is not None:
            self._on_progress(ProgressEvent(phase=phase, message=message))

    def progress(self, *, epoch: int, epochs: int, step: int, steps: int, message: str = "",
                 metrics: Mapping[str, float] | None = None) -> None:
        if self._on_progress is None:
            return
        done = ((epoch - 1) + step / max(steps, 1)) / max(epochs, 1)
        elapsed = time.perf_counter() - self._started
        eta = elapsed / done * (1 - done) if done > 0 else None
        self._on_progress(ProgressEvent(
            phase=self.phase, epoch=epoch, epochs=epochs, step=step, steps=steps, fraction=done,
            eta_seconds=eta, message=message or f"{self.phase}: epoch {epoch}/{epochs}",
            metrics=dict(metrics or {}),
        ))


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Stop the run when the loss is NaN/inf; the caller's original model stays untouched."""
    if not torch.isfinite(loss).all():
        raise UserError(
            f"The loss became {loss.item()} during {where}; the run was stopped and the original model kept. "
            "Lower the learning rate or the loss weights."
        )


#: Shuffled batches of ``indices`` for one pass (last partial batch kept): the training loop's.
index_batches = iterate_batches


def cycle_batches(indices: np.ndarray, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """Endless shuffled batches (e.g. remain batches drawn alongside forget batches)."""
    while True:
        yield from index_batches(indices, batch_size, generator)


def make_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def load_pixels(data: UnlearnData, batch: np.ndarray, device: torch.device,
                channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Float pixels in [0, 1] and labels of ``batch`` on ``device``."""
    return on_device(data, data.imageset.images[batch], batch, device, channels_last)


def on_device(data: UnlearnData, raw: torch.Tensor, batch: np.ndarray, device: torch.device,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_pixels` for uint8 pixels already read (``raw = images[batch]``, e.g. by
    :func:`unlearn_core.data.disk_images.pixel_batches` in DataLoader workers)."""
    pixels = to_pixels(raw, device)
    if channels_last_pays(channels_last, device):
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    return pixels, data.imageset.labels[batch].to(device)


def set_batchnorm_frozen(model: nn.Module, frozen: bool) -> None:
    """Eval-mode BatchNorm (running statistics fixed) and no dropout when ``frozen``.

    Why: forget-only batches shift BN statistics; the spec recommends frozen statistics when
    no remain batches are mixed in (φ = 0).
    """
    model.train()
    if frozen:
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
                module.eval()


#: Most the live monitor may cost, as a share of the images the method forwarded and
#: back-propagated so far. Counted in images, a monitor forward (eval mode, no graph) is
#: cheaper than the average work image (a backward costs about two forwards), so its share of
#: the wall time stays below this; ``bench`` reports the measured ``monitor_seconds``.
MONITOR_SHARE = 0.05
#: Images per side (forget, remain) of one look: at most, and at least (else wait for budget).
MONITOR_MAX_PER_SIDE = 64
MONITOR_MIN_PER_SIDE = 4


class LiveMonitor:
    """Forget/remain accuracy for live curves on a small fixed sample, within a cost budget.

    Why a budget: on a small forget set, scoring 512 + 512 images after every pass cost as much
    as the unlearning itself. A look takes up to :data:`MONITOR_MAX_PER_SIDE` images from each
    side, in a fixed seeded order (so successive points are comparable), and only as many as
    :data:`MONITOR_SHARE` of the work done so far pays for; too little budget means no look
    this pass (no ``forget_acc`` in that history record). The full evaluation runs once, after
    the run, in the caller.
    """

    def __init__(self, data: UnlearnData, device: torch.device, cost: CostMeter, seed: int = 0,
                 share: float = MONITOR_SHARE) -> None:
        rng = np.random.default_rng(seed)
        self.samples = {key: rng.permutation(indices)[:MONITOR_MAX_PER_SIDE] for key, indices in
                        (("forget_acc", data.forget_indices), ("remain_acc", data.remain_indices))}
        self.data = data
        self.device = device
        self.cost = cost
        self.share = share

    def per_side(self) -> int:
        """Images per side the budget pays for now: a power of two in [min, max], or 0 (no look).

        Powers of two, so a look has one of a few batch shapes: oneDNN builds a kernel per new
        shape, and looks of ever-changing sizes cost several times their share on the CPU.
        """
        budget = self.share * self.cost.work_images - self.cost.monitor_images
        affordable = min(MONITOR_MAX_PER_SIDE, int(budget // 2))
        return 1 << (affordable.bit_length() - 1) if affordable >= MONITOR_MIN_PER_SIDE else 0

    def measure(self, model: Classifier) -> dict[str, float]:
        """``{"forget_acc", "remain_acc"}`` on the sample, or ``{}`` when the budget is not there yet."""
        count = self.per_side()
        if count == 0:
            return {}
        started = time.perf_counter()
        parts = {key: sample[:count] for key, sample in self.samples.items()}
        pixels, labels = load_pixels(self.data, np.concatenate(list(parts.values())), self.device)
        self.cost.paused = True
        try:
            with torch.inference_mode(), eval_mode(model):  # one forward for both sides
                hits = model(pixels).argmax(1) == labels
        finally:
            self.cost.paused = False
        result, start = {}, 0
        for key, batch in parts.items():
            result[key] = float(hits[start : start + len(batch)].float().mean())
            start += len(batch)
        self.cost.monitor_images += len(hits)
        self.cost.monitor_seconds += time.perf_counter() - started
        return result


def amp_context(device: torch.device, config: Any):
    return autocast(device, getattr(config, "amp", True))
