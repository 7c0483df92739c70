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
#: Metadata key of the SHA-256 of every tensor in the file, recorded at save, checked at load.
CONTENT_KEY = "unlearn_studio.sha256"
#: Weight files larger than this are refused before they are read (ResNet-50 is about 100 MB).
MAX_WEIGHTS_BYTES = 2 * 1024**3


def _digest(state: dict[str, torch.Tensor]) -> "hashlib._Hash":
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest


def state_hash(model_or_state: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """Short content hash of the weights (names, shapes and values), e.g. for run records."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    return _digest(state).hexdigest()[:16]


def safetensors_payload(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Safetensors bytes of ``state`` with ``metadata`` plus the content hash (:data:`CONTENT_KEY`).

    Why a hash: a file truncated or altered after it was saved must be refused when it is
    loaded or exported, not handed out as if it were the model a run made.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    meta[CONTENT_KEY] = _digest(tensors).hexdigest()
    return save_safetensors_bytes(tensors, metadata=meta)


def model_to_bytes(model: Classifier, metadata: dict[str, str] | None = None) -> bytes:
    """Serialize a classifier to safetensors bytes with its spec embedded."""
    meta = {SPEC_KEY: json.dumps(model.spec.to_dict())}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return safetensors_payload(model.state_dict(), meta)


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
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise UserError(f"Weight file {path.name} is {path.stat().st_size / 1024**3:.1f} GiB, more "
                        f"than the {MAX_WEIGHTS_BYTES / 1024**3:.0f} GiB this studio loads; is it "
                        "really a model of this size?")
    try:
        return path.read_bytes(), path.name
    except OSError as error:
        raise UserError(f"Cannot read the weight file {path}: {error.strerror or error}.") from error


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
        metadata = dict(header.get("__metadata__", {}) or {})
        recorded = metadata.get(CONTENT_KEY)
        if recorded is not None and recorded != _digest(state).hexdigest():
            raise UserError(
                f"{name} is damaged: its content does not match the hash recorded when it was "
                "saved (changed or partly overwritten since). Use an intact copy, or run again."
            )
        return state, metadata
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


def check_values(state: dict[str, torch.Tensor], name: str = "The weights") -> None:
    """Refuse NaN/inf in any parameter or buffer, and negative BatchNorm variances.

    Why at load time: a model with such values gives NaN losses later, and the message then
    blames the learning rate; or, for a buffer, every prediction silently becomes garbage.
    """
    bad = []
    for key, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{key} ({count} NaN/inf)")
        if key.endswith("running_var") and tensor.is_floating_point() and bool((tensor < 0).any()):
            bad.append(f"{key} (negative variance)")
    if bad:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise UserError(
            f"{name} contain values no working model has, in {shown}. The file is damaged or "
            "the training that made it diverged; use weights from a healthy training run."
        )


def load_state_into(model: Classifier, state: dict[str, torch.Tensor]) -> Classifier:
    """Load ``state`` into ``model``, naming every missing, unexpected or mis-shaped layer.

    Values are checked too (:func:`check_values`): no NaN/inf in parameters or buffers.
    """
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
    check_values(state)
    model.load_state_dict(state)
    return model


def spec_from_metadata(metadata: dict[str, str], name: str = "This weight file") -> ModelSpec:
    """The :class:`ModelSpec` stored in a file's metadata, validated before any model is built."""
    if SPEC_KEY not in metadata:
        raise UserError(f"{name} does not say which architecture it is; choose one.")
    try:
        data = json.loads(metadata[SPEC_KEY])
    except json.JSONDecodeError as error:
        raise UserError(
            f"{name} has metadata that is not valid JSON ({error.msg} at character {error.pos}): "
            "it was damaged or edited by hand. Choose the architecture yourself, or export the "
            "model again."
        ) from None
    return ModelSpec.from_dict(data)


def check_model_fits(model: Classifier, data, name: str = "The model") -> None:
    """Refuse a model whose classes or channels differ from the data set's, naming both.

    Why: a model for another data set otherwise fails deep inside training with
    ``IndexError: Target 9 is out of bounds``, or silently predicts the wrong classes.
    """
    spec = model.spec
    if spec.num_classes != data.num_classes or spec.in_channels != data.channels:
        raise UserError(
            f"{name} predicts {spec.num_classes} classes from {spec.in_channels}-channel images, "
            f"but the data set {data.name!r} has {data.num_classes} classes and "
            f"{data.channels}-channel images: it was made for another data set. Choose weights "
            "trained on this data set (or train one on it)."
        )


def load_model(source: str | Path | bytes | BinaryIO, spec: ModelSpec | None = None) -> Classifier:
    """Build and load a classifier; ``spec`` may be omitted for files we wrote ourselves."""
    state, metadata = read_weights(source)
    if spec is None:
        spec = spec_from_metadata(metadata)
    model = build_model(spec)
    load_state_into(model, state)
    model.eval()
    return model


def load_model_for_data(data, weights: str | Path, arch: str | None) -> Classifier:
    """A user's weights checked against the data (shape, classes) before they are loaded.

    ``arch`` overrides the architecture a file records; without either, ``small_cnn``.
    (The demo model of a built-in set is :func:`unlearn_core.assets.load_demo_model`.)
    """
    from unlearn_core.models.architectures import spec_for

    name = f"The weights {Path(str(weights)).name}"
    state, metadata = read_weights(weights)
    if arch is None and SPEC_KEY in metadata:
        spec = spec_from_metadata(metadata, name)
    else:
        spec = spec_for(data, arch or "small_cnn")
    model = build_model(spec)
    check_model_fits(model, data, name)  # before loading: names the data set, not layer shapes
    load_state_into(model, state)
    return model.eval()


def verified_file_bytes(path: str | Path) -> bytes:
    """A weight file's bytes after checking it fully: parses, matches its hash, finite values.

    Why: an export hands the file to someone else; a truncated or altered copy must be
    refused here, not discovered by whoever loads it later.
    """
    payload, name = _read_bytes(path)
    named = io.BytesIO(payload)
    named.name = name
    state, _ = read_weights(named)
    check_values(state, f"The weights in {name}")
    return payload


def file_metadata(source: str | Path) -> dict[str, str]:
    """The provenance metadata stored in a safetensors file we wrote (empty otherwise)."""
    return read_weights(source)[1]
