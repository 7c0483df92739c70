"""A run's exports: its record (json), its results (csv), its model (weights), its report (html).

Why a module of its own: the registry (:mod:`unlearn_core.runs.registry`) stores runs and knows
nothing of reports; the HTML export needs the report, which sits above the registry. Both faces
(``runs export`` and the Runs page) call :func:`export_bytes` / :func:`write_export`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from unlearn_core.errors import UserError
from unlearn_core.files import write_out
from unlearn_core.runs.registry import WEIGHTS_NAME, RunRecord, Workspace, json_default
from unlearn_core.runs.result import RunResult

EXPORT_FORMATS = ("json", "csv", "weights", "html")
_EXPORT_SUFFIX = {"json": ".json", "csv": ".csv", "weights": ".safetensors", "html": ".html"}


def metrics_rows(record: RunRecord) -> list[tuple[str, str, Any]]:
    """``(model, metric, value)`` rows of a run's result, for tables and CSV.

    One row per model and metric (deeper dicts become dotted names: ``per_class.ptosis``); the
    comparison figures are attributed to the run's own model, timings to ``timing``.
    """
    result = RunResult.of(record)
    rows: list[tuple[str, str, Any]] = []
    for model, block in result.ordered_blocks().items():
        rows.extend((model, name, leaf) for name, leaf in _flatten(block))
    own, _ = result.main_block()
    rows.extend((own or record.kind, name, value) for name, value in vars(result.comparison).items()
                if value is not None)
    rows.extend(("timing", f"seconds_{name}", value) for name, value in vars(result.timing).items()
                if value is not None)
    return rows


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def export_filename(run_id: str, fmt: str) -> str:
    """The suggested file name of a run's export (also for a download built only when clicked)."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    return f"{run_id}{_EXPORT_SUFFIX[fmt]}"


def export_bytes(workspace: Workspace, run_id: str, fmt: str) -> tuple[bytes, str]:
    """The export of a run as bytes plus a suggested file name (for downloads and ``--out``)."""
    filename = export_filename(run_id, fmt)
    record = workspace.get(run_id)
    builders: dict[str, Callable[[], bytes]] = {
        "json": lambda: json.dumps(record.to_dict(), indent=2, default=json_default).encode(),
        "csv": lambda: _metrics_csv(record),
        "weights": lambda: _verified_weights(workspace.weights_file(run_id, WEIGHTS_NAME)),
        "html": lambda: _html_report(record, workspace),
    }
    return builders[fmt](), filename


def _verified_weights(path: Path) -> bytes:
    """An export hands out only a model file that parses, matches its hash and is finite."""
    from unlearn_core.models.weights import verified_file_bytes

    return verified_file_bytes(path)


def _metrics_csv(record: RunRecord) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["run_id", "model", "metric", "value"])
    for model, metric, value in metrics_rows(record):
        writer.writerow([record.id, model, metric, value])
    return buffer.getvalue().encode()


def _html_report(record: RunRecord, workspace: Workspace) -> bytes:
    from unlearn_core.report import render_run_report

    return render_run_report(record, workspace).encode()


def write_export(workspace: Workspace, run_id: str, fmt: str, out: str | os.PathLike[str]) -> Path:
    """Write a run's export to ``out`` (a file, or an existing folder to put ``<id>.<ext>`` in)."""
    data, filename = export_bytes(workspace, run_id, fmt)
    return write_out(out, data, filename, "export")
