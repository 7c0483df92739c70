"""``train`` (original model or retrain reference) and ``make-demo-models`` (shipped assets)."""

from __future__ import annotations

import argparse

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

    from unlearn_core.distributed import world

    request = TrainRequest.from_args(args)
    main_rank = world().is_main  # under torchrun only rank 0 records and writes
    if args.run_id is None:  # before recording anything (a job's run records its own failure)
        from unlearn_core.preflight import check_train

        check_train(dataset=request.dataset, retrain=request.retrain, forget=request.forget or None, out=request.out,
                    config=workflows.train_config(request))
    summary = workflows.train(request, None if args.no_record or not main_rank else Workspace(), args.run_id)
    if args.json:
        print_json(summary)
    else:
        print(f"test accuracy {summary['test_acc']:.3f} after {summary['seconds']:.1f} s"
              + (f"; saved to {request.out}" if request.out else "")
              + (f"; recorded as run {summary['run_id']}" if summary.get("run_id") else ""))
    return 0


def cmd_make_demo_models(args: argparse.Namespace) -> int:
    """Retrain the demo models; as a dashboard job (``--run-id``) with progress and cancel."""
    from unlearn_core.runs import workflows

    for made in workflows.make_demo_models(DemoModelsRequest.from_args(args), run_id=args.run_id):
        print(f"{made['name']}: generated in {made['generated_seconds']:.1f} s, trained in "
              f"{made['train_seconds']:.1f} s, test accuracy {made['test_acc']:.3f} -> {made['path']}")
    return 0
