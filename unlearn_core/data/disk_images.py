"""Pixels that stay on disk: lazy uint8 stores that stand in for the ``[N, C, H, W]`` tensor.

Why: a clinical archive (90,000 fundus photographs at 512 px is about 70 GB of pixels) does not
fit in memory, yet every part of the studio only ever needs a batch of images at a time
(``data.images[batch]``) plus a few whole-set passes that can stream (statistics, hashes).
So an :class:`~unlearn_core.data.imageset.ImageSet` may hold, instead of a tensor, a store
that quacks like one for exactly what callers use: ``store[indices]`` (an int, a slice, an int
or bool array or tensor) returns a uint8 tensor of those images only, and ``shape``,
``len()``, ``dtype`` and ``ndim`` answer without reading pixels.

Two stores:

* :class:`ArrayFileStore`: a raw C-order uint8 file ``[N, C, H, W]`` that the ``import``
  command writes once (:mod:`unlearn_core.data.pixel_dir`). Reads use ``os.preadv`` at the
  images' offsets (consecutive images in one call), not ``np.memmap``: pages a memory map
  touches count toward the process's resident memory until the kernel reclaims them, so a
  pass over a 70 GB file would look like (and, under a cgroup limit, be charged as) 70 GB of
  RSS; read pages stay in the page cache, which the kernel drops freely.
* :class:`ImageFileStore`: a folder or ZIP of image files decoded on demand with the same
  decoder, resize and channel rules as the upload loader (:mod:`unlearn_core.data.loaders`).
  Decoding is slow, so :func:`pixel_batches` decodes such stores in DataLoader worker
  processes.

Whole-set work never holds every pixel: :func:`index_chunks` walks indices in chunks of at most
:data:`CHUNK_BYTES` of pixels, and :meth:`PixelStore.fingerprint_with` hashes a store's pixels
chunk by chunk, giving the same digest the in-memory tensor gives (sha256 over the same bytes in
the same order), so a model trained on a set loaded in memory is recognised on the same set
imported to disk, and the other way round.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_core.errors import UserError

#: Most pixel bytes one whole-set pass holds at a time (a chunk of images).
CHUNK_BYTES = 64 * 1024**2
#: One ``preadv`` call reads at most this many bytes (consecutive images merge up to it).
_MAX_READ = 16 * 1024**2


#: Batches :func:`pixel_batches` hands out between two returns of freed heap to the system.
TRIM_EVERY = 16
_LIBC: Any = None


def release_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc ``malloc_trim``; elsewhere a no-op).

    Why: on Linux, PyTorch's CPU forwards leave glibc's heap fragmented. One
    ``predict_logits`` call over 32,000 images of 64 px grew a process by 3 GB whether the
    pixels were in memory (0.99 → 3.97 GB) or on disk (0.61 → 2.59 GB); trimming every 64
    batches held it under 1 GB at about the same speed, and every 16 (:data:`TRIM_EVERY`) kept
    the whole 100,000-image run of docs/performance.md at 1.1 GB (1.7 GB with 64). Fixing
    glibc's mmap threshold instead held memory too but doubled the time (page faults).
    """
    global _LIBC
    if not sys.platform.startswith("linux"):
        return
    try:
        if _LIBC is None:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc: nothing to trim
        _LIBC = False if _LIBC is None else _LIBC


class PixelStore:
    """Lazy ``uint8 [N, C, H, W]`` pixels; subclasses implement :meth:`read`.

    Attributes (class level): ``dtype``/``ndim`` as a tensor's; ``decodes`` says reading costs
    CPU (image decoding), so batches are best read in worker processes (:func:`pixel_batches`).
    """

    dtype = torch.uint8
    ndim = 4
    decodes = False

    def __init__(self, shape: Sequence[int]) -> None:
        if len(shape) != 4 or any(int(s) < 0 for s in shape):
            raise UserError(f"A pixel store needs a shape [N, C, H, W]; got {list(shape)}.")
        self.shape = torch.Size(int(s) for s in shape)
        self._fingerprints: dict[str, str] = {}

    # --- what callers use ------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def image_bytes(self) -> int:
        """Bytes of one image (C × H × W)."""
        return int(np.prod(self.shape[1:]))

    @property
    def nbytes(self) -> int:
        return self.image_bytes * len(self)

    def __getitem__(self, key: Any) -> torch.Tensor:
        """``store[i]`` → ``[C, H, W]``; ``store[indices]`` / ``store[a:b]`` / ``store[mask]`` → ``[n, C, H, W]``."""
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.ndim == 0):
            index = int(key)
            if not -len(self) <= index < len(self):
                raise IndexError(f"image {index} is out of range for {len(self)} images")
            return self[np.array([index % len(self)])][0]
        return torch.from_numpy(self.read(as_indices(key, len(self))))

    def numpy(self) -> np.ndarray:
        raise TypeError("A pixel store on disk is not turned into one array (it may not fit in memory); "
                        "read the images you need with store[indices].")

    def read(self, indices: np.ndarray) -> np.ndarray:
        """``uint8 [len(indices), C, H, W]`` for valid, non-negative ``int64`` indices."""
        raise NotImplementedError

    # --- whole-set passes ------------------------------------------------------------------
    def fingerprint_with(self, tail: bytes) -> str:
        """``sha256(all pixel bytes + tail)[:16]``, streamed; what ``ImageSet.fingerprint`` gives a tensor.

        Remembered per ``tail`` for the store's life (the files are taken to stay as they were
        at load, as an in-memory tensor would); a store may know it beforehand (an import records it).
        """
        key = hashlib.sha256(tail).hexdigest()
        if key not in self._fingerprints:
            digest = hashlib.sha256()
            for _, pixels in iter_pixels(self, np.arange(len(self))):
                digest.update(pixels.numpy().tobytes())
            digest.update(tail)
            self._fingerprints[key] = digest.hexdigest()[:16]
        return self._fingerprints[key]

    def known_fingerprint(self, tail: bytes, fingerprint: str) -> None:
        """Record a fingerprint computed elsewhere (by the import) for ``tail``."""
        self._fingerprints[hashlib.sha256(tail).hexdigest()] = fingerprint

    # --- pickling (DataLoader workers): never carry open handles ---------------------------
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_open")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def as_indices(key: Any, length: int) -> np.ndarray:
    """Any index a tensor accepts along its first axis (bar ``None``/ellipsis), as ``int64`` ≥ 0."""
    if isinstance(key, slice):
        return np.arange(length, dtype=np.int64)[key]
    if isinstance(key, torch.Tensor):
        key = key.cpu().numpy()
    array = np.asarray(key)
    if array.dtype == bool:
        if array.shape != (length,):
            raise IndexError(f"a mask of shape {array.shape} does not match {length} images")
        return np.flatnonzero(array)
    if array.dtype.kind not in "iu" and array.size:
        raise IndexError(f"images are indexed with integers, not {array.dtype}")
    array = array.astype(np.int64, copy=False).reshape(-1)
    if array.size and (array.min() < -length or array.max() >= length):
        raise IndexError(f"an index is out of range for {length} images")
    return np.where(array < 0, array + length, array)


def is_lazy(images: Any) -> bool:
    """True for a :class:`PixelStore` (pixels on disk), False for an in-memory tensor."""
    return isinstance(images, PixelStore)


# ------------------------------------------------------------------- a raw uint8 array file

class ArrayFileStore(PixelStore):
    """A raw C-order ``uint8 [N, C, H, W]`` file read at offsets (see the module docstring).

    Args:
        path: the file; its size must be exactly ``N × C × H × W`` bytes (checked here, so a
            truncated copy is refused at load, not halfway through a run).
        shape: ``[N, C, H, W]``.
    """

    def __init__(self, path: str | Path, shape: Sequence[int]) -> None:
        super().__init__(shape)
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise UserError(f"The pixel file {str(self.path)!r} cannot be read ({exc}); import the images "
                            "again.") from exc
        if size != self.nbytes:
            raise UserError(
                f"The pixel file {str(self.path)!r} holds {size:,} bytes but its header describes "
                f"{len(self):,} images of {list(self.shape[1:])} ({self.nbytes:,} bytes): it is truncated or "
                "belongs to another import. Import the images again.")
        self._open_fd: tuple[int, int] | None = None  # (pid, fd): a forked worker opens its own
        self._open_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ArrayFileStore({str(self.path)!r}, shape {list(self.shape)})"

    def _fd(self) -> int:
        if self._open_fd is None or self._open_fd[0] != os.getpid():
            self._open_fd = (os.getpid(), os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0)))
        return self._open_fd[1]

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._open_fd, self._open_lock = None, threading.Lock()

    def __del__(self) -> None:
        try:  # at interpreter exit ``os`` may already be gone; the descriptor closes with the process
            opened = self._open_fd
            if opened is not None and opened[0] == os.getpid():
                os.close(opened[1])
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def read(self, indices: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(indices, return_inverse=True)
        out = np.empty((len(unique), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(unique), -1)
        per, fd = self.image_bytes, self._fd()
        most = max(1, _MAX_READ // max(per, 1))
        start = 0
        while start < len(unique):  # runs of consecutive images, one read each
            stop = start + 1
            while stop < len(unique) and stop - start < most and unique[stop] == unique[stop - 1] + 1:
                stop += 1
            self._read_into(fd, memoryview(flat[start:stop]).cast("B"), int(unique[start]) * per)
            start = stop
        if len(unique) == len(indices) and (len(unique) < 2 or (np.diff(indices) > 0).all()):
            return out  # already sorted and unique: no reorder copy
        return out[inverse.reshape(-1)]

    def _read_into(self, fd: int, buffer: memoryview, offset: int) -> None:
        done = 0
        while done < len(buffer):
            if hasattr(os, "preadv"):
                got = os.preadv(fd, [buffer[done:]], offset + done)
            else:  # Windows/older macOS: a seek and a read, which threads must not interleave
                with self._open_lock:
                    os.lseek(fd, offset + done, os.SEEK_SET)
                    chunk = os.read(fd, len(buffer) - done)
                got = len(chunk)
                buffer[done:done + got] = chunk
            if got <= 0:
                raise UserError(f"The pixel file {str(self.path)!r} ended early (it changed while being read); "
                                "import the images again.")
            done += got


# ------------------------------------------------------------------- image files decoded lazily

class ImageFileStore(PixelStore):
    """Image files in a folder or a ZIP on disk, decoded when read.

    Decoding follows the upload loader exactly (:func:`unlearn_core.data.loaders.decode_members`):
    EXIF orientation, 8 bits, resized to ``size`` when ``resize`` (else every image must be
    ``size`` × ``size``), converted to ``channels``. ``members`` are names inside the source,
    one per image, in the set's order. A member that cannot be decoded raises a UserError
    naming it; :func:`unlearn_core.data.loaders.load_image_folder` decodes every one once at
    load (lazy mode), so a damaged file refuses the set before any run starts.
    """

    decodes = True

    def __init__(self, source: str | Path, members: Sequence[str], size: int, channels: int,
                 resize: bool) -> None:
        super().__init__((len(members), channels, size, size))
        self.source = str(Path(source).resolve())
        self.members = list(members)
        self.size, self.channels, self.resize = int(size), int(channels), bool(resize)

    def __repr__(self) -> str:
        return f"ImageFileStore({self.source!r}, {len(self):,} images, shape {list(self.shape)})"

    def read(self, indices: np.ndarray) -> np.ndarray:
        from unlearn_core.data.loaders import decode_members, shared_disk_source

        source, lock = shared_disk_source(self.source)  # opened once per process
        with lock:
            return decode_members(source, [self.members[i] for i in indices], self.size, self.channels,
                                  self.resize)


# ------------------------------------------------------------------- streaming helpers

def chunk_images(images: Any) -> int:
    """Images per chunk of a whole-set pass: :data:`CHUNK_BYTES` of pixels, at least one."""
    per = max(1, int(np.prod(tuple(images.shape[1:]))))
    return max(1, CHUNK_BYTES // per)


def index_chunks(indices: np.ndarray, chunk: int) -> list[np.ndarray]:
    """``indices`` cut into consecutive pieces of at most ``chunk``."""
    indices = np.asarray(indices, dtype=np.int64)
    return [indices[start:start + chunk] for start in range(0, len(indices), chunk)]


def iter_pixels(images: Any, indices: np.ndarray | None = None, chunk: int | None = None,
                workers: int | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(chunk_indices, images[chunk_indices])`` over ``indices`` (default all), in order,
    never more than a chunk in memory (beyond what is already there for a tensor)."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    pieces = index_chunks(indices, chunk or chunk_images(images))
    yield from zip(pieces, pixel_batches(images, pieces, workers))


class _Batches(torch.utils.data.Dataset):
    """Item ``i`` is ``images[batches[i]]``: what each DataLoader worker reads and decodes."""

    def __init__(self, images: PixelStore, batches: list[np.ndarray]) -> None:
        self.images, self.batches = images, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[self.batches[i]]


def default_workers() -> int:
    """Decoding workers: the cores but one (the main process trains), at least 1, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


def pixel_batches(images: Any, batches: Iterable[np.ndarray | Sequence[int]],
                  workers: int | None = None) -> Iterator[torch.Tensor]:
    """``images[batch]`` for each index batch, in order.

    An in-memory tensor or a store that only reads (a raw array file) is indexed in this
    process; a store that decodes image files is read by a ``torch.utils.data.DataLoader``
    with ``workers`` worker processes (default :func:`default_workers`; 0 reads here), each
    batch decoded whole in one worker and handed back in order. Index batches are taken as
    given (shuffle them before), so a training loop keeps its own order and seed. Every
    :data:`TRIM_EVERY` batches the freed heap goes back to the system (:func:`release_free_heap`).
    """
    for number, pixels in enumerate(_read_batches(images, batches, workers), 1):
        if number % TRIM_EVERY == 0:  # a long pass must not grow the process (see release_free_heap)
            release_free_heap()
        yield pixels


def decoded_on_read(images: Any) -> bool:
    """Whether reading ``images`` decodes image files (worth DataLoader workers): a store that
    decodes, not an in-memory tensor or a raw pixel file."""
    return isinstance(images, PixelStore) and images.decodes


def _read_batches(images: Any, batches: Iterable, workers: int | None) -> Iterator[torch.Tensor]:
    if not decoded_on_read(images) or workers == 0:
        for batch in batches:
            yield images[batch]
        return
    batches = [np.asarray(b, dtype=np.int64) for b in batches]
    count = workers if workers is not None else default_workers()
    if len(batches) <= 1 or count < 1:
        for batch in batches:
            yield images[batch]
        return
    loader = torch.utils.data.DataLoader(_Batches(images, batches), batch_size=None, shuffle=False,
                                         num_workers=min(count, len(batches)), prefetch_factor=2)
    yield from loader
