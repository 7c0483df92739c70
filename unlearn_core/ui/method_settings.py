"""Method settings widgets generated from each method's config fields (help text, ranges, presets).

Every :class:`~unlearn_core.methods.base.UnlearnMethod` describes its settings as
:class:`~unlearn_core.methods.base.FieldInfo` (name, type, default, help, min, max, choices);
this module turns them into widgets, so a new method appears on the Unlearn page with no
page code. Only values that differ from the chosen preset go on the command line.

No setting offered here was tuned with a retrained model's result on the scenario at hand: a
user never has that answer, so the page starts on the method's plain defaults (or a named,
general preset the user picks).
"""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from unlearn_core.labels import NO_PRESET  # noqa: F401 - the picker's "no preset" (the report's too)
from unlearn_core.ui.widgets import sticky

#: Settings every method shares; the page shows device and seed on their own.
COMMON = ("seed", "device", "amp", "channels_last", "batch_size")
ADVANCED = ("amp", "channels_last", "batch_size")

#: Plain labels of method settings, keyed by field name; ``(method, name)`` keys override a
#: name whose meaning differs in one method. Names not listed are humanized (see :func:`label`).
LABELS: dict[Any, str] = {
    "eps": "Search radius ε (pixel change)",
    "step_size": "Search step size η (0 = automatic)",
    "inner_steps": "Search steps",
    "gamma": "Noise weight γ",
    "noise": "Noise type",
    "noise_scale": "Noise scale",
    "lam": "Closeness weight λ",
    "lam_schedule": "How λ changes over the search",
    "early_stop_on_flip": "Stop searching once the label flips",
    "round_to_255": "Keep images on the 8-bit grid",
    "failed_flip": "When the label can't be flipped",
    "attack_model": "Model whose boundaries are searched",
    "relabel": "New labels",
    "targets": "Target labels",
    "temperature": "Softness (temperature)",
    "top_k": "Classes kept in soft targets (0 = all)",
    "phi": "Weight of kept images φ",
    "remain_batch_size": "Kept images per step",
    "lr": "Learning rate",
    "momentum": "Momentum",
    "weight_decay": "Weight decay",
    "epochs": "Passes over the forget set",
    "bn_policy": "BatchNorm statistics",
    "target_forget_acc": "Stop at this forget-set accuracy (0 = off)",
    "stop_at": "When to stop",
    "batch_size": "Images per step",
    "amp": "Mixed precision on GPU",
    "channels_last": "Memory layout: channels last (faster convolutions)",
    "freeze_batchnorm": "Keep BatchNorm statistics fixed",
    "use_remain": "Also train on the kept images",
    "alpha": "Weight of kept images α",
    "msteps": "Epochs with a forgetting pass",
    "forget_batch_size": "Forget images per step",
    "mask_ratio": "Share of weights that may change",
    "no_l1_epochs": "Final passes without the sparsity penalty",
    "k": "Blocks retrained (from the output)",
    ("retrain", "epochs"): "Passes over the kept images",
    ("finetune", "epochs"): "Passes over the kept images",
    ("neggrad_plus", "epochs"): "Passes over the kept images",
    ("random_labels", "epochs"): "Passes over the training data",
    ("salun", "epochs"): "Passes over the training data",
    ("l1_sparse", "epochs"): "Passes over the kept images",
    ("cf_k", "epochs"): "Passes over the kept images",
    ("eu_k", "epochs"): "Passes over the kept images",
    ("scrub", "epochs"): "Passes (epochs)",
    ("scrub", "gamma"): "Weight of the kept-image loss γ",
    ("scrub", "alpha"): "Weight of the teacher match α",
    ("scrub", "batch_size"): "Kept images per step",
    ("l1_sparse", "gamma"): "Sparsity penalty weight γ",
    ("boundary_expanding", "epochs"): "Passes over the forget set",
}

#: PSG-style settings shown outside the "Advanced" expander (the rest goes inside it when a
#: method has many settings).
ESSENTIALS = ("stop_at", "epochs", "lr", "phi", "eps", "gamma")
MANY_SETTINGS = 8


def label(name: str, method: str | None = None) -> str:
    """Plain label of a setting: the mapping, else the name humanized ("top_k" → "Top k")."""
    if (method, name) in LABELS:
        return LABELS[(method, name)]
    if name in LABELS:
        return LABELS[name]
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def widget_key(method: str, name: str) -> str:
    return f"ul_set_{method}_{name}"


def preset_values(method_cls, preset: str | None) -> dict[str, Any]:
    """Default value of every field after applying the method's named ``preset`` (if any)."""
    values = {f.name: f.default for f in method_cls.fields()}
    if preset and preset in (method_cls.presets or {}):
        values.update(method_cls.presets[preset])
    return values


def apply_preset(method_cls, preset_key: str) -> None:
    """Callback of the preset picker: set every setting widget to the preset's value."""
    preset = st.session_state.get(preset_key)
    for name, value in preset_values(method_cls, None if preset == NO_PRESET else preset).items():
        if name not in ("seed", "device"):
            st.session_state[widget_key(method_cls.name, name)] = value


def _widget(method: str, info, default: Any) -> Any:
    # Set through the API on every run (widgets.sticky): a checkbox that came back after the
    # progress panel was otherwise drawn unticked, and the next click sent amp=false.
    key = sticky(widget_key(method, info.name), default)
    text = label(info.name, method)
    if info.choices:
        options = list(info.choices)
        if st.session_state[key] not in options:
            st.session_state[key] = options[0]
        return st.selectbox(text, options, key=key, help=info.help,
                            format_func=lambda v: str(v).replace("_", " "))
    if info.type == "bool":
        return st.checkbox(text, key=key, help=info.help)
    if info.type == "int":
        st.session_state[key] = int(st.session_state[key])
        return st.number_input(text, min_value=None if info.min is None else int(info.min),
                               max_value=None if info.max is None else int(info.max), step=1,
                               key=key, help=info.help)
    if info.type == "float":
        st.session_state[key] = float(st.session_state[key])
        return st.number_input(text, min_value=None if info.min is None else float(info.min),
                               max_value=None if info.max is None else float(info.max),
                               format="%g", step=_float_step(default), key=key, help=info.help)
    return st.text_input(text, key=key, help=info.help)


def _float_step(default: float) -> float:
    """A tenth of the default's order of magnitude (0.01 → 0.001), 0.01 for zero."""
    magnitude = abs(float(default or 0.0))
    return 10.0 ** (math.floor(math.log10(magnitude)) - 1) if magnitude else 0.01


def settings_form(method_cls, preset: str | None, columns: int = 3) -> dict[str, Any]:
    """Widgets for the method's own settings and the advanced common ones; returns all values.

    A method with many settings (PSG) shows the essentials (:data:`ESSENTIALS`) and puts the
    rest under an "Advanced" expander."""
    defaults = preset_values(method_cls, preset)
    fields = [f for f in method_cls.fields() if f.name not in COMMON]
    if len(fields) > MANY_SETTINGS:
        main = [f for f in fields if f.name in ESSENTIALS]
        main.sort(key=lambda f: ESSENTIALS.index(f.name))
        rest = [f for f in fields if f.name not in ESSENTIALS]
    else:
        main, rest = fields, []
    rest += [f for f in method_cls.fields() if f.name in ADVANCED]
    values: dict[str, Any] = {}
    cols = st.columns(columns)
    for i, info in enumerate(main):
        with cols[i % columns]:
            values[info.name] = _widget(method_cls.name, info, defaults[info.name])
    title = ("Advanced: search, targets, speed and memory" if len(rest) > len(ADVANCED)
             else "Speed and memory (advanced)")
    with st.expander(title):
        cols = st.columns(columns)
        for i, info in enumerate(rest):
            with cols[i % columns]:
                values[info.name] = _widget(method_cls.name, info, defaults[info.name])
    return values


def changed_settings(method_cls, preset: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """Only the values that differ from the preset (what ``--set`` needs)."""
    defaults = preset_values(method_cls, preset)
    changed = {}
    for name, value in values.items():
        default = defaults.get(name)
        if isinstance(default, float) and isinstance(value, (int, float)):
            if abs(float(value) - default) <= 1e-12 * max(1.0, abs(default)):
                continue
        elif value == default:
            continue
        changed[name] = value
    return changed
