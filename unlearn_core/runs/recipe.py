"""The training recipe of an original model, as text a user can type and a file can carry.

Why it exists: the retrain reference is only a fair yardstick when it is trained the way the
original model was (same architecture, epochs, learning rate...), on the kept images only. An
original trained for 30 epochs compared with an 8-epoch retrain makes every distance
meaningless. The recipe therefore comes from the original itself: the weights file records it
(``train --out`` and every model the workspace saves write ``recipe`` into the safetensors
metadata), the built-in demo models have their shipped recipe, and a user whose file records
none gives it (``unlearn --retrain --recipe "epochs=30,lr=0.05"`` or the fields on the Unlearn
page).

Text form: comma-separated ``name=value`` pairs over :data:`FIELDS` (spaces allowed); fields
left out take the ``train`` command's defaults. The metadata form written by
``TrainConfig.recipe_key()`` (which also names the seed) reads with ``allow_seed=True``; the
seed is not part of the recipe here because the retrain uses the run's own ``--seed``.

Torch-free, so requests and pages can parse and print it; turning it into a ``TrainConfig``
(and checking ranges) is :func:`unlearn_core.pipeline.retrain_recipe`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from unlearn_core.errors import UserError

#: Example shown in messages that ask for a recipe.
EXAMPLE = "epochs=30,lr=0.05,batch_size=64,momentum=0.9,weight_decay=0.0005"
#: Metadata key of the recipe in a safetensors file.
METADATA_KEY = "recipe"


@dataclass(frozen=True)
class Recipe:
    """How the original model was trained (the defaults are the ``train`` command's).

    Attributes:
        arch: architecture name; ``None`` means "the model's own" (a recipe typed for a model
            whose file already names its architecture need not repeat it).
        epochs: passes over the training images.
        batch_size: images per SGD step.
        lr: peak learning rate (cosine/one-cycle schedule, as ``train`` uses).
        momentum: SGD momentum.
        weight_decay: L2 penalty.
    """

    arch: str | None = None
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4

    @classmethod
    def parse(cls, text: str, *, allow_seed: bool = False, source: str = "--recipe") -> Recipe:
        """Read ``"epochs=30,lr=0.05"``; a bad pair is a :class:`UserError` naming it."""
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{source} is empty; give the original model's training recipe, e.g. {EXAMPLE!r}.")
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for pair in text.split(","):
            if not pair.strip():
                continue
            name, sep, raw = pair.partition("=")
            name, raw = name.strip().replace("-", "_"), raw.strip()
            if not sep or not name or not raw:
                raise UserError(f"{source}: expected name=value pairs separated by commas, got {pair.strip()!r} "
                                f"(e.g. {EXAMPLE!r}).")
            if name == "seed" and allow_seed:
                continue
            if name not in types:
                raise UserError(f"{source}: unknown setting {name!r}; a recipe names "
                                f"{', '.join(types)} (e.g. {EXAMPLE!r}).")
            if name in values:
                raise UserError(f"{source}: {name} is given twice.")
            values[name] = _typed(name, raw, types[name], source)
        return cls(**values)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], name: str = "The weights file") -> Recipe | None:
        """The recipe a weights file records (``None`` when it records none)."""
        text = (metadata or {}).get(METADATA_KEY, "")
        if not text.strip():
            return None
        return cls.parse(text, allow_seed=True, source=f"{name}'s recorded recipe")

    def to_text(self) -> str:
        """The canonical text (sorted names, shortest exact numbers): ``parse(to_text()) == self``."""
        pairs = []
        for f in sorted(fields(self), key=lambda f: f.name):
            value = getattr(self, f.name)
            if value is None:
                continue
            pairs.append(f"{f.name}={_number_text(value) if isinstance(value, float) else value}")
        return ",".join(pairs)

    def describe(self) -> str:
        """The recipe in words, for reports: ``10 epochs, lr 0.05, batch 64, ...``."""
        text = (f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}, learning rate {_number_text(self.lr)}, batch size {self.batch_size}, "
                f"momentum {_number_text(self.momentum)}, weight decay {_number_text(self.weight_decay)}")
        return (f"{self.arch}, " if self.arch else "") + text

    def with_arch(self, arch: str) -> Recipe:
        """This recipe for a model of architecture ``arch`` (refused when it names another)."""
        if self.arch is not None and self.arch != arch:
            raise UserError(f"The recipe says arch={self.arch}, but the model is a {arch}; the retrain "
                            f"reference must have the model's architecture. Leave arch out or give arch={arch}.")
        return Recipe(arch=arch, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                      momentum=self.momentum, weight_decay=self.weight_decay)

    def same_training(self, other: Recipe) -> bool:
        """Both describe the same training (an unset architecture matches any)."""
        mine, theirs = vars(self).copy(), vars(other).copy()
        if mine["arch"] is None or theirs["arch"] is None:
            mine.pop("arch"), theirs.pop("arch")
        return mine == theirs


def _typed(name: str, raw: str, kind: Any, source: str) -> Any:
    kind = str(kind)
    if "int" in kind:
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"{source}: {name} must be a whole number, got {raw!r}.") from None
    if "float" in kind:
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{source}: {name} must be a number, got {raw!r}.") from None
        if not math.isfinite(value):
            raise UserError(f"{source}: {name} must be a finite number, got {raw!r}.")
        return value
    return raw


def _number_text(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
