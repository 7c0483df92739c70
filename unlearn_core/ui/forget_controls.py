"""Forget-set controls generated from a data set's metadata columns, kept in sync with the text.

The selection's criteria *text* is the single source of truth (it is what the command line,
the run registry and the Unlearn page use). The controls are a view of it:

* moving a control rebuilds the criteria with :meth:`ForgetCriteria.from_parts` and stores
  their text (:func:`on_controls_changed`);
* applying typed text parses it and sets the controls from it (:func:`values_from_criteria`);
  when the controls cannot show it exactly (``!=`` on a number, a strict ``>``, an odd
  fraction), the page says so and the counts follow the text.

Which control a column gets: numbers get a range slider (one-sided when one end is left at the
data's extreme); text gets a multiselect; the class gets a multiselect; a toggle adds a random
share with a seed. A control at its full range, or with nothing picked, adds no condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from unlearn_core.data.criteria import (
    Comparison,
    ForgetCriteria,
    Fraction,
    RangeClause,
    ValueSet,
)
from unlearn_core.data.imageset import ImageSet
from unlearn_core.errors import UserError
from unlearn_core.ui import cache, state

CLASS_KEY = "fs_classes"
FRACTION_ON_KEY = "fs_fraction_on"
FRACTION_KEY = "fs_fraction"
SEED_KEY = "fs_seed"
TEXT_KEY = "fs_text"
_SYNCED = "fs__synced"        # the criteria text the controls currently show
_EXACT = "fs__exact"          # whether the controls show that text exactly
_TEXT_ERROR = "fs__text_error"
DEFAULT_PERCENT = 10
MAX_CATEGORIES = 60           # more distinct values than this: the column is not offered as a picker


@dataclass(frozen=True)
class Control:
    """One generated control for a metadata column.

    ``kind`` is ``"range"`` (numbers: slider from ``lo`` to ``hi`` in ``step``; the data span
    ``data_min..data_max``) or ``"values"`` (a multiselect of ``options``).
    """

    column: str
    kind: str
    unit: str = ""
    options: tuple = ()
    lo: float = 0.0
    hi: float = 0.0
    step: float = 1.0
    data_min: float = 0.0
    data_max: float = 0.0
    integer: bool = False
    decimals: int = 0

    @property
    def key(self) -> str:
        return f"fs_{'range' if self.kind == 'range' else 'values'}_{self.column}"

    @property
    def label(self) -> str:
        from unlearn_core.plots import column_label

        return column_label(self.column, self.unit)

    @property
    def full(self):
        return (self.lo, self.hi) if self.kind == "range" else []


def _decimals(values: np.ndarray) -> int | None:
    """Fewest decimals (0..3) that represent every value, or None."""
    for d in range(4):
        scaled = values * 10**d
        if np.allclose(scaled, np.round(scaled), atol=1e-6 * max(1.0, float(np.abs(scaled).max(initial=0)))):
            return d
    return None


def _nice_step(span: float) -> tuple[float, int]:
    raw = span / 200 if span > 0 else 1.0
    exponent = math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * 10**exponent >= raw:
            step = factor * 10**exponent
            return step, max(0, -math.floor(math.log10(step)))
    return 10.0 ** (exponent + 1), 0


def numeric_control(column: str, series: pd.Series, unit: str) -> Control | None:
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    data_min, data_max = float(values.min()), float(values.max())
    integer = pd.api.types.is_integer_dtype(series.dtype) or bool(np.all(values == np.round(values)))
    if integer:
        return Control(column, "range", unit, lo=int(data_min), hi=int(data_max), step=1,
                       data_min=data_min, data_max=data_max, integer=True, decimals=0)
    decimals = _decimals(values)
    if decimals is None:
        step, decimals = _nice_step(data_max - data_min)
    else:
        step = 10.0**-decimals
    lo = round(math.floor(data_min / step + 1e-9) * step, decimals)
    hi = round(math.ceil(data_max / step - 1e-9) * step, decimals)
    if hi <= lo:
        hi = round(lo + step, decimals)
    return Control(column, "range", unit, lo=lo, hi=hi, step=step, data_min=data_min,
                   data_max=data_max, integer=False, decimals=decimals)


def build_controls(data: ImageSet) -> list[Control]:
    """One control per metadata column (not the class, sample id or split)."""
    controls = []
    for column in data.metadata.columns:
        if column in ("sample_id", "split", "label"):
            continue
        series = data.metadata[column]
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
            control = numeric_control(column, series, data.units.get(column, ""))
            if control is not None:
                controls.append(control)
            continue
        present = sorted({str(v) for v in series.dropna().unique()})
        if 1 < len(present) <= MAX_CATEGORIES and all(isinstance(v, str) for v in series.dropna().unique()):
            controls.append(Control(column, "values", data.units.get(column, ""), options=tuple(present)))
    return controls


def example_criteria(controls: list[Control], classes: list[str]) -> str:
    """A typed criterion that fits *this* data set, for the text box's placeholder.

    Why: one fixed example (``vpf_mm >= 12 and camera == "iPhone"``) named columns that most
    data sets do not have. The example uses the first numeric column (at its range's midpoint),
    else the first category column, and the first class.
    """
    numeric = next((c for c in controls if c.kind == "range"), None)
    category = next((c for c in controls if c.kind == "values"), None)
    parts = []
    if numeric is not None:
        middle = (numeric.lo + numeric.hi) / 2
        parts.append(f"{numeric.column} >= {int(round(middle)) if numeric.integer else round(middle, numeric.decimals)}")
    elif category is not None:
        parts.append(f'{category.column} == "{category.options[0]}"')
    if classes:
        parts.append(f'label == "{classes[0]}"')
    return "e.g. " + " and ".join(parts) if parts else "e.g. fraction(0.1, seed=0)"


def typed_names(controls: list[Control]) -> str:
    """The column names to type, beside the labels the controls show (``vpf_mm`` for "VPF, mm")."""
    return ", ".join(["label", *(c.column for c in controls), "fraction(share, seed=…)"])


# --- controls -> criteria ------------------------------------------------------------------------
def _clean(value: float, control: Control) -> int | float:
    """The value as the criteria text should show it: no spurious ".0" on whole numbers."""
    if control.integer:
        return int(round(value))
    value = round(float(value), control.decimals)
    return int(value) if value == int(value) else value


def criteria_from_values(values: dict, controls: list[Control], classes: list[str]) -> ForgetCriteria | None:
    """The criteria the control values describe, or ``None`` when no control restricts anything."""
    chosen_classes = [c for c in values.get(CLASS_KEY) or [] if c in classes]
    if len(chosen_classes) == len(classes):
        chosen_classes = []
    ranges, value_sets = {}, {}
    for control in controls:
        value = values.get(control.key)
        if control.kind == "range" and value is not None:
            low, high = value
            low = _clean(low, control) if low > control.data_min else None
            high = _clean(high, control) if high < control.data_max else None
            if low is not None or high is not None:
                ranges[control.column] = (low, high)
        elif control.kind == "values" and value:
            picked = [v for v in control.options if v in set(value)]
            if picked and len(picked) < len(control.options):
                value_sets[control.column] = picked
    fraction = None
    if values.get(FRACTION_ON_KEY):
        fraction = float(values.get(FRACTION_KEY) or DEFAULT_PERCENT) / 100.0
    try:
        return ForgetCriteria.from_parts(ranges, value_sets, chosen_classes, fraction,
                                         int(values.get(SEED_KEY) or 0))
    except UserError:
        return None


# --- criteria -> controls ------------------------------------------------------------------------
def default_values(controls: list[Control]) -> dict:
    values = {CLASS_KEY: [], FRACTION_ON_KEY: False, FRACTION_KEY: DEFAULT_PERCENT, SEED_KEY: 0}
    for control in controls:
        values[control.key] = control.full
    return values


def values_from_criteria(criteria: ForgetCriteria | None, controls: list[Control],
                         classes: list[str]) -> dict:
    """Control values that show ``criteria`` as closely as the controls can (check with a mask)."""
    values = default_values(controls)
    if criteria is None:
        return values
    by_column = {c.column: c for c in controls}
    for clause in criteria.clauses:
        if isinstance(clause, Fraction):
            values[FRACTION_ON_KEY] = True
            values[FRACTION_KEY] = int(min(100, max(1, round(clause.fraction * 100))))
            values[SEED_KEY] = clause.seed
            continue
        if clause.column == "label":
            names = _class_names(clause, classes)
            if names is not None:
                current = values[CLASS_KEY] or list(classes)
                values[CLASS_KEY] = [c for c in current if c in names]
            continue
        control = by_column.get(clause.column)
        if control is None:
            continue
        if control.kind == "range":
            low, high = values[control.key]
            bounds = _bounds(clause)
            if bounds is None:
                continue
            new_low, new_high = bounds
            low = max(low, new_low) if new_low is not None else low
            high = min(high, new_high) if new_high is not None else high
            low = min(max(low, control.lo), control.hi)
            high = min(max(high, control.lo), control.hi)
            values[control.key] = (_clean(low, control), _clean(max(low, high), control))
        else:
            picked = _picked(clause, control.options)
            if picked is not None:
                current = values[control.key] or list(control.options)
                values[control.key] = [v for v in current if v in picked]
    return values


def _class_names(clause, classes: list[str]) -> set[str] | None:
    def name(value):
        if isinstance(value, str):
            return value
        return classes[int(value)] if 0 <= int(value) < len(classes) else None

    if isinstance(clause, Comparison) and clause.op in ("==", "!="):
        hit = {name(clause.value)}
        return hit if clause.op == "==" else set(classes) - hit
    if isinstance(clause, ValueSet):
        hit = {name(v) for v in clause.values}
        return set(classes) - hit if clause.negate else hit
    return None


def _bounds(clause) -> tuple[float | None, float | None] | None:
    if isinstance(clause, RangeClause):
        return float(clause.low), float(clause.high)
    if isinstance(clause, Comparison) and not isinstance(clause.value, str):
        v = float(clause.value)
        return {">=": (v, None), ">": (v, None), "<=": (None, v), "<": (None, v), "==": (v, v)}.get(clause.op)
    return None


def _picked(clause, options: tuple) -> set | None:
    if isinstance(clause, Comparison) and clause.op in ("==", "!="):
        hit = {str(clause.value)}
        return hit if clause.op == "==" else set(options) - hit
    if isinstance(clause, ValueSet):
        hit = {str(v) for v in clause.values}
        return set(options) - hit if clause.negate else hit
    return None


# --- keeping widgets and the selection in sync ----------------------------------------------------
def _widget_keys(controls: list[Control]) -> list[str]:
    return [CLASS_KEY, FRACTION_ON_KEY, FRACTION_KEY, SEED_KEY, *(c.key for c in controls)]


def _same_selection(ref: str, text_a: str, text_b: str) -> bool:
    if text_a == text_b:
        return True
    if not text_a or not text_b:
        return False
    try:
        return bool(np.array_equal(cache.forget_mask(ref, text_a), cache.forget_mask(ref, text_b)))
    except UserError:
        return False


def sync(ref: str, data: ImageSet, controls: list[Control]) -> None:
    """Before the widgets render: make them show the selection's criteria.

    Runs when the criteria changed elsewhere (demo, typed text, another page) or the widgets
    lost their values (Streamlit drops them when the user leaves the page).
    """
    ss = st.session_state
    text = state.selection().criteria
    keys = _widget_keys(controls)
    if ss.get(_SYNCED) == text and all(k in ss for k in keys):
        return
    criteria = None
    if text:
        try:
            criteria = ForgetCriteria.parse(text)
        except UserError:
            criteria = None
    values = values_from_criteria(criteria, controls, data.classes)
    for key, value in values.items():
        ss[key] = value
    rebuilt = criteria_from_values(values, controls, data.classes)
    ss[_EXACT] = _same_selection(ref, text, rebuilt.to_text() if rebuilt else "")
    ss[_SYNCED] = text
    ss[TEXT_KEY] = text


def on_controls_changed(controls: list[Control], classes: list[str], ref: str | None = None) -> None:
    """Widget callback: the controls are the criteria now. The current text (the user's or the
    demo's wording) is kept when the controls still select exactly the same images."""
    ss = st.session_state
    criteria = criteria_from_values({k: ss.get(k) for k in _widget_keys(controls)}, controls, classes)
    text = criteria.to_text() if criteria else ""
    current = state.selection().criteria or ""
    if ref is not None and text and current and _same_selection(ref, current, text):
        text = current
    state.set_criteria(text)
    ss[_SYNCED] = text
    ss[_EXACT] = True
    ss[TEXT_KEY] = text
    ss.pop(_TEXT_ERROR, None)


def on_text_applied(ref: str) -> None:
    """Callback of the text box: parse, check against the data, then make it the criteria."""
    ss = st.session_state
    typed = (ss.get(TEXT_KEY) or "").strip()
    if not typed:
        state.set_criteria("")
        ss.pop(_TEXT_ERROR, None)
        return
    try:
        criteria = ForgetCriteria.parse(typed)
        cache.forget_mask(ref, criteria.to_text())
    except UserError as error:
        # The typing stays in the box to be corrected; say what the counts below still show.
        current = state.selection().criteria
        still = (f" Nothing was changed: the counts below still show `{current}`." if current
                 else " Nothing was changed: no criteria are set yet.")
        ss[_TEXT_ERROR] = str(error) + still
        return
    ss.pop(_TEXT_ERROR, None)
    state.set_criteria(typed)  # the user's own wording (it parses and selects the same images)


def on_clear() -> None:
    state.set_criteria("")
    st.session_state.pop(_TEXT_ERROR, None)


def text_error() -> str | None:
    return st.session_state.get(_TEXT_ERROR)


def shown_exactly() -> bool:
    return bool(st.session_state.get(_EXACT, True))


def range_of(criteria: ForgetCriteria | None, column: str) -> tuple[float | None, float | None] | None:
    """The ``(low, high)`` a criteria sets on a numeric column (for shading a histogram)."""
    if criteria is None:
        return None
    low = high = None
    found = False
    for clause in criteria.conditions:
        if clause.column != column:
            continue
        bounds = _bounds(clause)
        if bounds is None:
            continue
        found = True
        if bounds[0] is not None:
            low = bounds[0] if low is None else max(low, bounds[0])
        if bounds[1] is not None:
            high = bounds[1] if high is None else min(high, bounds[1])
    return (low, high) if found else None


def values_of(criteria: ForgetCriteria | None, column: str, options: tuple) -> list | None:
    """The values a criteria keeps for a text column (for outlining bars)."""
    if criteria is None:
        return None
    chosen = None
    for clause in criteria.conditions:
        if clause.column == column:
            picked = _picked(clause, options)
            if picked is not None:
                chosen = picked if chosen is None else chosen & picked
    return sorted(chosen) if chosen is not None else None
