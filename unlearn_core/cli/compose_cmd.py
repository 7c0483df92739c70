"""``compose``: merge recorded runs (head swap, block-wise, interpolation sweep, task-vector sum)."""

from __future__ import annotations

import argparse

from unlearn_core.cli.common import add_json_flag, print_json, print_table

STRATEGIES = ("head_swap", "blockwise", "interpolate", "task_sum")


def register(subparsers: argparse._SubParsersAction) -> None:
    compose = subparsers.add_parser("compose", help="merge unlearning runs into candidate models and score them")
    compose.add_argument("--runs", nargs="+", required=True, metavar="RUN_ID", help="runs to merge (same base model)")
    compose.add_argument("--strategy", choices=STRATEGIES, default="interpolate")
    compose.add_argument("--alpha", nargs="+", type=float, default=None,
                         help="interpolation weights of the second run (sweep), e.g. 0 0.25 0.5 0.75 1")
    compose.add_argument("--scale", nargs="+", type=float, default=None, help="task-vector scales (task_sum)")
    compose.add_argument("--blocks", nargs="+", default=[], metavar="BLOCK=RUN",
                         help="blockwise: which run (0-based) each block comes from, e.g. head=1")
    compose.add_argument("--repair-epochs", type=int, default=0, help="Adam fine-tuning epochs on D_r afterwards")
    compose.add_argument("--repair-head-only", action="store_true", help="repair only the classifier head")
    compose.add_argument("--no-recalibrate", action="store_true", help="keep BatchNorm statistics as merged")
    compose.add_argument("--select", default=None,
                         help="label of the candidate to save (default: closest to retrain, else best R − F)")
    compose.add_argument("--seed", type=int, default=0)
    compose.add_argument("--label", default="", help="a name for the saved composition run")
    add_json_flag(compose)
    from unlearn_core.runs.jobs import add_run_id_argument

    add_run_id_argument(compose)
    compose.set_defaults(func=cmd_compose)


def parse_blocks(pairs: list[str]) -> dict[str, int]:
    from unlearn_core.errors import UserError

    choice = {}
    for pair in pairs:
        block, sep, run = pair.partition("=")
        if not sep or not run.strip().isdigit():
            raise UserError(f"--blocks expects BLOCK=RUN_NUMBER (e.g. head=1), got {pair!r}.")
        choice[block.strip()] = int(run)
    return choice


def cmd_compose(args: argparse.Namespace) -> int:
    from unlearn_core.compose import CompositionConfig
    from unlearn_core.runs.jobs import command_run
    from unlearn_core.runs.registry import Workspace, cli_command

    config = CompositionConfig(
        strategy=args.strategy, block_choice=parse_blocks(args.blocks), recalibrate_bn=not args.no_recalibrate,
        repair_epochs=args.repair_epochs, repair_head_only=args.repair_head_only, seed=args.seed,
        **({"alphas": tuple(args.alpha)} if args.alpha else {}),
        **({"scales": tuple(args.scale)} if args.scale else {}),
    )
    workspace = Workspace()
    argv = [a for a in args.argv if a not in ("--run-id", args.run_id)]
    with command_run(workspace, args.run_id, kind="compose", command=cli_command(argv), method=args.strategy,
                     config=config.to_dict(), seed=args.seed, label=args.label) as context:
        result = compose_runs(workspace, args.runs, config, args.select, context)
    if args.json:
        print_json(result)
    else:
        rows = [{"candidate": c["label"], "forget_test_acc": f"{c['metrics']['forget_test_acc']:.3f}",
                 "remain_test_acc": f"{c['metrics']['remain_test_acc']:.3f}",
                 "distance": "" if c.get("distance_to_retrain") is None else f"{c['distance_to_retrain']:.3f}"}
                for c in result["candidates"]]
        print_table(rows, ["candidate", "forget_test_acc", "remain_test_acc", "distance"])
        print(f"saved {result['chosen']!r} as run {result['run_id']}")
    return 0


def compose_runs(workspace, run_ids, config, select, context) -> dict:
    """Load the runs, build and score the candidates, save the chosen one as this run."""
    from unlearn_core.compose import compose_candidates, union_split
    from unlearn_core.evaluate import compare_blocks, evaluate_model
    from unlearn_core.errors import UserError

    records = [workspace.get(run_id) for run_id in run_ids]
    for record in records:
        if record.status != "done" or record.kind not in ("unlearn", "compose"):
            raise UserError(f"Run {record.id} is a {record.status} {record.kind} run; compose finished unlearning runs.")
    data, original = _load_base(records)
    models = [_load_run_model(workspace, record) for record in records]
    splits = [_load_split(data, record) for record in records]
    same_criteria = len({r.criteria_text for r in records}) == 1
    split = splits[0] if same_criteria else union_split(splits)
    context.update(dataset=records[0].dataset, dataset_fingerprint=records[0].dataset_fingerprint,
                   base_model_hash=records[0].base_model_hash, parents=list(run_ids),
                   criteria_text=" | ".join(dict.fromkeys(r.criteria_text for r in records)))
    candidates = compose_candidates(
        config, original, models, data, split, context.reporter, context.should_stop,
        forget_splits=None if same_criteria else splits, base_hashes=[r.base_model_hash for r in records],
        names=list(run_ids))
    original_block = evaluate_model(original, data, split, seed=config.seed)
    retrain_block = records[0].metrics.get("retrain") if same_criteria else None
    summaries = []
    for candidate in candidates:
        summary = candidate.summary()
        summary.update(compare_blocks(original_block, candidate.metrics, retrain_block))
        summaries.append(summary)
    chosen = _choose(summaries, select)
    model = next(c.model for c in candidates if c.label == chosen["label"])
    from unlearn_core.cli.unlearn_cmd import model_metadata

    workspace.save_weights(context.run_id, model.state_dict(), model_metadata(
        model, records[0].dataset_fingerprint, records[0].base_model_hash, f"compose:{config.strategy}",
        " | ".join(r.criteria_text for r in records)))
    report = {"original": original_block, "unlearned": chosen["metrics"], "candidates": summaries,
              "chosen": chosen["label"], "strategy": config.strategy, "config": config.to_dict(),
              "distance_to_retrain": chosen.get("distance_to_retrain"), "collapsed": chosen.get("collapsed"),
              "dataset": records[0].dataset, "criteria": [r.criteria_text for r in records]}
    if retrain_block is not None:
        report["retrain"] = retrain_block
    context.finish(metrics=report)
    report["run_id"] = context.run_id
    return report


def _choose(summaries: list[dict], select: str | None) -> dict:
    from unlearn_core.errors import UserError

    if select is not None:
        for summary in summaries:
            if summary["label"] == select:
                return summary
        raise UserError(f"No candidate {select!r}; candidates: {', '.join(s['label'] for s in summaries)}.")
    if all(s.get("distance_to_retrain") is not None for s in summaries):
        return min(summaries, key=lambda s: s["distance_to_retrain"])
    return max(summaries, key=lambda s: s["metrics"]["remain_test_acc"] - s["metrics"]["forget_test_acc"])


def _load_base(records):
    """The data set and the original model the runs started from (checked by hash)."""
    from unlearn_core.cli import build_parser
    from unlearn_core.cli.common import load_model_for
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.errors import UserError
    from unlearn_core.models.weights import state_hash
    from unlearn_core.runs.registry import command_argv

    first = records[0]
    for record in records[1:]:
        if record.dataset_fingerprint != first.dataset_fingerprint:
            raise UserError(f"Runs {first.id} and {record.id} used different data; compose runs on the same data set.")
    args = build_parser().parse_args(command_argv(first.command))
    data = load_dataset(first.dataset)
    if data.fingerprint() != first.dataset_fingerprint:
        raise UserError(f"The data set {first.dataset!r} has changed since run {first.id}; rerun it first.")
    original = load_model_for(data, getattr(args, "weights", None), getattr(args, "arch", None))
    if state_hash(original) != first.base_model_hash:
        raise UserError(f"The original model of run {first.id} is no longer available unchanged.")
    return data, original


def _load_run_model(workspace, record):
    import json

    from unlearn_core.models.architectures import ModelSpec, build_model
    from unlearn_core.models.weights import SPEC_KEY, load_state_into

    spec = ModelSpec.from_dict(json.loads(workspace.weights_metadata(record.id)[SPEC_KEY]))
    return load_state_into(build_model(spec), workspace.load_weights(record.id)).eval()


def _load_split(data, record):
    from unlearn_core.data.criteria import ForgetCriteria, split_sets

    return split_sets(data, ForgetCriteria.parse(record.criteria_text))
