"""``datasets``, ``split`` and ``import``: what data there is, what a forget criterion selects,
and writing a large set to disk once so later runs read its pixels as needed."""

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

    imp = subparsers.add_parser(
        "import", help="write a folder/ZIP of images (or a .npz) to disk once, read lazily by every later run",
        description="Decode SOURCE once into DIR (a uint8 pixel file, metadata.csv and header.json); "
                    "then use --dataset DIR anywhere. Pixels stay on disk and are read per batch, so the set "
                    "may be larger than memory. Every image is checked first: a missing or damaged file is "
                    "named and nothing is written.")
    imp.add_argument("source", metavar="SOURCE", help="a folder or ZIP of images with a CSV, or a .npz")
    imp.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder to write")
    imp.add_argument("--csv", help="the CSV, when it is not inside SOURCE")
    imp.add_argument("--file-column", default="file", help="CSV column with the image file names")
    imp.add_argument("--label-column", default="label", help="CSV column with the classes")
    imp.add_argument("--image-size", type=int, help="resize every image to this square size (default: native)")
    imp.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (default: 1 if every image is grey)")
    imp.add_argument("--test-fraction", type=float, default=0.2, help="test share when the CSV has no split")
    imp.add_argument("--seed", type=int, default=0, help="seed of the automatic split")
    imp.add_argument("--name", help="the set's name (default: the folder name)")
    imp.add_argument("--in-place", action="store_true",
                     help="keep the images where they are and decode them when read (no pixel file)")
    add_json_flag(imp)
    imp.set_defaults(func=cmd_import)


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


def cmd_import(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from unlearn_core.data.catalog import describe_dataset
    from unlearn_core.data.image_dir import import_images
    from unlearn_core.data.loaders import load_image_folder, load_npz
    from unlearn_core.errors import UserError
    from unlearn_core.progress import StderrReporter

    source, out = Path(args.source), Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # before the (long) check of every image
        raise UserError(f"{str(out)!r} already exists and is not an empty folder; choose a new folder.")
    name = args.name or out.name
    if source.suffix.lower() == ".npz":
        if args.in_place:
            raise UserError("--in-place needs a folder or ZIP of image files; a .npz is imported as pixels.")
        data = load_npz(source, name=name, image_size=args.image_size)
    else:  # lazy: checked image by image (in worker processes), never all in memory
        data = load_image_folder(source, args.csv, file_column=args.file_column, label_column=args.label_column,
                                 image_size=args.image_size, channels=args.channels,
                                 test_fraction=args.test_fraction, seed=args.seed, name=name, lazy=True)
    reporter = StderrReporter()
    written = import_images(data, out, in_place=args.in_place, on_progress=reporter)
    reporter.flush()
    header = json.loads((written / "header.json").read_text(encoding="utf-8"))  # hashed while writing
    summary = dict(describe_dataset(data), path=str(written), fingerprint=header["fingerprint"],
                   in_place=bool(args.in_place))
    if args.json:
        print_json(summary)
    else:
        print(f"Imported {summary['n_train'] + summary['n_test']:,} images to {written}; use --dataset {written}")
    return 0
