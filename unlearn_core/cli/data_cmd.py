"""``datasets`` and ``split``: what data there is and what a forget criterion selects."""

from __future__ import annotations

import argparse

from unlearn_core.cli.common import add_json_flag, print_json, print_table
from unlearn_core.runs.requests import add_dataset_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    datasets = subparsers.add_parser("datasets", help="list the built-in data sets")
    add_json_flag(datasets)
    datasets.set_defaults(func=cmd_datasets)

    split = subparsers.add_parser("split", help="sizes of D_f / D_r / T_f / T_r for a forget criterion")
    add_dataset_argument(split)
    split.add_argument("--forget", required=True, metavar="CRITERIA",
                       help='e.g. \'vpf_mm >= 12 and label == "thyroid eye disease"\'')
    split.add_argument("--per-class", action="store_true", help="also print counts per class")
    add_json_flag(split)
    split.set_defaults(func=cmd_split)


def cmd_datasets(args: argparse.Namespace) -> int:
    from unlearn_core.data.builtin import BUILTIN_SETS, load_builtin
    from unlearn_core.data.catalog import describe_dataset

    summaries = []
    for name, builtin in BUILTIN_SETS.items():
        summary = describe_dataset(load_builtin(name))
        summary.update(title=builtin.title, demo_forget=builtin.demo_forget)
        summaries.append(summary)
    if args.json:
        print_json(summaries)
        return 0
    rows = [{"name": s["name"], "train": s["n_train"], "test": s["n_test"],
             "classes": ", ".join(s["classes"]), "metadata": ", ".join(s["metadata_columns"]),
             "demo forget": s["demo_forget"]} for s in summaries]
    print_table(rows, ["name", "train", "test", "classes", "metadata", "demo forget"])
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from unlearn_core.data.catalog import load_dataset
    from unlearn_core.data.criteria import ForgetCriteria, split_sets

    data = load_dataset(args.dataset)
    criteria = ForgetCriteria.parse(args.forget)
    split = split_sets(data, criteria)
    sizes = {key: int(value) for key, value in split.sizes().items()}
    if args.json:
        result = dict(sizes, criteria=criteria.to_text(), description=criteria.describe(data.classes))
        if args.per_class:
            result["per_class"] = split.per_class(data).to_dict(orient="index")
        print_json(result)
        return 0
    print(f"{criteria.describe(data.classes)}")
    print_table([sizes], list(sizes))
    if args.per_class:
        print(split.per_class(data).to_string())
    return 0
