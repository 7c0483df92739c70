"""Retrain from scratch on the remain set: the gold standard every method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_core.methods.base import CommonConfig, RunHooks, UnlearnData, UnlearnMethod, UnlearnResult, option, register
from unlearn_core.models.architectures import Classifier
from unlearn_core.training import TrainConfig, train_model


@dataclass
class RetrainConfig(CommonConfig):
    epochs: int = option(8, "Passes over the remain set (same recipe as the original model).", min=1, max=500)
    lr: float = option(0.05, "Peak SGD learning rate (cosine schedule).", min=1e-6, max=10.0)
    momentum: float = option(0.9, "SGD momentum.", min=0.0, max=0.999)
    weight_decay: float = option(5e-4, "L2 weight decay.", min=0.0, max=0.1)


@register
class Retrain(UnlearnMethod):
    name = "retrain"
    title = "Retrain (gold standard)"
    summary = "Train a fresh model on the remain set only: exact forgetting, but the slowest option."
    citation = "The exact-unlearning reference used throughout the unlearning literature."
    config_class = RetrainConfig
    uses_original = False

    def unlearn(self, model: Classifier, data: UnlearnData, config: RetrainConfig, device: torch.device,
                hooks: RunHooks) -> UnlearnResult:
        train_config = TrainConfig(
            arch=model.spec.arch, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
            momentum=config.momentum, weight_decay=config.weight_decay, seed=config.seed,
            device=str(device), amp=config.amp, channels_last=config.channels_last,
        )
        trained = train_model(data.imageset, data.remain_indices, train_config,
                              on_progress=hooks._on_progress, should_stop=hooks._should_stop, phase="retrain")
        return UnlearnResult(model=trained.model, history=trained.history, diagnostics={
            "recipe": train_config.recipe_key(), "training_seconds": trained.seconds,
            # a fresh model, so the run's forward hooks never see it: count its images here
            "forward_images": trained.images_trained, "backward_images": trained.images_trained})
