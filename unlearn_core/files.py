"""Atomic file writing: the one way this package writes a file another process may read.

Why: runs, exports, reports, embeddings and models are read by other processes (the dashboard,
a background job, a user's viewer) and must never be seen half-written. Every writer goes
through :func:`atomic_write`: a hidden temporary file in the same folder, fsync, then
``os.replace``, which is atomic on the same file system. A failure removes the temporary file
and leaves any previous file untouched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from unlearn_core.errors import UserError


def write_file(path: Path, data: bytes) -> None:
    """Write and fsync a new file (the seam tests patch to simulate a full disk or a crash)."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename; returns the path.

    The folder must exist (a typo in a user's ``--out`` should not create folders).
    ``mode``: the file's permissions (files are meant to be shared: 0o644 by default).
    Raises ``OSError`` as the file system reports it; callers turn it into advice.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
    try:
        write_file(temporary, data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path


def write_out(out: str | os.PathLike[str], data: bytes, default_name: str, what: str) -> Path:
    """Write ``data`` to a user's ``--out`` (a file, or an existing folder to put
    ``default_name`` in); an unwritable path is a UserError that names it."""
    target = Path(out).expanduser()
    if target.is_dir():
        target = target / default_name
    try:
        return atomic_write(target, data)
    except OSError as error:
        raise UserError(
            f"Cannot write the {what} to {target}: {error.strerror or error}; "
            "choose a path in a folder you can write to with --out."
        ) from error
