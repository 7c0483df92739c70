"""The benchmark's user-style data set and its cached models.

Why a data set of its own: the held-out part of the benchmark must include data that none of
the built-in generators made and that arrives the way a user's does, through the upload loader
(:func:`unlearn_core.data.loaders.load_user_data`, a ZIP of images plus a CSV). So this module
draws letters with Pillow's bundled font (a source no built-in generator uses) at random size,
position, rotation and stroke width, with pixel noise, and writes them as PNGs in a ZIP with a
CSV of plausible metadata: ``site`` (4 values), ``scanner`` (3), ``year``, ``age``. The scanner
``HazeCam`` blurs and tints its images and is mostly used at one site and in earlier years, so
a device policy is a real, visible subgroup; ``age`` has no effect on the image.

Everything is written from a seed into a cache folder (never into git), and the original model
(default ``train`` recipe) and every retrain are cached on disk keyed by data fingerprint and
recipe (plus the criteria for a retrain), so rerunning a benchmark part trains nothing again.
Cached files are safetensors written by this code; nothing is unpickled.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from unlearn_core.data.imageset import ImageSet
from unlearn_core.data.loaders import load_user_data
from unlearn_core.models.architectures import Classifier
from unlearn_core.models.weights import file_metadata, load_model, save_model
from unlearn_core.runs.registry import default_home
from unlearn_core.training import TrainConfig, train_model

GLYPH_CLASSES = ("A", "K", "R", "S", "X")
SITES = ("Site A", "Site B", "Site C", "Site D")
SCANNERS = ("Lumen 2", "Lumen 3", "HazeCam")
#: Side of the stored PNGs and of the loaded images.
IMAGE_SIZE = 32
#: Images in the benchmark's set (about 2,000 for training after the 20 % test split).
DEFAULT_COUNT = 2500
DATA_SEED = 0
#: The original model's recipe: the default ``train`` recipe (as a user who trains it gets).
GLYPHS_RECIPE = TrainConfig()
#: Workspace sub-folder for the benchmark's generated data and cached models.
CACHE_FOLDER = "bench_cache"

_CANVAS = 64  # drawn at twice the final size, then shrunk (antialiased)


def default_cache_dir() -> Path:
    """``$UNLEARN_STUDIO_HOME/bench_cache`` (or ``./workspace/bench_cache``)."""
    return default_home() / CACHE_FOLDER


def _glyph(letter: str, rng: np.random.Generator, scanner: str) -> Image.Image:
    """One letter at a random size, place, angle and stroke, with noise and the scanner's look."""
    paper = int(rng.integers(185, 245))
    ink = int(rng.integers(10, 80))
    font = ImageFont.load_default(size=int(rng.integers(30, 46)))
    layer = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font, stroke_width=0)
    width, height = right - left, bottom - top
    x = (_CANVAS - width) / 2 - left + rng.uniform(-8, 8)
    y = (_CANVAS - height) / 2 - top + rng.uniform(-8, 8)
    draw.text((x, y), letter, fill=255, font=font, stroke_width=int(rng.integers(0, 3)), stroke_fill=255)
    layer = layer.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BILINEAR)
    alpha = np.asarray(layer, dtype=np.float32) / 255.0
    grey = paper + (ink - paper) * alpha
    grey = grey + rng.normal(0.0, 10.0, grey.shape)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if scanner == "HazeCam":  # soft focus and a warm cast
        image = image.filter(ImageFilter.GaussianBlur(radius=2.0))
        tinted = np.asarray(image, dtype=np.float32) * np.array([1.0, 0.86, 0.62], dtype=np.float32)
        image = Image.fromarray(np.clip(tinted + np.array([20, 8, 0]), 0, 255).astype(np.uint8), "RGB")
    elif scanner == "Lumen 3":  # a little brighter, a little less contrast
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) * 0.85 + 35, 0, 255).astype(np.uint8), "RGB")
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def glyph_rows(count: int, seed: int) -> list[dict]:
    """The CSV rows (file, label, site, scanner, year, age), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        site = SITES[int(rng.choice(len(SITES), p=[0.3, 0.3, 0.2, 0.2]))]
        haze = 0.6 if site == "Site D" else 0.08
        scanner = SCANNERS[int(rng.choice(3, p=[(1 - haze) / 2, (1 - haze) / 2, haze]))]
        year = int(rng.integers(2014, 2020) if scanner == "HazeCam" else rng.integers(2014, 2025))
        rows.append({"file": f"img/{i:05d}.png", "label": GLYPH_CLASSES[i % len(GLYPH_CLASSES)],
                     "site": site, "scanner": scanner, "year": year, "age": int(rng.integers(18, 91))})
    return rows


def write_glyphs_zip(path: str | Path, count: int = DEFAULT_COUNT, seed: int = DATA_SEED) -> Path:
    """Write the user-style set as a ZIP (PNGs under ``img/`` plus ``labels.csv``); same bytes per seed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = glyph_rows(count, seed)
    rng = np.random.default_rng(seed + 1)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo("labels.csv", (2020, 1, 1, 0, 0, 0)), table.getvalue())
        for row in rows:
            buffer = io.BytesIO()
            _glyph(row["label"], rng, row["scanner"]).save(buffer, format="PNG")
            archive.writestr(zipfile.ZipInfo(row["file"], (2020, 1, 1, 0, 0, 0)), buffer.getvalue())
    partial.replace(path)  # a half-written ZIP is never mistaken for the cached set
    return path


def load_glyphs(cache_dir: str | Path | None = None, count: int = DEFAULT_COUNT, seed: int = DATA_SEED) -> ImageSet:
    """The user-style set, written once into ``cache_dir`` and loaded through the upload loader."""
    from unlearn_core.distributed import world

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"glyphs-{count}-seed{seed}.zip"
    with world().main_first():  # under torchrun rank 0 writes the set, the others read it
        if not path.is_file():
            write_glyphs_zip(path, count, seed)
    return load_user_data(path.name, path, image_size=IMAGE_SIZE, name="glyphs")


def cache_key(*parts: str) -> str:
    """A short hash of what makes two trainings the same (data, recipe, criteria)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached_training(path: Path, train: Callable[[], tuple[Classifier, float]],
                    provenance: dict[str, str]) -> tuple[Classifier, float, bool]:
    """Load the model cached at ``path``, or train it and cache it; returns (model, seconds, was_cached).

    The seconds are those of the training that made the file (recorded with it), so a reused
    retrain still gives "time as % of retrain" its real denominator. Under torchrun rank 0
    decides whether the file is usable (every rank follows) and alone writes it.
    """
    from unlearn_core.distributed import world

    w = world()

    def usable() -> bool:
        return path.is_file() and all(file_metadata(path).get(k) == v for k, v in provenance.items())

    if w.from_main(usable):
        return load_model(path), float(file_metadata(path)["train_seconds"]), True
    model, seconds = train()
    if w.is_main:
        save_model(model, path, {**provenance, "train_seconds": repr(float(seconds))})
    return model.eval(), seconds, False


def glyphs_original(data: ImageSet, cache_dir: str | Path | None = None,
                    device: str = "auto") -> tuple[Classifier, TrainConfig, bool]:
    """The user-style set's original model (default recipe, all training images), cached on disk."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    recipe = replace(GLYPHS_RECIPE, device=device)
    key = cache_key(data.fingerprint(), recipe.recipe_key())
    provenance = {"data_fingerprint": data.fingerprint(), "recipe": recipe.recipe_key()}

    def train() -> tuple[Classifier, float]:
        result = train_model(data, data.train_indices, recipe)
        return result.model, result.seconds

    model, _, cached = cached_training(folder / "models" / f"original-{key}.safetensors", train, provenance)
    return model, recipe, cached
