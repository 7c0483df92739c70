"""Imported image sets: a folder holding pixels on disk, metadata and a small JSON header.

Why: a set too large for memory is decoded once, by ``python -m unlearn_core import SRC --out
DIR`` (:func:`import_images`), into a raw uint8 array file that every later run reads at
offsets (:class:`~unlearn_core.data.disk_images.ArrayFileStore`); loading ``DIR`` then costs
reading its metadata (pandas, in memory, so forget-set filters stay instant) and nothing else.
With ``--in-place`` the images stay in their folder or ZIP and are decoded when read (in
DataLoader workers); the import decodes every file once and records each one's size and
modification time (CRC in a ZIP), and every load checks those, so a file removed or changed
since is named and the set refused before any run starts.

Layout of ``DIR`` (written in this order; the header last, so a folder without one is an
import that did not finish and is refused):

* ``pixels.u8``: C-order ``uint8 [N, C, H, W]``, no header (absent with ``--in-place``);
* ``metadata.csv``: ``sample_id``, ``label`` (class index), ``split`` and the domain columns;
* ``header.json``: :data:`FORMAT`, version, name, classes, units, description, shape, the
  training images' channel ``mean``/``std``, the data fingerprint and what it was computed on
  (so loading never hashes the pixels again), and, with ``--in-place``, the image files' source
  and member names.

The fingerprint is the one :meth:`ImageSet.fingerprint` gives the same pixels, labels and split
in memory, so a model trained on the folder loaded in memory is recognised on the import. It is
trusted while ``pixels.u8`` keeps the size and modification time recorded at import; otherwise
it is computed again, chunk by chunk, the first time it is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unlearn_core.data.disk_images import ArrayFileStore, ImageFileStore, iter_pixels
from unlearn_core.data.imageset import ImageSet, fingerprint_tail, stats_from_sums, stratified_split
from unlearn_core.errors import UserError
from unlearn_core.progress import ProgressEvent

#: ``header.json``'s ``format`` value; a folder whose header says otherwise is not ours.
FORMAT = "unlearn-studio-image-set"
VERSION = 1
HEADER = "header.json"
PIXELS = "pixels.u8"
METADATA = "metadata.csv"
#: Largest header read (an in-place import lists every member name; 100k names ≈ 3 MB).
_MAX_HEADER_BYTES = 512 * 1024**2

Progress = Callable[[ProgressEvent], None]


def is_image_dir(path: str | Path) -> bool:
    """True for a folder with a ``header.json`` (an import); its contents are checked at load."""
    path = Path(path)
    return path.is_dir() and (path / HEADER).is_file()


# ------------------------------------------------------------------- loading

def load_image_dir(path: str | Path) -> ImageSet:
    """The ImageSet an import wrote; its pixels stay on disk. Bad headers are a clear UserError."""
    path = Path(path)
    header = _read_header(path)
    try:
        metadata = pd.read_csv(path / METADATA, dtype={"sample_id": str, "split": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise UserError(f"The metadata of the imported set {str(path)!r} cannot be read ({exc}); import the "
                        "images again.") from exc
    shape = header["shape"]
    if len(metadata) != shape[0]:
        raise UserError(f"The imported set {str(path)!r} has {len(metadata):,} metadata rows but its header "
                        f"describes {shape[0]:,} images; import the images again.")
    if header["kind"] == "array":
        store = ArrayFileStore(path / PIXELS, shape)
        stat = store.path.stat()
        trusted = header.get("pixels_stat") == [stat.st_size, stat.st_mtime_ns]
    else:
        files = header["files"]
        store = ImageFileStore(files["source"], files["members"], shape[2], shape[1], files["resize"])
        _check_members_present(store, files.get("signatures"))
        trusted = True  # unchanged since the import decoded every one of them
    tail = fingerprint_tail(metadata)
    if trusted and header.get("fingerprint") and header.get("tail_sha256") == hashlib.sha256(tail).hexdigest():
        store.known_fingerprint(tail, header["fingerprint"])
    return ImageSet(name=header["name"], images=store, metadata=metadata, classes=list(header["classes"]),
                    mean=tuple(header["mean"]), std=tuple(header["std"]), units=dict(header.get("units", {})),
                    description=header.get("description", ""))


def _read_header(path: Path) -> dict[str, Any]:
    where = path / HEADER
    if where.stat().st_size > _MAX_HEADER_BYTES:
        raise UserError(f"{str(where)!r} is larger than any header an import writes; it is not one.")
    try:
        header = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(where)!r} is not a readable image-set header ({exc}); import the images "
                        "again.") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{str(where)!r} is not the header of an image set imported by this studio (no "
                        f"'format': {FORMAT!r}). Import the images with `python -m unlearn_core import`.")
    if header.get("version") != VERSION:
        raise UserError(f"{str(where)!r} was written by another version of the studio (format version "
                        f"{header.get('version')!r}, this one reads {VERSION}); import the images again.")
    problems = []
    shape = header.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s >= 0 for s in shape)
            and shape[1] in (1, 3) and shape[2] == shape[3] and shape[2] > 0):
        problems.append(f"shape {shape!r} is not [N, 1 or 3, S, S]")
    classes = header.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2):
        problems.append("it lists fewer than 2 classes")
    for key in ("mean", "std"):
        value = header.get(key)
        if not (isinstance(value, list) and isinstance(shape, list) and len(shape) == 4 and len(value) == shape[1]):
            problems.append(f"{key!r} is not one number per channel")
    if header.get("kind") not in ("array", "files"):
        problems.append(f"kind {header.get('kind')!r} is neither 'array' nor 'files'")
    elif header["kind"] == "files":
        files = header.get("files")
        if not (isinstance(files, dict) and isinstance(files.get("members"), list)
                and isinstance(shape, list) and len(files["members"]) == shape[0]):
            problems.append("the image files it names do not match its shape")
    if problems:
        raise UserError(f"The header {str(where)!r} is damaged: {'; '.join(problems)}. Import the images again.")
    return header


def _signature(handle: Any) -> list[int]:
    """What says a file is unchanged without reading it: size and modification time in a folder,
    size and CRC-32 in a ZIP (from its directory)."""
    if isinstance(handle, Path):
        stat = handle.stat()
        return [stat.st_size, stat.st_mtime_ns]
    return [handle.file_size, handle.CRC]


def _signatures(store: ImageFileStore) -> list[list[int]]:
    from unlearn_core.data.loaders import open_disk_source

    with open_disk_source(store.source) as source:
        return [_signature(source.files[m]) for m in store.members]


def _check_members_present(store: ImageFileStore, recorded: list | None = None) -> None:
    """Every image file an in-place import checked is still there and unchanged (file system or
    ZIP directory only: nothing is decoded), so a run is refused before it starts, naming them."""
    from unlearn_core.data.loaders import _few, open_disk_source

    with open_disk_source(store.source) as source:
        absent = [m for m in store.members if m not in source.files]
        if absent:
            raise UserError(f"{len(absent):,} image file(s) of this set are missing from {store.source!r}: "
                            f"{_few(absent)}. Put them back or import the images again.")
        if recorded is not None and len(recorded) == len(store.members):
            changed = [m for m, before in zip(store.members, recorded) if _signature(source.files[m]) != before]
            if changed:
                raise UserError(f"{len(changed):,} image file(s) of this set changed since it was imported (checked "
                                f"then, not since): {_few(changed)}. Import the images again to check them.")


# ------------------------------------------------------------------- writing

class _Writer:
    """Writes ``DIR`` chunk by chunk: pixels (hashed as they go), then metadata, then the header."""

    def __init__(self, out: Path, keep_pixels: bool = True) -> None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{str(out)!r} already exists and is not an empty folder; choose a new folder for "
                            "the imported set (or delete the old one).")
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.digest, self.written = out, hashlib.sha256(), 0
        self._file = open(out / (PIXELS + ".partial"), "wb") if keep_pixels else None  # noqa: SIM115

    def add(self, pixels: np.ndarray) -> None:
        data = np.ascontiguousarray(pixels, dtype=np.uint8)
        self.digest.update(memoryview(data).cast("B"))
        if self._file is not None:
            self._file.write(memoryview(data).cast("B"))
        self.written += len(data)

    def finish(self, metadata: pd.DataFrame, header: dict[str, Any]) -> Path:
        if self._file is not None:
            self._file.close()
            os.replace(self.out / (PIXELS + ".partial"), self.out / PIXELS)
            stat = (self.out / PIXELS).stat()
            header["pixels_stat"] = [stat.st_size, stat.st_mtime_ns]
        tail = fingerprint_tail(metadata)
        self.digest.update(tail)
        header.update(fingerprint=self.digest.hexdigest()[:16], tail_sha256=hashlib.sha256(tail).hexdigest(),
                      format=FORMAT, version=VERSION)
        metadata.to_csv(self.out / METADATA, index=False)
        temporary = self.out / (HEADER + ".partial")
        temporary.write_text(json.dumps(header), encoding="utf-8")
        os.replace(temporary, self.out / HEADER)  # last: its presence means the import finished
        return self.out

    def abandon(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def import_images(data: ImageSet, out: str | Path, *, in_place: bool = False,
                  on_progress: Progress | None = None) -> Path:
    """Write ``data`` as an imported set in ``out`` (a new or empty folder); returns ``out``.

    Pixels are read and written a chunk at a time (decoded in DataLoader workers when ``data``
    reads image files), hashed on the way for the fingerprint. ``in_place``: ``data`` must read
    image files from a folder or ZIP on disk (:func:`~unlearn_core.data.loaders.load_image_folder`
    with ``lazy=True``); only its metadata and the names of its files are written, and later runs
    decode the files where they are.
    """
    if in_place and not isinstance(data.images, ImageFileStore):
        raise UserError("--in-place keeps the images in their folder or ZIP, so the source must be a folder or "
                        "ZIP of image files (not a .npz or an imported set).")
    writer = _Writer(Path(out), keep_pixels=not in_place)
    header: dict[str, Any] = {
        "kind": "files" if in_place else "array", "name": data.name, "classes": list(data.classes),
        "units": dict(data.units), "description": data.description,
        "shape": [int(s) for s in data.images.shape], "mean": list(data.mean), "std": list(data.std)}
    if in_place:
        store = data.images
        header["files"] = {"source": store.source, "members": store.members, "resize": store.resize,
                           "signatures": _signatures(store)}
    try:
        total = len(data.images)
        for _, pixels in iter_pixels(data.images):
            writer.add(pixels.numpy())
            _report(on_progress, writer.written, total, "importing images")
        return writer.finish(data.metadata, header)
    finally:
        writer.abandon()


def _report(on_progress: Progress | None, done: int, total: int, what: str) -> None:
    if on_progress is not None:
        on_progress(ProgressEvent(phase="import", step=done, steps=total, fraction=done / max(total, 1),
                                  message=f"{what}: {done:,} of {total:,}"))


# ------------------------------------------------------------------- a large generated set

#: The 256 grey levels as values in [0, 1], for histogram sums.
_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def _class_patterns(classes: int, channels: int, size: int, seed: int) -> np.ndarray:
    """``uint8 [K, C, S, S]`` in 0..191: per class a grating (its own angle and frequency) and tint."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    patterns = np.empty((classes, channels, size, size), dtype=np.uint8)
    for k in range(classes):
        angle = np.pi * k / classes
        frequency = 2 + (k % 4)
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * x + np.sin(angle) * y))
        tint = rng.uniform(0.55, 1.0, channels)
        patterns[k] = np.rint(191 * wave[None] * tint[:, None, None]).astype(np.uint8)
    return patterns


def generate_image_dir(out: str | Path, n: int = 100_000, size: int = 64, *, classes: int = 10,
                       channels: int = 3, seed: int = 0, test_fraction: float = 0.2, chunk: int = 1024,
                       on_progress: Progress | None = None) -> Path:
    """Write a synthetic imported set of ``n`` images straight to disk (never all in memory).

    Why: the scale test and the memory benchmark need a set larger than the process should
    hold (100,000 × 3 × 64 × 64 = 1.2 GB of pixels), made in seconds. Each image is its class's
    pattern (:func:`_class_patterns`: a model can learn it) plus one of 256 noise tiles (0..64,
    so the sum stays in uint8). Metadata: ``site`` (A-D), ``age`` (20-89), ``batch`` (0-999, so
    a criterion like ``batch == 7`` picks about n/1000 images) and a stratified split.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    split = stratified_split(labels, test_fraction, seed)
    metadata = pd.DataFrame({
        "sample_id": [f"img-{i:06d}" for i in range(n)], "label": labels, "split": split,
        "site": rng.choice(list("ABCD"), n), "age": rng.integers(20, 90, n), "batch": np.arange(n) % 1000})
    patterns = _class_patterns(classes, channels, size, seed)
    tiles = rng.integers(0, 65, (256, channels, size, size), dtype=np.uint8)
    train = split == "train"
    totals = np.zeros((channels, 3))
    writer = _Writer(Path(out))
    try:
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            pixels = patterns[labels[part]]
            pixels += tiles[rng.integers(0, len(tiles), len(pixels))]
            kept = pixels[train[part]]
            for c in range(channels):  # exact integer sums (a histogram): no float error at any size
                counts = np.bincount(kept[:, c].reshape(-1), minlength=256).astype(np.float64)
                totals[c] += (counts @ _LEVELS, counts @ _LEVELS**2, counts.sum())
            writer.add(pixels)
            _report(on_progress, writer.written, n, "generating images")
        mean, std = stats_from_sums(totals)
        header = {"kind": "array", "name": Path(out).name, "classes": [f"pattern {k}" for k in range(classes)],
                  "units": {"age": "years"}, "shape": [n, channels, size, size], "mean": list(mean), "std": list(std),
                  "description": f"{n:,} generated images of {size} px (class patterns plus noise), on disk."}
        return writer.finish(metadata, header)
    finally:
        writer.abandon()


__all__ = ["FORMAT", "generate_image_dir", "import_images", "is_image_dir", "load_image_dir"]
