"""``train`` (original model or retrain reference) and ``make-demo-models`` (shipped assets)."""

from __future__ import annotations

import argparse
import sys
import time

from unlearn_core.cli.common import add_json_flag, print_json
from unlearn_core.runs.jobs import add_run_id_argument
from unlearn_core.runs.requests import DemoModelsRequest, TrainRequest


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train an original model, or the retrain reference with --retrain")
    TrainRequest.add_arguments(train)
    train.add_argument("--no-record", action="store_true", help="do not record a run in the workspace")
    add_json_flag(train)
    add_run_id_argument(train)
    train.set_defaults(func=cmd_train)

    demo = subparsers.add_parser(
        "make-demo-models",
        help="retrain the demo models of the built-in sets (into the workspace; --out assets refreshes the shipped ones)")
    DemoModelsRequest.add_arguments(demo)
    add_run_id_argument(demo)
    demo.set_defaults(func=cmd_make_demo_models)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (recording a run unless --no-record) and report test accuracy."""
    from unlearn_core.runs import workflows
    from unlearn_core.runs.registry import Workspace

    request = TrainRequest.from_args(args)
    if args.run_id is None:  # before recording anything (a job's run records its own failure)
        from unlearn_core.preflight import check_train

        check_train(dataset=request.dataset, retrain=request.retrain, forget=request.forget or None, out=request.out,
                    config=workflows.train_config(request))
    summary = workflows.train(request, None if args.no_record else Workspace(), args.run_id)
    if args.json:
        print_json(summary)
    else:
        print(f"test accuracy {summary['test_acc']:.3f} after {summary['seconds']:.1f} s"
              + (f"; saved to {request.out}" if request.out else "")
              + (f"; recorded as run {summary['run_id']}" if summary.get("run_id") else ""))
    return 0


def cmd_make_demo_models(args: argparse.Namespace) -> int:
    """Train each demo model; as a dashboard job (``--run-id``) with progress and cancel."""
    from unlearn_core.assets import DEMO_RECIPES

    request = DemoModelsRequest.from_args(args)
    names = list(request.only) or list(DEMO_RECIPES)
    if args.run_id is None:
        from unlearn_core.progress import StderrReporter

        for name in names:
            _make_demo_model(name, request.out, StderrReporter(), None)
        return 0
    from unlearn_core.runs.jobs import command_run
    from unlearn_core.runs.registry import Workspace
    from unlearn_core.runs.result import RunResult

    with command_run(Workspace(), args.run_id, kind="train", command=[]) as context:
        results = {name: _make_demo_model(name, request.out, context.reporter, context.should_stop)
                   for name in names}
        context.finish(metrics=RunResult(blocks={name: {"test_acc": acc} for name, acc in results.items()}).to_dict())
    return 0


def _make_demo_model(name: str, out: str | None, on_progress, should_stop) -> float:
    from unlearn_core.assets import make_demo_model
    from unlearn_core.data.builtin import load_builtin

    started = time.perf_counter()
    data = load_builtin(name)
    generated = time.perf_counter() - started
    result, path = make_demo_model(data, out, on_progress=on_progress, should_stop=should_stop)
    print(f"{name}: generated in {generated:.1f} s, trained in {result.seconds:.1f} s, "
          f"test accuracy {result.test_acc:.3f} -> {path}", file=sys.stdout)
    return result.test_acc
