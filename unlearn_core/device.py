"""Choosing where tensors live: CUDA, then Apple MPS, else CPU; the user can override."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn_core.errors import UserError

if TYPE_CHECKING:  # torch is imported inside the functions so the command line starts fast
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


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


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast context on CUDA when ``enabled``; a no-op elsewhere."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp(device, enabled))
