"""What a finished run found, in one typed shape for every kind of run.

Why: results used to travel as one flat dict (per-model blocks mixed with timings, config and
history), and a composition stored a different one, so every reader (report, pages, cache)
re-derived the structure. :class:`RunResult` is that structure, written once by the workflows
(:mod:`unlearn_core.runs.workflows`) and stored as the record's ``metrics`` JSON. Runs recorded
before it existed are read through :meth:`RunResult.from_dict` too (their flat dict is mapped
onto the same fields), so old workspaces keep opening.

Torch-free: pages, the report and ``runs show`` read results without loading models.

Example::

    result = RunResult.of(record)
    name, block = result.main_block()          # ("unlearned", {"forget_test_acc": ...})
    result.comparison.avg_gap                  # SalUn's Avg. Gap to the retrained model
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearn_core.runs.registry import RunRecord

#: Per-model blocks in the order they are shown.
MODEL_ORDER = ("original", "retrain", "unlearned")
#: Largest drop of accuracy on the kept kind of test images (T_r) from the original to the retrain
#: reference that is not flagged: retraining without the forget set should keep that accuracy,
#: so a larger drop says the reference was trained differently (fewer epochs...) than the original.
REFERENCE_TOLERANCE = 0.05
#: Where a retrain recipe came from (:attr:`RunResult.retrain_recipe_source`), in words.
RECIPE_SOURCE_WORDS = {"file": "recorded in the model's weights file", "demo": "the demo model's shipped recipe",
                       "given": "given by the user"}
#: Keys of a legacy flat result that are neither blocks nor figures.
_LEGACY_NOT_BLOCKS = frozenset({"config", "sizes", "forget_classes", "diagnostics", "history", "criteria"})


@dataclass
class Comparison:
    """How the run's model compares with the original and the retrained reference.

    Attributes:
        distance_to_retrain: distance of the unlearned model to the retrained one (0 is ideal;
            ``None`` without a retrain reference).
        original_distance_to_retrain: the same for the original model (where unlearning started).
        avg_gap: SalUn's Avg. Gap to the retrained model (0 is ideal; ``None`` without one).
        collapsed: the model lost more than 10 points of remain accuracy (it broke, not forgot).
    """

    distance_to_retrain: float | None = None
    original_distance_to_retrain: float | None = None
    avg_gap: float | None = None
    collapsed: bool | None = None


@dataclass(frozen=True)
class ReferenceCheck:
    """Is the retrain reference a fair one? The original's and the retrain's test accuracy.

    Every face (command line, Results page, HTML report) states them side by side, with the
    recipe the reference was trained with, so a reference trained another way than the
    original is seen at once instead of silently skewing every distance.
    """

    original_test_acc: float
    retrain_test_acc: float
    original_remain_test_acc: float | None = None
    retrain_remain_test_acc: float | None = None
    recipe: str = ""
    recipe_source: str = ""

    @property
    def recipe_words(self) -> str:
        """The recipe in words (its stored text when that no longer reads)."""
        from unlearn_core.errors import UserError
        from unlearn_core.runs.recipe import Recipe

        try:
            return Recipe.parse(self.recipe, allow_seed=True).describe()
        except UserError:
            return self.recipe

    @property
    def remain_drop(self) -> float | None:
        """How much accuracy on the kept kind of test images the retrain lost against the original."""
        if self.original_remain_test_acc is None or self.retrain_remain_test_acc is None:
            return None
        return self.original_remain_test_acc - self.retrain_remain_test_acc

    @property
    def suspicious(self) -> bool:
        drop = self.remain_drop
        return drop is not None and drop > REFERENCE_TOLERANCE

    def sentence(self) -> str:
        """``Test accuracy: original 92.0 %, retrain reference 91.5 % (trained with ...).``"""
        text = f"Test accuracy: original {self.original_test_acc:.1%}, retrain reference {self.retrain_test_acc:.1%}"
        if self.original_remain_test_acc is not None and self.retrain_remain_test_acc is not None:
            text += (f" (on the kept kind of images: {self.original_remain_test_acc:.1%} and "
                     f"{self.retrain_remain_test_acc:.1%})")
        if self.recipe:
            source = RECIPE_SOURCE_WORDS.get(self.recipe_source, self.recipe_source)
            text += f". The reference was trained with {self.recipe_words}" + (f" ({source})" if source else "")
        return text + "."

    def warning(self) -> str | None:
        """A warning when the reference looks trained differently from the original."""
        if not self.suspicious:
            return None
        return (f"The retrain reference is {100 * self.remain_drop:.1f} points less accurate than the original on the kept "
                "kind of test images, which retraining without the forget set should not cost: it was "
                "probably trained with another recipe than the original, and distances to it mean little. "
                "Check the original's recipe (--recipe).")


@dataclass
class Timing:
    """Seconds spent, and how unlearning compares with retraining."""

    unlearn: float | None = None
    retrain: float | None = None
    train: float | None = None
    evaluate: float | None = None

    @property
    def pct_of_retrain(self) -> float | None:
        if self.unlearn is None or not self.retrain:
            return None
        return 100.0 * self.unlearn / self.retrain

    @property
    def speedup(self) -> float | None:
        if self.unlearn is None or not self.retrain:
            return None
        return self.retrain / max(self.unlearn, 1e-9)


@dataclass
class RunResult:
    """A finished run's results.

    Attributes:
        blocks: per-model metric blocks (see :data:`unlearn_core.metrics.METRIC_DEFINITIONS`):
            ``original``, ``unlearned`` and ``retrain`` for unlearn and compose runs; the run's
            kind (``train``, ``retrain``) for training runs.
        comparison: distance, Avg. Gap and collapse flag of the run's model.
        timing: seconds per phase.
        sizes: images in each of the four sets (``forget_train``...).
        forget_classes: forget-set images per class name.
        diagnostics: method-specific figures (PSG's flip rate...).
        criteria_description: the forget criteria in words.
        retrain_reused: the retrain reference was a recorded one (not trained for this run).
        candidates: a composition's scored candidates (``label``, ``params``, ``metrics``,
            ``distance_to_retrain``...), and ``chosen``, the label of the one saved.
        retrain_recipe: the recipe the retrain reference was trained with (``Recipe`` text),
            and ``retrain_recipe_source``: where it came from (``file``, ``demo``, ``given``).
        scored_sizes: images each block was scored on, when fewer than ``sizes`` (the kept sets
            are sampled above :data:`unlearn_core.evaluate.SCORED_REMAIN_MAX`); empty: all of them.
    """

    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    comparison: Comparison = field(default_factory=Comparison)
    timing: Timing = field(default_factory=Timing)
    sizes: dict[str, int] = field(default_factory=dict)
    forget_classes: dict[str, int] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    criteria_description: str = ""
    retrain_reused: bool | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    chosen: str | None = None
    retrain_recipe: str = ""
    retrain_recipe_source: str = ""
    scored_sizes: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading

    def scored_note(self) -> str:
        """One plain sentence when the scores come from a sample of the kept images ("" otherwise)."""
        if not self.scored_sizes:
            return ""
        s = self.scored_sizes
        return (f"Scores use every forget image and a seeded sample of the kept ones: "
                f"{s.get('remain_train', 0):,} of {self.sizes.get('remain_train', 0):,} kept training images and "
                f"{s.get('remain_test', 0):,} of {self.sizes.get('remain_test', 0):,} kept test images.")

    def reference(self) -> ReferenceCheck | None:
        """The original's and the retrain's test accuracy side by side (``None`` without both)."""
        original, retrain = self.original, self.retrain
        if not original or not retrain or "test_acc" not in original or "test_acc" not in retrain:
            return None
        return ReferenceCheck(original_test_acc=original["test_acc"], retrain_test_acc=retrain["test_acc"],
                              original_remain_test_acc=original.get("remain_test_acc"),
                              retrain_remain_test_acc=retrain.get("remain_test_acc"),
                              recipe=self.retrain_recipe, recipe_source=self.retrain_recipe_source)

    def ordered_blocks(self) -> dict[str, dict[str, Any]]:
        """Blocks with original, retrain, unlearned first, then any other."""
        ordered = {name: self.blocks[name] for name in MODEL_ORDER if name in self.blocks}
        ordered.update({name: block for name, block in self.blocks.items() if name not in ordered})
        return ordered

    def main_block(self) -> tuple[str, dict[str, Any]]:
        """The block of the run's own model: the unlearned one, else the only one there is."""
        for name in ("unlearned", "train", "retrain", "original"):
            if name in self.blocks:
                return name, self.blocks[name]
        return next(iter(self.blocks.items()), ("", {}))

    @property
    def original(self) -> dict[str, Any] | None:
        return self.blocks.get("original")

    @property
    def unlearned(self) -> dict[str, Any] | None:
        return self.blocks.get("unlearned")

    @property
    def retrain(self) -> dict[str, Any] | None:
        return self.blocks.get("retrain")

    # ------------------------------------------------------------------ storing

    def to_dict(self) -> dict[str, Any]:
        """The stored shape (``RunRecord.metrics``); :meth:`from_dict` reads it back."""
        out = asdict(self)
        out["timing"].update(pct_of_retrain=self.timing.pct_of_retrain, speedup=self.timing.speedup)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], kind: str = "unlearn") -> RunResult:
        """Read a stored result: this shape, or the flat dict of runs recorded before it."""
        values = values or {}
        if "blocks" in values:
            timing = {k: v for k, v in (values.get("timing") or {}).items()
                      if k in ("unlearn", "retrain", "train", "evaluate")}
            return cls(blocks=dict(values["blocks"]), comparison=Comparison(**(values.get("comparison") or {})),
                       timing=Timing(**timing), sizes=dict(values.get("sizes") or {}),
                       forget_classes=dict(values.get("forget_classes") or {}),
                       diagnostics=dict(values.get("diagnostics") or {}),
                       criteria_description=values.get("criteria_description") or "",
                       retrain_reused=values.get("retrain_reused"),
                       candidates=list(values.get("candidates") or []), chosen=values.get("chosen"),
                       retrain_recipe=values.get("retrain_recipe") or "",
                       retrain_recipe_source=values.get("retrain_recipe_source") or "",
                       scored_sizes=dict(values.get("scored_sizes") or {}))
        return cls._from_legacy(values, kind)

    @classmethod
    def of(cls, record: RunRecord) -> RunResult:
        """The result of a recorded run (empty for a run that has not finished)."""
        return cls.from_dict(record.metrics, record.kind)

    @classmethod
    def _from_legacy(cls, m: dict[str, Any], kind: str) -> RunResult:
        blocks = {k: v for k, v in m.items() if isinstance(v, dict) and k not in _LEGACY_NOT_BLOCKS}
        if not blocks and kind in ("train", "retrain") and "test_acc" in m:
            blocks = {kind: {"test_acc": m["test_acc"]}}
        comparison = Comparison(distance_to_retrain=m.get("distance_to_retrain"),
                                original_distance_to_retrain=m.get("original_distance_to_retrain"),
                                avg_gap=m.get("avg_gap"), collapsed=m.get("collapsed"))
        if comparison.avg_gap is None and "retrain" in blocks and "unlearned" in blocks:
            comparison.avg_gap = _avg_gap(blocks["unlearned"], blocks["retrain"])
        timing = Timing(unlearn=m.get("seconds_unlearn"), retrain=m.get("seconds_retrain"),
                        train=m.get("seconds_train"), evaluate=m.get("seconds_evaluate"))
        diagnostics = dict(m.get("diagnostics") or {})
        if m.get("flip_rate") is not None:
            diagnostics.setdefault("flip_rate", m["flip_rate"])
        return cls(blocks=blocks, comparison=comparison, timing=timing, sizes=dict(m.get("sizes") or {}),
                   forget_classes=dict(m.get("forget_classes") or {}), diagnostics=diagnostics,
                   criteria_description=m.get("criteria_description") or "",
                   retrain_reused=m.get("retrain_reused"), candidates=list(m.get("candidates") or []),
                   chosen=m.get("chosen"))


def _avg_gap(block: dict[str, Any], retrain: dict[str, Any]) -> float | None:
    from unlearn_core.metrics import avg_gap

    try:
        value = avg_gap(block, retrain)
    except (KeyError, TypeError):  # a block from an older version without every metric
        return None
    return None if math.isnan(value) else value
