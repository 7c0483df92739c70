"""Hostile uploads (zip bombs, forged headers, huge images, huge .npz shapes) and a memory probe.

Used by ``tests/test_reliability.py`` (CI) and ``scripts/reliability_memory.py`` (the figures in
``docs/reliability.md``). Every file here is built from a few kilobytes of compressed zeros
without inflating anything, so making them costs no memory and little time:

* a ZIP is written by hand (:func:`raw_zip`), so its headers can declare any size;
* long runs of zeros are compressed once and repeated: after a full flush a deflate stream
  restarts at a byte boundary with an empty history, so each repeat inflates to the same
  chunk again (:func:`zeros_deflate`).

The probe (:func:`measure`) reads peak resident memory (``ru_maxrss``, measured by the
kernel, not a timing) of refusing each file through the dashboard's upload path, either in
forked children of one process (fast: the upload's own cost) or in a fresh process per file
(the whole process's peak). ``scripts/reliability_memory.py`` prints the figures.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

MiB = 1024**2
GiB = 1024**3


# --- building blocks ---------------------------------------------------------------------------
def zeros_deflate(size: int, chunk: int = MiB) -> bytes:
    """A raw deflate stream that inflates to ``size`` zero bytes (``size`` a multiple of ``chunk``)."""
    assert size % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"\0" * chunk
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    return first + repeat * (size // chunk - 1) + end


def raw_zip(members: list[dict]) -> bytes:
    """A ZIP from member dicts: ``name``, ``data`` (stored as given), ``method`` (0 or 8),
    ``declared`` (uncompressed size written in both headers), optional ``crc`` and ``flags``."""
    out, central = io.BytesIO(), io.BytesIO()
    for member in members:
        name = member["name"].encode()
        data = member["data"]
        crc = member.get("crc", 0)
        fields = (20, member.get("flags", 0), member.get("method", 8), 0, 0x21, crc, len(data),
                  member["declared"])
        offset = out.tell()
        out.write(struct.pack("<4sHHHHHLLLHH", b"PK\x03\x04", *fields, len(name), 0) + name + data)
        central.write(struct.pack("<4sHHHHHHLLLHHHHHLL", b"PK\x01\x02", 20, *fields, len(name),
                                  0, 0, 0, 0, 0, offset) + name)
    directory = central.getvalue()
    count = len(members)
    end = struct.pack("<4sHHHHLLH", b"PK\x05\x06", 0, 0, count, count, len(directory), out.tell(), 0)
    return out.getvalue() + directory + end


def stored(name: str, data: bytes) -> dict:
    """An honest stored member."""
    return {"name": name, "data": data, "method": 0, "declared": len(data), "crc": zlib.crc32(data)}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` greyscale pixels; its pixel data are zeros
    compressed by repetition, so the file is small however large the image it declares."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">L", len(body)) + kind + body + struct.pack(">L", zlib.crc32(kind + body))

    raw = (width + 1) * height  # one filter byte per row, all zero
    if raw < MiB:  # small: a complete, decodable image
        stream = zlib.compress(b"\0" * raw)
    else:  # large: zlib header and the repeated zeros, no checksum (it is never decoded)
        stream = b"\x78\x9c" + zeros_deflate(raw - raw % MiB)
    ihdr = struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version-1.0 ``.npy`` header declaring ``shape`` (what ``np.save`` writes first)."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def _csv(rows: int, extension: str = "png") -> bytes:
    lines = ["file,label"] + [f"img{i}.{extension},{'ab'[i % 2]}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# --- the hostile uploads -------------------------------------------------------------------------
def zip_forged_sizes() -> bytes:
    """An image ZIP whose member declares 1 KiB but inflates to 1.5 GiB (a zip bomb)."""
    bomb = {"name": "img0.png", "data": zeros_deflate(1536 * MiB), "declared": 1024}
    return raw_zip([stored("labels.csv", _csv(4)), bomb,
                    *[stored(f"img{i}.png", b"x") for i in range(1, 4)]])


def zip_honest_big_member() -> bytes:
    """An image ZIP with one honest 1 GiB member (sizes and all)."""
    big = {"name": "img0.png", "data": zeros_deflate(GiB), "declared": GiB}
    return raw_zip([stored("labels.csv", _csv(4)), big,
                    *[stored(f"img{i}.png", b"x") for i in range(1, 4)]])


def zip_total_too_big() -> bytes:
    """An image ZIP of 24 members of 100 MiB each (2.3 GiB in all), each within the member cap."""
    members = [{"name": f"img{i}.png", "data": zeros_deflate(100 * MiB), "declared": 100 * MiB}
               for i in range(24)]
    return raw_zip([stored("labels.csv", _csv(24)), *members])


def zip_huge_image() -> bytes:
    """An image ZIP whose PNG declares 40000 × 40000 pixels (1.6 GB once decoded)."""
    png = png_header_only(40_000, 40_000)
    return raw_zip([stored("labels.csv", _csv(4)), stored("img0.png", png),
                    *[stored(f"img{i}.png", png_header_only(8, 8)) for i in range(1, 4)]])


def zip_too_many_pixels() -> bytes:
    """A ZIP whose CSV lists 100,000 images of 64 px (the first one is there and sets the native
    size): 1.1 GiB of pixels once decoded."""
    return raw_zip([stored("labels.csv", _csv(100_000)), stored("img0.png", png_header_only(64, 64))])


def npz_header_huge() -> bytes:
    """An .npz whose train_images header declares 10⁶ × 1000 × 1000 (931 GiB) in a tiny member."""
    header = npy_header((1_000_000, 1000, 1000))
    return raw_zip([stored("train_images.npy", header + b"\0" * 64)])


def npz_consistent_huge() -> bytes:
    """An .npz whose header and ZIP sizes agree on a 1.8 GiB array, over the .npz memory cap."""
    shape = (40_000, 128, 128, 3)
    header = npy_header(shape)
    declared = len(header) + 40_000 * 128 * 128 * 3
    return raw_zip([{"name": "train_images.npy", "data": header, "method": 0, "declared": declared}])


def npz_forged_sizes() -> bytes:
    """An .npz whose member declares a 64-byte array but inflates to 1.5 GiB."""
    header = npy_header((1, 8, 8))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    lead = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    return raw_zip([{"name": "train_images.npy", "data": lead + zeros_deflate(1536 * MiB),
                     "declared": len(header) + 64}])


def npz_bad_labels_big_images() -> bytes:
    """A valid .npz with 900 MiB of images (zeros) whose labels are negative."""
    members = []
    for part, count in (("train", 720 * 256), ("test", 180 * 256)):  # 4096-byte images
        header = npy_header((count, 64, 64))
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        lead = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
        crc = zlib.crc32(header)
        block = b"\0" * MiB
        for _ in range(count * 4096 // MiB):
            crc = zlib.crc32(block, crc)
        members.append({"name": f"{part}_images.npy", "method": 8, "crc": crc,
                        "declared": len(header) + count * 4096,
                        "data": lead + zeros_deflate(count * 4096)})
        members.append(stored(f"{part}_labels.npy", npy_header((count,), "<i8") + b"\xff" * 8 * count))
    return raw_zip(members)


#: name -> (builder, upload file name)
HOSTILE_UPLOADS: dict[str, tuple[Callable[[], bytes], str]] = {
    "zip_forged_sizes": (zip_forged_sizes, "bomb.zip"),
    "zip_honest_big_member": (zip_honest_big_member, "big.zip"),
    "zip_total_too_big": (zip_total_too_big, "total.zip"),
    "zip_huge_image": (zip_huge_image, "huge_image.zip"),
    "zip_too_many_pixels": (zip_too_many_pixels, "many.zip"),
    "npz_header_huge": (npz_header_huge, "header.npz"),
    "npz_consistent_huge": (npz_consistent_huge, "consistent.npz"),
    "npz_forged_sizes": (npz_forged_sizes, "bomb.npz"),
    "npz_bad_labels_big_images": (npz_bad_labels_big_images, "labels.npz"),
}


def write_all(folder: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the chosen hostile uploads into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or list(HOSTILE_UPLOADS):
        build, filename = HOSTILE_UPLOADS[name]
        path = folder / f"{name}-{filename}"
        path.write_bytes(build())
        paths[name] = path
    return paths


# --- the probe ---------------------------------------------------------------------------------
_CHILD = r"""
import json, os, resource, sys
from pathlib import Path
from unlearn_core.data.loaders import check_upload, load_user_data
from unlearn_core.errors import UserError
import torch  # loaded by the library anyway; part of the baseline

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def refuse(name, path):
    # the dashboard's path: the upload's bytes, checked, then loaded with its default options
    start = peak_mib()
    data = Path(path).read_bytes()
    upload = Path(path).name.split("-", 1)[1]
    try:
        check_upload(upload, data)
        load_user_data(upload, data)
        outcome = {"refused": False, "message": ""}
    except UserError as error:
        outcome = {"refused": True, "message": str(error)}
    except MemoryError:
        outcome = {"refused": False, "message": "MemoryError"}
    outcome.update(name=name, start_mib=start, peak_mib=peak_mib(), imports_peak_mib=imports)
    return json.dumps(outcome)

imports = peak_mib()
fork = sys.argv[2] == "fork"
for name, path in json.loads(sys.argv[1]).items():
    if not fork:
        print(refuse(name, path), flush=True)
        continue
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked child counts only the pages it touches: the upload's own cost
        os.close(read)
        os.write(write, refuse(name, path).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    print(b"".join(chunks).decode() or json.dumps({"name": name, "crashed": True}), flush=True)
"""


def _run_child(paths: dict[str, Path], mode: str, timeout: float) -> dict[str, dict]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps({k: str(v) for k, v in paths.items()}), mode],
        capture_output=True, text=True, timeout=timeout, env=env, check=False)
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["name"]] = entry
    if not results:
        raise RuntimeError(f"memory probe failed: {done.stderr[-2000:]}")
    return results


def measure(paths: dict[str, Path], fresh: bool = False, timeout: float = 600) -> dict[str, dict]:
    """Peak memory (MiB, ``ru_maxrss``) of refusing each upload.

    ``fresh=False`` (fast, for tests): one process imports the library, then forks a child per
    upload; ``peak_mib - start_mib`` is what the upload itself cost. ``fresh=True`` (for the
    figures in docs/): a new process per upload, so ``peak_mib`` is the whole process's peak,
    library imports included, as a command-line run or the dashboard server would see it.
    """
    if not fresh:
        return _run_child(paths, "fork", timeout)
    results = {}
    for name, path in paths.items():
        results.update(_run_child({name: path}, "fresh", timeout))
    return results


if __name__ == "__main__":
    target = Path(next((a for a in sys.argv[1:] if not a.startswith("--")), "hostile_uploads"))
    for name, entry in measure(write_all(target), fresh="--fresh" in sys.argv).items():
        print(f"{name:26s} refused={entry.get('refused')} peak {entry.get('peak_mib', 0):5.0f} MiB "
              f"(upload's own {entry['peak_mib'] - entry['start_mib']:4.0f}): {entry.get('message', '')[:80]}")
