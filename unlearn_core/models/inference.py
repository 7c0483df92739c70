"""Batched forward passes in eval mode: logits and embeddings for any index set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from unlearn_core.data.disk_images import PixelStore, pixel_batches
from unlearn_core.device import autocast, channels_last_pays, display_bf16
from unlearn_core.models.architectures import Classifier

#: Images per forward on the CPU. Small batches keep activations in cache: on a 2-core AVX2 CPU,
#: 32 ran the oculoplastic model (64 px) 3.2× and the digits model 1.4× faster than 512
#: (docs/performance.md). GPUs want large batches.
CPU_BATCH = 32
GPU_BATCH = 512


def to_pixels(images_uint8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` → float pixels in ``[0, 1]`` on ``device``."""
    return images_uint8.to(device, non_blocking=True).float().div_(255.0)


@torch.no_grad()
def predict_logits(
    model: Classifier,
    images: torch.Tensor | PixelStore,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    device: torch.device | None = None,
    amp: bool = True,
) -> np.ndarray:
    """Logits ``[n, K]`` (float32 numpy) of ``images[indices]``; eval mode, no sample dropped."""
    return _batched(model, images, indices, batch_size, device, amp, embed=False)


@torch.no_grad()
def embeddings(
    model: Classifier,
    images: torch.Tensor | PixelStore,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int | None = None,
    device: torch.device | None = None,
    amp: bool = True,
    display: bool = False,
) -> np.ndarray:
    """Penultimate-layer features ``[n, D]`` of ``images[indices]`` (eval mode).

    ``display=True`` is for features that are only drawn (t-SNE maps): they then run in bf16
    wherever :func:`unlearn_core.device.display_bf16` says the hardware has it natively.
    """
    return _batched(model, images, indices, batch_size, device, amp, embed=True, display=display)


def _batched(model, images, indices, batch_size, device, amp, embed: bool, display: bool = False) -> np.ndarray:
    """Forwards under ``torch.inference_mode`` in the channels_last layout (oneDNN's and cuDNN's
    faster convolutions; only the input is converted, so the caller's model is left as it is)."""
    device = device or next(model.parameters()).device
    batch_size = batch_size or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    channels_last = channels_last_pays(True, device)
    bf16 = display and amp and display_bf16(device)

    def precision():  # bf16 for display features on native hardware; else autocast's CUDA-only rule
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else autocast(device, amp)

    was_training = model.training
    model.eval()
    idx = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    outputs = []
    batches = [idx[start : start + batch_size] for start in range(0, len(idx), batch_size)]
    try:  # pixels on disk are read per batch (decoded in worker processes when they are image files)
        for raw in pixel_batches(images, batches):
            batch = to_pixels(raw, device)
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), precision():
                out = model.embed(batch) if embed else model(batch)
            outputs.append(out.float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        width = model.head.in_features if embed else model.head.out_features
        return np.zeros((0, width), dtype=np.float32)
    return torch.cat(outputs).numpy()
