"""Method settings widgets generated from each method's config fields (help text, ranges, presets).

Every :class:`~unlearn_core.methods.base.UnlearnMethod` describes its settings as
:class:`~unlearn_core.methods.base.FieldInfo` (name, type, default, help, min, max, choices);
this module turns them into widgets, so a new method appears on the Unlearn page with no
page code. Only values that differ from the chosen preset go on the command line.
"""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

#: Settings every method shares; the page shows device and seed on their own.
COMMON = ("seed", "device", "amp", "channels_last", "batch_size")
ADVANCED = ("amp", "channels_last", "batch_size")
NO_PRESET = "(recommended defaults)"


def widget_key(method: str, name: str) -> str:
    return f"ul_set_{method}_{name}"


def preset_values(method_cls, preset: str | None) -> dict[str, Any]:
    """Default value of every field after applying ``preset``."""
    values = {f.name: f.default for f in method_cls.fields()}
    if preset and preset in method_cls.presets:
        values.update(method_cls.presets[preset])
    return values


def apply_preset(method_cls, preset_key: str) -> None:
    """Callback of the preset picker: set every setting widget to the preset's value."""
    preset = st.session_state.get(preset_key)
    for name, value in preset_values(method_cls, None if preset == NO_PRESET else preset).items():
        if name not in ("seed", "device"):
            st.session_state[widget_key(method_cls.name, name)] = value


def _widget(method: str, info, default: Any) -> Any:
    key = widget_key(method, info.name)
    if key not in st.session_state:
        st.session_state[key] = default
    label = info.name.replace("_", " ")
    if info.choices:
        options = list(info.choices)
        if st.session_state[key] not in options:
            st.session_state[key] = options[0]
        return st.selectbox(label, options, key=key, help=info.help)
    if info.type == "bool":
        return st.checkbox(label, key=key, help=info.help)
    if info.type == "int":
        st.session_state[key] = int(st.session_state[key])
        return st.number_input(label, min_value=None if info.min is None else int(info.min),
                               max_value=None if info.max is None else int(info.max), step=1,
                               key=key, help=info.help)
    if info.type == "float":
        st.session_state[key] = float(st.session_state[key])
        return st.number_input(label, min_value=None if info.min is None else float(info.min),
                               max_value=None if info.max is None else float(info.max),
                               format="%g", step=_float_step(default), key=key, help=info.help)
    return st.text_input(label, key=key, help=info.help)


def _float_step(default: float) -> float:
    """A tenth of the default's order of magnitude (0.01 → 0.001), 0.01 for zero."""
    magnitude = abs(float(default or 0.0))
    return 10.0 ** (math.floor(math.log10(magnitude)) - 1) if magnitude else 0.01


def settings_form(method_cls, preset: str | None, columns: int = 3) -> dict[str, Any]:
    """Widgets for the method's own settings and the advanced common ones; returns all values."""
    defaults = preset_values(method_cls, preset)
    fields = [f for f in method_cls.fields() if f.name not in COMMON]
    advanced = [f for f in method_cls.fields() if f.name in ADVANCED]
    values: dict[str, Any] = {}
    cols = st.columns(columns)
    for i, info in enumerate(fields):
        with cols[i % columns]:
            values[info.name] = _widget(method_cls.name, info, defaults[info.name])
    with st.expander("Speed and memory (advanced)"):
        cols = st.columns(columns)
        for i, info in enumerate(advanced):
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
