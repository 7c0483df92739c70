"""Forget criteria: which samples a model must forget, as a structured, checkable predicate.

Why a structured type instead of a pandas query string: the criteria travel from a text box,
dashboard widgets, the command line and the run registry, and must (1) never execute user
text (no ``eval``, no ``DataFrame.query``), (2) give messages that say exactly what is wrong,
and (3) round-trip between text, objects and JSON without drift, so an audit trail shows the
exact predicate that was applied.

Text grammar (keywords are case-insensitive; clauses are combined with ``and`` only)::

    criteria   := clause ("and" clause)*
    clause     := column OP value                      vpf_mm >= 12, device != "Topcon"
                | value OP column                      12 <= vpf_mm   (same as vpf_mm >= 12)
                | value LT column LT value             12 <= vpf_mm < 14       (a range)
                | value GT column GT value             14 >= vpf_mm >= 12      (same range)
                | column ["not"] "in" "(" value ("," value)* [","] ")"
                | column ["not"] "in" "[" value ("," value)* [","] "]"   (same; written with "(")
                | "fraction" "(" number ["," ["seed" "="] integer] ")"
    OP         := "==" | "=" | "!=" | "<" | "<=" | ">" | ">="
    LT / GT    := "<" | "<="  /  ">" | ">="
    column     := name of letters, digits, "_" (not starting with a digit)
                | `any name` in backticks (a literal backtick is written twice)
    value      := number (12, -3, 11.5, .5, 1e-3) | "text" | 'text'
                  (escapes in text: \\\\ \\" \\' \\n \\t \\r)

Semantics:
    * ``label`` is the class: compare it with a class name (``label == "healthy"``) or an index
      (``label == 2``), with ``==``, ``!=``, ``in``, ``not in`` only.
    * ``fraction(p, seed=s)`` keeps a random share ``p`` of the samples that match all *other*
      clauses (``round(p * n)``, at least 1 when ``n > 0``), drawn with ``seed`` separately
      within each split, so both the forget set and its test counterpart are sampled.
    * A missing value (NaN/None) never matches any condition, not even ``!=`` or ``not in``:
      a sample whose measurement is unknown is never forgotten by accident.
    * The ``split`` column cannot be used: criteria always apply to train and test alike.
    * ``sample_id`` names images one by one: ``sample_id in ("digits-00012", "digits-00040")``
      is an explicit list (e.g. images picked on a map); it is described as "N listed images".
"""

from __future__ import annotations

import difflib
import math
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from unlearn_core.errors import UserError

if TYPE_CHECKING:  # imported lazily: criteria are used by the dashboard before torch is needed
    from unlearn_core.data.imageset import ImageSet

Value = Union[int, float, str]

LABEL_COLUMN = "label"
SAMPLE_ID_COLUMN = "sample_id"
SPLIT_COLUMN = "split"
COMPARISON_OPS = ("==", "!=", "<", "<=", ">", ">=")
ORDER_OPS = ("<", "<=", ">", ">=")
SPLIT_KEYS = ("forget_train", "remain_train", "forget_test", "remain_test")
KEYWORDS = ("and", "or", "not", "in")
#: Longest criteria text accepted (real criteria are a few lines; pages of text are a mistake).
MAX_CRITERIA_CHARS = 4000
EXAMPLE = 'vpf_mm >= 12 and label == "healthy"'
DICT_VERSION = 1

_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_WRITE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_PRETTY_OPS = {"==": "=", "!=": "≠", "<": "<", "<=": "≤", ">": ">", ">=": "≥"}


# --- values --------------------------------------------------------------------------------
def _normalize_value(value: Any, what: str = "value") -> Value:
    """Plain ``int``/``float``/``str`` from user or numpy input; rejects anything else.

    Why: numpy scalars print as ``np.float64(1.5)`` and bools are ints in Python; both would
    break the text round trip or silently mean 0/1.
    """
    if isinstance(value, (bool, np.bool_)):
        raise UserError(f"The {what} {value!r} is a yes/no value; use a number or quoted text.")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not math.isfinite(number):
            raise UserError(f"The {what} {number} is not a finite number; use a real number.")
        return number
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise UserError(
        f"The {what} {value!r} has type {type(value).__name__}; use a number or quoted text."
    )


def _normalize_number(value: Any, what: str) -> int | float:
    """A finite number (not text), for ranges and ordering comparisons."""
    number = _normalize_value(value, what)
    if isinstance(number, str):
        raise UserError(f"The {what} {_format_value(number)} is text; it must be a number.")
    return number


def _check_column(column: Any) -> str:
    if not isinstance(column, str) or not column:
        raise UserError(f"A column name must be non-empty text, got {column!r}.")
    return column


def _format_value(value: Value) -> str:
    """Canonical text of a value: ``repr`` for floats round-trips exactly."""
    if isinstance(value, str):
        return '"' + "".join(_WRITE_ESCAPES.get(ch, ch) for ch in value) + '"'
    return repr(value)


def _format_column(column: str) -> str:
    """Bare name when it can be read back as one, else backtick-quoted."""
    if _BARE_NAME.fullmatch(column) and column.lower() not in KEYWORDS:
        return column
    return "`" + column.replace("`", "``") + "`"


def _pretty_number(value: int | float) -> str:
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


# --- clauses -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """``column op value``, e.g. ``vpf_mm >= 12`` or ``device == "Cirrus 800 FA"``."""

    column: str
    op: str
    value: Value

    def __post_init__(self) -> None:
        _check_column(self.column)
        if self.op not in COMPARISON_OPS:
            raise UserError(
                f"Unknown comparison {self.op!r}; use one of {', '.join(COMPARISON_OPS)}."
            )
        value = _normalize_value(self.value)
        if self.op in ORDER_OPS and isinstance(value, str):
            raise UserError(
                f"'{self.op}' compares numbers, but {_format_value(value)} is text; "
                "use == or != for text, e.g. "
                f"{_format_column(self.column)} == {_format_value(value)}."
            )
        object.__setattr__(self, "value", value)

    def to_text(self) -> str:
        return f"{_format_column(self.column)} {self.op} {_format_value(self.value)}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "compare", "column": self.column, "op": self.op, "value": self.value}


@dataclass(frozen=True)
class RangeClause:
    """``low <= column <= high`` with either end inclusive or not, e.g. ``12 <= vpf_mm < 14``."""

    column: str
    low: int | float
    high: int | float
    low_inclusive: bool = True
    high_inclusive: bool = True

    def __post_init__(self) -> None:
        _check_column(self.column)
        low = _normalize_number(self.low, "lower end of the range")
        high = _normalize_number(self.high, "upper end of the range")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "low_inclusive", bool(self.low_inclusive))
        object.__setattr__(self, "high_inclusive", bool(self.high_inclusive))
        if low > high or (low == high and not (self.low_inclusive and self.high_inclusive)):
            raise UserError(
                f"The range {self.to_text()} contains no value; the lower end must be below "
                "the upper end."
            )

    @property
    def low_op(self) -> str:
        return "<=" if self.low_inclusive else "<"

    @property
    def high_op(self) -> str:
        return "<=" if self.high_inclusive else "<"

    def to_text(self) -> str:
        return (
            f"{_format_value(self.low)} {self.low_op} {_format_column(self.column)} "
            f"{self.high_op} {_format_value(self.high)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "range", "column": self.column, "low": self.low, "high": self.high,
            "low_inclusive": self.low_inclusive, "high_inclusive": self.high_inclusive,
        }


@dataclass(frozen=True)
class ValueSet:
    """``column in (v1, v2, ...)`` or, with ``negate``, ``column not in (...)``."""

    column: str
    values: tuple[Value, ...]
    negate: bool = False

    def __post_init__(self) -> None:
        _check_column(self.column)
        if isinstance(self.values, (str, bytes)) or not isinstance(self.values, Iterable):
            raise UserError(f"The values for {self.column!r} must be a list, got {self.values!r}.")
        values = tuple(_normalize_value(v) for v in self.values)
        if not values:
            raise UserError(
                f"'{self.keyword}' for column {self.column!r} needs at least one value, "
                f'e.g. {_format_column(self.column)} {self.keyword} ("a", "b").'
            )
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "negate", bool(self.negate))

    @property
    def keyword(self) -> str:
        return "not in" if self.negate else "in"

    def to_text(self) -> str:
        inner = ", ".join(_format_value(v) for v in self.values)
        return f"{_format_column(self.column)} {self.keyword} ({inner})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "in", "column": self.column, "values": list(self.values),
                "negate": self.negate}


@dataclass(frozen=True)
class Fraction:
    """``fraction(p, seed=s)``: a seeded random share of whatever the other clauses match."""

    fraction: float
    seed: int = 0

    def __post_init__(self) -> None:
        share = _normalize_number(self.fraction, "fraction")
        if not 0.0 < share <= 1.0:
            raise UserError(
                f"The fraction must be above 0 and at most 1 (e.g. 0.1 for 10%), got {share}."
            )
        seed = self.seed
        whole = isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_))
        if not whole or seed < 0:
            raise UserError(f"The seed must be a whole number 0 or above, got {seed!r}.")
        object.__setattr__(self, "fraction", float(share))
        object.__setattr__(self, "seed", int(seed))

    def to_text(self) -> str:
        return f"fraction({self.fraction!r}, seed={self.seed})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fraction", "fraction": self.fraction, "seed": self.seed}


Clause = Union[Comparison, RangeClause, ValueSet, Fraction]
_CLAUSE_TYPES = (Comparison, RangeClause, ValueSet, Fraction)


# --- the criteria --------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgetCriteria:
    """A conjunction of clauses; build with :meth:`parse`, :meth:`from_parts` or directly.

    Clause order is kept as written (it is part of equality and of the canonical text), so
    the text a user typed reads back the same way.
    """

    clauses: tuple[Clause, ...]

    def __post_init__(self) -> None:
        if isinstance(self.clauses, _CLAUSE_TYPES):
            object.__setattr__(self, "clauses", (self.clauses,))
        clauses = tuple(self.clauses)
        if not clauses:
            raise UserError(
                f"The forget criteria are empty; add at least one condition, e.g. {EXAMPLE}."
            )
        for clause in clauses:
            if not isinstance(clause, _CLAUSE_TYPES):
                raise UserError(f"{clause!r} is not a forget condition.")
        if sum(isinstance(c, Fraction) for c in clauses) > 1:
            raise UserError("Use fraction(...) at most once in the forget criteria.")
        object.__setattr__(self, "clauses", clauses)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> ForgetCriteria:
        """Parse the text form (see the module docstring); raises :class:`UserError`."""
        return parse_criteria(text)

    @classmethod
    def from_parts(
        cls,
        ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
        value_sets: Mapping[str, Sequence[Value]] | None = None,
        classes: Sequence[str | int] | None = None,
        fraction: float | None = None,
        seed: int = 0,
    ) -> ForgetCriteria:
        """Criteria from dashboard widgets: class picker, range sliders, value pickers.

        ``ranges`` maps a column to inclusive ``(low, high)``; ``None`` on one side makes it
        one-sided. An empty value list or class list means "no restriction" (a multiselect
        left empty), so it adds no clause. Clause order: classes, ranges, value sets, fraction.
        """
        clauses: list[Clause] = []
        if classes:
            clauses.append(_equals_or_in(LABEL_COLUMN, list(classes)))
        for column, bounds in (ranges or {}).items():
            clauses.extend(_range_clauses(column, bounds))
        for column, values in (value_sets or {}).items():
            if values is not None and len(values):
                clauses.append(_equals_or_in(column, list(values)))
        if fraction is not None:
            clauses.append(Fraction(fraction, seed))
        if not clauses:
            raise UserError(
                "No forget condition is set; pick a class, a value range, values or a fraction."
            )
        return cls(tuple(clauses))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForgetCriteria:
        """Inverse of :meth:`to_dict` (the run registry's stored form)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("clauses"), list):
            raise UserError(
                f"Stored criteria must be a mapping with a 'clauses' list, got {data!r}."
            )
        version = data.get("version", DICT_VERSION)
        if version != DICT_VERSION:
            raise UserError(
                f"Stored criteria have version {version!r}; this version reads {DICT_VERSION}."
            )
        return cls(tuple(_clause_from_dict(item) for item in data["clauses"]))

    # --- serialization ---------------------------------------------------------------------
    def to_text(self) -> str:
        """Canonical text; ``parse_criteria(c.to_text()) == c`` always holds."""
        return " and ".join(clause.to_text() for clause in self.clauses)

    def __str__(self) -> str:
        return self.to_text()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form; ``text`` is for people reading the registry, not read back."""
        return {
            "version": DICT_VERSION,
            "text": self.to_text(),
            "clauses": [clause.to_dict() for clause in self.clauses],
        }

    # --- inspection ------------------------------------------------------------------------
    @property
    def fraction(self) -> Fraction | None:
        """The ``fraction(...)`` clause, or ``None`` when every matching sample is forgotten."""
        return next((c for c in self.clauses if isinstance(c, Fraction)), None)

    @property
    def conditions(self) -> tuple[Clause, ...]:
        """All clauses except the fraction (the ones that filter by value)."""
        return tuple(c for c in self.clauses if not isinstance(c, Fraction))

    @property
    def columns(self) -> tuple[str, ...]:
        """Metadata columns the criteria read, in order of first use (``label`` included)."""
        seen = dict.fromkeys(c.column for c in self.conditions)
        return tuple(seen)

    def describe(self, classes: Sequence[str], units: Mapping[str, str] | None = None) -> str:
        """Plain-English sentence for the dashboard and reports.

        Example: "training images of class 'healthy' with vpf_mm ≥ 12 mm". ``units`` maps a
        column to its unit (``ImageSet.units``).
        """
        return _describe(self, list(classes), dict(units or {}))

    # --- evaluation ------------------------------------------------------------------------
    def validate(self, imageset: ImageSet) -> None:
        """Raise :class:`UserError` if the criteria don't fit this data set's columns/classes."""
        self.mask(imageset.metadata, imageset.classes)

    def condition_masks(self, metadata: pd.DataFrame, classes: Sequence[str]) -> list[np.ndarray]:
        """One boolean mask per non-fraction clause (validated); used for "why empty" hints."""
        return [_clause_mask(c, metadata, list(classes)) for c in self.conditions]

    def mask(self, metadata: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
        """Boolean ``[N]`` mask of the rows the criteria select (vectorized; validates first).

        The fraction, if any, samples within each value of ``metadata["split"]`` separately
        (or within all rows when there is no split column).
        """
        selected = np.ones(len(metadata), dtype=bool)
        for condition in self.condition_masks(metadata, classes):
            selected &= condition
        share = self.fraction
        if share is not None:
            selected = _sample_fraction(selected, metadata, share)
        return selected


# --- splitting -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ForgetSplit:
    """Sorted ``int64`` row indices into the ImageSet: ``D_f, D_r, T_f, T_r``."""

    forget_train: np.ndarray
    remain_train: np.ndarray
    forget_test: np.ndarray
    remain_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Sample count per set, keys ``forget_train, remain_train, forget_test, remain_test``."""
        return {key: int(len(getattr(self, key))) for key in SPLIT_KEYS}

    def per_class(self, imageset: ImageSet) -> pd.DataFrame:
        """Counts per class (rows, in class order) of the four sets (columns)."""
        labels = imageset.metadata["label"].to_numpy(dtype=np.int64)
        count = len(imageset.classes)
        table = {
            key: np.bincount(labels[getattr(self, key)], minlength=count)[:count]
            for key in SPLIT_KEYS
        }
        return pd.DataFrame(table, index=pd.Index(list(imageset.classes), name="class"))


def split_sets(
    imageset: ImageSet, criteria: ForgetCriteria, *, allow_empty_test: bool = True
) -> ForgetSplit:
    """Split an ImageSet into forget/remain × train/test by the criteria.

    Raises :class:`UserError` when no training image is selected (nothing to forget) or every
    one is (nothing left to learn from). An empty ``T_f`` is allowed by default and shows as
    ``forget_test: 0`` in :meth:`ForgetSplit.sizes`; with ``allow_empty_test=False`` both test
    sets must be non-empty so forgetting can be measured on held-out images.
    """
    metadata = imageset.metadata
    selected = criteria.mask(metadata, imageset.classes)
    split = metadata[SPLIT_COLUMN].to_numpy()
    train, test = split == "train", split == "test"
    result = ForgetSplit(
        forget_train=_indices(selected & train),
        remain_train=_indices(~selected & train),
        forget_test=_indices(selected & test),
        remain_test=_indices(~selected & test),
    )
    _check_split(result, criteria, imageset, allow_empty_test)
    return result


def _indices(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


def _check_split(
    result: ForgetSplit, criteria: ForgetCriteria, imageset: ImageSet, allow_empty_test: bool
) -> None:
    sizes = result.sizes()
    n_train = sizes["forget_train"] + sizes["remain_train"]
    if sizes["forget_train"] == 0:
        raise UserError(
            f"The criteria `{criteria.to_text()}` select nothing among the {n_train} training "
            f"images: widen the range or pick other values. {clause_counts(criteria, imageset)}"
            .rstrip()
        )
    if sizes["remain_train"] == 0:
        raise UserError(
            f"The criteria `{criteria.to_text()}` select all {n_train} training images, so "
            "nothing would remain to learn from: narrow them (add a condition or a fraction)."
        )
    if not allow_empty_test:
        for key, what in (("forget_test", "no test image"), ("remain_test", "every test image")):
            if sizes[key] == 0:
                raise UserError(
                    f"The criteria `{criteria.to_text()}` select {what}, so forgetting can't be "
                    "measured on held-out images; change the criteria."
                )


def clause_counts(criteria: ForgetCriteria, imageset: ImageSet) -> str:
    """"Each condition alone matches ..." so a user sees which condition empties the set."""
    if len(criteria.conditions) < 2:
        return ""
    train = imageset.metadata[SPLIT_COLUMN].to_numpy() == "train"
    masks = criteria.condition_masks(imageset.metadata, imageset.classes)
    parts = [f"{c.to_text()}: {int((m & train).sum())}" for c, m in zip(criteria.conditions, masks)]
    return "Training images each condition matches alone: " + "; ".join(parts) + "."


# --- evaluation of one clause --------------------------------------------------------------
def _clause_mask(clause: Clause, metadata: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Validate one clause against the data and return its boolean mask."""
    series = _column(metadata, clause.column)
    if clause.column == LABEL_COLUMN:
        return _label_mask(clause, series, classes)
    if _is_numeric(series):
        return _numeric_mask(clause, series)
    return _text_mask(clause, series)


def _column(metadata: pd.DataFrame, column: str) -> pd.Series:
    if column == SPLIT_COLUMN:
        raise UserError(
            "The 'split' column can't be a forget condition: criteria apply to the training and "
            "the test images alike (D_f and T_f). Remove the split condition."
        )
    if column not in metadata.columns:
        available = [str(c) for c in metadata.columns if c != SPLIT_COLUMN]
        raise UserError(
            f"Unknown column {column!r}.{_suggest(column, available)} "
            f"Available columns: {', '.join(available)}."
        )
    return metadata[column]


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype)


def _label_mask(clause: Clause, series: pd.Series, classes: list[str]) -> np.ndarray:
    """``label`` compares by class name or index, never by order."""
    if isinstance(clause, RangeClause) or (
        isinstance(clause, Comparison) and clause.op in ORDER_OPS
    ):
        raise UserError(
            f"`{clause.to_text()}`: the label is a class, which has no order; use ==, !=, in or "
            "not in with class names, e.g. "
            f"label == {_format_value(classes[0] if classes else 'healthy')}."
        )
    labels = series.to_numpy(dtype=np.int64)
    if isinstance(clause, Comparison):
        index = _class_index(clause.value, classes)
        return labels == index if clause.op == "==" else labels != index
    indices = [_class_index(v, classes) for v in clause.values]
    hit = np.isin(labels, indices)
    return ~hit if clause.negate else hit


def _class_index(value: Value, classes: list[str]) -> int:
    listing = ", ".join(f"{i} = {name!r}" for i, name in enumerate(classes))
    if isinstance(value, str):
        if value in classes:
            return classes.index(value)
        raise UserError(
            f"Unknown class {value!r}.{_suggest(value, classes)} Classes: {listing}."
        )
    if isinstance(value, float) or not 0 <= value < len(classes):
        raise UserError(
            f"Class index {value!r} is not valid: use a whole number from 0 to "
            f"{len(classes) - 1} or a class name. Classes: {listing}."
        )
    return int(value)


def _numeric_mask(clause: Clause, series: pd.Series) -> np.ndarray:
    """Numeric column: NaN never matches (hence the explicit ``known`` guard for != / not in)."""
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    known = ~np.isnan(values)
    if isinstance(clause, RangeClause):
        low = values >= clause.low if clause.low_inclusive else values > clause.low
        high = values <= clause.high if clause.high_inclusive else values < clause.high
        return low & high
    if isinstance(clause, Comparison):
        number = _number_for(clause.column, series, clause.value, clause.op)
        return _compare(values, clause.op, number) & known
    numbers = [_number_for(clause.column, series, v, clause.keyword) for v in clause.values]
    hit = np.isin(values, numbers)
    return (~hit & known) if clause.negate else hit


def _compare(values: np.ndarray, op: str, number: float) -> np.ndarray:
    if op == "==":
        return values == number
    if op == "!=":
        return values != number
    if op == "<":
        return values < number
    if op == "<=":
        return values <= number
    if op == ">":
        return values > number
    return values >= number


def _number_for(column: str, series: pd.Series, value: Value, op: str) -> int | float:
    """The value as a number, or a message naming the column, its type and the text value."""
    if not isinstance(value, str):
        return value
    hint = (f"compare it with a number, e.g. "
            f"{_format_column(column)} {op} {_pretty_number(_typical(series))}")
    try:
        hint = f"write the number without quotes: {_format_column(column)} {op} {float(value):g}"
    except ValueError:
        pass
    raise UserError(
        f"Column {column!r} holds numbers ({series.dtype}), but the criteria compare it with the "
        f"text {_format_value(value)}; {hint}."
    )


def _typical(series: pd.Series) -> float:
    median = series.median()
    return 0.0 if pd.isna(median) else round(float(median), 2)


def _text_mask(clause: Clause, series: pd.Series) -> np.ndarray:
    """Text/categorical column: equality and membership only, with typo suggestions."""
    column = clause.column
    if isinstance(clause, RangeClause) or (
        isinstance(clause, Comparison) and clause.op in ORDER_OPS
    ):
        number = clause.low if isinstance(clause, RangeClause) else clause.value
        raise UserError(
            f"Column {column!r} holds text ({series.dtype}), so `{clause.to_text()}` can't compare "
            f"it with the number {number!r}; use ==, !=, in (...) or not in (...) with quoted "
            "values."
        )
    values = [clause.value] if isinstance(clause, Comparison) else list(clause.values)
    present = _present_values(series)
    known = set(present)  # a set: a list of hundreds of sample ids is checked in one pass
    for value in values:
        if not (isinstance(value, str) and value in known):
            _check_text_value(column, series, value, present)
    hit = series.isin(values).to_numpy(dtype=bool)
    exclude = (isinstance(clause, Comparison) and clause.op == "!=") or (
        isinstance(clause, ValueSet) and clause.negate
    )
    return (~hit & series.notna().to_numpy(dtype=bool)) if exclude else hit


def _present_values(series: pd.Series) -> list[str]:
    return sorted({str(v) for v in series.dropna().unique()})


def _check_text_value(column: str, series: pd.Series, value: Value, present: list[str]) -> None:
    if not isinstance(value, str):
        quoted = _format_value(str(value))
        raise UserError(
            f"Column {column!r} holds text ({series.dtype}), but the criteria compare it with the "
            f"number {value!r}; put the value in quotes: {_format_column(column)} == {quoted}."
        )
    if value not in present:
        shown = ", ".join(repr(v) for v in present[:20]) + (" ..." if len(present) > 20 else "")
        raise UserError(
            f"No image has {column} = {value!r}.{_suggest(value, present)} "
            f"Values present: {shown or '(none)'}."
        )


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        lowered = {str(c).lower(): str(c) for c in choices}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f" Did you mean {close[0]!r}?" if close else ""


def _sample_fraction(selected: np.ndarray, metadata: pd.DataFrame, share: Fraction) -> np.ndarray:
    """Seeded random ``round(p·n)`` (≥ 1) of the candidates, separately per split.

    Each split gets its own generator derived from (seed, split name), so the training draw
    does not change when the test pool changes, and vice versa.
    """
    if SPLIT_COLUMN in metadata.columns:
        groups = metadata[SPLIT_COLUMN].astype(str).to_numpy()
    else:
        groups = np.full(len(metadata), "all", dtype=object)
    result = np.zeros(len(metadata), dtype=bool)
    for name in sorted(set(groups.tolist())):
        candidates = np.flatnonzero(selected & (groups == name))
        if len(candidates) == 0:
            continue
        count = min(len(candidates), max(1, math.floor(share.fraction * len(candidates) + 0.5)))
        rng = np.random.default_rng([share.seed, zlib.crc32(name.encode())])
        result[rng.choice(candidates, size=count, replace=False)] = True
    return result


# --- from_parts / from_dict helpers ---------------------------------------------------------
def _equals_or_in(column: str, values: list[Value]) -> Clause:
    """One value reads best as ``==``; several as ``in (...)``."""
    if len(values) == 1:
        return Comparison(column, "==", values[0])
    return ValueSet(column, tuple(values))


def _range_clauses(column: str, bounds: Any) -> list[Clause]:
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise UserError(f"The range for {column!r} must be (low, high), got {bounds!r}.") from None
    if low is not None and high is not None:
        return [RangeClause(column, low, high)]
    if low is not None:
        return [Comparison(column, ">=", _normalize_number(low, f"lower end for {column!r}"))]
    if high is not None:
        return [Comparison(column, "<=", _normalize_number(high, f"upper end for {column!r}"))]
    return []


def _clause_from_dict(item: Any) -> Clause:
    kinds = {
        "compare": lambda d: Comparison(d["column"], d["op"], d["value"]),
        "range": lambda d: RangeClause(
            d["column"], d["low"], d["high"], d.get("low_inclusive", True),
            d.get("high_inclusive", True),
        ),
        "in": lambda d: ValueSet(d["column"], tuple(d["values"]), d.get("negate", False)),
        "fraction": lambda d: Fraction(d["fraction"], d.get("seed", 0)),
    }
    if not isinstance(item, Mapping) or item.get("kind") not in kinds:
        raise UserError(
            f"Stored criteria clause {item!r} has no known 'kind' ({', '.join(kinds)})."
        )
    try:
        return kinds[item["kind"]](item)
    except KeyError as missing:
        raise UserError(f"Stored criteria clause {item!r} lacks the field {missing}.") from None


# --- description ---------------------------------------------------------------------------
def _describe(criteria: ForgetCriteria, classes: list[str], units: dict[str, str]) -> str:
    class_parts, other_parts = [], []
    for clause in criteria.conditions:
        if clause.column == LABEL_COLUMN:
            class_parts.append(_describe_class(clause, classes))
        else:
            other_parts.append(_describe_condition(clause, units.get(clause.column, "")))
    text = "training images"
    if class_parts:
        text += " " + " and ".join(class_parts)
    if other_parts:
        text += " with " + " and ".join(other_parts)
    share = criteria.fraction
    if share is not None:
        text = f"a random {share.fraction * 100:g}% (seed {share.seed}) of the {text}"
    return text


def _class_name(value: Value, classes: list[str]) -> str:
    if isinstance(value, int) and 0 <= value < len(classes):
        return repr(classes[value])
    return repr(value) if isinstance(value, str) else f"#{value}"


def _describe_class(clause: Clause, classes: list[str]) -> str:
    values = [clause.value] if isinstance(clause, Comparison) else list(clause.values)
    names = " or ".join(_class_name(v, classes) for v in values)
    negate = (isinstance(clause, Comparison) and clause.op == "!=") or (
        isinstance(clause, ValueSet) and clause.negate
    )
    noun = "classes" if len(values) > 1 and not negate else "class"
    return f"not of {noun} {names}" if negate else f"of {noun} {names}"


def _with_unit(value: Value, unit: str) -> str:
    shown = repr(value) if isinstance(value, str) else _pretty_number(value)
    return f"{shown} {unit}" if unit and not isinstance(value, str) else shown


def _describe_condition(clause: Clause, unit: str) -> str:
    column = clause.column
    if isinstance(clause, RangeClause):
        low_op, high_op = _PRETTY_OPS[clause.low_op], _PRETTY_OPS[clause.high_op]
        return (f"{_with_unit(clause.low, unit)} {low_op} {column} {high_op} "
                f"{_with_unit(clause.high, unit)}")
    if isinstance(clause, Comparison):
        if isinstance(clause.value, str):
            return f"{column} {repr(clause.value)}" if clause.op == "==" else (
                f"{column} other than {clause.value!r}")
        return f"{column} {_PRETTY_OPS[clause.op]} {_with_unit(clause.value, unit)}"
    if column == SAMPLE_ID_COLUMN and len(clause.values) > 3:
        listed = f"one of {len(clause.values)} listed sample ids"
        return f"{column} not {listed}" if clause.negate else f"{column} {listed}"
    shown = " or ".join(_with_unit(v, unit) for v in clause.values)
    return f"{column} other than {shown}" if clause.negate else f"{column} {shown}"


# --- tokenizer -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    """One lexical token. ``kind``: name, number, string, op, "=", "(", ")", ",", a keyword
    (and/or/not/in) or end. ``quoted`` marks a backtick name (never a keyword or function)."""

    kind: str
    value: Any
    pos: int
    quoted: bool = False

    def shown(self) -> str:
        if self.kind == "end":
            return "the end"
        if self.kind == "string":
            return _format_value(self.value)
        if self.kind in ("name", "number"):
            return _format_column(self.value) if self.kind == "name" else str(self.value)
        return f"'{self.value}'"


def _excerpt(text: str, pos: int, width: int = 40) -> str:
    """The text around ``pos`` (all of it when short), so a message never echoes pages of it."""
    if len(text) <= 2 * width + 20:
        return text
    start, end = max(0, pos - width), min(len(text), pos + width)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def _syntax_error(text: str, pos: int, message: str) -> UserError:
    where = "at the end of" if pos >= len(text) else f"at position {pos + 1} in"
    return UserError(f"{message} {where}: {_excerpt(text, pos)}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        ch = text[pos]
        if ch.isspace():
            pos += 1
        elif ch in "\"'":
            token, pos = _read_string(text, pos)
            tokens.append(token)
        elif ch == "`":
            token, pos = _read_quoted_name(text, pos)
            tokens.append(token)
        elif _NUMBER.match(text, pos):
            token, pos = _read_number(text, pos)
            tokens.append(token)
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            match = _BARE_NAME.match(text, pos)
            word = match.group()
            kind = word.lower() if word.lower() in KEYWORDS else "name"
            tokens.append(_Token(kind, word, pos))
            pos = match.end()
        else:
            token, pos = _read_symbol(text, pos)
            tokens.append(token)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[_Token, int]:
    quote, pos, chars = text[start], start + 1, []
    while pos < len(text):
        ch = text[pos]
        if ch == quote:
            return _Token("string", "".join(chars), start), pos + 1
        if ch == "\\":
            escaped = text[pos + 1: pos + 2]
            if escaped not in _ESCAPES:
                shown = f"'\\{escaped}'" if escaped else "a lone backslash"
                raise _syntax_error(
                    text, pos, f"Unknown escape {shown} in text (use \\\\ \\\" \\' \\n \\t \\r)"
                )
            chars.append(_ESCAPES[escaped])
            pos += 2
        else:
            chars.append(ch)
            pos += 1
    raise _syntax_error(text, start, f"Text started with {quote} is never closed (add a {quote})")


def _read_quoted_name(text: str, start: int) -> tuple[_Token, int]:
    pos, chars = start + 1, []
    while pos < len(text):
        if text[pos] == "`":
            if text[pos + 1: pos + 2] == "`":
                chars.append("`")
                pos += 2
                continue
            if not chars:
                raise _syntax_error(text, start, "Empty column name ``")
            return _Token("name", "".join(chars), start, quoted=True), pos + 1
        chars.append(text[pos])
        pos += 1
    raise _syntax_error(text, start, "Column name started with ` is never closed (add a `)")


def _read_number(text: str, start: int) -> tuple[_Token, int]:
    match = _NUMBER.match(text, start)
    literal, end = match.group(), match.end()
    if end < len(text) and (text[end].isalnum() or text[end] in "_."):
        tail = re.match(r"[\w.]+", text[end:]).group()
        raise _syntax_error(
            text, end, f"Unexpected {tail!r} right after the number {literal} (write numbers "
            "without units, and text in quotes)"
        )
    is_float = any(c in literal for c in ".eE")
    return _Token("number", float(literal) if is_float else int(literal), start), end


_SYMBOLS = {"==": "op", "!=": "op", "<=": "op", ">=": "op", "<": "op", ">": "op",
            "=": "=", "(": "(", ")": ")", "[": "[", "]": "]", ",": ","}
_WRONG_SYMBOLS = {
    "&&": "write 'and' instead of '&&'", "&": "write 'and' instead of '&'",
    "||": "'or' is not supported; use 'in (...)' for alternatives of one column",
    "|": "'or' is not supported; use 'in (...)' for alternatives of one column",
    "!": "use '!=' for 'not equal' and 'not in (...)' to exclude values",
}


def _read_symbol(text: str, pos: int) -> tuple[_Token, int]:
    for symbol in sorted(_SYMBOLS, key=len, reverse=True):
        if text.startswith(symbol, pos):
            return _Token(_SYMBOLS[symbol], symbol, pos), pos + len(symbol)
    for symbol in sorted(_WRONG_SYMBOLS, key=len, reverse=True):
        if text.startswith(symbol, pos):
            raise _syntax_error(text, pos, f"Unexpected {symbol!r}: {_WRONG_SYMBOLS[symbol]}")
    raise _syntax_error(
        text, pos, f"Unexpected character {text[pos]!r} (put text in quotes and column names "
        "with spaces or symbols in `backticks`)"
    )


# --- parser --------------------------------------------------------------------------------
def parse_criteria(text: str) -> ForgetCriteria:
    """Parse criteria text into :class:`ForgetCriteria` (never executes anything)."""
    if not isinstance(text, str):
        raise UserError(f"Forget criteria must be text, got {type(text).__name__}.")
    if not text.strip():
        raise UserError(
            f"The forget criteria are empty; write at least one condition, e.g. {EXAMPLE}."
        )
    if len(text) > MAX_CRITERIA_CHARS:
        raise UserError(
            f"The forget criteria are {len(text):,} characters long; at most "
            f"{MAX_CRITERIA_CHARS:,} are accepted. Shorten them: a long list of values usually "
            "means a metadata column for that group is missing (add one and compare with it)."
        )
    return _Parser(text).criteria()


class _Parser:
    """Recursive descent over the token list; every failure is a UserError with a position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    # --- token helpers -----------------------------------------------------------------
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def fail(self, message: str, token: _Token | None = None, found: bool = True) -> UserError:
        """Syntax error at ``token`` (default: the next one), saying what was found there."""
        token = token or self.peek()
        found_text = f", found {token.shown()}" if found and token.kind != "end" else ""
        return _syntax_error(self.text, token.pos, message + found_text)

    def expect(self, kind: str, message: str) -> _Token:
        if self.peek().kind != kind:
            raise self.fail(message)
        return self.take()

    # --- grammar -----------------------------------------------------------------------
    def criteria(self) -> ForgetCriteria:
        clauses = [self.clause()]
        while self.peek().kind == "and":
            self.take()
            clauses.append(self.clause())
        token = self.peek()
        if token.kind == "or":
            raise self.fail(
                "'or' is not supported: conditions combine with 'and'; for alternatives of one "
                "column use 'in (...)'", token)
        if token.kind != "end":
            raise self.fail("Expected 'and' or the end of the criteria", token)
        return ForgetCriteria(tuple(clauses))

    def clause(self) -> Clause:
        token = self.peek()
        if self._is_fraction(token):
            return self.fraction()
        if token.kind == "name":
            return self.after_column(self.take().value)
        if token.kind in ("number", "string"):
            return self.after_value(self.take())
        if token.kind == "not":
            raise self.fail("'not' is only allowed in 'column not in (...)'; use != to exclude "
                            "one value", token)
        raise self.fail(f"Expected a condition such as {EXAMPLE.split(' and ')[0]}", token)

    def _is_fraction(self, token: _Token) -> bool:
        return (token.kind == "name" and not token.quoted and token.value.lower() == "fraction"
                and self.peek(1).kind == "(")

    def operator(self, after: str) -> str:
        token = self.peek()
        if token.kind in ("op", "="):
            self.take()
            return "==" if token.value == "=" else token.value
        raise self.fail(f"Expected an operator (==, !=, <, <=, >, >=) after {after}", token)

    def after_column(self, column: str) -> Clause:
        token = self.peek()
        shown = f"column {_format_column(column)}"
        if token.kind == "not":
            self.take()
            self.expect("in", "Expected 'in' after 'not'")
            return ValueSet(column, self.value_list("not in"), negate=True)
        if token.kind == "in":
            self.take()
            return ValueSet(column, self.value_list("in"))
        if token.kind not in ("op", "="):
            raise self.fail(
                f"Expected an operator (==, !=, <, <=, >, >=, in, not in) after {shown}", token)
        op = self.operator(shown)
        value = self.value(f"'{op}'")
        if op in ORDER_OPS and isinstance(value.value, str):
            raise self.fail(f"'{op}' compares numbers, but {value.shown()} is text; use == or != "
                            "for text", value, found=False)
        return Comparison(column, op, value.value)

    def after_value(self, first: _Token) -> Clause:
        op = self.operator(f"the value {first.shown()}")
        token = self.peek()
        if token.kind != "name":
            raise self.fail(f"Expected a column name after '{op}'", token)
        column = self.take().value
        if self.peek().kind not in ("op", "="):
            if op in ORDER_OPS and isinstance(first.value, str):
                raise self.fail(f"'{op}' compares numbers, but {first.shown()} is text; use == "
                                "or != for text", first, found=False)
            return Comparison(column, _FLIPPED[op], first.value)
        second_op_token = self.peek()
        second_op = self.operator(f"column {_format_column(column)}")
        return self.range(first, op, column, second_op, second_op_token)

    def range(self, first: _Token, op: str, column: str, op2: str, op2_token: _Token) -> Clause:
        ascending = op in ("<", "<=") and op2 in ("<", "<=")
        descending = op in (">", ">=") and op2 in (">", ">=")
        if not (ascending or descending):
            raise self.fail("A range needs '<'/'<=' on both sides (12 <= x < 14) or '>'/'>=' "
                            "on both sides", op2_token)
        second = self.value(f"'{op2}'")
        for bound in (first, second):
            if bound.kind != "number":
                raise self.fail("A range needs numbers at both ends", bound)
        if ascending:
            return RangeClause(column, first.value, second.value, op == "<=", op2 == "<=")
        return RangeClause(column, second.value, first.value, op2 == ">=", op == ">=")

    def value(self, after: str) -> _Token:
        token = self.peek()
        if token.kind in ("number", "string"):
            return self.take()
        if token.kind == "name":
            raise self.fail(f"Expected a value after {after} (put text in quotes, e.g. "
                            f"\"{token.value}\")", token)
        raise self.fail(f"Expected a value after {after}", token)

    def value_list(self, keyword: str) -> tuple[Value, ...]:
        opening = "[" if self.peek().kind == "[" else "("
        closing = {"(": ")", "[": "]"}[opening]
        self.expect(opening, f"Expected '(' after '{keyword}' (e.g. {keyword} (\"a\", \"b\"))")
        values = [self.value(f"'{keyword} {opening}'").value]
        while self.peek().kind == ",":
            self.take()
            if self.peek().kind == closing:
                break
            values.append(self.value("','").value)
        self.expect(closing, f"Expected ',' or '{closing}' in the list after '{keyword}'")
        return tuple(values)

    def fraction(self) -> Fraction:
        self.take()
        self.take()  # "("
        share = self.peek()
        if share.kind != "number":
            raise self.fail("Expected a number between 0 and 1 in fraction(...)", share)
        self.take()
        seed = 0
        if self.peek().kind == ",":
            self.take()
            seed = self.seed()
        self.expect(")", "Expected ')' to close fraction(...)")
        return Fraction(share.value, seed)

    def seed(self) -> int:
        token = self.peek()
        if token.kind == "name" and token.value.lower() == "seed":
            self.take()
            self.expect("=", "Expected '=' after 'seed'")
        token = self.peek()
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise self.fail("Expected a whole number seed (e.g. seed=3)", token)
        return self.take().value


__all__ = [
    "Clause", "Comparison", "ForgetCriteria", "ForgetSplit", "Fraction", "RangeClause",
    "SPLIT_KEYS", "ValueSet", "parse_criteria", "split_sets",
]
