"""``runs``: the history of every model revision: list, show, cancel, delete, export, rerun.

Every subcommand takes ``--workspace`` (default ``$UNLEARN_STUDIO_HOME`` or ``./workspace``).
``--json`` prints pure JSON on stdout, for scripts. Listing and showing also move the job queue
along (dead runs become ``interrupted``, queued runs start when a slot is free), like the
dashboard does when it polls.

``runs _selftest-job`` is a hidden command that exercises the background-job machinery with no
model or data: it reports progress in a loop, then finishes, fails (``--fail``) or gets
cancelled. The tests run it as a real subprocess; it is also a quick check that background jobs
work on a new machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from unlearn_core.errors import UserError
from unlearn_core.runs.jobs import add_run_id_argument, cancel, command_run, poll_queue, rerun
from unlearn_core.progress import ProgressEvent
from unlearn_core.exports import EXPORT_FORMATS, metrics_rows, write_export
from unlearn_core.runs.registry import KINDS, STATUSES, RunRecord, Workspace, cli_command

#: Subcommands listed in ``runs --help`` (the self-test stays out of the way).
VISIBLE = ("list", "show", "cancel", "delete", "export", "rerun", "compare", "embed")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``runs`` group to the command line."""
    runs = subparsers.add_parser(
        "runs", help="list, inspect, cancel, delete, export and rerun runs",
        description="The run registry: every train, retrain, unlearn and compose run.",
    )
    commands = runs.add_subparsers(dest="runs_command", required=True,
                                   metavar="{" + ",".join(VISIBLE) + "}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", default=None,
                        help="workspace folder (default: $UNLEARN_STUDIO_HOME or ./workspace)")

    listing = commands.add_parser("list", parents=[common], help="table of runs, newest first")
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    listing.add_argument("--kind", choices=KINDS)
    listing.add_argument("--status", choices=STATUSES)
    listing.set_defaults(func=cmd_list)

    show = commands.add_parser("show", parents=[common], help="everything recorded about a run")
    show.add_argument("run_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    show.set_defaults(func=cmd_show)

    stop = commands.add_parser("cancel", parents=[common], help="stop a queued or running run")
    stop.add_argument("run_id", metavar="ID")
    stop.set_defaults(func=cmd_cancel)

    delete = commands.add_parser("delete", parents=[common], help="delete a run and its files")
    delete.add_argument("run_id", metavar="ID")
    delete.add_argument("--yes", action="store_true", help="really delete (otherwise: preview)")
    delete.add_argument("--force", action="store_true",
                        help="delete even if other runs were built from it")
    delete.set_defaults(func=cmd_delete)

    export = commands.add_parser("export", parents=[common],
                                 help="write a run's record, metrics, model or report to a file")
    export.add_argument("run_id", metavar="ID")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--out", required=True, help="file, or existing folder, to write")
    export.set_defaults(func=cmd_export)

    again = commands.add_parser("rerun", parents=[common],
                                help="run a run's recorded command again, as a new run")
    again.add_argument("run_id", metavar="ID")
    again.set_defaults(func=cmd_rerun)

    compare = commands.add_parser("compare", parents=[common], help="an HTML report of several runs side by side")
    compare.add_argument("run_ids", nargs="+", metavar="ID")
    compare.add_argument("--out", required=True, help="file, or existing folder, to write")
    compare.add_argument("--no-charts", action="store_true", help="text and tables only (small file)")
    compare.set_defaults(func=cmd_compare)

    embed = commands.add_parser("embed", parents=[common],
                                help="compute and save a finished run's t-SNE decision regions (for its report)")
    embed.add_argument("run_id", metavar="ID")
    embed.set_defaults(func=cmd_embed)

    selftest = commands.add_parser("_selftest-job", parents=[common])
    selftest.add_argument("--steps", type=int, default=20)
    selftest.add_argument("--delay", type=float, default=0.05, help="seconds per step")
    selftest.add_argument("--fail", default="", help="fail at the end with this message")
    selftest.add_argument("--every-event", action="store_true",
                          help="write every event to the registry (a concurrency stress test)")
    add_run_id_argument(selftest)
    selftest.set_defaults(func=cmd_selftest_job)


def _workspace(args: argparse.Namespace) -> Workspace:
    return Workspace(args.workspace)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def key_metrics(record: RunRecord, limit: int = 3) -> str:
    """A few headline numbers for the table: forget/remain accuracies of the run's own model."""
    from unlearn_core.runs.result import RunResult

    _, block = RunResult.of(record).main_block()
    chosen = [(metric, value) for metric, value in block.items() if isinstance(value, (int, float))]
    chosen.sort(key=lambda item: not any(word in item[0] for word in ("forget", "remain")))
    return " ".join(f"{metric}={value:.3g}" for metric, value in chosen[:limit])


def _table(records: list[RunRecord]) -> str:
    header = ("ID", "KIND", "STATUS", "DATASET", "CRITERIA", "METHOD", "METRICS", "CREATED")
    rows = [header] + [
        (r.id, r.kind, r.status, _clip(r.dataset, 16), _clip(r.criteria_text, 32),
         _clip(r.method, 16), _clip(key_metrics(r), 48), r.created_at[:16].replace("T", " "))
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def cmd_list(args: argparse.Namespace) -> int:
    workspace = _workspace(args)
    poll_queue(workspace)
    records = workspace.list_runs(kind=args.kind, status=args.status)
    if args.json:
        _print_json([record.to_dict() for record in records])
    elif records:
        print(_table(records))
    else:
        print(f"No runs yet in {workspace.path}.")
    return 0


def _describe(record: RunRecord, workspace: Workspace) -> str:
    lines = [f"run {record.id}  ({record.kind}, {record.status})"]
    facts = [
        ("label", record.label), ("created", record.created_at),
        ("started", record.started_at), ("finished", record.finished_at),
        ("dataset", f"{record.dataset} {record.dataset_fingerprint}".strip()),
        ("base model", record.base_model_hash), ("criteria", record.criteria_text),
        ("method", record.method), ("config", json.dumps(record.config) if record.config else ""),
        ("seed", record.seed), ("device", record.device),
        ("parents", ", ".join(record.parents)), ("error", record.error),
        ("command", record.command_text),
    ]
    lines += [f"  {name:<11} {value}" for name, value in facts if value not in ("", None)]
    if record.progress:
        lines.append(f"  {'progress':<11} {json.dumps(record.progress)}")
    rows = metrics_rows(record)
    if rows:
        lines.append("  metrics:")
        lines += [f"    {model:<12} {metric:<24} {value}" for model, metric, value in rows]
    files = workspace.artifacts(record.id)
    if files:
        lines.append(f"  files in {workspace.run_dir(record.id)}:")
        lines += [f"    {path.name} ({path.stat().st_size} bytes)" for path in files]
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    workspace = _workspace(args)
    poll_queue(workspace)
    record = workspace.get(args.run_id)
    if args.json:
        _print_json(record.to_dict())
    else:
        print(_describe(record, workspace))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    record = cancel(_workspace(args), args.run_id)
    print(f"run {record.id}: {record.status}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    workspace = _workspace(args)
    record = workspace.get(args.run_id)
    if args.yes:
        workspace.delete(record.id, force=args.force)
        print(f"deleted run {record.id}")
        return 0
    files = workspace.artifacts(record.id)
    size = sum(path.stat().st_size for path in files)
    print(f"Would delete run {record.id} ({record.kind}, {record.status}, created "
          f"{record.created_at}) and its folder {workspace.run_dir(record.id)} "
          f"({len(files)} files, {size} bytes).")
    dependants = workspace.dependants(record.id)
    if dependants:
        print(f"It is a parent of {', '.join(dependants)}; deleting it needs --force too.")
    print("Run the same command with --yes to delete it.")
    return 1


def cmd_export(args: argparse.Namespace) -> int:
    path = write_export(_workspace(args), args.run_id, args.format, args.out)
    print(path)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from unlearn_core.report import write_comparison_report

    print(write_comparison_report(_workspace(args), args.run_ids, args.out, charts=not args.no_charts))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from unlearn_core.runs.artifacts import EMBEDDING_ARTIFACT, embed_run

    workspace = _workspace(args)
    panels = embed_run(workspace, args.run_id)
    print(f"saved {len(panels)} panels to {workspace.artifact_path(args.run_id, EMBEDDING_ARTIFACT)}")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    record = rerun(_workspace(args), args.run_id)
    print(f"run {record.id} ({record.status}) repeats {args.run_id}", file=sys.stderr)
    print(record.id)
    return 0


def cmd_selftest_job(args: argparse.Namespace) -> int:
    """Report progress for ``--steps`` steps, honouring cancel; then finish or fail."""
    if args.steps < 1:
        raise UserError("--steps must be at least 1.")
    workspace = _workspace(args)
    argv = ["runs", "_selftest-job", "--steps", str(args.steps), "--delay", str(args.delay)]
    argv += ["--fail", args.fail] if args.fail else []
    argv += ["--every-event"] if args.every_event else []
    with command_run(workspace, args.run_id, kind="train", command=cli_command(argv),
                     label="self-test job", method="selftest") as ctx:
        report = ctx.reporter
        if args.every_event:  # bypass the throttle: many writers, many writes
            def report(event: ProgressEvent) -> None:
                workspace.record_progress(ctx.run_id, event)
        for step in range(1, args.steps + 1):
            ctx.should_stop.raise_if_cancelled("self-test job")
            time.sleep(args.delay)
            event = ProgressEvent(phase="selftest", step=step, steps=args.steps,
                                  fraction=step / args.steps,
                                  eta_seconds=(args.steps - step) * args.delay,
                                  metrics={"step_value": float(step)})
            report(event)
        if args.fail:
            raise UserError(args.fail)
        ctx.workspace.save_json(ctx.run_id, "selftest", {"steps": args.steps})
        ctx.finish(metrics={"selftest": {"steps": args.steps}})
    return 0
