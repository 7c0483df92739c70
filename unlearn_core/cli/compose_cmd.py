"""``compose``: merge recorded runs (head swap, block-wise, interpolation sweep, task-vector sum)."""

from __future__ import annotations

import argparse
import sys

from unlearn_core.cli.common import add_json_flag, print_json, print_table
from unlearn_core.runs.requests import ComposeRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    compose = subparsers.add_parser("compose", help="merge unlearning runs into candidate models and score them")
    ComposeRequest.add_arguments(compose)
    add_json_flag(compose)
    from unlearn_core.runs.jobs import add_run_id_argument

    add_run_id_argument(compose)
    compose.set_defaults(func=cmd_compose)


def cmd_compose(args: argparse.Namespace) -> int:
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.labels import NOTHING_SAVED
    from unlearn_core.runs.result import RunResult

    summary = workflows.compose(ComposeRequest.from_args(args), Workspace(), args.run_id)
    if args.json:
        print_json(summary)
        return 0
    result = RunResult.from_dict(summary["result"])
    rows = [{"candidate": c["label"], "forget_test_acc": f"{c['metrics']['forget_test_acc']:.3f}",
             "remain_test_acc": f"{c['metrics']['remain_test_acc']:.3f}",
             "distance": "" if c.get("distance_to_retrain") is None else f"{c['distance_to_retrain']:.3f}",
             "forgetting": "LOST" if c.get("forgetting_lost") else "kept"}
            for c in result.candidates]
    print_table(rows, ["candidate", "forget_test_acc", "remain_test_acc", "distance", "forgetting"])
    for candidate in result.candidates:
        if candidate.get("forgetting_lost"):
            print(f"WARNING: {candidate['label']}: {candidate.get('forgetting_note', '')}", file=sys.stderr)
    if result.chosen is None:
        print(f"{NOTHING_SAVED} (run {summary['run_id']}; save one with --select LABEL)", file=sys.stderr)
        return 0
    print(f"saved {result.chosen!r} as run {summary['run_id']}")
    return 0
