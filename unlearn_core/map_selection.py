"""A selection on the Results page's decision-region map, and the forget set it stands for.

No Streamlit here: the page passes the chart's selection event in and gets plain data back.

* :func:`pick_from_event` reads which images a plotly selection (a click, a box or a lasso)
  names. Each point of :func:`unlearn_core.plots.tsne_panels` carries its image's row in the
  ImageSet as ``customdata``, and its trace (``curve_number``) tells the panel, so a selection
  is a set of *images* (highlighted in every panel) plus the panel it was drawn on.
* :func:`criterion_for` turns the selected images into forget criteria: the simplest metadata
  condition that picks exactly them among the images on the map (one clause, else two joined
  by ``and``), otherwise an explicit ``sample_id in (...)`` list. :func:`closest_criterion`
  gives the best near miss when nothing is exact.
* :func:`prediction_table` lists each selected image's prediction by every model, in neutral
  words ("now predicted as 9"), since a forgotten image changing its label is the aim.

Why "exactly among the images on the map" and not among all images: the map shows a sample of
the *test* images, and the user drew on that. A metadata condition that reproduces the drawing
there is a rule, so it applies to training images as well (which is what a forget set needs);
an id list names only the drawn images, so it can forget something only if they include
training images.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unlearn_core.data.criteria import (
    LABEL_COLUMN, MAX_CRITERIA_CHARS, SAMPLE_ID_COLUMN, SPLIT_COLUMN, Clause, Comparison, ForgetCriteria,
    RangeClause, ValueSet,
)
from unlearn_core.labels import MODEL_SHORT

#: A numeric condition is only proposed for at least this many selected images: a range that
#: happens to isolate two or three points on the map is a coincidence, not a rule.
MIN_FOR_NUMERIC = 5
#: At most this many values in one ``column in (...)`` condition.
MAX_VALUES = 3
#: A near miss is offered only when it overlaps the selection at least this much (Jaccard:
#: shared / either); a random half of the map can reach 0.5 with a threshold on any column.
MIN_OVERLAP = 2 / 3

EXACT, CLOSEST, IDS = "exact", "closest", "ids"


# --- reading a selection ----------------------------------------------------------------------
@dataclass(frozen=True)
class MapPick:
    """Images selected on the map: sorted ImageSet rows, and the panel they were drawn on
    (``None`` when the points came from several panels)."""

    indices: tuple[int, ...]
    panel: str | None = None

    def __len__(self) -> int:
        return len(self.indices)


def _get(obj, name: str, default=None):
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def pick_from_event(event, trace_panels: Sequence[str | None] = ()) -> MapPick | None:
    """The images a ``st.plotly_chart(on_select=...)`` event selects, or ``None`` if none.

    ``event`` is Streamlit's selection state (``{"selection": {"points": [...]}}``, a dict or
    an attribute object); points without ``customdata`` (the background, legend markers) are
    ignored. ``trace_panels[i]`` is the panel of the figure's trace ``i``
    (:func:`unlearn_core.plots.trace_panels`).
    """
    selection = _get(event, "selection") or {}
    rows, panels = set(), set()
    for point in _get(selection, "points") or []:
        custom = _get(point, "customdata")
        if isinstance(custom, (list, tuple, np.ndarray)):
            custom = custom[0] if len(custom) else None
        if custom is None:
            continue
        try:
            rows.add(int(custom))
        except (TypeError, ValueError):
            continue
        curve = _get(point, "curve_number", _get(point, "curveNumber"))
        if curve is not None and 0 <= int(curve) < len(trace_panels) and trace_panels[int(curve)]:
            panels.add(trace_panels[int(curve)])
    if not rows:
        return None
    return MapPick(tuple(sorted(rows)), next(iter(panels)) if len(panels) == 1 else None)


# --- from a selection to criteria -------------------------------------------------------------
@dataclass(frozen=True)
class MapCriterion:
    """Forget criteria for a selection and how well they reproduce it on the map.

    ``kind``: ``"exact"`` (a metadata condition picking exactly the selection among the map's
    images), ``"closest"`` (a metadata condition that doesn't) or ``"ids"`` (the sample ids).
    ``matched`` of the ``picked`` images are picked by the criteria, plus ``others`` of the
    map's other images (``shown`` in all).
    """

    criteria: ForgetCriteria
    kind: str
    picked: int
    matched: int
    others: int
    shown: int

    @property
    def text(self) -> str:
        return self.criteria.to_text()

    @property
    def fits_text_limit(self) -> bool:
        """Whether the text form is short enough to be typed/parsed back (long id lists aren't)."""
        return len(self.text) <= MAX_CRITERIA_CHARS


def id_criteria(sample_ids: Sequence[str]) -> ForgetCriteria:
    """``sample_id in ("a", "b", ...)`` (a single id reads ``sample_id == "a"``)."""
    ids = tuple(str(s) for s in sample_ids)
    if len(ids) == 1:
        return ForgetCriteria((Comparison(SAMPLE_ID_COLUMN, "==", ids[0]),))
    return ForgetCriteria((ValueSet(SAMPLE_ID_COLUMN, ids),))


def criterion_for(
    metadata: pd.DataFrame, shown: Sequence[int], picked: Sequence[int], classes: Sequence[str]
) -> MapCriterion:
    """The simplest metadata condition that picks exactly ``picked`` among the ``shown`` rows,
    or (when none does) the explicit id list of ``picked``.

    ``metadata`` is the whole ImageSet's (rows = ImageSet rows); ``shown`` are the rows on the
    map and ``picked`` the selected ones among them. "Simplest": fewest clauses, then ``==``
    and one-sided thresholds before value lists and ranges; numeric conditions only for at
    least :data:`MIN_FOR_NUMERIC` images; bounds rounded to the roundest number that still
    separates the selection from its nearest unselected neighbour.
    """
    frame, chosen = _frame(metadata, shown, picked)
    candidates = _covering_candidates(frame, chosen, list(classes))
    exact = _simplest_exact(candidates, chosen)
    if exact is not None:
        return _scored(ForgetCriteria(exact), EXACT, frame, chosen, classes)
    ids = frame.loc[chosen, SAMPLE_ID_COLUMN].astype(str).tolist()
    return _scored(id_criteria(ids), IDS, frame, chosen, classes)


def closest_criterion(
    metadata: pd.DataFrame, shown: Sequence[int], picked: Sequence[int], classes: Sequence[str]
) -> MapCriterion | None:
    """The metadata condition (one clause) overlapping the selection most on the map, when no
    condition is exact; ``None`` if even the best overlaps less than :data:`MIN_OVERLAP`."""
    frame, chosen = _frame(metadata, shown, picked)
    best, best_score = None, MIN_OVERLAP
    for clause, mask in _near_candidates(frame, chosen, list(classes)):
        score = (mask & chosen).sum() / max(1, (mask | chosen).sum())
        if score > best_score or (best is None and score >= best_score):
            best, best_score = clause, score
    if best is None:
        return None
    return _scored(ForgetCriteria((best,)), CLOSEST, frame, chosen, classes)


def forget_counts(criteria: ForgetCriteria, metadata: pd.DataFrame, classes: Sequence[str]) -> dict[str, int]:
    """How many training and test images the criteria pick in the whole data set."""
    mask = criteria.mask(metadata, classes)
    split = metadata[SPLIT_COLUMN].astype(str).to_numpy() if SPLIT_COLUMN in metadata else np.array([])
    if len(split) != len(mask):
        return {"train": int(mask.sum()), "test": 0}
    return {"train": int((mask & (split == "train")).sum()), "test": int((mask & (split == "test")).sum())}


def _frame(metadata: pd.DataFrame, shown: Sequence[int], picked: Sequence[int]) -> tuple[pd.DataFrame, np.ndarray]:
    rows = np.unique(np.asarray(shown, dtype=np.int64))
    frame = metadata.iloc[rows].reset_index(drop=True)
    chosen = np.isin(rows, np.asarray(picked, dtype=np.int64))
    return frame, chosen


def _scored(criteria: ForgetCriteria, kind: str, frame: pd.DataFrame, chosen: np.ndarray,
            classes: Sequence[str]) -> MapCriterion:
    mask = criteria.mask(frame, classes) if kind != IDS else chosen
    return MapCriterion(criteria, kind, picked=int(chosen.sum()), matched=int((mask & chosen).sum()),
                        others=int((mask & ~chosen).sum()), shown=len(frame))


def _columns(frame: pd.DataFrame) -> list[str]:
    """Columns a condition may use: the class first, then the metadata (never ids or split)."""
    columns = [c for c in frame.columns if c not in (SAMPLE_ID_COLUMN, SPLIT_COLUMN)]
    return sorted(columns, key=lambda c: c != LABEL_COLUMN)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def _value_clause(column: str, values: list) -> Clause:
    if len(values) == 1:
        return Comparison(column, "==", values[0])
    return ValueSet(column, tuple(values))


def _category_values(frame: pd.DataFrame, column: str, classes: list[str], rows: np.ndarray) -> list | None:
    """The distinct values of ``rows`` as criteria values (class names for the label)."""
    series = frame[column]
    if series[rows].isna().any():
        return None
    values = pd.unique(series[rows])
    if column == LABEL_COLUMN:
        return [classes[int(v)] for v in sorted(int(v) for v in values)]
    if not all(isinstance(v, str) for v in values):
        return None
    return sorted(values)


def _covering_candidates(frame: pd.DataFrame, chosen: np.ndarray, classes: list[str]) -> list[tuple[Clause, np.ndarray, int]]:
    """Single clauses that pick every selected image: ``(clause, mask over frame, complexity)``."""
    found = []
    if not chosen.any():
        return found
    for column in _columns(frame):
        series = frame[column]
        if column != LABEL_COLUMN and _is_numeric(series):
            clause = _covering_range(series, chosen)
            if clause is not None:
                cost = 2 if isinstance(clause, RangeClause) else 1
                found.append((clause, clause_mask(clause, frame, classes), cost))
            continue
        values = _category_values(frame, column, classes, chosen)
        if values is None or len(values) > MAX_VALUES:
            continue
        clause = _value_clause(column, values)
        found.append((clause, clause_mask(clause, frame, classes), len(values)))
    return found


def clause_mask(clause: Clause, frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    return ForgetCriteria((clause,)).mask(frame, classes)


def _simplest_exact(candidates: list[tuple[Clause, np.ndarray, int]], chosen: np.ndarray) -> tuple[Clause, ...] | None:
    exact = [((1, cost, i), (clause,)) for i, (clause, mask, cost) in enumerate(candidates)
             if np.array_equal(mask, chosen)]
    if exact:
        return min(exact, key=lambda item: item[0])[1]
    pairs = []
    for (i, (a, mask_a, cost_a)), (j, (b, mask_b, cost_b)) in itertools.combinations(enumerate(candidates), 2):
        if a.column != b.column and np.array_equal(mask_a & mask_b, chosen):
            pairs.append(((2, cost_a + cost_b, i, j), (a, b)))
    return min(pairs, key=lambda item: item[0])[1] if pairs else None


def _covering_range(series: pd.Series, chosen: np.ndarray) -> Clause | None:
    """``lo <= column <= hi`` (or one-sided) around the selected values, with round bounds
    that stay clear of the nearest unselected values outside; ``None`` when not allowed."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    picked = values[chosen]
    if chosen.sum() < MIN_FOR_NUMERIC or np.isnan(picked).any():
        return None
    rest = values[~chosen]
    rest = rest[~np.isnan(rest)]
    lo, hi = float(picked.min()), float(picked.max())
    below = rest[rest < lo]
    above = rest[rest > hi]
    integer = pd.api.types.is_integer_dtype(series.dtype)
    low = _round_down(lo, float(below.max()) if len(below) else None, integer)
    high = _round_up(hi, float(above.min()) if len(above) else None, integer)
    if not len(below) and not len(above):
        return None  # every image on the map lies in the range: no condition at all
    if not len(below):
        return Comparison(series.name, "<=", high)
    if not len(above):
        return Comparison(series.name, ">=", low)
    return RangeClause(series.name, low, high)


def _round_down(value: float, floor_exclusive: float | None, integer: bool) -> int | float:
    """The roundest number ``x`` with ``floor_exclusive < x <= value``."""
    for digits in range(0, 10):
        scale = 10 ** digits
        x = math.floor(value * scale + 1e-9) / scale
        if x <= value and (floor_exclusive is None or x > floor_exclusive):
            return _tidy(x, digits, integer)
    return _tidy(value, 10, integer)


def _round_up(value: float, ceiling_exclusive: float | None, integer: bool) -> int | float:
    """The roundest number ``x`` with ``value <= x < ceiling_exclusive``."""
    for digits in range(0, 10):
        scale = 10 ** digits
        x = math.ceil(value * scale - 1e-9) / scale
        if x >= value and (ceiling_exclusive is None or x < ceiling_exclusive):
            return _tidy(x, digits, integer)
    return _tidy(value, 10, integer)


def _tidy(x: float, digits: int, integer: bool) -> int | float:
    x = round(x, digits)
    return int(x) if (integer or digits == 0) and float(x).is_integer() else x


def _near_candidates(frame: pd.DataFrame, chosen: np.ndarray, classes: list[str]):
    """Clauses worth trying as a near miss: values mostly selected, and one-sided thresholds."""
    if not chosen.any():
        return
    for column in _columns(frame):
        series = frame[column]
        if column != LABEL_COLUMN and _is_numeric(series):
            if chosen.sum() < MIN_FOR_NUMERIC:
                continue
            yield from _best_thresholds(series, chosen)
            continue
        if column != LABEL_COLUMN and not all(isinstance(v, str) for v in series.dropna().unique()):
            continue
        share = pd.Series(chosen).groupby(series.to_numpy()).mean()
        mostly = [v for v, s in share.items() if s > 0.5]
        if not mostly or len(mostly) > MAX_VALUES:
            continue
        values = [classes[int(v)] for v in sorted(mostly)] if column == LABEL_COLUMN else sorted(mostly)
        clause = _value_clause(column, values)
        yield clause, clause_mask(clause, frame, classes)


def _best_thresholds(series: pd.Series, chosen: np.ndarray):
    """For ``>=`` and ``<=``: the threshold (at a selected value) with the best overlap."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    integer = pd.api.types.is_integer_dtype(series.dtype)
    for op in (">=", "<="):
        best, best_score = None, -1.0
        for threshold in np.unique(values[chosen & ~np.isnan(values)]):
            mask = values >= threshold if op == ">=" else values <= threshold
            score = (mask & chosen).sum() / max(1, (mask | chosen).sum())
            if score > best_score:
                best, best_score = threshold, score
        if best is None:
            continue
        rest = values[~np.isnan(values)]
        if op == ">=":
            lower = rest[rest < best]
            bound = _round_down(float(best), float(lower.max()) if len(lower) else None, integer)
        else:
            higher = rest[rest > best]
            bound = _round_up(float(best), float(higher.min()) if len(higher) else None, integer)
        clause = Comparison(series.name, op, bound)
        yield clause, (values >= bound if op == ">=" else values <= bound)


# --- what each model predicts -----------------------------------------------------------------
def prediction_table(
    metadata: pd.DataFrame, rows: Sequence[int], panels: Mapping[str, object], classes: Sequence[str],
    forget_rows: Sequence[int] = (),
) -> pd.DataFrame:
    """One row per selected image: its id, class, whether it is to be forgotten, each model's
    prediction side by side in neutral words, then the image's other metadata.

    The first model's column names the predicted class ("3"); each later model's says "same: 3"
    or "now predicted as 9". No "wrong": a forgotten image predicted as another class is what
    unlearning aims for. ``panels`` are :class:`~unlearn_core.embedding.EmbeddingPanel`-like
    (``indices``, ``predicted``), in column order.
    """
    rows = [int(r) for r in rows]
    forget = set(int(r) for r in forget_rows)
    meta = metadata.iloc[rows]
    table = pd.DataFrame({
        "image": meta[SAMPLE_ID_COLUMN].astype(str).to_numpy() if SAMPLE_ID_COLUMN in meta else rows,
        "class": [str(classes[int(v)]) for v in meta[LABEL_COLUMN]],
        "group": ["to forget" if r in forget else "kept" for r in rows],
    })
    first: list[int | None] | None = None
    for name, panel in panels.items():
        by_row = dict(zip(np.asarray(panel.indices).tolist(), np.asarray(panel.predicted).tolist()))
        predicted = [by_row.get(r) for r in rows]
        column = MODEL_SHORT.get(name, name)
        if first is None:
            table[column] = ["–" if p is None else str(classes[int(p)]) for p in predicted]
            first = predicted
        else:
            table[column] = [_relative(p, before, classes) for p, before in zip(predicted, first)]
    for column in meta.columns:  # the metadata last, for a look at what the images share
        if column not in (SAMPLE_ID_COLUMN, LABEL_COLUMN, SPLIT_COLUMN) and column not in table:
            table[column] = meta[column].to_numpy()
    return table


def _relative(now: int | None, before: int | None, classes: Sequence[str]) -> str:
    if now is None:
        return "–"
    if before is not None and int(now) == int(before):
        return f"same: {classes[int(now)]}"
    return f"now predicted as {classes[int(now)]}"
