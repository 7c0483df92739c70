"""Self-contained HTML reports: the audit document of one run, and a side-by-side comparison.

Why one file with everything inline: a clinician attaches the report to the record of a model
revision, mails it, or opens it years later on a hospital machine without internet. So the
report needs nothing but a browser: the stylesheet (``report.css`` beside this module) is
inlined, and the charts (built by :mod:`unlearn_core.plots`, one palette with the dashboard) are plotly figures whose
library (plotly.js, about 4.8 MB) is inlined ONCE in the ``<head>``. Every number is also in an
HTML table, so the report still says everything with JavaScript off or printed on paper;
``charts=False`` leaves the charts (and the 4.8 MB) out for a ~50 kB text-only report.

Contents of :func:`render_run_report`, top to bottom: header (run id, label, status, times,
what ran), a summary in plain words, what was forgotten and why (criteria, set sizes, forget
images per class), method and settings (each with its meaning and default), results (original
/ retrain / unlearned per metric with its definition and ideal value, distance to retrain,
collapse warning, time and speed-up), charts (accuracy per set, per class, per epoch), t-SNE
decision-region panels when the run folder holds them
(:data:`unlearn_core.runs.artifacts.EMBEDDING_ARTIFACT`, written by ``runs embed ID`` or the
Results page), and provenance (data fingerprint,
model hashes, SHA-256 of every artifact file, versions, seed, device, parent runs, the exact
reproducing command). Missing pieces (a failed run, no retrain reference, no history) are said
in words instead of leaving a hole.

Every string that a user can influence (criteria, labels, class names, errors, commands,
config values) goes through :func:`html.escape` before it reaches the page; figure labels are
escaped too, and plotly's JSON escapes ``<`` and ``>``.

Example::

    from unlearn_core.report import render_run_report, write_comparison_report
    html_text = render_run_report(ws.get(run_id), ws)      # what `runs export --format html` writes
    write_comparison_report(ws, [id1, id2], "compare.html")

From the command line: ``runs export ID --format html`` and ``runs compare ID1 ID2 --out FILE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from unlearn_core import __version__, advice, plots
from unlearn_core.errors import UserError
from unlearn_core.labels import IDEAL, METRIC_DEFINITIONS, MODEL_TITLES, NO_PRESET, NOTHING_SAVED, SETS
# One palette with the dashboard: roles never share a colour with a class.
from unlearn_core.plots import FORGET_COLOR, KEEP_COLOR, MODEL_COLORS
from unlearn_core.runs.artifacts import EMBEDDING_ARTIFACT, load_block_similarity
from unlearn_core.runs.registry import LOG_NAME, WEIGHTS_NAME, RunRecord, Workspace, command_argv, utc_now
from unlearn_core.runs.requests import UnlearnRequest
from unlearn_core.runs.result import RunResult

__all__ = ["render_comparison_report", "render_run_report", "write_comparison_report", "write_run_report"]

#: Points per t-SNE panel in a report (all forget points first): keeps the file near 5 MB.
MAX_REPORT_POINTS = 1200
#: An original model closer than this to the retrained one had (almost) nothing to unlearn.
ALREADY_LIKE_RETRAIN = 0.02
#: Lines of the run's log shown for a run that did not finish.
LOG_TAIL_LINES = 40


#: Per-model metrics in the results table, in order.
RESULT_METRICS = ("forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc",
                  "test_acc", "mia_loss_lr", "mia_loss_lr_std", "mia_svc_efficacy",
                  "mia_membership_auc")
_PERCENT = frozenset({"forget_train_acc", "remain_train_acc", "forget_test_acc",
                      "remain_test_acc", "test_acc", "forget_acc", "remain_acc"})

# ---------------------------------------------------------------------------------- helpers
def _e(value: Any) -> str:
    """HTML-escaped text of anything (quotes too, so it is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _fmt(key: str, value: Any) -> str:
    """A metric value for people: accuracies in %, scores with 3 decimals, n/a for empty sets."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_nan(value):
        return "n/a"
    if _is_number(value):
        if key in _PERCENT:
            return f"{100 * value:.1f}\u00a0%"
        if isinstance(value, int):
            return f"{value:,}"
        return f"{value:.3f}"
    if isinstance(value, (list, dict)):
        return _e(json.dumps(value, default=str))
    return _e(value)


def _gap(key: str, value: Any, reference: Any) -> str:
    """``value − reference`` in percentage points (accuracies) or plain units (scores)."""
    if not (_is_number(value) and _is_number(reference)) or _is_nan(value) or _is_nan(reference):
        return "—"
    diff = value - reference
    if key in _PERCENT:
        return f"{100 * diff:+.1f}\u00a0pts"
    return f"{diff:+.3f}"


def _setting(value: Any) -> str:
    """A setting's value for people: "—" when unset, numbers in their shortest form, the rest as
    recorded (lists and mappings as JSON)."""
    if value is None or _is_nan(value):
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return f"{value:g}" if isinstance(value, float) else f"{value:,}"
    if isinstance(value, (list, tuple, dict)):
        return _e(json.dumps(value, default=str))
    return _e(value)


def _seconds(value: Any) -> str:
    if not _is_number(value) or _is_nan(value):
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{int(value // 60)} min {int(round(value % 60)):02d} s"
    return f"{int(value // 3600)} h {int(round(value % 3600 / 60)):02d} min"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text)
    return None


def _when(text: str | None) -> str:
    moment = _parse_time(text)
    if moment is None:
        return "—" if not text else _e(text)
    return _e(moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _elapsed(start: str | None, end: str | None) -> str:
    a, b = _parse_time(start), _parse_time(end)
    return _seconds((b - a).total_seconds()) if a and b else "—"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table from already-escaped cell HTML."""
    head_html = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head_html}</tr></thead><tbody>{body}</tbody></table>'


def _td(cell: str) -> str:
    """A cell; numbers (``<span class="num">``) are right-aligned and never wrap."""
    return f'<td class="num">{cell}</td>' if cell.startswith('<span class="num">') else f"<td>{cell}</td>"


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column key/value table (keys and values are already-escaped HTML)."""
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _definition(key: str) -> tuple[str, str]:
    """(display name, definition) from METRIC_DEFINITIONS ("Name: definition ...")."""
    text = METRIC_DEFINITIONS.get(key, "")
    name, sep, rest = text.partition(": ")
    if sep and len(name) < 60:
        return name, rest[:1].upper() + rest[1:]
    return key.replace("_", " "), text


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _note(text_html: str, kind: str = "info") -> str:
    return f'<div class="note {kind}">{text_html}</div>'


def _preset(record: RunRecord) -> str | None:
    """The named preset an unlearn run used (part of its request)."""
    if record.kind != "unlearn" or not record.command:
        return None
    with contextlib.suppress(UserError):
        return UnlearnRequest.from_argv(command_argv(record.command)).preset
    return None


def _preset_name(preset: str | None) -> str:
    """The preset as the Unlearn page's picker names it (``NO_PRESET`` for none)."""
    return preset or NO_PRESET


def _builtin_classes(dataset: str, count: int) -> list[str] | None:
    """Class names of a built-in set without generating its images."""
    names: list[str] | None = None
    if dataset == "digits":
        names = [str(i) for i in range(10)]
    elif dataset in ("oculoplastic", "fundus"):
        with contextlib.suppress(Exception):
            module = __import__(f"unlearn_core.data.synthetic.{dataset}", fromlist=["CLASSES"])
            names = [str(c) for c in module.CLASSES]
    return names if names is not None and len(names) == count else None


def _class_names(record: RunRecord, count: int, data: Any = None) -> list[str]:
    if data is not None and len(getattr(data, "classes", [])) == count:
        return [str(c) for c in data.classes]
    return _builtin_classes(record.dataset, count) or [f"class {i}" for i in range(count)]


class _Charts:
    """Turns plotly figures into inline divs with stable ids; remembers whether any was made."""

    def __init__(self, enabled: bool, prefix: str = "fig"):
        self.enabled = enabled
        self.prefix = prefix
        self.count = 0

    def html(self, build, *args, **kwargs) -> str:
        if not self.enabled:
            return ""
        import plotly.io as pio

        try:
            fig = build(*args, **kwargs)
        except Exception as error:  # a chart must never cost the audit report
            return _note(f"A chart could not be drawn ({_e(type(error).__name__)}: {_e(error)}); "
                         "the tables hold the same numbers.", "warn")
        if fig is None:
            return ""
        self.count += 1
        div = pio.to_html(fig, full_html=False, include_plotlyjs=False,
                          div_id=f"{self.prefix}-{self.count}",
                          config={"displaylogo": False, "responsive": True})
        return f'<div class="chart">{div}</div>'


def _page(title: str, body: str, charts: _Charts) -> str:
    """The whole document: inline CSS, plotly.js once (only when a chart was drawn), body."""
    script = ""
    if charts.count:
        from plotly.offline import get_plotlyjs

        script = ("<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
                  f'<script type="text/javascript">{get_plotlyjs()}</script>')
    noscript = ("<noscript><p class=\"note\">Charts need JavaScript; every number is also in "
                "the tables.</p></noscript>") if charts.count else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"Unlearning Studio {_e(__version__)}\">"
        f"<title>{_e(title)}</title><style>{_css()}</style>{script}</head>"
        f"<body><main>{noscript}{body}</main></body></html>\n"
    )


def _css() -> str:
    """The stylesheet (``report.css``, shipped as package data) with the palette filled in."""
    text = resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")
    for name, colour in {"forget": FORGET_COLOR, "keep": KEEP_COLOR, **MODEL_COLORS}.items():
        text = text.replace(f"%({name})s", colour)
    return text



# ------------------------------------------------------------------------------ run report
def render_run_report(record: RunRecord, workspace: Workspace, *, data: Any = None,
                      charts: bool = True) -> str:
    """One run as a self-contained HTML page (see the module docstring for its contents).

    Args:
        record: the run (any kind and status; a failed run shows its error).
        workspace: where its artifacts (weights, history, embedding, log) and parents live.
        data: optional :class:`~unlearn_core.data.imageset.ImageSet` of the run, when the caller
            has it loaded (the dashboard): adds class counts of all four sets (from
            ``split.json``) and metadata in the t-SNE hover text. Ignored when its fingerprint
            differs from the run's. Without it nothing is loaded or generated.
        charts: ``False`` leaves out the charts and plotly.js (a small text-only report).
    """
    if data is not None and record.dataset_fingerprint:
        with contextlib.suppress(Exception):
            if data.fingerprint() != record.dataset_fingerprint:
                data = None
    fig = _Charts(charts)
    result = RunResult.of(record)
    blocks = result.ordered_blocks()
    parts = [
        _header(record),
        _summary(record, result),
        _forgotten_section(record, workspace, result, data),
        _method_section(record, result),
        _results_section(record, workspace, result, data, fig),
        _similarity_section(record, workspace, fig),
        _embedding_section(record, workspace, blocks, data, fig),
        _provenance_section(record, workspace),
        _signoff(),
    ]
    title = f"Unlearning report — run {record.id}" + (f" ({record.label})" if record.label else "")
    return _page(title, "".join(p for p in parts if p), fig)


def _status_badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _what_ran(record: RunRecord) -> str:
    kind = {"unlearn": "Unlearning", "retrain": "Retraining without the forget set",
            "train": "Training", "compose": "Composition"}.get(record.kind, record.kind)
    method = f" with <strong>{_e(record.method)}</strong>" if record.method else ""
    dataset = f" on data set <strong>{_e(record.dataset)}</strong>" if record.dataset else ""
    return f"{_e(kind)}{method}{dataset}"


def _header(record: RunRecord) -> str:
    label = f"<p class=\"sub\">“{_e(record.label)}”</p>" if record.label else ""
    rows = [
        ("Run", f'<span class="mono">{_e(record.id)}</span> ({_e(record.kind)} run)'),
        ("Status", _status_badge(record.status)),
        ("What ran", _what_ran(record)),
        ("Created", _when(record.created_at)),
        ("Started", _when(record.started_at)),
        ("Finished", f"{_when(record.finished_at)} (took {_elapsed(record.started_at, record.finished_at)})"
         if record.finished_at else "not finished"),
        ("Started by", "the command under “Provenance” (the registry records what ran, not "
                       "who; sign at the end of this report)"),
    ]
    toc = ('<p class="toc"><a href="#summary">Summary</a><a href="#forgotten">What was forgotten</a>'
           '<a href="#method">Method</a><a href="#results">Results</a>'
           '<a href="#embedding">Decision regions</a><a href="#provenance">Provenance</a></p>')
    error = ""
    if record.error:
        error = _note(f"<strong>This run {_e(record.status)}:</strong> {_e(record.error)}", "error")
    elif record.status in ("cancelled", "interrupted"):
        error = _note(f"This run was {_e(record.status)} before it finished; results below are "
                      "missing or partial.", "warn")
    elif record.status in ("queued", "running"):
        error = _note(f"This run is still {_e(record.status)}; this report shows what is known "
                      "so far.", "warn")
    return (f"<header><h1>Unlearning report — run {_e(record.id)}</h1>{label}"
            f"{_kv(rows)}{error}{toc}</header>")


def _summary(record: RunRecord, result: RunResult) -> str:
    orig, unl, ret = result.original, result.unlearned, result.retrain
    items = []
    if record.criteria_text:
        description = result.criteria_description
        items.append(f"Asked to forget: <code>{_e(record.criteria_text)}</code>"
                     + (f" — {_e(description)}" if description else "") + ".")
    if orig and unl:
        for key, what in (("forget_train_acc", "images it was asked to forget (training, D_f)"),
                          ("forget_test_acc", "test images of the forgotten kind (T_f)"),
                          ("remain_test_acc", "other test images (T_r, the usefulness to keep)")):
            if key not in unl:
                continue
            text = (f"On {what}: accuracy {_fmt(key, orig.get(key))} before, "
                    f"<strong>{_fmt(key, unl.get(key))}</strong> after")
            if ret and key in ret:
                text += f"; a model retrained without them gets {_fmt(key, ret.get(key))}"
            items.append(text + ".")
    if record.kind == "compose" and result.candidates and result.chosen is None:
        items.append(f"<strong>{_e(NOTHING_SAVED)}</strong>")
    reference = result.reference()
    if reference is not None:
        items.append(_e(reference.sentence()))
        if reference.warning():
            items.append(f'<strong style="color:#c62828">Check the reference:</strong> {_e(reference.warning())}')
    distance = result.comparison.distance_to_retrain
    if _is_number(distance):
        text = (f"Distance to the retrained model: <strong>{_fmt('d', distance)}</strong> "
                "(0 = behaves exactly like a model retrained without the forget set)")
        before = result.comparison.original_distance_to_retrain
        if _is_number(before):
            text += f"; the original model was at {_fmt('d', before)}"
        items.append(text + ".")
        if _is_number(before) and before < ALREADY_LIKE_RETRAIN:
            items.append("<strong>The original model already behaved like the retrained one</strong> "
                         "(a model that never saw these images handles images like them just as "
                         "well), so there was little to unlearn here: pushing their accuracy below "
                         "the retrained model’s goes beyond what retraining does.")
    elif unl:
        items.append("No retrain reference was computed, so there is no distance to retrain; "
                     "run with <code>--retrain</code> to compare.")
    if result.comparison.collapsed:
        items.append('<strong style="color:#c62828">Warning: the model collapsed</strong> — it '
                     "lost too much accuracy on what it should keep. Do not deploy it.")
    timing = result.timing
    if _is_number(timing.unlearn):
        text = f"Unlearning took {_seconds(timing.unlearn)}"
        if _is_number(timing.pct_of_retrain):
            text += (f", {timing.pct_of_retrain:.1f} % of the time retraining took "
                     f"({_seconds(timing.retrain)})")
        items.append(text + ".")
    if not items:
        if record.status == "done":
            return ""
        items.append("No results: the run did not finish, so it recorded no metrics.")
    body = "<ul class=\"summary\">" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return _section("summary", "Summary", body)


def _forgotten_section(record: RunRecord, workspace: Workspace, result: RunResult, data: Any) -> str:
    blocks = result.ordered_blocks()
    parts = []
    if record.criteria_text:
        parts.append(f"<p>Criteria (as typed, reproducible):</p><pre>{_e(record.criteria_text)}</pre>")
    else:
        parts.append("<p>No forget criteria were recorded for this run.</p>")
    if result.criteria_description:
        parts.append(f"<p>In words: <strong>{_e(result.criteria_description)}</strong>.</p>")
    structured = record.criteria if isinstance(record.criteria, dict) else {}
    if structured.get("clauses"):
        parts.append("<details><summary>Structured form (as stored)</summary>"
                     f"<pre>{_e(json.dumps(structured, indent=2, default=str))}</pre></details>")
    sizes = result.sizes or None
    if sizes is None:
        any_block = next(iter(blocks.values()), {})
        if any(f"n_{s.key}" in any_block for s in SETS):
            sizes = {s.key: any_block.get(f"n_{s.key}") for s in SETS}
    if sizes:
        rows = [(f"<strong>{_e(s.symbol)}</strong>", _e(s.name), f'<span class="num">{_fmt("n", sizes.get(s.key))}</span>',
                 f'{_e(s.meaning)}<br><span class="small">{_e(METRIC_DEFINITIONS.get("n_" + s.key, ""))}</span>')
                for s in SETS]
        parts.append("<h3>How many images</h3>" + _table(["Set", "Name", "Images", "What it is"], rows))
        if result.scored_note():
            parts.append(f"<p>{_e(result.scored_note())}</p>")
    per_class = _per_class_counts(record, workspace, data)
    if per_class is not None:
        classes, table = per_class
        rows = [[_e(c)] + [f'<span class="num">{table[s.key][i]:,}</span>' for s in SETS]
                for i, c in enumerate(classes)]
        parts.append("<h3>Images per class in each set</h3>"
                     + _table(["Class"] + [f"{s.symbol} · {_e(s.name)}" for s in SETS], rows))
    elif result.forget_classes:
        counts = result.forget_classes
        total = sum(v for v in counts.values() if _is_number(v)) or 1
        rows = [(_e(c), f'<span class="num">{n:,}</span>', f'<span class="num">{100 * n / total:.1f}\u00a0%</span>')
                for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]
        parts.append("<h3>Forget set (D_f) per class</h3>"
                     + _table(["True class", "Images to forget", "Share"], rows))
    return _section("forgotten", "What was forgotten and why", "".join(parts))


def _per_class_counts(record: RunRecord, workspace: Workspace, data: Any):
    """(classes, {set: counts per class}) from ``split.json`` and the loaded data, or None."""
    if data is None:
        return None
    try:
        split = workspace.load_json(record.id, "split.json")
        import numpy as np

        labels = data.metadata["label"].to_numpy(dtype=np.int64)
        k = len(data.classes)
        table = {key: np.bincount(labels[np.asarray(split[key], dtype=np.int64)], minlength=k)[:k].tolist()
                 for key in (s.key for s in SETS)}
    except (UserError, KeyError, IndexError, ValueError, OSError):
        return None
    return [str(c) for c in data.classes], table


def _method_info(name: str):
    if not name:
        return None
    with contextlib.suppress(Exception):
        from unlearn_core.methods.base import get_method

        return get_method(name)
    return None


def _method_section(record: RunRecord, result: RunResult) -> str:
    method = _method_info(record.method)
    parts = []
    if record.method:
        title = getattr(method, "title", "") or record.method
        parts.append(f"<p><strong>{_e(title)}</strong> <span class=\"key\">{_e(record.method)}</span></p>")
        if getattr(method, "summary", ""):
            parts.append(f"<p>{_e(method.summary)}</p>")
        if getattr(method, "citation", ""):
            parts.append(f"<p class=\"small\">Reference: {_e(method.citation)}</p>")
    else:
        parts.append("<p>No method recorded.</p>")
    preset = _preset(record)
    if preset or record.kind == "unlearn":
        parts.append(f"<p>Preset: <strong>{_e(_preset_name(preset))}</strong>"
                     + ("" if preset else " <span class=\"small\">(no named preset: the method's defaults, "
                                          "with the changes marked below)</span>") + "</p>")
    config = record.config
    if config:
        fields = {}
        with contextlib.suppress(Exception):
            fields = {f.name: f for f in method.fields()} if method is not None else {}
        rows = []
        for key, value in config.items():
            info = fields.get(key)
            default = getattr(info, "default", None)
            changed = info is not None and value != default
            rows.append((
                f'<span class="mono">{_e(key)}</span>',
                f'<span class="mono">{_setting(value)}</span>'
                + (' <span class="small">(changed)</span>' if changed else ""),
                f'<span class="mono">{_setting(default)}</span>' if info else "—",
                _e(getattr(info, "help", "")),
            ))
        parts.append("<h3>Full configuration</h3>"
                     + _table(["Setting", "Value", "Default", "Meaning"], rows))
    else:
        parts.append("<p>No configuration was recorded.</p>")
    extra = result.diagnostics
    if extra:
        rows = [(f'<span class="mono">{_e(k)}</span>', _fmt(k, v)) for k, v in extra.items()]
        parts.append("<h3>What the method reported</h3>" + _table(["Item", "Value"], rows))
    return _section("method", "Method and settings", "".join(parts))


def _results_section(record: RunRecord, workspace: Workspace, result: RunResult,
                     data: Any, fig: _Charts) -> str:
    blocks = result.ordered_blocks()
    if not blocks:
        why = {"failed": "it failed", "running": "it is still running", "queued": "it has not started"}
        text = why.get(record.status, f"it was {record.status}")
        return _section("results", "Results", f"<p>No results were recorded: {_e(text)}.</p>")
    parts = []
    ret = blocks.get("retrain")
    if ret is None and record.kind in ("unlearn", "compose"):
        parts.append(_note("No retrain reference was computed; run with <code>--retrain</code> to "
                           "compare with a model retrained without the forget set (the gold "
                           "standard). The “ideal” column then has no numbers."))
    elif ret is not None and record.retrain_run:
        how = "reused from" if result.retrain_reused else "trained for this run as"
        parts.append(f"<p>The retrained reference was {how} run "
                     f'<span class="mono">{_e(record.retrain_run)}</span>.</p>')
    if result.comparison.collapsed:
        what_to_do = advice.collapse_advice(record.method, record.config or {})
        parts.append(_note(f"<strong>Collapsed:</strong> {_e(_definition('collapsed')[1])} "
                           f"Do not deploy this model. {_e(what_to_do)}", "error"))
    parts.append("<h3>Each model on each set</h3>" + _metric_table(blocks))
    parts.append(fig.html(_accuracy_figure, blocks))
    parts.append(_overall_table(result))
    parts.append(_time_table(record, result))
    parts.append(_per_class_part(record, result, data, fig))
    if result.candidates:
        parts.append(_candidates_part(record, workspace, result, fig))
    history = _history(record, workspace)
    if history:
        during = "unlearning" if record.kind == "unlearn" else "the run"
        parts.append(f"<h3>During {during}, epoch by epoch</h3><p class=\"small\">Accuracy after "
                     "each epoch on a fixed sample (up to 512 images) of the forget and keep sets, "
                     "as the method reported it while running.</p>")
        parts.append(fig.html(_history_figure, history, blocks))
        parts.append(_history_table(history))
    return _section("results", "Results", "".join(parts))


def _composed_runs(record: RunRecord, workspace: Workspace) -> list[dict]:
    """The unlearning runs a composition was made from, as the trade-off chart labels them."""
    found = []
    for parent_id in record.parents:
        with contextlib.suppress(UserError):
            parent = workspace.get(parent_id)
            block = RunResult.of(parent).unlearned if parent.kind == "unlearn" and parent.status == "done" else None
            if block:
                found.append({"id": parent.id, "label": f"{parent.method} {parent.id[-4:]}", "metrics": block})
    return found


def _candidates_part(record: RunRecord, workspace: Workspace, result: RunResult, fig: _Charts) -> str:
    """A composition's candidates: the trade-off chart with the runs composed, and a table."""
    from unlearn_core.compose import parents_warning

    parents = _composed_runs(record, workspace)
    names = {p["id"]: p["label"] for p in parents}
    rows = []
    for c in result.candidates:
        metrics = c.get("metrics") or {}
        versus = (f"worse than {_e(names.get(c['beaten_by'], c['beaten_by']))}" if c.get("beaten_by")
                  else f"same as {_e(names.get(c['same_as'], c['same_as']))}" if c.get("same_as") else "—")
        rows.append([f"<strong>{_e(c.get('label'))}</strong>"
                     + (' <span class="small">(saved as this run)</span>' if c.get("label") == result.chosen else ""),
                     f'<span class="num">{_fmt("forget_test_acc", metrics.get("forget_test_acc"))}</span>',
                     f'<span class="num">{_fmt("remain_test_acc", metrics.get("remain_test_acc"))}</span>',
                     f'<span class="num">{_fmt("d", c.get("distance_to_retrain"))}</span>',
                     versus, "yes" if c.get("forgetting_lost") else "no"])
    warning = parents_warning(result.candidates)
    return ('<h3>Candidates</h3><p class="small">Every model the composition built, scored on the same '
            'sets; triangles on the chart are the runs composed.</p>'
            + (_note(_e(warning), "warn") if warning else "")
            + fig.html(plots.tradeoff, result.candidates, result.original, result.retrain,
                       saved=(result.chosen,) if result.chosen else (), parents=parents)
            + _table(["Candidate", "Forget acc. (test)", "Remain acc. (test)", "Distance to retrain",
                      "Vs the runs composed", "Forgets less than its inputs"], rows))


def _metric_table(blocks: Mapping[str, dict]) -> str:
    """One row per metric: its name and definition, each model's value, the ideal, the gap."""
    ret, unl = blocks.get("retrain"), blocks.get("unlearned")
    keys = [k for k in RESULT_METRICS if any(k in b for b in blocks.values())]
    keys += [k for b in blocks.values() for k, v in b.items()
             if not k.startswith("n_") and k != "per_class_test_acc" and not isinstance(v, (list, dict))]
    head = ["Metric"] + [f'<span class="m-{_e(n)}">{_e(MODEL_TITLES.get(n, n))}</span>' for n in blocks]
    head += ["Ideal", "Unlearned − retrain"] if unl is not None and ret is not None else ["Ideal"]
    rows = []
    for key in dict.fromkeys(keys):
        name, definition = _definition(key)
        cells = [f'<strong>{_e(name)}</strong> <span class="key">{_e(key)}</span>'
                 f'<div class="def">{_e(definition)}</div>']
        cells += [f'<span class="num">{_fmt(key, b.get(key))}</span>' for b in blocks.values()]
        ideal = _e(IDEAL.get(key, "—"))
        if ret is not None and key in ret and "retrained" in IDEAL.get(key, ""):
            ideal += f" ({_fmt(key, ret[key])})"
        cells.append(ideal)
        if unl is not None and ret is not None:
            gap = _gap(key, unl.get(key), ret.get(key)) if key != "mia_loss_lr_std" else "—"
            cells.append(f'<span class="num">{gap}</span>')
        rows.append(cells)
    return _table(head, rows, "results")


def _overall_table(result: RunResult) -> str:
    """Distance to retrain (also the original's), Avg. Gap and the collapse flag."""
    ret = result.retrain
    rows = []
    for key, value in vars(result.comparison).items():
        if value is None:
            continue
        name, definition = _definition(key)
        if key == "original_distance_to_retrain":
            name = "Distance to retrain of the original model"
            definition = "The same distance before unlearning: how far there was to go."
        shown = _fmt(key, value)
        if key == "collapsed" and value:
            shown = '<strong style="color:#c62828">YES</strong>'
        rows.append((f'<strong>{_e(name)}</strong> <span class="key">{_e(key)}</span>'
                     f'<div class="def">{_e(definition)}</div>',
                     f'<span class="num">{shown}</span>', _e(IDEAL.get(key, "smaller is better"))))
    if not rows:
        return ""
    title = "Compared with the retrained model" if ret is not None else "Overall"
    return f"<h3>{title}</h3>" + _table(["Measure", "Value", "Ideal"], rows, "results")


def _time_table(record: RunRecord, result: RunResult) -> str:
    timing = result.timing
    rows = []
    if _is_number(timing.unlearn):
        rows.append(("Unlearning", _seconds(timing.unlearn)))
    if _is_number(timing.retrain):
        reused = " (measured when that reference was trained)" if result.retrain_reused else ""
        rows.append(("Retraining without the forget set", _seconds(timing.retrain) + _e(reused)))
    if _is_number(timing.pct_of_retrain):
        rows.append(("Unlearning time as a share of retraining", f"{timing.pct_of_retrain:.1f} %"))
    if _is_number(timing.speedup):
        verdict = "faster" if timing.speedup >= 1 else "slower than retraining"
        rows.append(("Speed-up over retraining", f"{timing.speedup:.2f}× ({verdict})"))
    if _is_number(timing.evaluate):
        rows.append(("Scoring the models (not part of unlearning)", _seconds(timing.evaluate)))
    if not rows:
        return ""
    return ("<h3>Time</h3>" + _kv(rows) + "<p class=\"small\">Wall-clock on the run’s device "
            f"({_e(record.device or 'unknown')}); other work on the same machine slows it.</p>")


def _per_class_part(record: RunRecord, result: RunResult, data: Any, fig: _Charts) -> str:
    per_class = {n: b["per_class_test_acc"] for n, b in result.ordered_blocks().items()
                 if isinstance(b.get("per_class_test_acc"), list)}
    if not per_class:
        return ""
    classes = _class_names(record, max(len(v) for v in per_class.values()), data)
    forget = result.forget_classes
    rows = [[_e(c) + (' <span class="small">(in forget set)</span>' if c in forget else "")]
            + [f'<span class="num">{_fmt("test_acc", v[i] if i < len(v) else None)}</span>'
               for v in per_class.values()] for i, c in enumerate(classes)]
    head = ["True class"] + [_e(MODEL_TITLES.get(n, n)) for n in per_class]
    name, definition = _definition("per_class_test_acc")
    return (f'<h3>{_e(name)} <span class="key">per_class_test_acc</span></h3>'
            f'<p class="small">{_e(definition)}</p>' + _table(head, rows)
            + fig.html(_per_class_figure, per_class, classes))


def _history(record: RunRecord, workspace: Workspace) -> list[dict]:
    history = []
    with contextlib.suppress(UserError, OSError, ValueError):
        history = workspace.load_json(record.id, "history.json")
    return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []


def _history_table(history: list[dict]) -> str:
    keys = list(dict.fromkeys(k for h in history for k, v in h.items() if k != "epoch" and
                              (_is_number(v) or v is None)))
    rows = [[_e(h.get("epoch", i + 1))] + [f'<span class="num">{_fmt(k, h.get(k))}</span>' for k in keys]
            for i, h in enumerate(history)]
    return ("<details><summary>Numbers per epoch</summary>"
            + _table(["Epoch"] + [_e(k.replace("_", " ")) for k in keys], rows) + "</details>")


# ---------------------------------------------------------------------------------- figures
#: Accuracy ticks of the report's charts, written out: a page viewed without the dashboard's theme
#: must still show the numbers, not a bare "%" clipped at the edge.
PERCENT_TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def _readable(fig, *, percent_y: bool = True, legend_below: bool = False):
    """Axes that show their numbers and whole labels: written-out % ticks, margins that grow to
    fit the tick labels (``automargin``), and the legend in a row of its own between the title
    and the chart, so it covers neither the title, the bars nor the category labels
    (``legend_below``: under the x axis' title instead, for long entries on a chart without
    category labels)."""
    if percent_y:
        fig.update_yaxes(tickmode="array", tickvals=list(PERCENT_TICKS),
                         ticktext=[f"{100 * v:.0f} %" for v in PERCENT_TICKS])
    fig.update_yaxes(automargin=True, gridcolor="#eee", title_standoff=8)
    fig.update_xaxes(automargin=True, title_standoff=8)
    if legend_below:
        fig.update_layout(margin=dict(l=70, r=20, t=60, b=30), plot_bgcolor="white",
                          legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0))
    else:
        fig.update_layout(margin=dict(l=70, r=20, t=90, b=30), plot_bgcolor="white",
                          legend=dict(orientation="h", yanchor="bottom", y=1.03, xanchor="left", x=0))
    return fig


def _wrapped(label: str) -> str:
    """``D_f<br>Forget (training)`` → ``D_f<br>Forget<br>(training)``: narrow enough for a phone."""
    return label.replace(" (", "<br>(")


def _accuracy_figure(blocks: Mapping[str, dict]):
    fig = plots.set_accuracy(blocks, title="Accuracy of each model on each set")
    if not fig.data:
        return None
    for trace in fig.data:
        trace.x = [_wrapped(str(x)) for x in trace.x]
    fig.update_xaxes(tickangle=0)
    return _readable(fig)


def _per_class_figure(per_class: Mapping[str, list], classes: Sequence[str]):
    from unlearn_core import plots

    accuracies = {n: [None if v is None or _is_nan(v) else v for v in values]
                  for n, values in per_class.items()}
    fig = plots.per_class_accuracy(accuracies, [_e(c) for c in classes], title="Test accuracy per class")
    for trace in fig.data:
        trace.name = MODEL_TITLES.get(trace.name, trace.name)
    return _readable(fig)


def _history_figure(history: list[dict], blocks: Mapping[str, dict]):
    fig = plots.epoch_history(history, (blocks.get("retrain") or {}).get("forget_train_acc"),
                              title="Forgetting and remaining, per epoch")
    if not fig.data:
        return None
    fig.update_yaxes(tickmode="array", tickvals=list(PERCENT_TICKS),
                     ticktext=[f"{100 * v:.0f} %" for v in PERCENT_TICKS], secondary_y=False)
    return _readable(fig, percent_y=False)


# ------------------------------------------------------------------------------- embedding
def _find_embedding(workspace: Workspace, run_id: str) -> Path | None:
    preferred = workspace.artifact_path(run_id, EMBEDDING_ARTIFACT)
    candidates = [preferred] + [p for p in workspace.artifacts(run_id)
                                if p.suffix == ".npz" and p != preferred]
    for path in candidates:
        if path.is_file() and path.with_suffix(".json").is_file():
            return path
    return None


def _subsample_panels(panels: Mapping[str, Any], limit: int) -> tuple[dict[str, Any], int, int]:
    """The same points of every panel, at most ``limit`` (forget points first)."""
    import numpy as np

    first = next(iter(panels.values()))
    n = len(first.coords)
    if n <= limit:
        return dict(panels), n, n
    forget = np.flatnonzero(np.asarray(first.is_forget, dtype=bool))
    remain = np.flatnonzero(~np.asarray(first.is_forget, dtype=bool))
    rng = np.random.default_rng(0)
    n_forget = min(len(forget), (3 * limit) // 4)
    n_remain = min(len(remain), limit - n_forget)
    keep = np.sort(np.concatenate([rng.choice(forget, n_forget, replace=False),
                                   rng.choice(remain, n_remain, replace=False)]))
    fields = ("coords", "predicted", "true", "is_forget", "sample_ids", "indices")
    out = {}
    for name, panel in panels.items():
        changes = {f: np.asarray(getattr(panel, f))[keep] for f in fields}
        out[name] = dataclasses.replace(panel, **changes) if dataclasses.is_dataclass(panel) else panel
    return out, len(keep), n


def _tsne_figure(panels, classes, hover, titles):
    from unlearn_core import plots

    fig = plots.tsne_panels(panels, classes, hover=hover, titles=titles)
    fig.update_layout(margin=dict(t=60), dragmode="zoom")
    return fig


def _similarity_section(record: RunRecord, workspace: Workspace, fig: _Charts) -> str:
    """"Where the forgetting lives": per-block CKA to the retrained model, as on the Results page."""
    if record.kind != "unlearn" or not record.retrain_run:
        return ""
    rows = load_block_similarity(workspace, record.id)
    title = "Where the forgetting lives (per-block CKA)"
    if not rows:
        return _section("similarity", title, "<p>No per-block comparison was saved with this run; open the run "
                                             "on the dashboard’s Results page to compute it.</p>")
    table = "".join(f"<tr><td>{_e(r.block)}</td><td>{r.unlearned_forget:.3f}</td><td>{r.unlearned_kept:.3f}</td>"
                    f"<td>{r.original_forget:.3f}</td></tr>" for r in rows)
    body = ("<p>How alike each block of the network sees the images, compared with the retrained model "
            "(linear CKA, 1 = the same; Kornblith et al., 2019). Where the unlearned model on the forget "
            "images rises above the original, unlearning moved that block towards a model that never saw "
            "them; a change only at the head means the earlier blocks still hold what they learned. The "
            "kept images should stay high.</p>"
            + (fig.html(plots.block_similarity, rows) or "")
            + "<table><thead><tr><th>block</th><th>unlearned, forget images</th><th>unlearned, kept images</th>"
              f"<th>original, forget images (before)</th></tr></thead><tbody>{table}</tbody></table>")
    return _section("similarity", title, body)


def _embedding_section(record: RunRecord, workspace: Workspace, blocks: Mapping[str, dict],
                       data: Any, fig: _Charts) -> str:
    try:
        path = _find_embedding(workspace, record.id)
    except UserError:
        path = None
    if path is None:
        return _section("embedding", "Decision regions (t-SNE)",
                        "<p>No t-SNE panels were saved with this run; open the run on the "
                        "dashboard’s Results page to compute them.</p>")
    try:
        from unlearn_core.embedding import load_panels

        panels = load_panels(path)
    except Exception as error:  # a damaged cache must not stop the audit report
        return _section("embedding", "Decision regions (t-SNE)",
                        _note(f"The saved panels in {_e(path.name)} could not be read: {_e(error)}", "warn"))
    if not panels:
        return ""
    panels, shown, total = _subsample_panels(panels, MAX_REPORT_POINTS)
    first = next(iter(panels.values()))
    count = int(max(max(int(p.predicted.max(initial=0)), int(p.true.max(initial=0)),
                        int(p.region_labels.max(initial=0))) for p in panels.values())) + 1
    per_class = next((b.get("per_class_test_acc") for b in blocks.values()
                      if isinstance(b.get("per_class_test_acc"), list)), None)
    classes = _class_names(record, max(count, len(per_class or [])), data)
    hover = {int(i): _e(s) for i, s in zip(first.indices, first.sample_ids)}
    if data is not None:
        with contextlib.suppress(Exception):
            from unlearn_core import plots

            rows = data.metadata.iloc[[int(i) for i in first.indices]]
            texts = plots.hover_text(rows, [_e(c) for c in data.classes], getattr(data, "units", {}))
            hover = {int(i): f"{_e(s)}<br>{t}" for i, s, t in zip(first.indices, first.sample_ids, texts)}
    from unlearn_core import plots

    chart = fig.html(_tsne_figure, panels, [_e(c) for c in classes], hover,
                     {k: _e(MODEL_TITLES.get(k, k)) for k in panels})
    sample = (f"{shown:,} of the {total:,} embedded test images are shown (all forget images first)."
              if shown < total else f"All {total:,} embedded test images are shown.")
    body = (f"<p>Each panel is a 2-D map (t-SNE) of the same test images as one model sees them. "
            "Stars = images of the forgotten kind, circles = other images; fill colour = the class the "
            "model predicts, a thick outline in another colour = the true class when the prediction is "
            "wrong; the background shades the class the model would predict in that region. Good "
            "unlearning makes the unlearned panel look like the retrained one, above all around the "
            f"stars. {_e(sample)}</p>"
            + (chart or "<p class=\"small\">(Charts were left out of this report.)</p>")
            + f"<p class=\"small\">Saved panels: <span class=\"mono\">{_e(path.name)}</span>, "
            f"SHA-256 <span class=\"mono\">{_sha256(path)}</span></p>")
    return _section("embedding", "Decision regions (t-SNE)", body)


# ------------------------------------------------------------------------------ provenance
def _provenance_section(record: RunRecord, workspace: Workspace) -> str:
    fingerprint = record.dataset_fingerprint or "—"
    base_hash = record.base_model_hash or "—"
    rows = [
        ("Data set", _e(record.dataset or "—")),
        ("Data fingerprint", _mono(fingerprint) + ' <span class="small">(content hash of the '
                                                   "images, labels and split)</span>"),
        ("Original model hash", _mono(base_hash) + ' <span class="small">(content hash of the '
                                                   "weights the run started from)</span>"),
    ]
    weights = None
    with contextlib.suppress(UserError, ValueError):
        weights = workspace.artifact_path(record.id, WEIGHTS_NAME)
    if weights is not None and weights.is_file():
        title = "Unlearned weights file" if record.kind == "unlearn" else "Weights file"
        rows.append((title, f"{_mono(WEIGHTS_NAME)}, {_size(weights.stat().st_size)}, "
                            f"SHA-256 {_mono(_sha256(weights))}"))
        header = {}
        with contextlib.suppress(Exception):
            header = workspace.weights_metadata(record.id)
        if header:
            lines = "\n".join(f"{key}: {_compact_json(value)}" for key, value in sorted(header.items()))
            rows.append(("Stored in the weights file", f"<pre>{_e(lines)}</pre>"))
    else:
        unfinished = " (the run did not finish)" if record.status != "done" else ""
        rows.append(("Weights file", "none saved" + unfinished))
    rows.append(("Parent runs", _parents(record, workspace)))
    rows.append(("Seed", _e(record.seed if record.seed is not None else "—")))
    rows.append(("Device", _e(record.device or "—")))
    if record.recipe_hash:
        rows.append(("Recipe hash", _mono(record.recipe_hash)))
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in (record.versions or {}).items()) or "—"
    rows.append(("Library versions", versions))
    command = "not recorded"
    if record.command:
        command = (f"<pre>{_e(record.command_text)}</pre><span class=\"small\">Or run it again as a "
                   f"new run: <code>python -m unlearn_core runs rerun {_e(record.id)}</code></span>")
    rows.append(("Reproducing command", command))
    parts = [_kv(rows)]
    artifacts = []
    with contextlib.suppress(UserError, OSError):
        artifacts = workspace.artifacts(record.id)
    if artifacts:
        files = [(_mono(p.name), f'<span class="num">{_size(p.stat().st_size)}</span>', _mono(_sha256(p)))
                 for p in artifacts]
        parts.append("<h3>Files of this run</h3>" + _table(["File", "Size", "SHA-256"], files))
    tail = _log_tail(workspace, record.id) if record.status != "done" else ""
    if tail:
        parts.append(f"<details><summary>Last lines of the run’s log</summary><pre>{_e(tail)}</pre></details>")
    return _section("provenance", "Provenance", "".join(parts))


def _compact_json(text: str) -> str:
    """A header value; JSON inside it (the model spec) is shown without escaped quotes."""
    with contextlib.suppress(ValueError, TypeError):
        value = json.loads(text)
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(", ", ": "))
    return text


def _parents(record: RunRecord, workspace: Workspace) -> str:
    if not record.parents:
        return "none"
    items = []
    for parent in record.parents:
        text = f'<span class="mono">{_e(parent)}</span>'
        try:
            other = workspace.get(parent)
        except UserError:
            items.append(text + " (no longer in the registry)")
            continue
        role = "retrain reference" if parent == record.retrain_run or other.kind == "retrain" else other.kind
        text += f" — {_e(role)}, {_e(other.status)}, created {_when(other.created_at)}"
        with contextlib.suppress(UserError, ValueError, OSError):
            path = workspace.artifact_path(parent, WEIGHTS_NAME)
            if path.is_file():
                text += f'; weights SHA-256 <span class="mono">{_sha256(path)}</span>'
        items.append(text)
    return "<br>".join(items)


def _log_tail(workspace: Workspace, run_id: str) -> str:
    with contextlib.suppress(UserError, ValueError, OSError):
        path = workspace.artifact_path(run_id, LOG_NAME)
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            return "\n".join(lines[-LOG_TAIL_LINES:])
    return ""


def _signoff() -> str:
    return (f'<div class="signoff"><div>Reviewed by</div><div>Role</div><div>Date and signature</div></div>'
            f"<footer>Generated {_when(utc_now())} by Unlearning Studio {_e(__version__)} "
            "(unlearn_core.report). Self-contained: opening this file needs no network.</footer>")


# ------------------------------------------------------------------------------ comparison
def render_comparison_report(records: Sequence[RunRecord | str], workspace: Workspace, *,
                             charts: bool = True) -> str:
    """Several runs side by side, one column per run, as one self-contained HTML page.

    Rows: what ran (label, kind, status, data, criteria, method, preset, changed settings), the
    model's accuracies and attack scores (the retrained reference's value beside it when known),
    distance to retrain, Avg. Gap, collapse, time and speed-up, hashes and the command. The best
    distance to retrain and the fastest time are in bold. ``records`` may be run ids.
    """
    records = [workspace.get(r) if isinstance(r, str) else r for r in records]
    if not records:
        raise UserError("Pick at least one run to compare.")
    fig = _Charts(charts, prefix="cmp")
    columns = [_comparison_column(r, workspace) for r in records]
    rows = _comparison_rows(records, columns)
    head = "<th></th>" + "".join(f'<th class="run">{_mono(r.id)}</th>' for r in records)
    body_rows = "".join(f"<tr><th>{name}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                        for name, cells in rows)
    table = f'<table class="compare"><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>'
    notes = ""
    fingerprints = {r.dataset_fingerprint for r in records if r.dataset_fingerprint}
    if len({(r.dataset, r.criteria_text) for r in records}) > 1 or len(fingerprints) > 1:
        notes = _note("These runs do not share the same data and forget criteria; compare their "
                      "numbers with care.", "warn")
    plural = "s" if len(records) != 1 else ""
    meanings = _kv((_e(_definition(k)[0]), _e(_definition(k)[1])) for k in _COMPARED + (
        "distance_to_retrain", "avg_gap", "collapsed"))
    body = (f"<header><h1>Comparison of {len(records)} run{plural}</h1>"
            "<p class=\"sub\">One column per run. Accuracies are the unlearned (or the run’s own) "
            "model’s; the retrained reference’s value is in green brackets. Bold = best of the row."
            f"</p></header>{notes}{table}" + fig.html(_comparison_figure, records, columns)
            + f"<h2>What the measures mean</h2>{meanings}" + _signoff())
    return _page(f"Unlearning Studio — comparison of {len(records)} run{plural}", body, fig)


#: Per-model metrics in the comparison, in order.
_COMPARED = ("forget_train_acc", "forget_test_acc", "remain_train_acc", "remain_test_acc", "test_acc",
             "mia_membership_auc", "mia_svc_efficacy", "mia_loss_lr")


def _mono(text: Any) -> str:
    return f'<span class="mono">{_e(text)}</span>'


def _comparison_rows(records: Sequence[RunRecord], columns: Sequence[dict]) -> list[tuple[str, list[str]]]:
    """(row title HTML, one cell HTML per run) for the comparison table."""
    results = [RunResult.of(r) for r in records]
    rows: list[tuple[str, list[str]]] = [
        ("Label", [_e(r.label or "—") for r in records]),
        ("Kind · status", [f"{_e(r.kind)} {_status_badge(r.status)}" for r in records]),
        ("Created", [_when(r.created_at) for r in records]),
        ("Data set", [f'{_e(r.dataset or "—")}<br><span class="key">{_e(r.dataset_fingerprint)}</span>'
                      for r in records]),
        ("Forget criteria", [f"<code>{_e(r.criteria_text or '—')}</code>" for r in records]),
        ("Method", [f"<strong>{_e(r.method or '—')}</strong>"
                    + (f" · preset {_e(_preset_name(_preset(r)))}" if r.kind == "unlearn" else "")
                    for r in records]),
        ("Settings changed from the defaults", [c["changed"] for c in columns]),
        ("Images to forget (D_f) / keep (D_r)",
         [f"{_fmt('n', s.get('forget_train'))} / {_fmt('n', s.get('remain_train'))}" if s else "—"
          for s in (res.sizes for res in results)]),
    ]
    for key in _COMPARED:
        if not any(key in c["block"] for c in columns):
            continue
        cells = []
        for c in columns:
            cell = f'<span class="num">{_fmt(key, c["block"].get(key))}</span>'
            if c["retrain"] and key in c["retrain"]:
                cell += f' <span class="small m-retrain">(retrain {_fmt(key, c["retrain"][key])})</span>'
            cells.append(cell)
        rows.append((f'{_e(_definition(key)[0])} <span class="key">{_e(key)}</span>', cells))
    distances = _mark_best([c["distance"] for c in columns], "d", "no retrain reference")
    rows.append(("Distance to retrain (0 is ideal)",
                 ["— (this is a reference)" if r.kind == "retrain" else d
                  for r, d in zip(records, distances)]))
    rows.append(("Avg. Gap (0 is ideal)", _mark_best([c["avg_gap"] for c in columns], "d", "—")))
    rows.append(("Collapsed", [('<strong style="color:#c62828">YES</strong>' if res.comparison.collapsed else "no")
                               if res.comparison.collapsed is not None else "—" for res in results]))
    rows.append(("Unlearning time", _mark_best([res.timing.unlearn for res in results], "", "—",
                                               show=_seconds)))
    rows.append(("Share of retraining time", [f"{res.timing.pct_of_retrain:.1f} %"
                                              if _is_number(res.timing.pct_of_retrain) else "—"
                                              for res in results]))
    rows.append(("Retrain reference run", [_mono(r.retrain_run or "—") for r in records]))
    rows.append(("Weights SHA-256", [_mono(c["sha"]) for c in columns]))
    rows.append(("Error", [_e(r.error) if r.error else "—" for r in records]))
    rows.append(("Reproducing command", [f"<pre>{_e(r.command_text)}</pre>" if r.command else "—"
                                         for r in records]))
    return rows


def _comparison_column(record: RunRecord, workspace: Workspace) -> dict[str, Any]:
    """What the comparison needs of one run: its model's block, the reference, gaps, hash."""
    result = RunResult.of(record)
    _, block = result.main_block()
    retrain = result.retrain if result.unlearned is not None else None
    method = _method_info(record.method)
    changed = []
    with contextlib.suppress(Exception):
        defaults = {f.name: f.default for f in method.fields()} if method is not None else {}
        changed = [f"{_e(k)}={_setting(v)}" for k, v in (record.config or {}).items()
                   if k in defaults and v != defaults[k]]
    sha = "—"
    with contextlib.suppress(UserError, ValueError, OSError):
        path = workspace.artifact_path(record.id, WEIGHTS_NAME)
        if path.is_file():
            sha = _sha256(path)[:16] + "…"
    return {"block": block or {}, "retrain": retrain, "distance": result.comparison.distance_to_retrain,
            "avg_gap": result.comparison.avg_gap, "changed": "<br>".join(changed) or "none", "sha": sha,
            "original": result.original}


def _mark_best(values: list[Any], key: str, missing: str, show=None) -> list[str]:
    """Formatted cells; the smallest of two or more numbers is bold."""
    show = show or (lambda v: _fmt(key, v))
    numbers = [v for v in values if _is_number(v) and not _is_nan(v)]
    best = min(numbers) if len(numbers) > 1 else None
    return [_e(missing) if not _is_number(v) else
            f'<span class="best">{show(v)}</span>' if v == best else show(v) for v in values]


def _comparison_figure(records: Sequence[RunRecord], info: Sequence[dict]):
    """Each run's model in the (kept, forgotten) plane, with the original and retrain points."""
    import plotly.graph_objects as go

    fig = go.Figure()
    x_key, y_key = "remain_test_acc", "forget_test_acc"
    seen_refs = set()
    xs: list[float] = []
    for record, column in zip(records, info):
        block = column["block"]
        if not (_is_number(block.get(x_key)) and _is_number(block.get(y_key))):
            continue
        label = _e(_short(record.label) or record.id)
        xs.append(block[x_key])
        fig.add_scatter(x=[block[x_key]], y=[block[y_key]], mode="markers+text", text=[label],
                        textposition="top center", name=label, marker=dict(size=12),
                        hovertemplate=f"{label} ({_e(record.id)})<br>kept %{{x:.1%}} · forget %{{y:.1%}}"
                                      "<extra></extra>")
        for name, ref, symbol in (("original", column["original"], "square"),
                                  ("retrain", column["retrain"], "diamond")):
            if ref and _is_number(ref.get(x_key)) and _is_number(ref.get(y_key)):
                point = (name, round(ref[x_key], 6), round(ref[y_key], 6))
                if point in seen_refs:
                    continue
                seen_refs.add(point)
                xs.append(ref[x_key])
                title = f"{MODEL_TITLES[name]} (of run {_e(record.id)})"
                fig.add_scatter(x=[ref[x_key]], y=[ref[y_key]], mode="markers", name=title,
                                marker=dict(size=13, symbol=symbol, color=MODEL_COLORS[name]),
                                hovertemplate=title + "<br>kept %{x:.1%} · forget %{y:.1%}<extra></extra>")
    if not fig.data:
        return None
    low, high = min(xs), max(xs)
    pad = max(0.01, 0.2 * (high - low))
    x_range, y_range = (low - pad, min(1.0 + pad / 2, high + pad)), (-0.05, 1.08)
    labelled = [t for t in fig.data if t.text]
    places = plots.place_labels([(t.x[0], t.y[0]) for t in labelled], [t.text[0] for t in labelled],
                                x_range, y_range)
    for trace, place in zip(labelled, places):
        trace.textposition = place
    title = "Forgetting vs what remains (closer to the retrained model's diamond is better)"
    fig.update_layout(title=dict(text=title, x=0),
                      xaxis=dict(title="accuracy on other test images T_r (higher is better)", tickformat=".1%",
                                 range=list(x_range), gridcolor="#eee"),
                      yaxis=dict(title="accuracy on forget-like test images T_f", range=list(y_range)),
                      height=480)
    return _readable(fig, legend_below=True)


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_comparison_report(workspace: Workspace, run_ids: Sequence[str], out: str | os.PathLike[str], *,
                            charts: bool = True) -> Path:
    """Write :func:`render_comparison_report` to ``out`` (a file, or a folder to put it in)."""
    text = render_comparison_report(list(run_ids), workspace, charts=charts)
    name = "compare-" + "-".join(str(r).split("-")[-1] for r in run_ids) + ".html"
    return _write_text(out, text, name)


def _write_text(out: str | os.PathLike[str], text: str, default_name: str) -> Path:
    from unlearn_core.files import write_out

    return write_out(out, text.encode(), default_name, "report")


def write_run_report(workspace: Workspace, run_id: str, out: str | os.PathLike[str], *, charts: bool = True) -> Path:
    """Write :func:`render_run_report` of one run to ``out`` (a file, or a folder to put it in)."""
    record = workspace.get(run_id)
    return _write_text(out, render_run_report(record, workspace, charts=charts), f"{record.id}.html")
