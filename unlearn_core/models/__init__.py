"""Architectures, safe weight I/O and batched inference."""

from unlearn_core.models.architectures import ARCHITECTURES, Classifier, ModelSpec, build_model, spec_for
from unlearn_core.models.inference import embeddings, predict_logits, to_pixels
from unlearn_core.models.weights import load_model, load_state_into, read_weights, save_model, state_hash

__all__ = [
    "ARCHITECTURES", "Classifier", "ModelSpec", "build_model", "spec_for", "embeddings",
    "predict_logits", "to_pixels", "load_model", "load_state_into", "read_weights", "save_model",
    "state_hash",
]
