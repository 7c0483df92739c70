"""``train`` (original model or retrain reference) and ``make-demo-models`` (shipped assets)."""

from __future__ import annotations

import argparse
import sys
import time

from unlearn_core.cli.common import (
    ARCHITECTURE_NAMES, BUILTIN_NAMES, add_dataset_argument, add_device_argument, add_json_flag, print_json,
)
from unlearn_core.runs.jobs import add_run_id_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train an original model, or the retrain reference with --retrain")
    add_dataset_argument(train)
    train.add_argument("--retrain", action="store_true",
                       help="train on the remain set only (the gold-standard reference); needs --forget")
    train.add_argument("--forget", metavar="CRITERIA", help="forget criteria (with --retrain)")
    # Defaults mirror TrainConfig (checked by a test) without importing torch here.
    train.add_argument("--arch", choices=ARCHITECTURE_NAMES, default="small_cnn")
    train.add_argument("--epochs", type=int, default=8)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=0.05)
    train.add_argument("--seed", type=int, default=0)
    add_device_argument(train)
    train.add_argument("--out", metavar="FILE", help="also write the model here (.safetensors)")
    train.add_argument("--label", default="", help="a name for this run in the registry")
    train.add_argument("--no-record", action="store_true", help="do not record a run in the workspace")
    add_json_flag(train)
    add_run_id_argument(train)
    train.set_defaults(func=cmd_train)

    demo = subparsers.add_parser(
        "make-demo-models",
        help="retrain the demo models of the built-in sets (into the workspace; --out assets refreshes the shipped ones)")
    demo.add_argument("--only", nargs="*", choices=BUILTIN_NAMES, metavar="NAME",
                      help=f"only these built-in sets ({', '.join(BUILTIN_NAMES)})")
    demo.add_argument("--out", metavar="DIR",
                      help="folder to write NAME_small_cnn.safetensors into (default: the workspace's demo_models/, "
                           "which the dashboard and the command line then prefer over the shipped model)")
    add_run_id_argument(demo)
    demo.set_defaults(func=cmd_make_demo_models)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (recording a run unless --no-record) and report test accuracy."""
    if args.no_record:
        from unlearn_core.progress import StderrReporter

        summary = _train(args, StderrReporter(), None, None)
    else:
        from unlearn_core.runs.jobs import command_run
        from unlearn_core.runs.registry import Workspace, cli_command

        argv = [a for a in args.argv if a not in ("--run-id", args.run_id)]
        kind = "retrain" if args.retrain else "train"
        with command_run(Workspace(), args.run_id, kind=kind, command=cli_command(argv), dataset=args.dataset,
                         criteria_text=args.forget or "", method=kind, seed=args.seed, label=args.label) as context:
            summary = _train(args, context.reporter, context.should_stop, context)
            summary["run_id"] = context.run_id
    if args.json:
        print_json(summary)
    else:
        print(f"test accuracy {summary['test_acc']:.3f} after {summary['seconds']:.1f} s"
              + (f"; saved to {args.out}" if args.out else "")
              + (f"; recorded as run {summary['run_id']}" if summary.get("run_id") else ""))
    return 0


def _train(args, on_progress, should_stop, context) -> dict:
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.errors import UserError
    from unlearn_core.models.weights import save_model, state_hash
    from unlearn_core.training import TrainConfig, train_model

    data = load_dataset(args.dataset)
    config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, device=args.device)
    indices = data.train_indices
    criteria = None
    if args.retrain:
        if not args.forget:
            raise UserError("--retrain needs --forget CRITERIA: the retrain reference learns the remain set only.")
        from unlearn_core.data.criteria import ForgetCriteria, split_sets

        criteria = ForgetCriteria.parse(args.forget)
        indices = split_sets(data, criteria).remain_train
    result = train_model(data, indices, config, on_progress=on_progress, should_stop=should_stop,
                         phase="retrain" if args.retrain else "train")
    provenance = {"data_fingerprint": data.fingerprint(), "dataset": data.name, "recipe": config.recipe_key(),
                  "forget": args.forget or ""}
    if args.out:
        save_model(result.model, args.out, provenance)
    summary = {"dataset": data.name, "n_train": int(len(indices)), "test_acc": result.test_acc,
               "seconds": result.seconds, "out": args.out, "config": config.to_dict()}
    if context is not None:
        from unlearn_core.cli.unlearn_cmd import model_metadata
        from unlearn_core.runs.registry import recipe_hash

        context.workspace.save_weights(context.run_id, result.model.state_dict(), model_metadata(
            result.model, data.fingerprint(), "", "retrain" if args.retrain else "train", args.forget or ""))
        context.workspace.save_json(context.run_id, "history.json", result.history)
        context.finish(metrics={"test_acc": result.test_acc, "seconds_train": result.seconds,
                                "history": result.history},
                       dataset_fingerprint=data.fingerprint(), config=config.to_dict(),
                       recipe_hash=recipe_hash(config.recipe_key()), criteria=criteria.to_dict() if criteria else {},
                       device=str(next(result.model.parameters()).device))
        summary["model_hash"] = state_hash(result.model)
    return summary


def cmd_make_demo_models(args: argparse.Namespace) -> int:
    """Train each demo model; as a dashboard job (``--run-id``) with progress and cancel."""
    from unlearn_core.assets import DEMO_RECIPES

    names = args.only or list(DEMO_RECIPES)
    if args.run_id is None:
        from unlearn_core.progress import StderrReporter

        for name in names:
            _make_demo_model(name, args.out, StderrReporter(), None)
        return 0
    from unlearn_core.runs.jobs import command_run
    from unlearn_core.runs.registry import Workspace

    with command_run(Workspace(), args.run_id, kind="train", command=[]) as context:
        results = {name: _make_demo_model(name, args.out, context.reporter, context.should_stop)
                   for name in names}
        context.finish(metrics={"test_acc": results})
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
