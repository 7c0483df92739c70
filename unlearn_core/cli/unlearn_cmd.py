"""``methods`` (what can be run) and ``unlearn`` (run one method, record it, print JSON)."""

from __future__ import annotations

import argparse
import sys

from unlearn_core.cli.common import (
    add_dataset_argument, add_device_argument, add_json_flag, add_model_arguments, load_model_for, print_json,
    print_table,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    methods = subparsers.add_parser("methods", help="list every unlearning method and its settings")
    add_json_flag(methods)
    methods.set_defaults(func=cmd_methods)

    unlearn = subparsers.add_parser("unlearn", help="make the model forget the images matching --forget")
    add_dataset_argument(unlearn)
    unlearn.add_argument("--forget", required=True, metavar="CRITERIA", help='e.g. \'device == "Cirrus 800 FA"\'')
    unlearn.add_argument("--method", default="psg", help="method name (see `methods`); default psg")
    unlearn.add_argument("--preset", help="a named preset of the method (e.g. boundary_shrink for psg)")
    unlearn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one setting (repeatable), e.g. --set epochs=5")
    unlearn.add_argument("--retrain", action="store_true",
                         help="also compute (or reuse) the retrain reference and the distance to it")
    unlearn.add_argument("--seed", type=int, default=0)
    add_model_arguments(unlearn)
    add_device_argument(unlearn)
    unlearn.add_argument("--label", default="", help="a name for this run in the registry")
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
    from unlearn_core.methods.base import parse_set_arguments
    from unlearn_core.pipeline import UnlearnRequest

    request = UnlearnRequest(forget=args.forget, method=args.method, overrides=parse_set_arguments(args.set),
                             preset=args.preset, retrain=args.retrain, seed=args.seed, device=args.device)
    if args.detach:
        return _detach(args)
    if args.no_record:
        from unlearn_core.progress import StderrReporter

        report = _execute(args, request, StderrReporter(), None, None)
    else:
        report = _execute_recorded(args, request)
    if args.json:
        print_json(report)
    else:
        _print_summary(report)
    return 0


def _detach(args: argparse.Namespace) -> int:
    from unlearn_core.runs.jobs import submit
    from unlearn_core.runs.registry import Workspace

    argv = [a for a in args.argv if a != "--detach"]
    record = submit(Workspace(), argv, kind="unlearn", dataset=args.dataset, criteria_text=args.forget,
                    method=args.method, seed=args.seed, label=args.label)
    print(record.id)
    return 0


def _execute(args, request, on_progress, should_stop, context) -> dict:
    """Load, unlearn (reusing a recorded retrain reference when possible), score."""
    from unlearn_core.data.catalog import load_dataset

    data = load_dataset(args.dataset)
    model = load_model_for(data, args.weights, args.arch)
    retrain_model = retrain_seconds = None
    retrain_run = None
    if request.retrain and context is not None:
        retrain_model, retrain_seconds, retrain_run = _reuse_or_train_retrain(
            context.workspace, data, model, request, on_progress, should_stop)
    from unlearn_core.pipeline import run_unlearning

    outcome = run_unlearning(data, model, request, on_progress=on_progress, should_stop=should_stop,
                             retrain_model=retrain_model, retrain_seconds=retrain_seconds)
    report = outcome.report
    if context is not None:
        workspace = context.workspace
        workspace.save_weights(context.run_id, outcome.unlearned.state_dict(), model_metadata(
            outcome.unlearned, report["dataset_fingerprint"], report["base_model_hash"], report["method"],
            report["criteria"]))
        workspace.save_json(context.run_id, "split.json", {k: v.tolist() for k, v in vars(outcome.split).items()})
        workspace.save_json(context.run_id, "history.json", report["history"])
        if retrain_run is not None:
            report["retrain_run"] = retrain_run["id"]
            report["retrain_reused"] = retrain_run["reused"]
        context.finish(metrics=report, dataset_fingerprint=report["dataset_fingerprint"],
                       base_model_hash=report["base_model_hash"], criteria=outcome.criteria.to_dict(),
                       criteria_text=outcome.criteria.to_text(), config=report["config"],
                       device=str(next(outcome.unlearned.parameters()).device),
                       parents=[retrain_run["id"]] if retrain_run else [])
    return report


def model_metadata(model, data_fingerprint: str, base_model_hash: str, method: str, criteria: str) -> dict[str, str]:
    """Provenance stored in a run's safetensors header, so the file explains itself."""
    import json

    from unlearn_core.models.weights import SPEC_KEY

    return {SPEC_KEY: json.dumps(model.spec.to_dict()), "data_fingerprint": data_fingerprint,
            "base_model_hash": base_model_hash, "method": method, "criteria": criteria}


def _reuse_or_train_retrain(workspace, data, model, request, on_progress, should_stop):
    """A recorded retrain reference for the same data, criteria, seed and recipe, or a new one."""
    from unlearn_core.data.criteria import ForgetCriteria, split_sets
    from unlearn_core.evaluate import evaluate_model
    from unlearn_core.models.architectures import build_model
    from unlearn_core.models.weights import load_state_into, state_hash
    from unlearn_core.pipeline import retrain_recipe, train_retrain
    from unlearn_core.runs.registry import cli_command, recipe_hash

    criteria = ForgetCriteria.parse(request.forget)
    recipe = retrain_recipe(data, model, request.seed, request.device)
    key = recipe_hash(recipe.recipe_key())
    found = workspace.find_reusable("retrain", dataset_fingerprint=data.fingerprint(),
                                    criteria_text=criteria.to_text(), seed=request.seed, recipe_hash=key)
    if found is not None:
        retrained = load_state_into(build_model(model.spec), workspace.load_weights(found.id)).eval()
        return retrained, found.metrics.get("seconds_retrain"), {"id": found.id, "reused": True}
    split = split_sets(data, criteria)
    retrained, seconds = train_retrain(data, split, recipe, on_progress, should_stop)
    record = workspace.create_run(
        "retrain", status="running", dataset=data.name, dataset_fingerprint=data.fingerprint(),
        criteria_text=criteria.to_text(), criteria=criteria.to_dict(), method="retrain",
        config=recipe.to_dict(), recipe_hash=key, seed=request.seed,
        command=cli_command(["train", "--dataset", data.name, "--retrain", "--forget", criteria.to_text(),
                             "--arch", recipe.arch, "--epochs", str(recipe.epochs), "--seed", str(request.seed)]),
    )
    workspace.save_weights(record.id, retrained.state_dict(), model_metadata(
        retrained, data.fingerprint(), state_hash(model), "retrain", criteria.to_text()))
    workspace.set_status(record.id, "done", metrics={"retrain": evaluate_model(retrained, data, split),
                                                     "seconds_retrain": seconds})
    return retrained, seconds, {"id": record.id, "reused": False}


def _execute_recorded(args, request) -> dict:
    from unlearn_core.runs.jobs import command_run
    from unlearn_core.runs.registry import Workspace, cli_command

    workspace = Workspace()
    argv = [a for a in args.argv if a != "--run-id" and a != args.run_id]
    with command_run(workspace, args.run_id, kind="unlearn", command=cli_command(argv), dataset=args.dataset,
                     criteria_text=args.forget, method=args.method, seed=args.seed, label=args.label) as context:
        report = _execute(args, request, context.reporter, context.should_stop, context)
        report["run_id"] = context.run_id
    return report


def _print_summary(report: dict) -> None:
    rows = []
    for name in ("original", "unlearned", "retrain"):
        if name in report:
            block = report[name]
            rows.append({"model": name, **{k: f"{block[k]:.3f}" for k in (
                "forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc", "mia_membership_auc")}})
    print(report["criteria_description"])
    print_table(rows, ["model", "forget_train_acc", "remain_train_acc", "forget_test_acc", "remain_test_acc",
                       "mia_membership_auc"])
    if report.get("distance_to_retrain") is not None:
        print(f"distance to retrain {report['distance_to_retrain']:.3f}")
    print(f"unlearning took {report['seconds_unlearn']:.1f} s" + (
        f" ({report['time_pct_of_retrain']:.1f} % of retraining)" if report.get("time_pct_of_retrain") else ""))
    if report.get("collapsed"):
        print("WARNING: remain accuracy dropped by more than 10 points: this run collapsed.", file=sys.stderr)
    if report.get("run_id"):
        print(f"recorded as run {report['run_id']}")
