"""The run registry: the audit trail of every model revision, and the files each run made.

Why: a clinician must be able to say which model is deployed, what it was made to forget, how,
from which data and which parent model, with which result, and re-run it. So every train,
retrain, unlearn and compose run gets a :class:`RunRecord` in a SQLite database, and its
artifacts (weights, split indices, metrics, log) in its own folder::

    $UNLEARN_STUDIO_HOME/            (default ./workspace)
        registry.sqlite              runs, progress events, schema version (WAL mode)
        runs/<run_id>/               model.safetensors, *.json, log.txt

Design choices:

* One short-lived SQLite connection per operation, ``busy_timeout`` and WAL: several processes
  (the dashboard and background jobs) read and write at once without corrupting anything, and
  a :class:`Workspace` object can be shared between Streamlit's threads.
* Artifacts are written to a temporary name in the same folder and renamed with ``os.replace``:
  a crash or a full disk never leaves a half-written file under the final name. A failed save
  marks the run ``failed`` with the reason; other runs are untouched.
* A damaged, locked or unwritable registry becomes a :class:`UserError` that names the file and
  says what to do, never a traceback.

Example::

    ws = Workspace()                                     # from UNLEARN_STUDIO_HOME
    run = ws.create_run("retrain", dataset="fundus", dataset_fingerprint=fp,
                        criteria_text='device == "Cirrus 800 FA"', seed=0,
                        recipe_hash=recipe_hash(config), command=cli_command(argv))
    ws.save_weights(run.id, model.state_dict(), {"architecture": "resnet8"})
    ws.set_status(run.id, "done", metrics={"retrain": {"forget_acc": 0.31}})
    reuse = ws.find_reusable("retrain", dataset_fingerprint=fp, criteria_text=..., seed=0,
                             recipe_hash=recipe_hash(config))

Background execution (start, queue, cancel, the context a command runs in) lives in
:mod:`unlearn_core.runs.jobs`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_core.errors import UserError
from unlearn_core.files import atomic_write

if TYPE_CHECKING:
    import torch

#: Environment variable naming the workspace folder.
HOME_ENV = "UNLEARN_STUDIO_HOME"
DEFAULT_HOME = "workspace"
REGISTRY_NAME = "registry.sqlite"
WEIGHTS_NAME = "model.safetensors"
LOG_NAME = "log.txt"

KINDS = ("train", "retrain", "unlearn", "compose")
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
#: Statuses of a run that has not ended; only these may change (terminal statuses are final).
ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("done", "failed", "cancelled", "interrupted")

#: Prefix of every recorded command: what a user types to reproduce a run.
CLI_PREFIX = ("python", "-m", "unlearn_core")
#: How to see run ids; every "unknown run" message says it.
LIST_HINT = "see the ids with `python -m unlearn_core runs list`"

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: Schema migrations, in order: version N is reached by running ``MIGRATIONS[N - 1]``.
#: Append new tuples; never edit a released one (existing registries already ran it).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            dataset TEXT NOT NULL DEFAULT '',
            dataset_fingerprint TEXT NOT NULL DEFAULT '',
            base_model_hash TEXT NOT NULL DEFAULT '',
            criteria_text TEXT NOT NULL DEFAULT '',
            criteria TEXT NOT NULL DEFAULT '{}',
            method TEXT NOT NULL DEFAULT '',
            config TEXT NOT NULL DEFAULT '{}',
            recipe_hash TEXT NOT NULL DEFAULT '',
            seed INTEGER,
            device TEXT NOT NULL DEFAULT '',
            versions TEXT NOT NULL DEFAULT '{}',
            metrics TEXT NOT NULL DEFAULT '{}',
            command TEXT NOT NULL DEFAULT '[]',
            parents TEXT NOT NULL DEFAULT '[]',
            pid INTEGER,
            process_start TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            progress TEXT NOT NULL DEFAULT '{}',
            label TEXT NOT NULL DEFAULT '',
            cancel_requested INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        "CREATE INDEX runs_by_reuse ON runs (kind, dataset_fingerprint, criteria_text)",
        """CREATE TABLE run_events (
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID""",
    ),
    # 2: facts that were only in the recorded command or in the metrics get their own fields:
    # the model a run started from (--weights/--arch) and the retrain reference it used.
    # Old rows are filled in by _fill_run_facts (Python: old metrics may hold NaN, which
    # SQLite's JSON functions refuse).
    (
        "ALTER TABLE runs ADD COLUMN base_weights TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN base_arch TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE runs ADD COLUMN retrain_run TEXT NOT NULL DEFAULT ''",
    ),
    # 3: how many processes (torchrun ranks) a run uses; a job with more than one is started
    # under torchrun (unlearn_core.runs.jobs.job_command).
    (
        "ALTER TABLE runs ADD COLUMN processes INTEGER NOT NULL DEFAULT 1",
    ),
)


def _option_value(command: list[str], name: str) -> str:
    return command[command.index(name) + 1] if name in command[:-1] else ""


def _fill_run_facts(conn: sqlite3.Connection) -> None:
    """Migration 2, for rows written before it: base weights/arch from the recorded command,
    the retrain run from the metrics; a composition takes its first input's."""
    rows = conn.execute("SELECT id, kind, command, metrics, parents FROM runs ORDER BY created_at").fetchall()
    facts: dict[str, tuple[str, str, str]] = {}
    for row in rows:
        command, metrics, parents = (json.loads(row[name]) for name in ("command", "metrics", "parents"))
        metrics = metrics if isinstance(metrics, dict) else {}
        weights, arch = _option_value(command, "--weights"), _option_value(command, "--arch")
        retrain = str(metrics.get("retrain_run") or "")
        if row["kind"] == "compose" and parents and parents[0] in facts:
            weights, arch, parent_retrain = facts[parents[0]]
            retrain = parent_retrain if "retrain" in metrics else ""
        facts[row["id"]] = (weights, arch, retrain)
        conn.execute("UPDATE runs SET base_weights = ?, base_arch = ?, retrain_run = ? WHERE id = ?",
                     (weights, arch, retrain, row["id"]))


#: Python steps that complete a schema migration (by target version), run in its transaction.
MIGRATION_STEPS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _fill_run_facts}


def utc_now() -> str:
    """ISO-8601 UTC time with milliseconds: readable, sortable as text, unambiguous."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """A short id that sorts by creation time: ``20261127-173301-ab12`` (UTC)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def default_home() -> Path:
    """The workspace folder: ``$UNLEARN_STUDIO_HOME`` or ``./workspace``."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def cli_command(argv: Iterable[str]) -> list[str]:
    """The full command a user types to reproduce a run: ``python -m unlearn_core *argv``."""
    return [*CLI_PREFIX, *argv]


def command_argv(command: list[str]) -> list[str]:
    """The arguments after ``python -m unlearn_core`` in a recorded command (``[]`` if none)."""
    prefix = list(CLI_PREFIX)
    return list(command[len(prefix) :]) if command[: len(prefix)] == prefix else []


def recipe_hash(recipe: Any) -> str:
    """A stable 16-hex-digit hash of everything (besides data, criteria, seed) that shapes a result.

    Why: :meth:`Workspace.find_reusable` may only reuse a retrain reference made the same way;
    pass e.g. ``{"architecture": ..., "epochs": ..., "lr": ...}``. Key order does not matter.
    """
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results, read without importing them."""
    versions = {"python": sys.version.split()[0]}
    for name in ("unlearn-core", "torch", "torchvision", "numpy", "pandas", "scikit-learn",
                 "safetensors"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[name] = importlib_metadata.version(name)
    return versions


def json_default(value: Any) -> Any:
    """Encode numpy/torch scalars and arrays, paths and sets, which configs and metrics contain."""
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def _to_json(value: Any) -> str:
    return json.dumps(value, default=json_default, allow_nan=True)


@dataclass
class RunRecord:
    """Everything needed to understand, compare and reproduce one run.

    Attributes:
        id: short sortable id (``20261127-173301-ab12``); the run's folder name.
        kind: ``train`` (the original model), ``retrain`` (reference trained without the forget
            set), ``unlearn`` or ``compose``.
        status: ``queued``, ``running``, ``done``, ``failed``, ``cancelled``, ``interrupted``
            (the process ended without saying how, e.g. killed or machine restart).
        created_at, started_at, finished_at: ISO-8601 UTC.
        dataset, dataset_fingerprint: the data set's name and content hash.
        base_model_hash: hash of the model the run started from (empty when training from scratch).
        base_weights, base_arch: the weights file and architecture the run started from
            (``base_weights`` empty: the shipped demo model of a built-in set); for a training
            run, ``base_arch`` is the architecture trained.
        retrain_run: the retrain reference the run was compared with (empty: none).
        criteria_text, criteria: the forget criteria, readable and structured.
        method, config: the method name and its full configuration.
        recipe_hash: :func:`recipe_hash` of the remaining settings, for reuse of retrains.
        seed, device, versions: what else determines the result.
        metrics: results, usually per model: ``{"original": {...}, "unlearned": {...}}``.
        command: the exact argv that reproduces the run (``python -m unlearn_core ...``).
        parents: ids of runs this one used (composition inputs, the retrain reference).
        pid, process_start: the process doing the work and its start time (to tell a live
            process from a reused pid).
        error: why it failed, in words a user can act on.
        progress: the latest progress event.
        label: the user's name for the run.
        cancel_requested: set by a Cancel; the running process polls it and stops.
        processes: data-parallel processes doing the work (above 1: under torchrun; ``pid`` is
            then torchrun's, so a cancel reaches every rank).
    """

    id: str
    kind: str
    status: str = "queued"
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    dataset: str = ""
    dataset_fingerprint: str = ""
    base_model_hash: str = ""
    criteria_text: str = ""
    criteria: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    recipe_hash: str = ""
    seed: int | None = None
    device: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    pid: int | None = None
    process_start: str = ""
    error: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    cancel_requested: bool = False
    base_weights: str = ""
    base_arch: str = ""
    retrain_run: str = ""
    processes: int = 1

    @property
    def is_active(self) -> bool:
        """Queued or running: the run has not ended yet."""
        return self.status in ACTIVE_STATUSES

    @property
    def command_text(self) -> str:
        """The command as one line to paste into a shell."""
        return shlex.join(self.command)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``runs show --json`` prints)."""
        return dataclasses.asdict(self)


_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))
_JSON_FIELDS = frozenset({"criteria", "config", "versions", "metrics", "command", "parents",
                          "progress"})
_EDITABLE_FIELDS = frozenset(_FIELDS) - {"id", "created_at"}


def _encode_field(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return _to_json(value)
    if name == "cancel_requested":
        return int(bool(value))
    return value


def _record_from_row(row: sqlite3.Row) -> RunRecord:
    values = {name: row[name] for name in _FIELDS}
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return RunRecord(**values)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"Unknown run {what} {value!r}; choose one of: {', '.join(choices)}.")


class Workspace:
    """A workspace folder: the run registry plus one artifact folder per run.

    Args:
        path: the folder; ``None`` means ``$UNLEARN_STUDIO_HOME`` or ``./workspace``. It is
            created if missing, and the registry schema is brought up to date.
        busy_timeout: seconds a write waits for another process's write before giving up with a
            "locked" message.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, busy_timeout: float = 10.0):
        self.path = Path(path if path is not None else default_home()).expanduser().resolve()
        self.db_path = self.path / REGISTRY_NAME
        self.busy_timeout = busy_timeout
        if self.path.exists() and not self.path.is_dir():
            raise UserError(
                f"The workspace {self.path} is a file, not a folder; point {HOME_ENV} at a folder."
            )
        try:
            (self.path / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"Cannot create the workspace folder {self.path}: {error.strerror}. "
                f"Set {HOME_ENV} to a folder you can write to."
            ) from error
        self._migrate()

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"

    # ------------------------------------------------------------------ database plumbing

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One connection for one operation; ``write`` wraps it in an IMMEDIATE transaction.

        Why IMMEDIATE: it takes the write lock up front, so two writers queue on
        ``busy_timeout`` instead of failing halfway with a read-to-write upgrade deadlock.
        """
        try:
            conn = sqlite3.connect(self.db_path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as error:
            raise self._registry_error(error) from error
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
        except sqlite3.Error as error:
            _rollback(conn)
            raise self._registry_error(error) from error
        except BaseException:
            _rollback(conn)
            raise
        finally:
            conn.close()

    def _registry_error(self, error: sqlite3.Error) -> Exception:
        """Turn what a user can fix (damaged, locked, full, unwritable) into a UserError.

        Anything else (an SQL mistake in this module) is returned unchanged: it is a bug.
        """
        text = str(error).lower()
        where = f"The run registry at {self.db_path}"
        if "locked" in text or "busy" in text:
            return UserError(
                f"{where} is locked: {error}. Another program holds it; wait for running jobs "
                "to finish or close other Unlearning Studio windows, then try again."
            )
        if any(word in text for word in ("not a database", "malformed", "corrupt")):
            return UserError(
                f"{where} is damaged: {error}. Move that file aside (a new empty registry is "
                f"created; run folders under {self.path / 'runs'} are kept) or restore a backup."
            )
        if "full" in text:
            return UserError(f"{where} cannot be written: {error}. Free some disk space.")
        if any(word in text for word in ("unable to open", "readonly", "disk i/o", "permission")):
            return UserError(
                f"{where} cannot be opened or written: {error}. Check the folder exists and is "
                f"writable, or set {HOME_ENV} to another folder."
            )
        return error

    def _migrate(self) -> None:
        """Create or upgrade the schema; each step runs in its own transaction."""
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
        with self._connect(write=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for target in range(1, len(MIGRATIONS) + 1):
            with self._connect(write=True) as conn:
                current = self._schema_version(conn)
                if current >= target:
                    continue
                for statement in MIGRATIONS[target - 1]:
                    conn.execute(statement)
                if target in MIGRATION_STEPS:
                    MIGRATION_STEPS[target](conn)
                conn.execute("UPDATE schema_version SET version = ?", (target,))
        with self._connect() as conn:
            if self._schema_version(conn) > len(MIGRATIONS):
                raise UserError(
                    f"The run registry at {self.db_path} was made by a newer Unlearning Studio "
                    f"(schema {self._schema_version(conn)}, this one knows {len(MIGRATIONS)}); "
                    "upgrade unlearn_core or use another workspace."
                )

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    @property
    def schema_version(self) -> int:
        """The registry's schema version (equals ``len(MIGRATIONS)`` once opened)."""
        with self._connect() as conn:
            return self._schema_version(conn)

    def _require(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"No run with id {run_id!r} in {self.path}; {LIST_HINT}.")
        return _record_from_row(row)

    # ------------------------------------------------------------------ records

    def create_run(
        self,
        kind: str,
        *,
        status: str = "queued",
        versions: dict[str, str] | None = None,
        **fields: Any,
    ) -> RunRecord:
        """Register a new run (``queued`` by default) and create its folder.

        ``fields`` are any :class:`RunRecord` attributes (dataset, criteria_text, method,
        config, seed, command, parents, label...). ``versions`` defaults to the installed
        library versions. Parents must exist, so the audit trail has no dangling links.
        """
        _check_choice("kind", kind, KINDS)
        _check_choice("status", status, STATUSES)
        unknown = set(fields) - _EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"create_run() got unknown fields: {', '.join(sorted(unknown))}")
        now = utc_now()
        with self._connect(write=True) as conn:
            for parent in fields.get("parents") or []:
                self._require(conn, parent)
            for _attempt in range(20):
                record = RunRecord(
                    id=new_run_id(), kind=kind, status=status, created_at=now,
                    versions=library_versions() if versions is None else dict(versions),
                    **fields,
                )
                if status == "running":
                    record.started_at = now
                columns = ", ".join(_FIELDS)
                marks = ", ".join("?" for _ in _FIELDS)
                values = [_encode_field(name, getattr(record, name)) for name in _FIELDS]
                try:
                    conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", values)
                    break
                except sqlite3.IntegrityError:  # the same id in the same second: draw again
                    continue
            else:  # pragma: no cover - needs 20 random collisions
                raise RuntimeError("could not draw a unique run id")
        self.run_dir(record.id).mkdir(parents=True, exist_ok=True)
        return record

    def get(self, run_id: str) -> RunRecord:
        """The run's record; an unknown id is a UserError that says how to list ids."""
        with self._connect() as conn:
            return self._require(conn, run_id)

    def exists(self, run_id: str) -> bool:
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def list_runs(self, kind: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs, newest first, optionally only of one kind and/or status."""
        clauses, values = [], []
        if kind is not None:
            _check_choice("kind", kind, KINDS)
            clauses.append("kind = ?")
            values.append(kind)
        if status is not None:
            _check_choice("status", status, STATUSES)
            clauses.append("status = ?")
            values.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT * FROM runs {where} ORDER BY created_at DESC, id DESC"
        with self._connect() as conn:
            return [_record_from_row(row) for row in conn.execute(query, values)]

    def update(self, run_id: str, **fields: Any) -> RunRecord:
        """Change some fields of a run and return the new record."""
        unknown = set(fields) - _EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"update() got unknown fields: {', '.join(sorted(unknown))}")
        if "status" in fields:
            _check_choice("status", fields["status"], STATUSES)
        if "kind" in fields:
            _check_choice("kind", fields["kind"], KINDS)
        with self._connect(write=True) as conn:
            self._require(conn, run_id)
            if fields:
                assignments = ", ".join(f"{name} = ?" for name in fields)
                values = [_encode_field(name, value) for name, value in fields.items()]
                conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*values, run_id])
            return self._require(conn, run_id)

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        error: str | None = None,
        expect: Iterable[str] = ACTIVE_STATUSES,
        **fields: Any,
    ) -> bool:
        """Move a run to ``status`` only if it is now in one of ``expect``; True if it moved.

        Why compare-and-set: the job process, a Cancel from the dashboard and ``reconcile`` may
        race to end the same run; the first one wins and a finished run is never reopened.
        ``started_at``/``finished_at`` are stamped automatically; ``fields`` are set too.
        """
        _check_choice("status", status, STATUSES)
        unknown = set(fields) - _EDITABLE_FIELDS
        if unknown:
            raise TypeError(f"set_status() got unknown fields: {', '.join(sorted(unknown))}")
        now = utc_now()
        changes: dict[str, Any] = {name: _encode_field(name, v) for name, v in fields.items()}
        changes["status"] = status
        if error is not None:
            changes["error"] = error
        assignments = [f"{name} = ?" for name in changes]
        values: list[Any] = list(changes.values())
        if status == "running":
            assignments.append("started_at = COALESCE(started_at, ?)")
            values.append(now)
        if status in TERMINAL_STATUSES:
            assignments.append("finished_at = ?")
            values.append(now)
        expected = tuple(expect)
        marks = ", ".join("?" for _ in expected)
        query = (f"UPDATE runs SET {', '.join(assignments)} "
                 f"WHERE id = ? AND status IN ({marks})")
        with self._connect(write=True) as conn:
            self._require(conn, run_id)
            return conn.execute(query, [*values, run_id, *expected]).rowcount == 1

    def claim_next_queued(self, max_running: int) -> RunRecord | None:
        """Atomically turn the oldest queued run into ``running`` if fewer than ``max_running`` run.

        Why here and atomic: two pages polling at once must not start the same run twice or
        exceed the limit. The caller then starts the process and stores its pid.
        """
        with self._connect(write=True) as conn:
            running = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'")
            if running.fetchone()[0] >= max_running:
                return None
            row = conn.execute(
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE runs SET status = 'running', started_at = ?, pid = NULL, "
                "process_start = '' WHERE id = ?",
                (utc_now(), row["id"]),
            )
            return self._require(conn, row["id"])

    def request_cancel(self, run_id: str) -> RunRecord:
        """Set the run's ``cancel_requested`` flag (its process polls it) and return the record."""
        return self.update(run_id, cancel_requested=True)

    def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel was requested for this run (one indexed read; cheap to poll)."""
        with self._connect() as conn:
            row = conn.execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
            found = row.fetchone()
        return bool(found and found[0])

    # ------------------------------------------------------------------ progress

    def record_progress(self, run_id: str, event: Any) -> int:
        """Store ``event`` (a :class:`~unlearn_core.progress.ProgressEvent` or a dict) as the
        run's latest progress and append it to its event history; returns its sequence number."""
        payload = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        text = _to_json(payload)
        with self._connect(write=True) as conn:
            self._require(conn, run_id)
            seq = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM run_events WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO run_events (run_id, seq, at, event) VALUES (?, ?, ?, ?)",
                (run_id, seq, utc_now(), text),
            )
            conn.execute("UPDATE runs SET progress = ? WHERE id = ?", (text, run_id))
        return int(seq)

    def progress_events(self, run_id: str, since_seq: int = 0) -> list[dict[str, Any]]:
        """Events after ``since_seq``, oldest first, each with its ``seq`` and ``at`` time added.

        Why ``since_seq``: a polling page fetches only what is new and appends to its curves.
        """
        with self._connect() as conn:
            self._require(conn, run_id)
            rows = conn.execute(
                "SELECT seq, at, event FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, since_seq),
            ).fetchall()
        return [{**json.loads(row["event"]), "seq": row["seq"], "at": row["at"]} for row in rows]

    # ------------------------------------------------------------------ lineage and reuse

    def dependants(self, run_id: str) -> list[str]:
        """Ids of runs that list ``run_id`` among their parents."""
        with self._connect() as conn:
            return _dependants(conn, run_id)

    def delete(self, run_id: str, force: bool = False) -> RunRecord:
        """Delete a finished run's record, events and folder; returns the deleted record.

        Refused while the run is queued/running (cancel it first) and when other runs list it as
        a parent (their audit trail would point at nothing) unless ``force``.
        """
        with self._connect(write=True) as conn:
            record = self._require(conn, run_id)
            if record.is_active:
                raise UserError(
                    f"Run {run_id} is {record.status}; cancel it first with "
                    f"`python -m unlearn_core runs cancel {run_id}`."
                )
            dependants = _dependants(conn, run_id)
            if dependants and not force:
                raise UserError(
                    f"Run {run_id} is a parent of {', '.join(dependants)}; delete those first, "
                    "or force the deletion (their records will name a run that no longer exists)."
                )
            conn.execute("DELETE FROM run_events WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        self._remove_run_dir(run_id)
        return record

    def _remove_run_dir(self, run_id: str) -> None:
        """Rename the folder away first, so a half-deleted folder never looks like a run's."""
        folder = self.run_dir(run_id)
        if not folder.exists():
            return
        trash = folder.with_name(f".deleted-{run_id}-{secrets.token_hex(2)}")
        try:
            os.replace(folder, trash)
        except OSError:
            trash = folder
        shutil.rmtree(trash, ignore_errors=True)

    def find_reusable(
        self,
        kind: str = "retrain",
        *,
        dataset_fingerprint: str,
        criteria_text: str,
        seed: int | None,
        recipe_hash: str,
    ) -> RunRecord | None:
        """The newest finished run made the same way whose weights still exist, or None.

        Why: a retrain reference costs a full training; the same data, criteria, seed and recipe
        give the same model, so the dashboard offers to reuse it.
        """
        _check_choice("kind", kind, KINDS)
        seed_clause = "seed IS NULL" if seed is None else "seed = ?"
        values: list[Any] = [kind, dataset_fingerprint, criteria_text, recipe_hash]
        values += [] if seed is None else [seed]
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM runs WHERE status = 'done' AND kind = ? AND dataset_fingerprint = ? "
                f"AND criteria_text = ? AND recipe_hash = ? AND {seed_clause} "
                "ORDER BY created_at DESC, id DESC",
                values,
            ).fetchall()
        for row in rows:
            record = _record_from_row(row)
            if self.artifact_path(record.id, WEIGHTS_NAME).is_file():
                return record
        return None

    # ------------------------------------------------------------------ artifacts

    def run_dir(self, run_id: str) -> Path:
        """The run's artifact folder (not created here)."""
        if not _SAFE_ID.match(run_id):
            raise UserError(f"{run_id!r} is not a run id; {LIST_HINT}.")
        return self.path / "runs" / run_id

    def artifact_path(self, run_id: str, name: str) -> Path:
        """Where artifact ``name`` of the run lives (it may not exist yet)."""
        if not name or name != Path(name).name or name.startswith(".") or "\\" in name:
            raise ValueError(f"artifact names are plain file names, got {name!r}")
        return self.run_dir(run_id) / name

    def log_path(self, run_id: str) -> Path:
        """The run's log: the job's stdout/stderr and :meth:`append_log` lines."""
        return self.artifact_path(run_id, LOG_NAME)

    def artifacts(self, run_id: str) -> list[Path]:
        """The run's complete artifact files (temporary files are hidden and skipped)."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def _atomic_write(self, run_id: str, name: str, data: bytes) -> Path:
        """Write ``data`` to a temporary file, fsync, then rename it to the artifact's name.

        A failure (disk full, permissions) removes the temporary file, marks an unfinished run
        ``failed`` with the reason, and raises a UserError; the previous artifact, if any, stays.
        """
        final = self.artifact_path(run_id, name)
        if not self.exists(run_id):
            raise UserError(f"No run with id {run_id!r} in {self.path}; {LIST_HINT}.")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(final, data)
        except OSError as error:
            raise self._save_failed(run_id, final, error) from error
        return final

    def _save_failed(self, run_id: str, path: Path, error: OSError) -> UserError:
        """Record why a save failed on the run (best effort: the disk may be full) and explain."""
        reason = error.strerror or str(error)
        advice = ("the disk is full; free some space and run it again"
                  if error.errno == errno.ENOSPC else "check the folder is writable")
        message = f"Could not save {path.name} of run {run_id} to {path}: {reason}; {advice}."
        with contextlib.suppress(UserError, sqlite3.Error, OSError):
            self.set_status(run_id, "failed", error=message)
        return UserError(message)

    def save_json(self, run_id: str, name: str, obj: Any) -> Path:
        """Save ``obj`` as ``<name>.json`` in the run's folder, atomically."""
        name = name if name.endswith(".json") else f"{name}.json"
        data = json.dumps(obj, default=json_default, indent=2, sort_keys=True).encode()
        return self._atomic_write(run_id, name, data)

    def load_json(self, run_id: str, name: str) -> Any:
        name = name if name.endswith(".json") else f"{name}.json"
        path = self.artifact_path(run_id, name)
        if not path.is_file():
            raise UserError(f"Run {run_id} has no {name} (looked at {path}).")
        return json.loads(path.read_text())

    def save_weights(
        self,
        run_id: str,
        state_dict: dict[str, torch.Tensor],
        metadata: dict[str, str] | None = None,
        name: str = WEIGHTS_NAME,
    ) -> Path:
        """Save a state dict as safetensors (no pickle: safe to share and to load), atomically.

        ``metadata`` (str to str, stored in the file header) should carry what made the model:
        architecture, config, dataset fingerprint, seed, so the file explains itself.
        """
        from unlearn_core.models.weights import safetensors_payload  # adds the content hash

        metadata = dict(metadata or {})
        bad = {key: type(value).__name__ for key, value in metadata.items()
               if not isinstance(key, str) or not isinstance(value, str)}
        if bad:
            raise TypeError(f"safetensors metadata must map str to str; not: {bad}")
        # Clone: tied weights share storage, which safetensors refuses; contiguous CPU copies
        # also make the file independent of the device the model was trained on.
        tensors = {key: value.detach().to("cpu").contiguous().clone()
                   for key, value in state_dict.items()}
        return self._atomic_write(run_id, name, safetensors_payload(tensors, metadata))

    def weights_file(self, run_id: str, name: str = WEIGHTS_NAME) -> Path:
        """The path of the run's saved weights; a missing file is a UserError."""
        path = self.artifact_path(run_id, name)
        if not path.is_file():
            status = self.get(run_id).status
            raise UserError(f"Run {run_id} ({status}) has no saved model {name} at {path}.")
        return path

    def load_weights(self, run_id: str, name: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
        """The run's saved state dict, on the CPU, checked against the hash recorded at save."""
        from unlearn_core.models.weights import read_weights

        return read_weights(self.weights_file(run_id, name))[0]

    def weights_metadata(self, run_id: str, name: str = WEIGHTS_NAME) -> dict[str, str]:
        """The metadata stored in the run's safetensors header (without loading tensors)."""
        from safetensors import safe_open

        with safe_open(self.weights_file(run_id, name), framework="pt") as handle:
            return dict(handle.metadata() or {})

    def append_log(self, run_id: str, text: str) -> None:
        """Append timestamped lines to the run's log (the job's own output goes there too)."""
        path = self.log_path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = utc_now()
        lines = "".join(f"[{stamp}] {line}\n" for line in str(text).splitlines() or [""])
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(lines)


def _dependants(conn: sqlite3.Connection, run_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT runs.id FROM runs, json_each(runs.parents) "
        "WHERE json_each.value = ? ORDER BY runs.id",
        (run_id,),
    )
    return [row[0] for row in rows]


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
