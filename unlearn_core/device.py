"""Choosing where tensors live: CUDA, then Apple MPS, else CPU; the user can override."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from unlearn_core.errors import UserError

if TYPE_CHECKING:  # torch is imported inside the functions so the command line starts fast
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: Set to ``0`` to keep display forwards (t-SNE features) in float32 on a CPU with AMX, e.g. to
#: compare maps made on two machines.
CPU_BF16_ENV = "UNLEARN_STUDIO_CPU_BF16"


def resolve_device(name: str | None = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``.

    Why a helper: nothing in the library may assume a GPU, and asking for one that is absent
    must say so plainly instead of failing deep inside a kernel.
    """
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("A CUDA GPU was requested but none is available; use --device cpu or auto.")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("Apple MPS was requested but is not available; use --device cpu or auto.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def describe_devices() -> dict[str, object]:
    """What accelerators this machine has, for the dashboard's device picker."""
    import torch

    info: dict[str, object] = {"cuda": torch.cuda.is_available(), "mps": False, "cuda_name": None}
    if info["cuda"]:
        info["cuda_name"] = torch.cuda.get_device_name(0)
    mps = getattr(torch.backends, "mps", None)
    info["mps"] = bool(mps and mps.is_available())
    return info


def use_amp(device: torch.device, enabled: bool = True) -> bool:
    """Mixed precision only where it helps and is safe: CUDA."""
    return enabled and device.type == "cuda"


def channels_last_pays(wanted: bool, device: torch.device) -> bool:
    """Whether to use the channels_last memory layout: asked for, on CUDA or the CPU (not MPS).

    Why on the CPU too: oneDNN's kernels for that layout ran the small_cnn's forward 1.5× and its
    training step 1.2× faster on a 2-core AVX2 CPU, most of it in max-pooling, which is slow in
    the default layout (docs/performance.md). MPS supports the layout only in part.
    """
    return wanted and device.type in ("cuda", "cpu")


#: torch's CPU feature queries for native bf16 arithmetic, and what each unit is called.
_BF16_UNITS = {"_is_amx_tile_supported": "AMX", "_is_avx512_bf16_supported": "AVX-512 BF16"}


def cpu_bf16_unit() -> str | None:
    """The CPU's native bfloat16 unit ("AMX", "AVX-512 BF16"), or None (none, or switched off).

    Why ask: oneDNN uses those units for convolutions. In bf16 the 64-px demo models' forwards
    ran 2.9× faster than in float32 on 2 threads with AMX, and 1.4× (digits 1.6×) with AVX-512
    BF16 on an AMD EPYC (docs/performance.md); a CPU without either emulates bf16, slower than
    float32. ``UNLEARN_STUDIO_CPU_BF16=0`` turns it off.
    """
    import torch

    if os.environ.get(CPU_BF16_ENV, "").strip() == "0":
        return None
    for query, unit in _BF16_UNITS.items():
        probe = getattr(getattr(torch, "cpu", None), query, None)
        try:
            if probe is not None and probe():
                return unit
        except RuntimeError:  # a torch build without the CPU feature query
            continue
    return None


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bfloat16 natively (:func:`cpu_bf16_unit`)."""
    return cpu_bf16_unit() is not None


def display_bf16(device: torch.device) -> bool:
    """Whether forwards whose output is only drawn (never scored) run in bf16 on this CPU.

    Why only those: metrics, stop targets and new labels must not depend on which CPU a run
    happened on; a map's point positions may (features move by about 0.2-0.6 %, see
    :func:`unlearn_core.embedding._exact_near_ties` for how the drawn classes stay exact).
    CUDA is not included: there every forward already runs in bf16 under ``amp``
    (:func:`use_amp`), the metrics' forwards too.
    """
    return device.type == "cpu" and cpu_bf16_native()


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast context on CUDA when ``enabled``; a no-op elsewhere."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp(device, enabled))
