"""Command line: one module per subcommand group, each exposing ``register(subparsers)``.

Why a module per group: subcommands grow independently (data, training, unlearning, runs,
composition, benchmark) and stay small and importable for tests. Each ``register`` adds its
parsers and sets ``func`` (``args -> int`` exit code) with ``parser.set_defaults(func=...)``.

``UserError`` is printed as one plain line on stderr with exit code 2; nothing else is caught,
so real bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from unlearn_core.errors import UserError

#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = (
    "unlearn_core.cli.data_cmd",
    "unlearn_core.cli.train_cmd",
    "unlearn_core.cli.unlearn_cmd",
    "unlearn_core.cli.compose_cmd",
    "unlearn_core.cli.runs_cmd",
    "unlearn_core.cli.bench_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unlearn_core",
        description="Unlearning Studio: make an image classifier forget a chosen group of samples.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what was typed, so a run can record the command that reproduces it
    from unlearn_core import distributed

    try:
        if distributed.under_torchrun():  # one of several processes: join them (gloo or nccl)
            _join_torchrun(args)
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


def _join_torchrun(args: argparse.Namespace) -> None:
    """Join the run's process group; only rank 0 prints results (the others' stdout is dropped)."""
    import os

    from unlearn_core import distributed

    if args.command not in distributed.TORCHRUN_COMMANDS:
        raise UserError(f"`{args.command}` does not run under torchrun; run it as `python -m unlearn_core "
                        f"{args.command} ...` (torchrun runs {', '.join(distributed.TORCHRUN_COMMANDS)}).")
    if getattr(args, "detach", False):
        raise UserError("--detach cannot be combined with torchrun: start the run in the background from the "
                        "dashboard (processes / GPUs), or run torchrun itself in the background.")
    if not distributed.world(cpu=getattr(args, "device", "auto") == "cpu").is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
