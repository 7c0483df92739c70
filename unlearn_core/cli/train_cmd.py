"""``train`` (original model or retrain reference) and ``make-demo-models`` (shipped assets)."""

from __future__ import annotations

import argparse
import sys
import time

from unlearn_core.cli.common import (
    ARCHITECTURE_NAMES, add_dataset_argument, add_device_argument, add_json_flag, print_json,
)


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
    train.add_argument("--out", metavar="FILE", help="write the model here (.safetensors)")
    add_json_flag(train)
    train.set_defaults(func=cmd_train)

    demo = subparsers.add_parser("make-demo-models", help="(re)train the shipped demo models in assets/")
    demo.add_argument("--only", nargs="*", help="only these built-in sets")
    demo.set_defaults(func=cmd_make_demo_models)


def cmd_train(args: argparse.Namespace) -> int:
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.errors import UserError
    from unlearn_core.models.weights import save_model
    from unlearn_core.progress import StderrReporter
    from unlearn_core.training import TrainConfig, train_model

    data = load_dataset(args.dataset)
    config = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, device=args.device)
    indices = data.train_indices
    if args.retrain:
        if not args.forget:
            raise UserError("--retrain needs --forget CRITERIA: the retrain reference learns the remain set only.")
        from unlearn_core.data.criteria import ForgetCriteria, split_sets

        indices = split_sets(data, ForgetCriteria.parse(args.forget)).remain_train
    result = train_model(data, indices, config, on_progress=StderrReporter(),
                         phase="retrain" if args.retrain else "train")
    if args.out:
        save_model(result.model, args.out, {"data_fingerprint": data.fingerprint(), "dataset": data.name,
                                            "recipe": config.recipe_key(), "forget": args.forget or ""})
    summary = {"dataset": data.name, "n_train": int(len(indices)), "test_acc": result.test_acc,
               "seconds": result.seconds, "out": args.out, "config": config.to_dict()}
    if args.json:
        print_json(summary)
    else:
        print(f"test accuracy {result.test_acc:.3f} after {result.seconds:.1f} s"
              + (f"; saved to {args.out}" if args.out else ""))
    return 0


def cmd_make_demo_models(args: argparse.Namespace) -> int:
    from unlearn_core.assets import DEMO_RECIPES, demo_model_path, make_demo_model
    from unlearn_core.data.builtin import load_builtin
    from unlearn_core.progress import StderrReporter

    for name in args.only or list(DEMO_RECIPES):
        started = time.perf_counter()
        data = load_builtin(name)
        generated = time.perf_counter() - started
        result = make_demo_model(data, on_progress=StderrReporter())
        print(f"{name}: generated in {generated:.1f} s, trained in {result.seconds:.1f} s, "
              f"test accuracy {result.test_acc:.3f} -> {demo_model_path(name)}", file=sys.stdout)
    return 0
