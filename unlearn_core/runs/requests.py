"""The typed run contract: what a train, unlearn or compose run is asked to do.

Why: a run crosses a process boundary as a command line (the dashboard starts the CLI in a
subprocess, the registry records the command that reproduces it). Each request class is the
*only* code that writes that command line (:meth:`to_argv`) and reads it back
(:meth:`add_arguments` + :meth:`from_args`, or :meth:`from_argv` for a recorded command). The
dashboard builds a request, never argv; the CLI parses argv into a request and hands it to
:mod:`unlearn_core.runs.workflows`.

Torch-free on purpose: building the command-line parser must stay fast (``runs list``, job
start-up), so names used for choices are plain constants checked against the library by tests.

Example::

    request = UnlearnRequest(dataset="oculoplastic", forget='vpf_mm >= 12', retrain=True)
    request.to_argv()      # ['unlearn', '--dataset', 'oculoplastic', '--forget', ...]
    UnlearnRequest.from_argv(request.to_argv()) == request   # True
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any, ClassVar

from unlearn_core.device import DEVICE_CHOICES
from unlearn_core.errors import UserError
from unlearn_core.runs.recipe import EXAMPLE as RECIPE_EXAMPLE
from unlearn_core.runs.recipe import Recipe
from unlearn_core.runs.registry import cli_command

#: Built-in data sets and architectures, for help and choices (checked against the library by a
#: test) so that building the parser does not import torch.
BUILTIN_NAMES = ("oculoplastic", "fundus", "digits")
ARCHITECTURE_NAMES = ("small_cnn", "allcnn", "resnet18", "resnet50")
#: Composition strategies and how many input runs each takes (min, max).
STRATEGY_RUNS = {"interpolate": (2, 2), "head_swap": (2, 2), "blockwise": (1, 8), "task_sum": (1, 8)}
STRATEGIES = tuple(STRATEGY_RUNS)


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, metavar="NAME_OR_PATH",
        help=f"built-in set ({', '.join(BUILTIN_NAMES)}) or a .npz / .zip / image folder with a CSV",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where to compute (auto: CUDA, then Apple MPS, else CPU)")


def parse_set_arguments(pairs: list[str] | None) -> dict[str, str]:
    """``["epochs=5", "gamma=0.1"]`` → ``{"epochs": "5", "gamma": "0.1"}`` (typed later)."""
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {pair!r}.")
        result[key.strip()] = value.strip()
    return result


def parse_blocks(pairs: list[str]) -> dict[str, int]:
    """``["head=1"]`` → ``{"head": 1}``: which input run (0-based) each block comes from."""
    choice = {}
    for pair in pairs:
        block, sep, run = pair.partition("=")
        if not sep or not run.strip().isdigit():
            raise UserError(f"--blocks expects BLOCK=RUN_NUMBER (e.g. head=1), got {pair!r}.")
        choice[block.strip()] = int(run)
    return choice


def _cli_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _seed_device_label(seed: int, device: str, label: str) -> list[str]:
    """The options every request ends with (defaults left out, so commands stay short)."""
    argv = ["--seed", str(seed)]
    if device != "auto":
        argv += ["--device", device]
    return argv + (["--label", label] if label else [])


def _numbers(values: tuple[float, ...]) -> list[str]:
    """Shortest exact text of each number (``1`` rather than ``1.0``)."""
    return [text[:-2] if (text := repr(float(v))).endswith(".0") else text for v in values]


class _RaisingParser(argparse.ArgumentParser):
    """Reads a recorded command: a bad one is a UserError, not an exit of the process."""

    def error(self, message: str):
        raise UserError(f"Cannot read the command `{self.prog}`: {message}.")


class _Request:
    """What every request shares: the subcommand, its parser, and the command text."""

    command: ClassVar[str]

    def to_argv(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def from_args(cls, args: argparse.Namespace):  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def from_argv(cls, argv: list[str]):
        """Read a command line written by :meth:`to_argv` (or typed) back into a request."""
        if not argv or argv[0] != cls.command:
            raise UserError(f"Not a `{cls.command}` command: {shlex.join(argv) or '(empty)'}.")
        parser = _RaisingParser(prog=f"python -m unlearn_core {cls.command}", add_help=False)
        cls.add_arguments(parser)
        args, _ = parser.parse_known_args(argv[1:])
        return cls.from_args(args)

    @property
    def command_text(self) -> str:
        """The command a user types to do the same: ``python -m unlearn_core ...``, or
        ``torchrun --nproc_per_node N -m unlearn_core ...`` for a request with ``processes`` above 1."""
        processes = getattr(self, "processes", 1)
        if processes > 1:
            return shlex.join(["torchrun", "--nproc_per_node", str(processes), "-m", "unlearn_core",
                               *self.to_argv()])
        return shlex.join(cli_command(self.to_argv()))


@dataclass(frozen=True)
class UnlearnRequest(_Request):
    """What to forget, from which model, how, and whether to also compute the retrain reference.

    ``weights``/``arch`` name the model the run starts from (``None``: the shipped demo model
    of a built-in set); the registry stores them as ``base_weights``/``base_arch``.

    ``processes`` is how the run is executed, not what it computes: above 1 the background job
    starts the same command under torchrun with that many data-parallel processes (one per
    GPU on a CUDA machine). It is recorded as the run's ``processes`` field, not in the
    command's arguments (torchrun's own ``--nproc_per_node`` carries it on a command line).
    """

    dataset: str
    forget: str
    method: str = "psg"
    overrides: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    retrain: bool = False
    seed: int = 0
    device: str = "auto"
    weights: str | None = None
    arch: str | None = None
    label: str = ""
    recipe: Recipe | None = None
    processes: int = 1

    command: ClassVar[str] = "unlearn"
    kind: ClassVar[str] = "unlearn"

    def __post_init__(self) -> None:
        # Settings are kept as the text the command line carries (the method types them when
        # it builds its config), so a request equals the one read back from its command.
        object.__setattr__(self, "overrides", {str(k): _cli_value(v) for k, v in self.overrides.items()})

    def to_argv(self) -> list[str]:
        argv = [self.command, "--dataset", self.dataset]
        if self.weights:
            argv += ["--weights", self.weights]
        if self.arch:
            argv += ["--arch", self.arch]
        argv += ["--forget", self.forget, "--method", self.method]
        if self.preset:
            argv += ["--preset", self.preset]
        for name, value in self.overrides.items():
            argv += ["--set", f"{name}={_cli_value(value)}"]
        if self.retrain:
            argv.append("--retrain")
        if self.recipe is not None:
            argv += ["--recipe", self.recipe.to_text()]
        return argv + _seed_device_label(self.seed, self.device, self.label)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_dataset_argument(parser)
        parser.add_argument("--forget", required=True, metavar="CRITERIA", help='e.g. \'device == "Cirrus 800 FA"\'')
        parser.add_argument("--method", default="psg", help="method name (see `methods`); default psg")
        parser.add_argument("--preset", help="a named preset of the method (e.g. boundary_shrink for psg)")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override one setting (repeatable), e.g. --set epochs=5")
        parser.add_argument("--retrain", action="store_true",
                            help="also compute (or reuse) the retrain reference and the distance to it")
        parser.add_argument("--recipe", metavar="NAME=VALUE,...",
                            help="how the original model was trained, for the retrain reference "
                                 f"(e.g. \"{RECIPE_EXAMPLE}\"; unnamed settings take the train command's "
                                 "defaults). Needed with --retrain when --weights records no recipe; "
                                 "files written by `train --out` and demo models record their own")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--weights", metavar="FILE",
                            help="model weights (.safetensors, weights-only .pt or TorchScript); "
                                 "default: the shipped demo model of a built-in set")
        parser.add_argument("--arch", choices=ARCHITECTURE_NAMES, default=None,
                            help="architecture of --weights when the file does not say (default small_cnn)")
        add_device_argument(parser)
        parser.add_argument("--label", default="", help="a name for this run in the registry")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> UnlearnRequest:
        return cls(dataset=args.dataset, forget=args.forget, method=args.method,
                   overrides=parse_set_arguments(args.set), preset=args.preset, retrain=args.retrain,
                   seed=args.seed, device=args.device, weights=args.weights, arch=args.arch, label=args.label,
                   recipe=Recipe.parse(args.recipe) if args.recipe is not None else None)

    def record_fields(self) -> dict[str, Any]:
        """Registry fields known before the run starts."""
        return {"dataset": self.dataset, "criteria_text": self.forget, "method": self.method, "seed": self.seed,
                "label": self.label, "base_weights": self.weights or "", "base_arch": self.arch or "",
                "processes": self.processes}


@dataclass(frozen=True)
class TrainRequest(_Request):
    """Train an original model, or (``retrain``) the reference on the remain set of ``forget``.

    ``processes``: as :class:`UnlearnRequest`'s (a background job above 1 runs under torchrun).
    """

    dataset: str
    arch: str = "small_cnn"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    retrain: bool = False
    forget: str = ""
    out: str | None = None
    label: str = ""
    processes: int = 1

    command: ClassVar[str] = "train"

    @property
    def kind(self) -> str:
        return "retrain" if self.retrain else "train"

    def to_argv(self) -> list[str]:
        argv = [self.command, "--dataset", self.dataset]
        if self.retrain:
            argv += ["--retrain", "--forget", self.forget]
        argv += ["--arch", self.arch, "--epochs", str(self.epochs)]
        if self.batch_size != 64:
            argv += ["--batch-size", str(self.batch_size)]
        if self.lr != 0.05:
            argv += ["--lr", repr(self.lr)]
        if self.momentum != 0.9:
            argv += ["--momentum", repr(self.momentum)]
        if self.weight_decay != 5e-4:
            argv += ["--weight-decay", repr(self.weight_decay)]
        if self.out:
            argv += ["--out", self.out]
        return argv + _seed_device_label(self.seed, self.device, self.label)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_dataset_argument(parser)
        parser.add_argument("--retrain", action="store_true",
                            help="train on the remain set only (the gold-standard reference); needs --forget")
        parser.add_argument("--forget", metavar="CRITERIA", default="", help="forget criteria (with --retrain)")
        # Defaults mirror TrainConfig (checked by a test) without importing torch here.
        parser.add_argument("--arch", choices=ARCHITECTURE_NAMES, default="small_cnn")
        parser.add_argument("--epochs", type=int, default=8)
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--lr", type=float, default=0.05)
        parser.add_argument("--momentum", type=float, default=0.9)
        parser.add_argument("--weight-decay", type=float, default=5e-4)
        parser.add_argument("--seed", type=int, default=0)
        add_device_argument(parser)
        parser.add_argument("--out", metavar="FILE",
                            help="also write the model here (.safetensors; it records its training recipe)")
        parser.add_argument("--label", default="", help="a name for this run in the registry")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainRequest:
        request = cls(dataset=args.dataset, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                      device=args.device, retrain=args.retrain,
                      forget=args.forget or "", out=args.out, label=args.label)
        if request.retrain and not request.forget:
            raise UserError("--retrain needs --forget CRITERIA: the retrain reference learns the remain set only.")
        return request

    def record_fields(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "criteria_text": self.forget, "method": self.kind, "seed": self.seed,
                "label": self.label, "base_arch": self.arch, "processes": self.processes}


@dataclass(frozen=True)
class ComposeRequest(_Request):
    """Merge recorded runs into candidate models and score them; save one only when asked.

    Without ``select`` the run keeps every candidate's weights as its own artifacts and saves
    none as its model: the user picks one afterwards (:class:`SaveCandidateRequest`, no
    recomputation). ``select`` saves that candidate as this run's model in one go.
    ``recalibrate`` is off by default so that an interpolation's α = 0 and α = 1 are exactly
    the input runs (re-estimating BatchNorm statistics on kept images can undo forgetting
    that a method such as PSG keeps in them).
    """

    runs: tuple[str, ...]
    strategy: str = "interpolate"
    alphas: tuple[float, ...] | None = None
    scales: tuple[float, ...] | None = None
    blocks: dict[str, int] = field(default_factory=dict)
    repair_epochs: int = 0
    repair_head_only: bool = False
    recalibrate: bool = False
    select: str | None = None
    seed: int = 0
    label: str = ""

    command: ClassVar[str] = "compose"
    kind: ClassVar[str] = "compose"

    def to_argv(self) -> list[str]:
        argv = [self.command, "--runs", *self.runs, "--strategy", self.strategy]
        if self.alphas:
            argv += ["--alpha", *_numbers(self.alphas)]
        if self.scales:
            argv += ["--scale", *_numbers(self.scales)]
        if self.blocks:
            argv += ["--blocks", *(f"{block}={run}" for block, run in self.blocks.items())]
        if self.repair_epochs:
            argv += ["--repair-epochs", str(self.repair_epochs)]
        if self.repair_head_only:
            argv.append("--repair-head-only")
        if self.recalibrate:
            argv.append("--recalibrate")
        if self.select is not None:
            argv += ["--select", self.select]
        return argv + _seed_device_label(self.seed, "auto", self.label)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_ID",
                            help="runs to merge (same base model)")
        parser.add_argument("--strategy", choices=STRATEGIES, default="interpolate")
        parser.add_argument("--alpha", nargs="+", type=float, default=None,
                            help="interpolation weights of the second run (sweep), e.g. 0 0.25 0.5 0.75 1")
        parser.add_argument("--scale", nargs="+", type=float, default=None, help="task-vector scales (task_sum)")
        parser.add_argument("--blocks", nargs="+", default=[], metavar="BLOCK=RUN",
                            help="blockwise: which run (0-based) each block comes from, e.g. head=1")
        parser.add_argument("--repair-epochs", type=int, default=0, help="Adam fine-tuning epochs on D_r afterwards")
        parser.add_argument("--repair-head-only", action="store_true", help="repair only the classifier head")
        parser.add_argument("--recalibrate", action="store_true",
                            help="re-estimate BatchNorm statistics on the kept training images (off by default: "
                                 "it can undo forgetting kept in those statistics, e.g. PSG's)")
        parser.add_argument("--no-recalibrate", action="store_true",
                            help="keep BatchNorm statistics as merged (the default; kept for old commands)")
        parser.add_argument("--select", default=None, metavar="LABEL",
                            help="label of the candidate to save as this run's model (default: save none; "
                                 "every candidate is kept and `save-candidate` saves one later)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--label", default="", help="a name for the saved composition run")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ComposeRequest:
        return cls(runs=tuple(args.runs), strategy=args.strategy,
                   alphas=tuple(args.alpha) if args.alpha else None,
                   scales=tuple(args.scale) if args.scale else None, blocks=parse_blocks(args.blocks),
                   repair_epochs=args.repair_epochs, repair_head_only=args.repair_head_only,
                   recalibrate=bool(args.recalibrate) and not args.no_recalibrate, select=args.select,
                   seed=args.seed, label=args.label)

    def with_select(self, label: str) -> ComposeRequest:
        """The same composition, saving candidate ``label`` instead."""
        return dataclasses.replace(self, select=label)

    def record_fields(self) -> dict[str, Any]:
        return {"method": self.strategy, "seed": self.seed, "label": self.label, "parents": list(self.runs)}


@dataclass(frozen=True)
class SaveCandidateRequest(_Request):
    """Save candidate ``candidate`` (its label) of finished composition ``run`` as a new run.

    The composition kept every candidate's weights, so this copies the one picked (no
    recomputation) into a new ``compose`` run whose command is the composition's with
    ``--select``, which rebuilds the same model from scratch.
    """

    run: str
    candidate: str
    label: str = ""

    command: ClassVar[str] = "save-candidate"
    kind: ClassVar[str] = "compose"

    def to_argv(self) -> list[str]:
        return [self.command, self.run, self.candidate] + (["--label", self.label] if self.label else [])

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", metavar="RUN_ID", help="a finished composition run")
        parser.add_argument("candidate", metavar="LABEL", help="the candidate's label, e.g. 'α=0.5'")
        parser.add_argument("--label", default="", help="a name for the saved run")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SaveCandidateRequest:
        return cls(run=args.run, candidate=args.candidate, label=args.label)


@dataclass(frozen=True)
class DemoModelsRequest(_Request):
    """Retrain the demo models of built-in sets (``only``: these; empty: all) into ``out``
    (default: the workspace's ``demo_models/``, which then wins over the shipped model)."""

    only: tuple[str, ...] = ()
    out: str | None = None

    command: ClassVar[str] = "make-demo-models"
    kind: ClassVar[str] = "train"

    def to_argv(self) -> list[str]:
        argv = [self.command]
        if self.only:
            argv += ["--only", *self.only]
        return argv + (["--out", self.out] if self.out else [])

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--only", nargs="*", choices=BUILTIN_NAMES, metavar="NAME",
                            help=f"only these built-in sets ({', '.join(BUILTIN_NAMES)})")
        parser.add_argument("--out", metavar="DIR",
                            help="folder to write NAME_small_cnn.safetensors into (default: the workspace's "
                                 "demo_models/, which the dashboard and the command line then prefer over the "
                                 "shipped model)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoModelsRequest:
        return cls(only=tuple(args.only or ()), out=args.out)

    def record_fields(self) -> dict[str, Any]:
        names = ", ".join(self.only) or "every built-in set"
        return {"dataset": self.only[0] if len(self.only) == 1 else "", "method": "train",
                "label": f"demo model for {names}"}
