"""``methods`` (what can be run) and ``unlearn`` (run one method, record it, print JSON)."""

from __future__ import annotations

import argparse
import sys

from unlearn_core.cli.common import add_json_flag, print_json, print_table
from unlearn_core.runs.requests import UnlearnRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    methods = subparsers.add_parser("methods", help="list every unlearning method and its settings")
    add_json_flag(methods)
    methods.set_defaults(func=cmd_methods)

    unlearn = subparsers.add_parser("unlearn", help="make the model forget the images matching --forget")
    UnlearnRequest.add_arguments(unlearn)
    unlearn.add_argument("--no-record", action="store_true", help="do not record a run in the workspace")
    unlearn.add_argument("--detach", action="store_true", help="run in the background; print the run id")
    add_json_flag(unlearn)
    from unlearn_core.runs.jobs import add_run_id_argument

    add_run_id_argument(unlearn)
    unlearn.set_defaults(func=cmd_unlearn)


def cmd_methods(args: argparse.Namespace) -> int:
    from unlearn_core.methods import list_methods

    listing = [{"name": m.name, "title": m.title, "summary": m.summary, "citation": m.citation,
                "presets": sorted(m.presets), "fields": [f.to_dict() for f in m.fields()]}
               for m in list_methods()]
    if args.json:
        print_json(listing)
        return 0
    for entry in listing:
        print(f"{entry['name']}: {entry['title']} — {entry['summary']}")
        if entry["presets"]:
            print(f"  presets: {', '.join(entry['presets'])}")
        print_table([{"setting": f["name"], "type": f["type"], "default": f["default"],
                      "range": _range_text(f), "help": f["help"]} for f in entry["fields"]],
                    ["setting", "type", "default", "range", "help"])
        print()
    return 0


def _range_text(field: dict) -> str:
    if field["choices"]:
        return "|".join(map(str, field["choices"]))
    if field["min"] is None and field["max"] is None:
        return ""
    return f"{field['min'] if field['min'] is not None else ''}..{field['max'] if field['max'] is not None else ''}"


def cmd_unlearn(args: argparse.Namespace) -> int:
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace

    from unlearn_core.distributed import world

    request = UnlearnRequest.from_args(args)
    main_rank = world().is_main  # under torchrun only rank 0 records and writes
    if args.run_id is None:  # before recording or detaching anything (a job's run records its own failure)
        from unlearn_core.preflight import check_unlearn

        check_unlearn(dataset=request.dataset, forget=request.forget, method=request.method,
                      overrides=request.overrides, preset=request.preset, seed=request.seed,
                      device=request.device, weights=request.weights, arch=request.arch,
                      retrain=request.retrain, recipe=request.recipe)
    if args.detach:
        print(workflows.submit(Workspace(), request).id)
        return 0
    summary = workflows.unlearn(request, None if args.no_record or not main_rank else Workspace(), args.run_id)
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    from unlearn_core.runs.result import RunResult

    result = RunResult.from_dict(summary["result"])
    columns = ["forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc", "mia_membership_auc"]
    rows = [{"model": name, **{k: f"{block[k]:.3f}" for k in columns}} for name, block in result.ordered_blocks().items()]
    print(result.criteria_description)
    if result.scored_note():
        print(result.scored_note())
    print_table(rows, ["model", *columns])
    reference = result.reference()
    if reference is not None:
        print(reference.sentence())
        if reference.warning():
            print(f"WARNING: {reference.warning()}", file=sys.stderr)
    if result.comparison.distance_to_retrain is not None:
        print(f"distance to retrain {result.comparison.distance_to_retrain:.3f}")
    pct = result.timing.pct_of_retrain
    print(f"unlearning took {result.timing.unlearn:.1f} s" + (f" ({pct:.1f} % of retraining)" if pct else ""))
    if result.comparison.collapsed:
        print("WARNING: remain accuracy dropped by more than 10 points: this run collapsed.", file=sys.stderr)
    if summary.get("run_id"):
        print(f"recorded as run {summary['run_id']}")
