"""Bounded reading of ZIP archives: image ZIPs, ``.npz`` files and dashboard uploads.

Why not just :mod:`zipfile`: ``ZipFile.read`` inflates a member in one call and only then cuts
it to the size the headers declare, so a member whose headers understate its size (a forged
zip bomb) still costs its full inflated size in memory. Here every member is inflated in
small chunks and the real, streamed size is compared with the declared one as it grows:
reading stops with a :class:`UserError` one chunk after the declared size is passed.

Limits, all checked before anything is inflated:

* the total declared size of the archive (``max_total``),
* the declared size of any one member (``max_member``), since members are held one at a time,
* zip-slip names (absolute paths, ``..``), empty archives and encrypted members.

``.npz`` members are ``.npy`` files whose small header declares the array's shape and dtype;
:func:`npy_header` reads just that header so a caller can cap shapes before any array is
allocated (NumPy itself allocates the declared shape first, then fills it).
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from unlearn_core.errors import UserError

#: Default cap on the total declared uncompressed size of an archive.
MAX_ARCHIVE_BYTES = 2 * 1024**3
#: Default cap on one member (an image file or the CSV): members are read one at a time.
MAX_MEMBER_BYTES = 128 * 1024**2
#: Inflate at most this much per step, so a lying member overshoots by at most one chunk.
CHUNK_BYTES = 1024**2
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"

ArchiveInput = Union[str, Path, bytes, bytearray, memoryview, BinaryIO]


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def human_bytes(count: float) -> str:
    """``1.5 GiB``-style sizes for messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - loop always returns


def unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters and ``..`` components could escape an extraction folder."""
    parts = re.split(r"[/\\]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def _stream(obj: ArchiveInput) -> BinaryIO:
    """A seekable binary stream we own for a path, else :func:`rewound_stream`."""
    if isinstance(obj, (str, Path)):
        return open(obj, "rb")  # noqa: SIM115 - closed by BoundedZip.close
    return rewound_stream(obj)


def rewound_stream(obj: Any) -> BinaryIO:
    """A seekable binary stream for bytes or an upload (rewound: Streamlit may have read it)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(obj))
    if hasattr(obj, "seek") and getattr(obj, "seekable", lambda: True)():
        obj.seek(0)
        return obj
    return io.BytesIO(obj.read())


@dataclass
class BoundedZip:
    """An opened, vetted archive whose members are read with :meth:`read` / :meth:`chunks`.

    Args:
        source: a path, bytes, or a binary file-like (an upload).
        what: how messages name the archive ("ZIP", ".npz archive").
        max_total, max_member: declared-size limits (see the module docstring).
    """

    source: ArchiveInput
    what: str = "ZIP"
    max_total: int = MAX_ARCHIVE_BYTES
    max_member: int = MAX_MEMBER_BYTES

    def __post_init__(self) -> None:
        self._fp = _stream(self.source)
        try:
            self.zip = zipfile.ZipFile(self._fp)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            self._close_fp()
            raise UserError(
                f"This is not a readable {self.what} file ({exc}). Upload a valid {self.what}."
            ) from exc
        try:
            self._vet()
        except BaseException:
            self.close()
            raise

    # --- vetting (headers only) -----------------------------------------------------------
    def _vet(self) -> None:
        infos = self.zip.infolist()
        unsafe = [i.filename for i in infos if unsafe_member(i.filename)]
        if unsafe:
            raise UserError(
                f"The {self.what} contains member(s) with absolute paths or '..' components "
                f"({_few(unsafe)}), which could write outside any folder (zip-slip). Refusing it: "
                "create the archive from inside your data folder so every path is relative."
            )
        if not any(not i.is_dir() for i in infos):
            raise UserError(f"The {self.what} is empty: add your files to it and upload it again.")
        total = sum(i.file_size for i in infos)
        if total > self.max_total:
            raise UserError(
                f"The {self.what} would unpack to {human_bytes(total)}, more than the "
                f"{human_bytes(self.max_total)} limit. Resize the images or upload a subset."
            )
        big = [i.filename for i in infos if i.file_size > self.max_member]
        if big:
            raise UserError(
                f"The {self.what} member(s) {_few(big)} would unpack to more than the "
                f"{human_bytes(self.max_member)} allowed for one file. Resize those images (or "
                "split the file) and upload again."
            )

    def members(self) -> list[zipfile.ZipInfo]:
        """Every file (not folder) in the archive, in archive order."""
        return [i for i in self.zip.infolist() if not i.is_dir()]

    # --- reading ------------------------------------------------------------------------------
    def read(self, info: zipfile.ZipInfo) -> bytes:
        """The member's bytes, inflated in chunks and checked against its declared size and CRC."""
        return b"".join(self.chunks(info))

    def chunks(self, info: zipfile.ZipInfo, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        """Yield the member's content in chunks of at most ``chunk`` bytes (see :meth:`read`)."""
        if info.flag_bits & 0x1:
            raise UserError(
                f"{info.filename!r} in the {self.what} is encrypted; make the archive without a "
                "password."
            )
        if info.compress_type == zipfile.ZIP_STORED:
            produced = yield from self._stored(info, chunk)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            produced = yield from self._inflate(info, chunk)
        else:  # bzip2/lzma: zipfile never returns more than the declared size, read in chunks
            produced = yield from self._library_chunks(info, chunk)
        if produced != info.file_size:
            raise self._damaged(info, f"its header declares {info.file_size} bytes but it holds "
                                f"{produced}")

    def _damaged(self, info: zipfile.ZipInfo, detail: str) -> UserError:
        return UserError(
            f"{info.filename!r} in the {self.what} is damaged or forged: {detail}. Make the "
            f"archive again with a standard ZIP tool and upload it again."
        )

    def _raw_start(self, info: zipfile.ZipInfo) -> int:
        """Offset of the member's compressed data (after its local header)."""
        self._fp.seek(info.header_offset)
        header = self._fp.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
            raise self._damaged(info, "its local header is missing")
        fields = _LOCAL_HEADER.unpack(header)
        return info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]

    def _raw_chunks(self, info: zipfile.ZipInfo, chunk: int) -> Iterator[bytes]:
        position, left = self._raw_start(info), info.compress_size
        while left > 0:
            self._fp.seek(position)
            data = self._fp.read(min(chunk, left))
            if not data:
                raise self._damaged(info, "the archive ends inside it")
            position += len(data)
            left -= len(data)
            yield data

    def _check_growth(self, info: zipfile.ZipInfo, produced: int) -> None:
        if produced > info.file_size:
            raise self._damaged(
                info, f"its header declares {human_bytes(info.file_size)} but it inflates to "
                "more (a zip bomb?); reading stopped there")

    def _stored(self, info: zipfile.ZipInfo, chunk: int) -> Iterator[bytes]:
        produced, crc = 0, 0
        for data in self._raw_chunks(info, chunk):
            produced += len(data)
            self._check_growth(info, produced)
            crc = zlib.crc32(data, crc)
            yield data
        self._check_crc(info, crc)
        return produced

    def _inflate(self, info: zipfile.ZipInfo, chunk: int) -> Iterator[bytes]:
        inflater = zlib.decompressobj(-15)
        produced, crc = 0, 0
        try:
            for data in self._raw_chunks(info, chunk):
                while data and not inflater.eof:
                    out = inflater.decompress(data, chunk)
                    data = inflater.unconsumed_tail
                    produced += len(out)
                    self._check_growth(info, produced)
                    crc = zlib.crc32(out, crc)
                    yield out
        except zlib.error as exc:
            raise self._damaged(info, f"its compressed data are invalid ({exc})") from exc
        if not inflater.eof:
            raise self._damaged(info, "its compressed data end too early")
        self._check_crc(info, crc)
        return produced

    def _library_chunks(self, info: zipfile.ZipInfo, chunk: int) -> Iterator[bytes]:
        produced = 0
        try:
            with self.zip.open(info) as handle:
                while data := handle.read(chunk):
                    produced += len(data)
                    yield data
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise self._damaged(info, str(exc)) from exc
        return produced

    def _check_crc(self, info: zipfile.ZipInfo, crc: int) -> None:
        if crc != info.CRC:
            raise self._damaged(info, "its checksum (CRC) does not match its content")

    # --- lifetime -----------------------------------------------------------------------------
    def _close_fp(self) -> None:
        if isinstance(self.source, (str, Path)):
            self._fp.close()

    def close(self) -> None:
        self.zip.close()
        self._close_fp()

    def __enter__(self) -> "BoundedZip":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- .npy headers inside an .npz ------------------------------------------------------------------
@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` member declares: shape, dtype, order, and where its data start."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int

    @property
    def nbytes(self) -> int:
        count = 1
        for side in self.shape:
            count *= int(side)
        return count * self.dtype.itemsize


def npy_header(archive: BoundedZip, info: zipfile.ZipInfo) -> NpyHeader:
    """Parse the header of one ``.npy`` member, inflating only its first chunk.

    Refuses object arrays (loading them means unpickling) and a header whose declared array
    size does not match the member's declared size, so the shape can be trusted for limits.
    """
    first = next(archive.chunks(info, chunk=64 * 1024), b"")
    stream = io.BytesIO(first)
    try:
        version = np.lib.format.read_magic(stream)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = reader(stream)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise UserError(
            f"{info.filename!r} in the {archive.what} is not a readable NumPy array ({exc}). "
            "Save the arrays with np.savez."
        ) from exc
    if dtype.hasobject:
        raise UserError(
            "This file contains pickled objects; refusing to load it, because unpickling can "
            "run arbitrary code. Save plain numeric/string arrays with np.savez."
        )
    header = NpyHeader(tuple(int(s) for s in shape), dtype, bool(fortran_order), stream.tell())
    if any(side < 0 for side in header.shape) or header.data_offset + header.nbytes != info.file_size:
        raise UserError(
            f"{info.filename!r} in the {archive.what} declares an array of shape {header.shape} "
            f"({human_bytes(header.nbytes)}) but holds {human_bytes(info.file_size)}: the file is "
            "damaged or forged. Save the arrays again with np.savez."
        )
    return header


def read_npy(archive: BoundedZip, info: zipfile.ZipInfo, header: NpyHeader) -> np.ndarray:
    """The member's array, filled chunk by chunk into one buffer of the (checked) declared size."""
    buffer = np.empty(header.nbytes, dtype=np.uint8)
    skip, filled = header.data_offset, 0
    for data in archive.chunks(info):
        if skip:
            cut = min(skip, len(data))
            data, skip = data[cut:], skip - cut
        buffer[filled : filled + len(data)] = np.frombuffer(data, dtype=np.uint8)
        filled += len(data)
    array = buffer.view(header.dtype)
    if header.fortran_order:  # as numpy.lib.format.read_array does
        return array.reshape(header.shape[::-1]).transpose()
    return array.reshape(header.shape)
