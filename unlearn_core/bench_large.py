"""GPU-scale timing: ResNet-18 at 224 px with about 1,000 forget images, end to end.

Ready to run unchanged on a GPU machine (``python -m unlearn_core bench --large --device cuda``);
it also runs on a CPU, just slowly. It upsamples the oculoplastic set (generated at 64 px, so
generation stays fast) to 224 px, trains the original ResNet-18, then times the batched
boundary search, PSG unlearning and retraining on the same device.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_core.data.builtin import BUILTIN_SETS, _finish
from unlearn_core.data.criteria import ForgetCriteria, split_sets
from unlearn_core.data.imageset import ImageSet
from unlearn_core.device import resolve_device
from unlearn_core.evaluate import evaluate_model
from unlearn_core.methods.base import UnlearnData, get_method
from unlearn_core.training import TrainConfig, train_model


def upsampled_oculoplastic(n: int, size: int, device: torch.device) -> ImageSet:
    from unlearn_core.data.synthetic import generate_oculoplastic

    generated = generate_oculoplastic(n=n, size=64, seed=0)
    small = torch.from_numpy(generated.images)
    chunks = []
    for start in range(0, len(small), 512):
        batch = small[start : start + 512].to(device).float()
        chunks.append(F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
                      .round().clamp(0, 255).to(torch.uint8).cpu())
    return _finish(f"oculoplastic_{size}", torch.cat(chunks).numpy(), generated.metadata, generated.classes,
                   generated.units, generated.description)


def run_large(device: str = "cuda", n: int = 6800, size: int = 224, epochs: int = 3,
              amp: bool = True, log=print) -> dict[str, Any]:
    """Train, unlearn with PSG and retrain ResNet-18 at ``size`` px; returns timings and accuracies.

    Under torchrun the trainings and PSG run data-parallel (each rank on ``cuda:<LOCAL_RANK>``);
    ``processes`` in the result says how many took part.
    """
    from unlearn_core.distributed import world

    torch_device = resolve_device(world().device_name(device))
    started = time.perf_counter()
    data = upsampled_oculoplastic(n, size, torch_device)
    split = split_sets(data, ForgetCriteria.parse(BUILTIN_SETS["oculoplastic"].demo_forget))
    log(f"data: {len(data.images)} images at {size} px in {time.perf_counter() - started:.1f} s; sizes {split.sizes()}")
    recipe = TrainConfig(arch="resnet18", epochs=epochs, batch_size=128, lr=0.1, device=device, amp=amp,
                         channels_last=amp)
    original = train_model(data, data.train_indices, recipe)
    log(f"original: {original.seconds:.1f} s, test accuracy {original.test_acc:.3f}")
    method = get_method("psg")
    config = method.make_config({"device": device, "amp": amp, "channels_last": amp, "batch_size": 128})
    unlearned = method.run(original.model, UnlearnData(data, split), config)
    log(f"psg: {unlearned.seconds:.1f} s")
    retrained = train_model(data, split.remain_train, recipe, phase="retrain")
    log(f"retrain: {retrained.seconds:.1f} s")
    search_rate = _search_rate(original.model, data, split.forget_train, torch_device)
    blocks = {name: evaluate_model(model, data, split) for name, model in
              (("original", original.model), ("unlearned", unlearned.model), ("retrain", retrained.model))}
    return {
        "device": str(torch_device), "gpu": torch.cuda.get_device_name(0) if torch_device.type == "cuda" else None,
        "processes": world().size,
        "image_size": size, "n_images": len(data.images), "sizes": split.sizes(), "amp": amp,
        "seconds_train_original": original.seconds, "seconds_unlearn": unlearned.seconds,
        "seconds_retrain": retrained.seconds, "pct_of_retrain": 100 * unlearned.seconds / retrained.seconds,
        "boundary_search_images_per_s": search_rate,
        **{f"{name}_{key}": blocks[name][key] for name in blocks
           for key in ("forget_test_acc", "remain_test_acc", "forget_train_acc")},
    }


def _search_rate(model, data: ImageSet, indices: np.ndarray, device: torch.device) -> float:
    """Images per second of the batched boundary search alone (PSG defaults)."""
    from unlearn_core.methods.boundary_search import PerturbedSignGradient
    from unlearn_core.models.inference import to_pixels

    search = PerturbedSignGradient()
    model = model.to(device).eval()
    sample = indices[:512]
    pixels = to_pixels(data.images[sample], device)
    labels = data.labels[sample].to(device)
    search(model, pixels[:8], labels[:8])  # warm-up (kernels, autotuning)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    search(model, pixels, labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(sample) / (time.perf_counter() - started)
