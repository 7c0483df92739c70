"""Safe weight files: safetensors (preferred), weights-only ``torch.load``, TorchScript.

Why so strict: a ``.pt`` pickle can run arbitrary code when loaded. We never unpickle
untrusted files; a pickle that needs more than tensors is refused with a clear message.
Every file we write carries its :class:`ModelSpec` and provenance as safetensors metadata,
so a model can be rebuilt and checked against the data it was trained on.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from unlearn_core.errors import UserError
from unlearn_core.models.architectures import Classifier, ModelSpec, build_model

SPEC_KEY = "unlearn_studio.spec"


def state_hash(model_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """Short content hash of the weights (names, shapes and values), e.g. for run records."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def model_to_bytes(model: Classifier, metadata: dict[str, str] | None = None) -> bytes:
    """Serialize a classifier to safetensors bytes with its spec embedded."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {SPEC_KEY: json.dumps(model.spec.to_dict())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return save_safetensors_bytes(state, metadata=meta)


def save_model(model: Classifier, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file, then rename)."""
    from unlearn_core.files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, model_to_bytes(model, metadata))


def _read_bytes(source: str | Path | bytes | BinaryIO) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "uploaded file"
    if hasattr(source, "read"):
        name = getattr(source, "name", "uploaded file")
        return source.read(), str(name)
    path = Path(source)
    if not path.is_file():
        raise UserError(f"Weight file {path} does not exist.")
    return path.read_bytes(), path.name


def read_weights(source: str | Path | bytes | BinaryIO) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state dict and its metadata from safetensors, weights-only pickle or TorchScript.

    Returns ``(state_dict, metadata)``; metadata is empty for formats that carry none.
    """
    payload, name = _read_bytes(source)
    if len(payload) >= 8 and payload[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        try:
            state = load_safetensors_bytes(payload)
        except SafetensorError as error:
            raise UserError(f"{name} looks like safetensors but is damaged: {error}.") from error
        header_len = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + header_len])
        return state, dict(header.get("__metadata__", {}) or {})
    if zipfile.is_zipfile(io.BytesIO(payload)):
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            is_torchscript = any(n.endswith("/code/") or "/code/" in n for n in archive.namelist())
        if is_torchscript:
            return _read_torchscript(payload, name), {}
    return _read_weights_only_pickle(payload, name), {}


def _read_torchscript(payload: bytes, name: str) -> dict[str, torch.Tensor]:
    try:
        module = torch.jit.load(io.BytesIO(payload), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - TorchScript raises many types for bad files
        raise UserError(f"{name} is not a loadable TorchScript model: {error}") from error
    return {k: v.detach() for k, v in module.state_dict().items()}


def _looks_like_pickle(payload: bytes) -> bool:
    """torch.save writes a ZIP; a raw pickle starts with the PROTO opcode (0x80)."""
    return payload[:1] == b"\x80" or zipfile.is_zipfile(io.BytesIO(payload))


def _read_weights_only_pickle(payload: bytes, name: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _looks_like_pickle(payload):
            raise UserError(f"{name} is not a weight file we can read (safetensors, .pt state_dict or "
                            "TorchScript).") from error
        raise UserError(
            f"Refusing to load {name}: it is a pickle that contains more than tensors (it could run "
            "code when opened). Save the weights with safetensors or as a plain state_dict "
            "(torch.save(model.state_dict(), path))."
        ) from error
    except Exception as error:  # noqa: BLE001 - torch.load raises many types for junk input
        raise UserError(
            f"{name} is not a weight file we can read (safetensors, .pt state_dict or TorchScript): {error}"
        ) from error
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{name} does not contain a state_dict (a mapping of names to tensors).")
    return dict(obj)


#: torchvision ResNet top-level names → our ``body``/``head`` layout.
_TORCHVISION_NAMES = {"conv1": "body.stem.0", "bn1": "body.stem.1", "fc": "head"}


def _adapt_keys(state: dict[str, torch.Tensor], model: Classifier) -> dict[str, torch.Tensor]:
    """Map a plain torchvision-style state dict (``conv1.weight``, ``fc.weight``) onto ours.

    Why: users often bring checkpoints saved from a bare torchvision model; our wrapper only
    adds the ``body.``/``head.`` prefixes, so the mapping is mechanical.
    """
    if any(key in model.state_dict() for key in state):
        return state
    adapted = {}
    for key, value in state.items():
        first, _, rest = key.removeprefix("module.").partition(".")
        adapted[f"{_TORCHVISION_NAMES.get(first, 'body.' + first)}.{rest}"] = value
    return adapted


def load_state_into(model: Classifier, state: dict[str, torch.Tensor]) -> Classifier:
    """Load ``state`` into ``model``, naming every missing, unexpected or mis-shaped layer."""
    state = _adapt_keys(state, model)
    expected = model.state_dict()
    for buffer in ("mean", "std"):  # normalization comes from the data, not the file
        state.setdefault(buffer, expected[buffer])
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        lines = [f"The weights do not match the {model.spec.arch} architecture "
                 f"({model.spec.num_classes} classes, {model.spec.in_channels} channels)."]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                shown = ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")
                lines.append(f"{title} layers: {shown}")
        lines.append("Pick the architecture the file was trained with, or check the number of classes.")
        raise UserError(" ".join(lines))
    model.load_state_dict(state)
    return model


def load_model(source: str | Path | bytes | BinaryIO, spec: ModelSpec | None = None) -> Classifier:
    """Build and load a classifier; ``spec`` may be omitted for files we wrote ourselves."""
    state, metadata = read_weights(source)
    if spec is None:
        if SPEC_KEY not in metadata:
            raise UserError("This weight file does not say which architecture it is; choose one.")
        spec = ModelSpec.from_dict(json.loads(metadata[SPEC_KEY]))
    model = build_model(spec)
    load_state_into(model, state)
    model.eval()
    return model


def file_metadata(source: str | Path) -> dict[str, str]:
    """The provenance metadata stored in a safetensors file we wrote (empty otherwise)."""
    return read_weights(source)[1]
