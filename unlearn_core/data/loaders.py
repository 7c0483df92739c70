"""Load users' own data into an :class:`~unlearn_core.data.imageset.ImageSet`.

Three entry points:

* :func:`load_image_folder` - a folder or ZIP of image files plus a CSV (file, label, metadata).
* :func:`load_npz` - a MedMNIST-style ``.npz`` archive of arrays.
* :func:`load_user_data` - what the dashboard's uploader calls; dispatches on the file name.

Why so strict: whatever is loaded here becomes the ground truth of every later run (its
fingerprint is recorded, its metadata defines forget sets). A silently dropped row, a NaN that
turns a numeric column into something a range slider cannot handle, or a file read from
outside the upload would make every downstream number wrong. So every problem a user can fix is
a :class:`~unlearn_core.errors.UserError` that names what was wrong and what to do, raised
before any ImageSet exists.

Choices a caller should know about:

* Images are decoded with Pillow, EXIF-rotated, converted to 8-bit ``L`` or ``RGB`` (alpha is
  dropped; 16-bit greyscale is scaled by 1/257). They keep their native size (every image must
  then have the same square size) unless ``image_size`` asks to resize them: straight to a
  square with :data:`RESAMPLE` (bilinear, which Pillow antialiases when shrinking); non-square
  images are stretched, not cropped, so nothing near the border is lost.
* Automatic channels: 1 when every image is greyscale (a greyscale mode, or RGB whose three
  channels are identical after resizing, as X-rays exported as RGB are), else 3.
* ZIPs are never extracted to disk; members are read into memory one at a time through
  :class:`~unlearn_core.data.archive.BoundedZip`. Members with absolute paths or ``..``
  components are refused (zip-slip), as are empty archives, archives whose declared
  uncompressed size exceeds :data:`MAX_UNCOMPRESSED_BYTES`, any member declaring more than
  :data:`~unlearn_core.data.archive.MAX_MEMBER_BYTES`, and members that inflate to more than
  they declare (checked while inflating, chunk by chunk, so forged headers cannot cost memory).
* Memory stays bounded on hostile files: an image's dimensions are read from its header and
  checked against :data:`MAX_IMAGE_PIXELS` before it is decoded; the decoded data set's size
  (rows × channels × size²) is checked against :data:`MAX_DECODED_BYTES` before any image is
  decoded; ``.npz`` array shapes are read from their headers and capped (:data:`MAX_NPZ_BYTES`)
  before any array is allocated. Every check on the CSV or the labels alone comes before any
  image is decoded.
* A class with a single image: with the automatic split it goes to ``train`` (a model must see
  a class to learn it) and a :class:`UserWarning` says it has no test image. Any class without
  a training image (possible with a ``split`` column) is a UserError.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Union

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from unlearn_core.data.archive import (
    MAX_MEMBER_BYTES, BoundedZip, NpyHeader, human_bytes, npy_header, read_npy,
)
from unlearn_core.data.archive import rewound_stream as _bytes_io
from unlearn_core.data.imageset import RESERVED_COLUMNS, ImageSet, stratified_split
from unlearn_core.errors import UserError

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_NPZ_BYTES",
    "MAX_UNCOMPRESSED_BYTES",
    "RESAMPLE",
    "check_upload",
    "load_image_folder",
    "first_image_size",
    "resized_image_file",
    "load_npz",
    "load_user_data",
]

#: Zip-bomb guard: the most a ZIP (or .npz) may declare as uncompressed content in total.
MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
#: Decompression-bomb guard for one image: width × height read from its header before decoding.
MAX_IMAGE_PIXELS = 40_000_000
#: The most the decoded images of a ZIP may take (uint8 rows × channels × size²), checked first.
MAX_DECODED_BYTES = 1024**3
#: The most the arrays of an ``.npz`` may take in memory (sum of the sizes their headers declare).
MAX_NPZ_BYTES = 1024**3
#: Pillow filter used for every resize (antialiased when shrinking, no ringing like Lanczos).
RESAMPLE = Image.Resampling.BILINEAR
#: How many offending names/rows an error message lists before saying "and N more".
_SHOW = 5
_SPLIT_COLUMN = "split"
#: Accepted spellings in a CSV ``split`` column; validation data is used for training.
_SPLIT_VALUES = {"train": "train", "test": "test", "val": "train", "valid": "train",
                 "validation": "train"}
_NPZ_PARTS = ("train", "val", "test")  # val is optional and merged into train
_GREY_BANDS = {"1", "L", "I", "F", "A"}

ZipInput = Union[str, Path, bytes, bytearray, memoryview, BinaryIO]
CsvInput = Union[str, Path, bytes, bytearray, BinaryIO, None]


# --- small formatting helpers -----------------------------------------------------------------
def _few(items: Iterable[Any], limit: int = _SHOW) -> str:
    """``'a', 'b', 'c' and 4 more`` - keeps messages short when thousands of rows are bad."""
    items = list(items)
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _rows(index: Iterable[int]) -> str:
    """Data-row numbers as a user counts them in a spreadsheet (first row after header = 1)."""
    return _few(int(i) + 1 for i in index)


def _display_name(obj: Any, default: str = "upload") -> str:
    """Stem of a path or of an uploaded file's ``.name`` (Streamlit sets it)."""
    raw = obj if isinstance(obj, (str, Path)) else getattr(obj, "name", None)
    stem = Path(str(raw)).stem if raw else ""
    return stem or default


# --- sources of files: a folder or a ZIP read in memory ----------------------------------------
@dataclass
class _Source:
    """Files available by relative POSIX name; ``read`` never touches anything outside it."""

    description: str
    files: dict[str, Any]  # relative name -> Path (folder) or ZipInfo (zip)
    archive: BoundedZip | None = None

    def read(self, name: str) -> bytes:
        handle = self.files[name]
        if self.archive is not None:
            return self.archive.read(handle)  # bounded, checked against declared size and CRC
        if handle.stat().st_size > MAX_MEMBER_BYTES:
            raise UserError(
                f"{name!r} in the {self.description} is {human_bytes(handle.stat().st_size)}, more "
                f"than the {human_bytes(MAX_MEMBER_BYTES)} allowed for one file; resize it."
            )
        try:
            return handle.read_bytes()
        except OSError as exc:
            raise UserError(
                f"Could not read {name!r} from the {self.description} ({exc})."
            ) from exc


def _is_junk(name: str) -> bool:
    """macOS/Windows bookkeeping files that zipping a folder adds; never user data."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] in (
        ".DS_Store", "Thumbs.db", "desktop.ini")


def _open_zip(obj: ZipInput, what: str = "ZIP") -> BoundedZip:
    """Open and vet an archive: valid, not empty, no zip-slip names, not a zip bomb."""
    return BoundedZip(obj, what, max_total=MAX_UNCOMPRESSED_BYTES, max_member=MAX_MEMBER_BYTES)


@contextmanager
def _open_source(images: ZipInput) -> Iterator[_Source]:
    """A folder path, a ZIP path, or ZIP bytes/file-like, as one :class:`_Source`."""
    if isinstance(images, (str, Path)):
        path = Path(images)
        if path.is_dir():
            files = {p.relative_to(path).as_posix(): p
                     for p in sorted(path.rglob("*")) if p.is_file()}
            if not files:
                raise UserError(
                    f"The folder {str(path)!r} is empty: put your images and CSV in it."
                )
            yield _Source(f"folder {path.name!r}", files)
            return
        if not path.is_file():
            raise UserError(f"{str(path)!r} does not exist: give a folder of images or a ZIP file.")
    with _open_zip(images) as archive:
        files = {i.filename: i for i in archive.members()}
        yield _Source(f"ZIP {_display_name(images, 'upload')!r}", files, archive)


# --- the CSV -----------------------------------------------------------------------------------
def _csv_bytes(csv: CsvInput, source: _Source) -> tuple[bytes, str, str]:
    """Raw CSV bytes, a name for messages, and the folder inside the source it sits in."""
    if csv is not None:
        if isinstance(csv, (str, Path)):
            if not Path(csv).is_file():
                raise UserError(f"CSV file {str(csv)!r} does not exist: check the path.")
            return Path(csv).read_bytes(), Path(csv).name, ""
        return _bytes_io(csv).read(), _display_name(csv, "CSV") + ".csv", ""
    found = [n for n in source.files if n.lower().endswith(".csv") and not _is_junk(n)]
    if len(found) != 1:
        problem = "no CSV file" if not found else f"{len(found)} CSV files ({_few(found)})"
        raise UserError(
            f"The {source.description} contains {problem}. It needs exactly one CSV listing "
            "each image's file name and label; add one, or pass the CSV separately."
        )
    parent = PurePosixPath(found[0]).parent.as_posix()
    return source.read(found[0]), found[0], "" if parent == "." else parent + "/"


def _parse_csv(raw: bytes, csv_name: str, file_column: str) -> pd.DataFrame:
    """Parse with pandas' type inference; retry ``;``/tab for spreadsheet exports."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"The CSV {csv_name!r} is not UTF-8 text: save it as 'CSV UTF-8'.") from exc
    def parse(sep: str) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype={file_column: str},
                           skipinitialspace=True)

    try:
        table = parse(",")
        header = text.split("\n", 1)[0]
        if len(table.columns) == 1 and (";" in header or "\t" in header):
            table = parse(";" if ";" in header else "\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise UserError(
            f"The CSV {csv_name!r} could not be parsed ({exc}). Check that every row has the "
            "same number of comma-separated fields and that text with commas is quoted."
        ) from exc
    table.columns = [str(c).strip() for c in table.columns]
    # Trailing commas from spreadsheets create empty "Unnamed: 3" columns; they carry nothing.
    blank = [c for c in table.columns if c.startswith("Unnamed:") and table[c].isna().all()]
    table = table.drop(columns=blank)
    if table.empty:
        raise UserError(f"The CSV {csv_name!r} has no rows: list one image per row.")
    return table


def _require_columns(table: pd.DataFrame, file_column: str, label_column: str) -> None:
    for column, what in ((file_column, "image file names"), (label_column, "class labels")):
        if column not in table.columns:
            raise UserError(
                f"The CSV has no column {column!r} for the {what}; its columns are {list(table.columns)}. "
                f"On the dashboard, pick the column that holds the {what} after uploading; for the "
                f"command line, name that column {column!r} in the CSV."
            )
    clash = [c for c in RESERVED_COLUMNS if c in table.columns
             and c not in (file_column, label_column, _SPLIT_COLUMN)]
    if clash:
        raise UserError(
            f"The CSV column(s) {clash} clash with names the studio reserves "
            f"({list(RESERVED_COLUMNS)}). Rename them in the CSV."
        )


def _check_no_missing(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Shared by CSV and npz: a NaN would break range filters and class lookups later."""
    for column in columns:
        missing = np.flatnonzero(frame[column].isna().to_numpy())
        if len(missing):
            raise UserError(
                f"{what} column {column!r} is empty in row(s) {_rows(missing)} "
                "(row 1 = first row after the header). Fill in those values or drop the rows"
                + (" or the column." if column not in RESERVED_COLUMNS else ".")
            )


def _file_names(table: pd.DataFrame, file_column: str) -> list[str]:
    """Normalised relative names (``\\`` -> ``/``, no leading ``./``), unique."""
    _check_no_missing(table, [file_column], "File-name")
    names = [re.sub(r"^(\./)+", "", str(n).strip().replace("\\", "/")) for n in table[file_column]]
    counts = pd.Series(names).value_counts()
    duplicated = counts[counts > 1].index.tolist()
    if duplicated:
        raise UserError(
            f"The CSV lists the same file more than once: {_few(duplicated)}. Each image must "
            "appear in exactly one row; remove the duplicates."
        )
    return names


# --- matching names to files and decoding images -------------------------------------------------
def _resolve(names: list[str], source: _Source, csv_dir: str) -> list[str]:
    """Map CSV names to files: relative to the CSV's folder, the root, or a sole top folder."""
    tops = {n.split("/", 1)[0] + "/" for n in source.files if "/" in n and not _is_junk(n)}
    prefixes = list(dict.fromkeys([csv_dir, "", *(tops if len(tops) == 1 else [])]))
    resolved, absent = [], []
    for name in names:
        match = next((p + name for p in prefixes if p + name in source.files), None)
        resolved.append(match)
        if match is None:
            absent.append(name)
    if absent:
        raise UserError(
            f"{len(absent)} file(s) named in the CSV are not in the {source.description}: "
            f"{_few(absent)}. Names must match exactly (case and extension included), relative "
            "to the folder holding the CSV; fix the names or add the files."
        )
    return resolved


def _to_8bit(img: Image.Image) -> Image.Image:
    """Pillow image in mode ``L`` or ``RGB``; 16-bit and float greyscale rescaled, not clipped."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        pixels = np.asarray(img)
        if pixels.dtype.kind in "iu" and pixels.max(initial=0) > 255:  # 16-bit: scale, not clip
            pixels = np.rint(pixels.astype(np.float64) / 257.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(_pixels_to_uint8(pixels, "this image"))
    return img.convert("L" if set(img.getbands()) <= _GREY_BANDS else "RGB")


def _decode(raw: bytes, size: int | None) -> np.ndarray:
    """Decode, orient, resize (``size=None``: keep the native size).

    Returns ``[H, W]`` for greyscale (including RGB whose channels are equal) else ``[H, W, 3]``.
    """
    try:
        opened = Image.open(io.BytesIO(raw))  # reads the header only
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        count = re.search(r"\((\d+) pixels\)", str(exc))
        raise _TooLarge(f"{int(count.group(1)):,} pixels" if count else "too many pixels") from None
    with opened as img:
        _check_dimensions(img)  # from the header: nothing is decoded yet
        img = _to_8bit(ImageOps.exif_transpose(img))
        if size is not None:
            img = img.resize((size, size), RESAMPLE)
    pixels = np.asarray(img)
    if pixels.ndim == 3 and (pixels[..., 0] == pixels[..., 1]).all() and (
            pixels[..., 1] == pixels[..., 2]).all():
        return pixels[..., 0]
    return pixels


class _TooLarge(UserError):
    """An image whose header declares more pixels than :data:`MAX_IMAGE_PIXELS`."""


def _check_dimensions(img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _TooLarge(f"{width}x{height} pixels")


def _check_decoded_size(rows: int, size: int, channels: int | None) -> None:
    """Refuse, before decoding anything, a data set whose pixels would not fit the limit."""
    needed = rows * (channels or 3) * size * size
    if needed > MAX_DECODED_BYTES:
        raise UserError(
            f"{rows} images of {size}x{size} pixels would take {human_bytes(needed)} in memory, "
            f"more than the {human_bytes(MAX_DECODED_BYTES)} limit. Choose a smaller image size "
            "or upload a subset; or import a folder or ZIP on this computer once (`python -m "
            "unlearn_core import PATH --out DIR`) and use DIR: its pixels are then read from disk as needed."
        )


def _read_images(source: _Source, members: list[str], size: int,
                 channels: int | None, resize: bool = True) -> torch.Tensor:
    """Decode every listed file; report all unreadable ones at once rather than the first.

    ``resize=False``: every image must already be ``size`` × ``size`` (its native size); the
    ones that are not are listed in one message that says how to resize them.
    """
    decoded, failed, huge, odd = [], [], [], []
    for member in members:
        raw = source.read(member)  # a damaged or forged member is a UserError of its own
        try:
            pixels = _decode(raw, size if resize else None)
            if pixels.shape[:2] != (size, size):
                odd.append(f"{member} ({pixels.shape[1]}x{pixels.shape[0]})")
            decoded.append(pixels)
        except _TooLarge as exc:
            huge.append(f"{member} ({exc})")
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
            failed.append(f"{member} ({type(exc).__name__})")
        del raw
    if huge:
        raise UserError(
            f"{len(huge)} image(s) are larger than {MAX_IMAGE_PIXELS:,} pixels, the most this "
            f"studio decodes: {_few(huge)}. They were not decoded; shrink them (a few hundred "
            "pixels a side is plenty) or remove their rows from the CSV."
        )
    if failed:
        raise UserError(
            f"{len(failed)} file(s) could not be read as images: {_few(failed)}. Replace them "
            "with valid PNG/JPEG/TIFF/BMP files or remove their rows from the CSV."
        )
    if odd:
        raise UserError(_size_message(members[0], size, odd))
    return _stack(decoded, channels)


def _size_message(first: str, size: int, odd: list[str]) -> str:
    return (f"The images are not all one square size: the first, {first}, is {size}x{size} pixels, but "
            f"{len(odd)} differ: {_few(odd)}. Choose a size to resize them all to (\"Resize the images\" on "
            "the Data & model page, or image_size=...); non-square images are then stretched to a square.")


def _native_size(source: _Source, members: list[str]) -> int:
    """The side of the first listed image, decoded alone (every image must then share it).

    A non-square first image is refused here with the way out (resize), before the rest decode.
    """
    first = members[0]
    try:
        pixels = _decode(source.read(first), None)
    except _TooLarge as exc:
        raise UserError(f"{first} is larger than {MAX_IMAGE_PIXELS:,} pixels ({exc}), the most this studio "
                        "decodes. It was not decoded; shrink it (a few hundred pixels a side is plenty) or "
                        "remove its row from the CSV.") from None
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise UserError(f"{first} could not be read as an image ({type(exc).__name__}). Replace it "
                        "with a valid PNG/JPEG/TIFF/BMP file or remove its row from the CSV.") from None
    height, width = pixels.shape[:2]
    if height != width:
        raise UserError(f"{first} is {width}x{height} pixels, not square. Choose a size to resize the images "
                        "to (\"Resize the images\" on the Data & model page, or image_size=...); they are "
                        "stretched to a square.")
    return int(height)


def first_image_size(images: ZipInput, csv: CsvInput = None, file_column: str = "file") -> tuple[int, int]:
    """``(width, height)`` of the first image the CSV lists, decoded alone: what the page says
    about the size an upload will keep before it is loaded."""
    with _open_source(images) as source:
        raw, csv_name, csv_dir = _csv_bytes(csv, source)
        table = _parse_csv(raw, csv_name, file_column)
        if file_column not in table.columns or table.empty:
            raise UserError(f"The CSV {csv_name} has no column {file_column!r} or no rows.")
        first = _resolve(_file_names(table, file_column)[:1], source, csv_dir)[0]
        try:
            pixels = _decode(source.read(first), None)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
            raise UserError(f"{first} could not be read as an image ({type(exc).__name__}).") from None
    return int(pixels.shape[1]), int(pixels.shape[0])


def resized_image_file(raw: bytes, size: int) -> bytes:
    """One image file's bytes as a ``size`` × ``size`` PNG (lossless), resized like the loader does.

    Why: a stored upload the user chose to resize holds the resized images, so every later load
    of it (the command line, a background job) reads the same pixels without options.
    """
    pixels = _decode(raw, size)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _stack(decoded: list[np.ndarray], channels: int | None) -> torch.Tensor:
    """``uint8 [N, C, S, S]``; auto channels = 1 only when every image is greyscale."""
    if channels is None:
        channels = 1 if all(p.ndim == 2 for p in decoded) else 3
    out = []
    for pixels in decoded:
        if channels == 1 and pixels.ndim == 3:
            pixels = np.asarray(Image.fromarray(pixels).convert("L"))
        if channels == 3 and pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        out.append(pixels.reshape(*pixels.shape[:2], -1).transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(out)))


# --- lazy reading from disk (ImageFileStore) -------------------------------------------------------
#: A ZIP read lazily from disk is never inflated whole (one member at a time, each bounded by
#: MAX_MEMBER_BYTES), so its declared total is not capped by MAX_UNCOMPRESSED_BYTES.
MAX_LAZY_ARCHIVE_BYTES = 1 << 50
#: Images each scan task decodes (one DataLoader item) when a lazy set is checked at load.
_SCAN_CHUNK = 256


@contextmanager
def open_disk_source(path: str | Path) -> Iterator[_Source]:
    """A folder or ZIP on disk as a :class:`_Source`, for reading members one at a time."""
    path = Path(path)
    if path.is_dir():
        with _open_source(path) as source:
            yield source
        return
    if not path.is_file():
        raise UserError(f"{str(path)!r} no longer exists: the images of this set were read from it. "
                        "Put it back or import the images again.")
    with BoundedZip(path, "ZIP", max_total=MAX_LAZY_ARCHIVE_BYTES, max_member=MAX_MEMBER_BYTES) as archive:
        yield _Source(f"ZIP {path.name!r}", {i.filename: i for i in archive.members()}, archive)


#: Sources opened for lazy reading, one per (process, path): listing a folder of 100,000 files or
#: reading a ZIP's directory once per process, not once per batch. A forked worker opens its own.
_OPEN_DISK_SOURCES: dict[tuple, tuple[Any, _Source, threading.Lock]] = {}


def shared_disk_source(path: str | Path) -> tuple[_Source, threading.Lock]:
    """This process's opened :func:`open_disk_source` of ``path`` and the lock its reads take
    (a ZIP's file handle is shared; Streamlit runs pages in threads)."""
    try:
        stat = os.stat(path)
    except OSError:
        stat = None  # open_disk_source names what is missing
    key = (os.getpid(), str(path), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
    if key not in _OPEN_DISK_SOURCES:  # a replaced file (new mtime or size) is opened afresh
        manager = open_disk_source(path)
        _OPEN_DISK_SOURCES[key] = (manager, manager.__enter__(), threading.Lock())
    return _OPEN_DISK_SOURCES[key][1:]


def decode_members(source: _Source, members: list[str], size: int, channels: int,
                   resize: bool) -> np.ndarray:
    """``uint8 [n, channels, size, size]`` of ``members``, decoded as the eager loader does.

    A member missing from the source or undecodable is a UserError naming it (all of a
    batch's bad members at once).
    """
    absent = [m for m in members if m not in source.files]
    if absent:
        raise UserError(f"{len(absent)} image file(s) of this set are no longer in the {source.description}: "
                        f"{_few(absent)}. Put them back or import the images again.")
    if not members:
        return np.zeros((0, channels, size, size), dtype=np.uint8)
    return _read_images(source, members, size, channels, resize=resize).numpy()


class _ScanChunks(torch.utils.data.Dataset):
    """Item ``i``: decode members ``[i·chunk, (i+1)·chunk)``, keep only failures and sums.

    What a lazy load needs from every image without holding its pixels: which files are bad
    (named together), whether any is in colour (automatic channels), and per-channel sums of
    the training images for :func:`~unlearn_core.data.imageset.channel_stats`.
    """

    def __init__(self, path: Path, members: list[str], size: int, channels: int | None, resize: bool,
                 train: np.ndarray) -> None:
        self.path, self.members, self.size = path, members, size
        self.channels, self.resize, self.train = channels, resize, train

    def __len__(self) -> int:
        return (len(self.members) + _SCAN_CHUNK - 1) // _SCAN_CHUNK

    def __getitem__(self, item: int) -> dict:
        result: dict[str, Any] = {"failed": [], "huge": [], "odd": [], "colour": False,
                                  "grey": np.zeros((1, 3)), "rgb": np.zeros((3, 3))}
        source, lock = shared_disk_source(self.path)
        with lock:
            for index in range(item * _SCAN_CHUNK, min(len(self.members), (item + 1) * _SCAN_CHUNK)):
                self._scan_one(source, index, result)
        return result

    def _scan_one(self, source: _Source, index: int, result: dict) -> None:
        member = self.members[index]
        try:
            pixels = _decode(source.read(member), self.size if self.resize else None)
        except _TooLarge as exc:
            result["huge"].append(f"{member} ({exc})")
            return
        except UserError as exc:  # a damaged ZIP member or an unreadable file
            result["failed"].append(f"{member} ({exc})")
            return
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
            result["failed"].append(f"{member} ({type(exc).__name__})")
            return
        if pixels.shape[:2] != (self.size, self.size):
            result["odd"].append(f"{member} ({pixels.shape[1]}x{pixels.shape[0]})")
            return
        result["colour"] |= pixels.ndim == 3
        if not self.train[index]:
            return
        if self.channels is not None:
            planes = _stack([pixels], self.channels).numpy()[0]
        else:
            planes = pixels.reshape(self.size, self.size, -1).transpose(2, 0, 1)
        values = planes.reshape(len(planes), -1).astype(np.float64) / 255.0
        sums = np.stack([values.sum(1), np.square(values).sum(1), np.full(len(values), values.shape[1])], 1)
        result["grey" if len(planes) == 1 else "rgb"] += sums


def scan_members(path: Path, members: list[str], size: int, channels: int | None, resize: bool,
                 train: np.ndarray, workers: int | None = None,
                 ) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Decode every member once (in DataLoader workers), refuse bad files by name, and return
    ``(channels, mean, std)``: the automatic channel count and the training images' statistics.

    Nothing but sums is kept, so memory does not grow with the set. The statistics match
    :func:`~unlearn_core.data.imageset.channel_stats` on the same pixels (float64 sums here).
    """
    from unlearn_core.data.disk_images import default_workers
    from unlearn_core.data.imageset import stats_from_sums

    scan = _ScanChunks(path, members, size, channels, resize, np.asarray(train, dtype=bool))
    count = default_workers() if workers is None else workers
    if count and len(scan) > 1:
        parts = torch.utils.data.DataLoader(scan, batch_size=None, num_workers=min(count, len(scan)))
    else:
        parts = (scan[i] for i in range(len(scan)))
    failed, huge, odd, colour = [], [], [], False
    grey, rgb = np.zeros((1, 3)), np.zeros((3, 3))
    for part in parts:
        failed += part["failed"]
        huge += part["huge"]
        odd += part["odd"]
        colour |= bool(part["colour"])
        grey += np.asarray(part["grey"])
        rgb += np.asarray(part["rgb"])
    if huge:
        raise UserError(
            f"{len(huge)} image(s) are larger than {MAX_IMAGE_PIXELS:,} pixels, the most this "
            f"studio decodes: {_few(huge)}. Shrink them or remove their rows from the CSV.")
    if failed:
        raise UserError(
            f"{len(failed)} file(s) could not be read as images: {_few(failed)}. Replace them "
            "with valid PNG/JPEG/TIFF/BMP files or remove their rows from the CSV.")
    if odd:
        raise UserError(_size_message(members[0], size, odd))
    channels = channels or (3 if colour else 1)
    totals = grey if channels == 1 else rgb + grey  # a grey image counts in all three channels
    mean, std = stats_from_sums(totals)
    return channels, mean, std


# --- labels, split, and the final ImageSet (shared by both loaders) -----------------------------
def _encode_labels(values: pd.Series) -> tuple[list[str], np.ndarray]:
    """Class names (numbers sorted numerically, text sorted alphabetically) and int codes."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        unique = np.unique(values.to_numpy(dtype=np.float64))
        classes = [str(int(v)) if float(v).is_integer() else str(v) for v in unique]
        codes = np.searchsorted(unique, values.to_numpy(dtype=np.float64))
        return classes, codes.astype(np.int64)
    text = values.astype(str).str.strip()
    classes = sorted(text.unique().tolist())
    index = {c: i for i, c in enumerate(classes)}
    return classes, text.map(index).to_numpy(dtype=np.int64)


def _split_from_column(column: pd.Series) -> np.ndarray:
    """Respect a user's ``split`` column (train/test; val/valid/validation count as train)."""
    _check_no_missing(column.to_frame(), [column.name], "Split")
    text = column.astype(str).str.strip().str.lower()
    bad = np.flatnonzero(~text.isin(list(_SPLIT_VALUES)).to_numpy())
    if len(bad):
        raise UserError(
            f"The 'split' column has value(s) {_few(column.iloc[bad].astype(str).unique())} in "
            f"row(s) {_rows(bad)}; use 'train' or 'test' (or drop the column for an automatic "
            "split)."
        )
    return text.map(_SPLIT_VALUES).to_numpy(dtype=object)


def _auto_split(codes: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded stratified split; a single-image class always goes to train (see module doc)."""
    split = stratified_split(codes, test_fraction, seed)
    values, counts = np.unique(codes, return_counts=True)
    split[np.isin(codes, values[counts == 1])] = "train"
    return split


def _check_classes(codes: np.ndarray, split: np.ndarray, classes: list[str]) -> None:
    """Checks every loader needs: >= 2 classes, both splits non-empty, every class trainable.

    Labels and split alone decide these, so loaders run them before decoding any image.
    """
    present = [classes[i] for i in np.unique(codes)]
    if len(present) < 2:
        raise UserError(
            f"Only one class ({_few(present)}) is present; a classifier needs at least 2. "
            "Check the label column or add images of other classes."
        )
    for part in ("train", "test"):
        if not (split == part).any():
            raise UserError(
                f"No image is in the {part!r} split. Each class needs at least 2 images for an "
                "automatic split; with a 'split' column, mark some rows as "
                f"{part!r}."
            )
    untrained = [classes[c] for c in np.unique(codes) if not (split[codes == c] == "train").any()]
    if untrained:
        raise UserError(
            f"Class(es) {_few(untrained)} have no training image, so no model can learn them. "
            "Move at least one of their images to 'train'."
        )


def _build_imageset(name: str, images: torch.Tensor, metadata: pd.DataFrame, classes: list[str],
                    description: str, mean: tuple[float, ...] = (), std: tuple[float, ...] = ()) -> ImageSet:
    """The ImageSet, after :func:`_check_classes`; warns about classes without a test image."""
    codes = metadata["label"].to_numpy()
    split = metadata["split"].to_numpy()
    _check_classes(codes, split, classes)
    untested = [classes[c] for c in np.unique(codes) if not (split[codes == c] == "test").any()]
    if untested:
        warnings.warn(f"Class(es) {_few(untested)} have no test image; their test accuracy will "
                      "be undefined.", UserWarning, stacklevel=3)
    return ImageSet(name=name, images=images, metadata=metadata, classes=classes,
                    description=description, mean=mean, std=std)


def _check_options(image_size: int | None, channels: int | None = None) -> None:
    if image_size is not None and not (isinstance(image_size, int) and 4 <= image_size <= 1024):
        raise UserError(f"image_size must be a whole number from 4 to 1024, got {image_size!r}.")
    if channels not in (None, 1, 3):
        raise UserError(
            f"channels must be 1 (greyscale), 3 (colour) or automatic, got {channels!r}."
        )


# --- public: which CSV columns hold the file names and the classes ----------------------------
#: Words that suggest a column of image file names / of classes (lower case, tried in order).
FILE_COLUMN_HINTS = ("file", "filename", "file_name", "image", "image_file", "path", "img", "name")
LABEL_COLUMN_HINTS = ("label", "class", "diagnosis", "target", "category", "y", "dx", "grade")


def upload_csv(images: ZipInput, csv: CsvInput = None) -> tuple[bytes, str, str]:
    """An upload's CSV: its bytes, a name for messages, and its folder inside the ZIP."""
    with _open_source(images) as source:
        return _csv_bytes(csv, source)


def csv_columns(raw: bytes, csv_name: str) -> list[str]:
    """The CSV's column names, in order (for the dashboard's column pickers)."""
    return [str(c) for c in _parse_csv(raw, csv_name, "").columns]


def guess_file_and_label_columns(columns: list[str]) -> tuple[str, str]:
    """The likeliest file-name and class columns (exact hint first, then a hint inside the name)."""
    def guess(hints: tuple[str, ...], avoid: str | None = None) -> str:
        lowered = {c: c.strip().lower() for c in columns if c != avoid}
        for hint in hints:
            for column, low in lowered.items():
                if low == hint:
                    return column
        for hint in hints:
            for column, low in lowered.items():
                if hint in low:
                    return column
        rest = [c for c in columns if c != avoid]
        return rest[0] if rest else columns[0]

    file_column = guess(FILE_COLUMN_HINTS)
    return file_column, guess(LABEL_COLUMN_HINTS, avoid=file_column)


def with_standard_columns(raw: bytes, csv_name: str, file_column: str, label_column: str) -> bytes:
    """The CSV with ``file_column``/``label_column`` renamed to ``file``/``label`` (what every
    loader and the command line read); other columns named so are kept as ``original_…``."""
    if file_column == label_column:
        raise UserError("The image-file column and the class column must be two different columns.")
    table = _parse_csv(raw, csv_name, file_column)
    missing = [c for c in (file_column, label_column) if c not in table.columns]
    if missing:
        raise UserError(f"The CSV has no column {missing[0]!r}; its columns are {list(table.columns)}.")
    chosen = {file_column: "file", label_column: "label"}
    renamed = {c: chosen.get(c, f"original_{c}" if c in ("file", "label") else c) for c in table.columns}
    return table.rename(columns=renamed).to_csv(index=False).encode("utf-8")


# --- public: folder / ZIP + CSV ------------------------------------------------------------------
def load_image_folder(
    images: ZipInput,
    csv: CsvInput = None,
    *,
    file_column: str = "file",
    label_column: str = "label",
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
    lazy: bool = False,
) -> ImageSet:
    """Load a folder or ZIP of images described by a CSV.

    Args:
        images: a folder path, a ZIP path, or ZIP bytes / a binary file-like (an upload).
        csv: the CSV (path, bytes or file-like); ``None`` uses the one CSV inside ``images``.
            File names are relative to the CSV's folder inside ``images`` (or to its root, or
            to its single top-level folder).
        file_column, label_column: CSV columns holding the file name and the class. Labels may
            be names or numbers; classes are the sorted unique values (numbers numerically).
        image_size: side of the square every image is resized to (see :data:`RESAMPLE`);
            ``None`` keeps the native size, which every image must then share (square).
        channels: 1 or 3; ``None`` = 1 if every image is greyscale, else 3.
        test_fraction, seed: the stratified split made when the CSV has no ``split`` column.
        name: ImageSet name; defaults to the folder or ZIP file stem.
        lazy: keep the pixels on disk (an :class:`~unlearn_core.data.disk_images.ImageFileStore`,
            decoded when read) instead of decoding them into memory, for a folder or ZIP path
            (what ``import`` uses; not capped by :data:`MAX_DECODED_BYTES`). A lazy load still
            decodes every image once (in worker processes, keeping only per-channel sums) to
            refuse damaged files by name before any run and to compute the channel statistics.
            Off by default: decoding images on every read is slow, so a large folder is imported
            once (``python -m unlearn_core import``) rather than read lazily by each run.

    Every other CSV column becomes metadata with pandas' type inference (numbers stay numeric,
    text is ``str``). ``sample_id`` is the file name as written in the CSV; the file and label
    columns are not repeated as metadata. Files the CSV does not list are ignored.
    """
    _check_options(image_size, channels)
    with _open_source(images) as source:
        raw, csv_name, csv_dir = _csv_bytes(csv, source)
        table = _parse_csv(raw, csv_name, file_column)
        _require_columns(table, file_column, label_column)
        names = _file_names(table, file_column)
        _check_no_missing(table, [label_column], "Label")
        extra = [c for c in table.columns if c not in (file_column, label_column, _SPLIT_COLUMN)]
        _check_no_missing(table, extra, "Metadata")
        classes, codes = _encode_labels(table[label_column])
        split = (_split_from_column(table[_SPLIT_COLUMN]) if _SPLIT_COLUMN in table.columns
                 else _auto_split(codes, test_fraction, seed))
        # Decoding is the slow part (and costs memory), so every check on the CSV alone comes first.
        _check_classes(codes, np.asarray(split), classes)
        # The native size is the first image's (decoded alone); the memory check needs it.
        size = image_size if image_size is not None else _native_size(source, _resolve(names[:1], source, csv_dir))
        on_disk = isinstance(images, (str, Path))
        if lazy and not on_disk:
            raise UserError("Only a folder or ZIP file on disk can be read lazily; save the upload first.")
        if not lazy:
            _check_decoded_size(len(names), size, channels)
        members = _resolve(names, source, csv_dir)
        description = f"{len(names)} images from the user's {source.description}."
        if not lazy:
            pixels = _read_images(source, members, size, channels, resize=image_size is not None)
    metadata = pd.concat([pd.DataFrame({"sample_id": names, "label": codes, "split": split}),
                          table[extra].reset_index(drop=True)], axis=1)
    label = name or _display_name(images)
    if not lazy:
        return _build_imageset(label, pixels, metadata, classes, description)
    from unlearn_core.data.disk_images import ImageFileStore

    train = np.asarray(split) == "train"
    channels, mean, std = scan_members(Path(images), members, size, channels, image_size is not None, train)
    store = ImageFileStore(Path(images), members, size, channels, resize=image_size is not None)
    return _build_imageset(label, store, metadata, classes, description + " Read from disk as needed.",
                           mean=mean, std=std)


# --- public: MedMNIST-style .npz -----------------------------------------------------------------
def _read_npz(path_or_file: ZipInput,
              check: Callable[[dict[str, NpyHeader]], None] | None = None,
              check_small: Callable[[dict[str, NpyHeader], dict[str, np.ndarray]], None] | None = None,
              ) -> dict[str, np.ndarray]:
    """All ``.npy`` arrays, never unpickling, with memory bounded on hostile files.

    The archive is vetted like any ZIP; then every array's header (shape, dtype) is read and
    checked (object arrays refused, declared sizes consistent and within
    :data:`MAX_NPZ_BYTES`, and ``check(headers)``) before any array is allocated. The small
    arrays (all but ``*_images``) are read next and given to ``check_small``, so wrong labels
    are refused before the images take memory.
    """
    if isinstance(path_or_file, (str, Path)) and not Path(path_or_file).is_file():
        raise UserError(f"{str(path_or_file)!r} does not exist: check the path of the .npz file.")
    with BoundedZip(path_or_file, ".npz archive", max_total=MAX_UNCOMPRESSED_BYTES,
                    max_member=MAX_UNCOMPRESSED_BYTES) as archive:
        members = {i.filename[: -len(".npy")]: i for i in archive.members()
                   if i.filename.endswith(".npy")}
        headers = {key: npy_header(archive, info) for key, info in members.items()}
        total = sum(h.nbytes for h in headers.values())
        if total > MAX_NPZ_BYTES:
            biggest = max(headers, key=lambda k: headers[k].nbytes)
            raise UserError(
                f"The .npz arrays would take {human_bytes(total)} in memory (the largest, "
                f"{biggest!r}, has shape {headers[biggest].shape}), more than the "
                f"{human_bytes(MAX_NPZ_BYTES)} limit. Save smaller images or a subset."
            )
        if check is not None:
            check(headers)
        arrays = {key: read_npy(archive, members[key], headers[key])
                  for key in members if not key.endswith("_images")}
        if check_small is not None:
            check_small(headers, arrays)
        arrays.update({key: read_npy(archive, members[key], headers[key])
                       for key in members if key.endswith("_images")})
        return {key: arrays[key] for key in members}


def _check_npz_layout(headers: dict[str, NpyHeader], image_size: int | None) -> None:
    """Checks the headers alone can answer: required arrays present, sizes of the result."""
    required = ["train_images", "train_labels", "test_images", "test_labels"]
    has_val = "val_images" in headers or "val_labels" in headers
    parts = [p for p in _NPZ_PARTS if p != "val" or has_val]
    missing = [k for k in required + [f"{p}_{s}" for p in parts for s in ("images", "labels")]
               if k not in headers]
    if missing:
        raise UserError(
            f"The .npz archive lacks {sorted(set(missing))}. It has {sorted(headers)}; a "
            f"MedMNIST-style file needs {required} (val_images/val_labels optional)."
        )
    for part in parts:
        shape = headers[f"{part}_images"].shape
        if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)):
            raise UserError(
                f"'{part}_images' has shape {shape}; expected [N, H, W] (greyscale) or "
                "[N, H, W, C] with C = 1 or 3 (channels last)."
            )
    if image_size is not None:
        shapes = [headers[f"{part}_images"].shape for part in parts]
        _check_decoded_size(sum(shape[0] for shape in shapes), image_size,
                            max(1 if len(shape) == 3 else shape[-1] for shape in shapes))


def _check_npz_labels(headers: dict[str, NpyHeader], small: dict[str, np.ndarray]) -> None:
    """Labels, class names and split checked from the small arrays, before images are read."""
    parts = [p for p in _NPZ_PARTS if f"{p}_images" in headers]
    counts = [headers[f"{p}_images"].shape[0] for p in parts]
    codes = np.concatenate([_npz_labels(small[f"{p}_labels"], f"{p}_labels", n, f"{p}_images")
                            for p, n in zip(parts, counts)])
    split = np.array([("test" if p == "test" else "train") for p, n in zip(parts, counts)
                      for _ in range(n)], dtype=object)
    _check_classes(codes, split, _npz_classes(small, codes))


def _pixels_to_uint8(pixels: np.ndarray, what: str) -> np.ndarray:
    """uint8 as is; integers in 0..255 cast; floats in [0, 1] scaled by 255, in 0..255 rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype.kind not in "iuf":
        raise UserError(f"{what} has dtype {pixels.dtype}; expected numbers (uint8 0..255).")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise UserError(f"{what} contains NaN or infinite values; replace them with 0..255 values.")
    low, high = (pixels.min(), pixels.max()) if pixels.size else (0, 0)
    if low < 0 or high > 255:
        raise UserError(
            f"{what} has values from {low} to {high}, outside 0..255. Rescale them to uint8 "
            "0..255 (or floats in 0..1) before saving."
        )
    scale = 255.0 if pixels.dtype.kind == "f" and high <= 1.0 else 1.0
    return np.rint(pixels * scale).astype(np.uint8)


def _npz_images(pixels: np.ndarray, key: str, size: int | None) -> np.ndarray:
    """``[N, H, W]`` or ``[N, H, W, C]`` -> uint8 ``[N, C, S, S]``."""
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4 or pixels.shape[-1] not in (1, 3):
        raise UserError(
            f"{key!r} has shape {pixels.shape}; expected [N, H, W] (greyscale) or [N, H, W, C] "
            "with C = 1 or 3 (channels last)."
        )
    pixels = _pixels_to_uint8(pixels, repr(key))
    height, width = pixels.shape[1:3]
    if size is None and height != width:
        raise UserError(
            f"{key!r} images are {height}x{width}; pass image_size to make them square."
        )
    if size is not None and (height, width) != (size, size):
        pixels = np.stack([_resize_array(p, size) for p in pixels]) if len(pixels) else \
            np.zeros((0, size, size, pixels.shape[-1]), np.uint8)
    return pixels.transpose(0, 3, 1, 2)


def _resize_array(pixels: np.ndarray, size: int) -> np.ndarray:
    """One ``[H, W, C]`` uint8 array resized with the same filter as image files."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    return np.asarray(image.resize((size, size), RESAMPLE)).reshape(size, size, -1)


def _npz_labels(labels: np.ndarray, key: str, count: int, images_key: str) -> np.ndarray:
    """``[N]`` or ``[N, 1]`` non-negative integers."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise UserError(
            f"{key!r} has shape {labels.shape}; expected one class per image ([N] or [N, 1]). "
            "Multi-label data is not supported."
        )
    if len(labels) != count:
        raise UserError(
            f"{key!r} has {len(labels)} labels but {images_key!r} has {count} images; they must "
            "match one to one."
        )
    whole = labels.dtype.kind in "iuf" and (labels.size == 0 or (
        np.isfinite(labels).all() and (labels == np.round(labels)).all() and labels.min() >= 0))
    if not whole:
        raise UserError(f"{key!r} must hold class indices 0, 1, 2, ... (whole numbers >= 0).")
    return labels.astype(np.int64)


def _npz_classes(arrays: dict[str, np.ndarray], codes: np.ndarray) -> list[str]:
    """Names from an optional ``classes`` string array, else ``"0"``, ``"1"``, ..."""
    needed = int(codes.max(initial=0)) + 1
    if "classes" not in arrays:
        return [str(i) for i in range(needed)]
    names = arrays["classes"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise UserError("The 'classes' array must be a 1-D array of strings, one per class.")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    if len(classes) < needed or len(set(classes)) != len(classes):
        raise UserError(
            f"The 'classes' array has {len(classes)} name(s) {_few(classes)} but labels go up to "
            f"{needed - 1}; give one distinct name per class index."
        )
    return classes


def _npz_metadata(arrays: dict[str, np.ndarray], parts: list[str],
                  counts: list[int]) -> pd.DataFrame:
    """Extra ``<part>_<col>`` 1-D arrays, present for every part, become metadata columns."""
    pattern = re.compile(rf"^({'|'.join(_NPZ_PARTS)})_(.+)$")
    columns = sorted({m.group(2) for k in arrays if (m := pattern.match(k))} - {"images", "labels"})
    frame = {}
    for column in columns:
        missing = [f"{p}_{column}" for p in parts if f"{p}_{column}" not in arrays]
        if missing or column in RESERVED_COLUMNS:
            raise UserError(
                f"Metadata column {column!r}: " + (f"{_few(missing)} missing; every split needs "
                "its own array of the same length." if missing else "the name is reserved; "
                "rename the arrays.")
            )
        pieces = [arrays[f"{p}_{column}"] for p in parts]
        for part, piece, count in zip(parts, pieces, counts):
            if piece.ndim != 1 or len(piece) != count:
                raise UserError(
                    f"{part}_{column!s} has shape {piece.shape}; metadata arrays must be 1-D with "
                    f"one value per image ({count})."
                )
        values = np.concatenate(pieces)
        frame[column] = values.astype(str) if values.dtype.kind in "US" else values
    return pd.DataFrame(frame, index=range(sum(counts)))


def load_npz(path_or_file: ZipInput, *, name: str | None = None,
             image_size: int | None = None) -> ImageSet:
    """Load a MedMNIST-style ``.npz`` (never unpickles).

    Expected keys: ``train_images``, ``train_labels``, ``test_images``, ``test_labels``;
    optional ``val_images``/``val_labels`` are merged into ``train`` (the ImageSet has only
    train/test; validation images keep ids ``val-00012``). Images are ``[N, H, W]`` or
    ``[N, H, W, C]`` (C = 1 or 3); uint8 as is, integers in 0..255 cast, floats whose values
    all lie in [0, 1] scaled by 255 (else rounded if in 0..255), judged per array; anything
    else (negative, > 255, NaN) is refused.
    ``image_size`` resizes (default: keep the native size; non-square needs it). Labels are
    ``[N]`` or ``[N, 1]`` class indices; names from an optional ``classes`` string array, else
    ``"0"``, ``"1"``, ... Metadata: ``sample_id`` (``train-00012``), ``label``, ``split``, plus
    one column per extra 1-D array named ``train_<col>``/``test_<col>`` (and ``val_<col>``
    if there is a val split) of matching length.
    """
    _check_options(image_size)
    arrays = _read_npz(path_or_file, lambda headers: _check_npz_layout(headers, image_size),
                       _check_npz_labels)
    has_val = "val_images" in arrays or "val_labels" in arrays
    parts = [p for p in _NPZ_PARTS if p != "val" or has_val]
    images = [_npz_images(arrays[f"{p}_images"], f"{p}_images", image_size) for p in parts]
    if len({tuple(i.shape[1:]) for i in images}) != 1:
        raise UserError(f"The splits' images differ in shape ({[i.shape[1:] for i in images]}); "
                        "all must have the same size and channels.")
    counts = [len(i) for i in images]
    codes = np.concatenate([_npz_labels(arrays[f"{p}_labels"], f"{p}_labels", n, f"{p}_images")
                            for p, n in zip(parts, counts)])
    metadata = pd.concat([pd.DataFrame({
        "sample_id": [f"{p}-{i:05d}" for p, n in zip(parts, counts) for i in range(n)],
        "label": codes,
        "split": [("test" if p == "test" else "train")
                  for p, n in zip(parts, counts) for _ in range(n)],
    }), _npz_metadata(arrays, parts, counts)], axis=1)
    _check_no_missing(metadata, metadata.columns, "Metadata")
    pixels = torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))
    label = name or _display_name(path_or_file)
    return _build_imageset(label, pixels, metadata, _npz_classes(arrays, codes),
                           f"{len(codes)} images from the user's .npz file {label!r}.")


# --- public: the dashboard's dispatcher ----------------------------------------------------------
def check_upload(upload_name: str, data: bytes | bytearray | str | Path) -> None:
    """Cheap checks of an upload (or a data file) before any work: archive and headers sane.

    The dashboard calls this before writing an upload into the workspace, and the command
    line before recording a run, so a zip bomb or a forged ``.npz`` is refused at once
    (reading headers only) and nothing is left behind. Any file that is not ``.npz`` is
    treated as a ZIP, as :func:`~unlearn_core.data.catalog.load_dataset` does; folders pass.
    """
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        return
    suffix = Path(upload_name).suffix.lower()
    if suffix != ".npz":
        _open_zip(data).close()
    else:
        with BoundedZip(data, ".npz archive", max_total=MAX_UNCOMPRESSED_BYTES,
                        max_member=MAX_UNCOMPRESSED_BYTES) as archive:
            for info in archive.members():
                if info.filename.endswith(".npy"):
                    npy_header(archive, info)



_FOLDER_OPTIONS = {"file_column", "label_column", "image_size", "channels", "test_fraction",
                   "seed", "name"}


def load_user_data(upload_name: str, data: bytes | bytearray | Path | str, csv: CsvInput = None,
                   **options: Any) -> ImageSet:
    """Load an upload by its name: ``.zip`` (+ CSV) or ``.npz``; a folder path also works.

    ``options`` are :func:`load_image_folder`'s keyword options. For ``.npz`` only ``name`` and
    ``image_size`` apply (the file carries its own labels and split); the CSV-only options are
    ignored so the dashboard can pass one set of options. ``name`` defaults to the upload's stem.
    """
    unknown = set(options) - _FOLDER_OPTIONS
    if unknown:
        raise TypeError(f"Unknown loader option(s): {sorted(unknown)}")
    options.setdefault("name", _display_name(upload_name))
    is_folder = isinstance(data, (str, Path)) and Path(data).is_dir()
    suffix = Path(upload_name).suffix.lower()
    if is_folder or suffix == ".zip":
        return load_image_folder(data, csv, **options)
    if suffix == ".npz":
        if csv is not None:
            raise UserError("A .npz file carries its own labels and split; do not add a CSV to it.")
        return load_npz(data, name=options["name"], image_size=options.get("image_size"))
    hint = " Put the CSV inside a ZIP with the images." if suffix == ".csv" else ""
    raise UserError(
        f"Cannot load {upload_name!r}: the file type {suffix or '(none)'!r} is not supported. "
        f"Upload a .zip of images with a CSV, or a MedMNIST-style .npz.{hint}"
    )
