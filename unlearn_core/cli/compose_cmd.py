"""``compose``: merge recorded runs (head swap, block-wise, interpolation sweep, task-vector sum);
``save-candidate``: save one of a composition's candidates as a new run, without recomputing it."""

from __future__ import annotations

import argparse
import sys

from unlearn_core.cli.common import add_json_flag, print_json, print_table
from unlearn_core.runs.requests import ComposeRequest, SaveCandidateRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    compose = subparsers.add_parser("compose", help="merge unlearning runs into candidate models and score them")
    ComposeRequest.add_arguments(compose)
    add_json_flag(compose)
    from unlearn_core.runs.jobs import add_run_id_argument

    add_run_id_argument(compose)
    compose.set_defaults(func=cmd_compose)
    save = subparsers.add_parser("save-candidate",
                                 help="save a candidate of a finished composition as a new run (no recomputation)")
    SaveCandidateRequest.add_arguments(save)
    add_json_flag(save)
    save.set_defaults(func=cmd_save_candidate)


def _percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def cmd_compose(args: argparse.Namespace) -> int:
    from unlearn_core.compose import parents_warning
    from unlearn_core.labels import NOTHING_SAVED
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.runs.result import RunResult

    summary = workflows.compose(ComposeRequest.from_args(args), Workspace(), args.run_id)
    if args.json:
        print_json(summary)
        return 0
    result = RunResult.from_dict(summary["result"])
    rows = [{"candidate": c["label"], "forget_test_acc": _percent(c["metrics"].get("forget_test_acc")),
             "remain_test_acc": _percent(c["metrics"].get("remain_test_acc")),
             "distance": "—" if c.get("distance_to_retrain") is None else f"{c['distance_to_retrain']:.3f}",
             "forgetting": "LOST" if c.get("forgetting_lost") else "kept",
             "vs inputs": (f"worse than {c['beaten_by']}" if c.get("beaten_by")
                           else f"same as {c['same_as']}" if c.get("same_as") else "—")}
            for c in result.candidates]
    print_table(rows, ["candidate", "forget_test_acc", "remain_test_acc", "distance", "forgetting", "vs inputs"])
    for candidate in result.candidates:
        if candidate.get("forgetting_lost"):
            print(f"WARNING: {candidate['label']}: {candidate.get('forgetting_note', '')}", file=sys.stderr)
    warning = parents_warning(result.candidates)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    if result.chosen is None:
        print(f"{NOTHING_SAVED} (composition {summary['run_id']}; save one with "
              f"`python -m unlearn_core save-candidate {summary['run_id']} LABEL`)", file=sys.stderr)
        return 0
    print(f"saved {result.chosen!r} as run {summary['run_id']}")
    return 0


def cmd_save_candidate(args: argparse.Namespace) -> int:
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace

    summary = workflows.save_candidate(SaveCandidateRequest.from_args(args), Workspace())
    if args.json:
        print_json(summary)
        return 0
    verb = "saved" if summary["new"] else "already saved"
    print(f"{verb} candidate {summary['candidate']!r} of composition {summary['composition']} as run "
          f"{summary['run_id']}")
    return 0
