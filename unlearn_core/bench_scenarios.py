"""The benchmark's scenarios, split once into a tuning part and a held-out part (issue 10).

Why two parts: PSG's defaults (and any setting a developer picks) may be chosen by looking at
the tuning part only. The held-out part was fixed before any tuning, written down in
``docs/benchmark.md`` ("Scenario split"), and is never used to choose a setting, so its table
says how the defaults do on criteria nobody tuned for, which is what a clinician's new
criterion is.

The tuning part is the four historical demo scenarios
(:data:`unlearn_core.data.builtin.SCENARIOS`): they were used for tuning in the past, so they
are honestly the tuning part. The held-out part covers a whole class, random 1 %, 5 % and 10 %,
a metadata range without a class, a range combined with a class, and a device policy, across
the three built-in sets and one user-style set loaded through the upload path
(:mod:`unlearn_core.bench_data`).

One tuning scenario was added later (:data:`ADDED_TUNING`): a second whole class, written down
before any run on it, after the held-out class 7 showed a miss that the tuning part's only
whole class (the digit 3) never showed. Adding to the tuning part is allowed; moving a
held-out scenario into it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from unlearn_core.data.builtin import SCENARIOS as DEMO_SCENARIOS
from unlearn_core.errors import UserError

TUNING = "tuning"
HELD_OUT = "held-out"
PARTS = (TUNING, HELD_OUT)
#: Name of the user-style data set (see :mod:`unlearn_core.bench_data`).
GLYPHS = "glyphs"


@dataclass(frozen=True)
class Scenario:
    """One forget request of the benchmark.

    Attributes:
        name: short identifier (used on the command line and in the CSVs).
        dataset: a built-in set name, or :data:`GLYPHS` for the user-style set.
        criteria: forget criteria text (the grammar of :mod:`unlearn_core.data.criteria`).
        part: :data:`TUNING` or :data:`HELD_OUT`.
        covers: one line saying what kind of request it stands for.
    """

    name: str
    dataset: str
    criteria: str
    part: str
    covers: str


_TUNING_COVERS = {
    "oculoplastic_vpf": "a measurement range combined with a class (TED eyes with VPF ≥ 12 mm)",
    "fundus_device": "a device policy (a retired camera)",
    "digits_class": "a whole class (the digit 3)",
    "digits_random10": "a random 10 % of the training images",
}

#: Tuning scenarios added after the split was fixed (each with the date and why, before any run on it).
ADDED_TUNING = (
    Scenario("digits_class5", "digits", 'label == "5"', TUNING,
             "a second whole class (the digit 5; added 2026-12-02, before any run on it, after the "
             "held-out class 7 failed the relearning check that class 3 passes)"),
    *(Scenario(f"digits_class{digit}", "digits", f'label == "{digit}"', TUNING,
               f"a further whole class (the digit {digit}; added 2026-12-02, before any run on it, to look "
               "for a tuning case that fails the relearning check as held-out class 7 does; class 5 held)")
      for digit in (1, 2, 8)),
)

SCENARIOS: dict[str, Scenario] = {
    **{name: Scenario(name, dataset, criteria, TUNING, _TUNING_COVERS[name])
       for name, (dataset, criteria) in DEMO_SCENARIOS.items()},
    **{s.name: s for s in ADDED_TUNING},
    **{s.name: s for s in (
        Scenario("digits_class7", "digits", 'label == "7"', HELD_OUT, "a whole class (the digit 7)"),
        Scenario("digits_random1", "digits", "fraction(0.01, seed=1)", HELD_OUT,
                 "a random 1 % (retraining changes almost nothing)"),
        Scenario("digits_random5", "digits", "fraction(0.05, seed=1)", HELD_OUT,
                 "a random 5 % (retraining changes almost nothing)"),
        Scenario("fundus_glaucoma_to2016", "fundus", 'exam_year <= 2016 and label == "glaucoma"', HELD_OUT,
                 "a time range combined with a class whose images look like the rest of the class"),
        Scenario("oculoplastic_age70", "oculoplastic", "age >= 70", HELD_OUT,
                 "a metadata range without a class (patients aged 70 or more)"),
        Scenario("glyphs_random10", GLYPHS, "fraction(0.1, seed=2)", HELD_OUT,
                 "a random 10 % of a user's upload"),
        Scenario("glyphs_scanner", GLYPHS, 'scanner == "HazeCam"', HELD_OUT,
                 "a device policy on a user's upload (a scanner that blurs and tints its images)"),
    )},
}


def scenarios_of(part: str) -> list[Scenario]:
    """The scenarios of one part (``tuning``, ``held-out``) or of both (``all``), in a fixed order."""
    if part == "all":
        return list(SCENARIOS.values())
    if part not in PARTS:
        raise UserError(f"Unknown benchmark part {part!r}; choose tuning, held-out or all.")
    return [s for s in SCENARIOS.values() if s.part == part]


def select(names: list[str] | None, part: str) -> list[Scenario]:
    """The named scenarios (all of ``part`` when none are named); unknown names are refused."""
    if not names:
        return scenarios_of(part)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise UserError(f"Unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}.")
    return [SCENARIOS[n] for n in names]


def split_markdown() -> list[str]:
    """The "Scenario split" section of ``docs/benchmark.md`` (fixed before any tuning)."""
    lines = ["## Scenario split", "",
             "Fixed on 2026-12-02, before the work on issue 10's defaults started. Defaults may be chosen "
             "on the tuning part only; the held-out part is never used to choose a setting, and a goal "
             "it misses is reported, not retuned. The tuning part is the four demo scenarios, which earlier "
             "sessions tuned PSG on, plus any scenario added to it later (its line says when and why; "
             "a held-out scenario never moves to the tuning part).", "",
             "| part | scenario | data | forget criteria | what it covers |", "|---|---|---|---|---|"]
    for s in SCENARIOS.values():
        lines.append(f"| {s.part} | {s.name} | {s.dataset} | `{s.criteria}` | {s.covers} |")
    lines += ["", f"`{GLYPHS}` is the user-style set: letters drawn with Pillow's bundled font, written as a "
              "ZIP of PNGs plus a CSV (site, scanner, year, age) and loaded through the upload loader "
              "(`unlearn_core/bench_data.py`). Its scanner `HazeCam` blurs and tints its images, so the "
              "device policy is a visible subgroup.", ""]
    return lines
