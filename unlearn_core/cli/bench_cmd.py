"""``bench``: the method table on the tuning / held-out scenarios, or the GPU-scale timing with ``--large``."""

from __future__ import annotations

import argparse
import sys

from unlearn_core.cli.common import add_json_flag, print_json
from unlearn_core.runs.requests import add_device_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="benchmark methods on their defaults against retraining (writes docs/benchmark*)")
    bench.add_argument("--part", choices=("tuning", "held-out", "all"), default="all",
                       help="which scenarios: the tuning part, the held-out part, or both (default)")
    bench.add_argument("--scenarios", nargs="*", help="subset of scenarios by name (default: all of --part)")
    bench.add_argument("--methods", nargs="*",
                       help="methods to run (default: psg boundary_shrink finetune random_labels salun scrub l1_sparse)")
    bench.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every method (default 0 1 2)")
    bench.add_argument("--threads", type=int, help="torch CPU threads (e.g. 1 when two parts run in parallel)")
    bench.add_argument("--out-dir", default="docs",
                       help="where benchmark.md and the part CSVs go ('' to skip writing)")
    bench.add_argument("--cache-dir", help="generated data and cached models "
                       "(default: $UNLEARN_STUDIO_HOME/bench_cache or ./workspace/bench_cache)")
    bench.add_argument("--large", action="store_true",
                       help="time ResNet-18 at 224 px on ~1,000 forget images end to end (for a GPU)")
    bench.add_argument("--vs-reference", action="store_true",
                       help="time the psg_reference preset against a naive copy of the published loop "
                            "(first --scenarios entry, default digits_class; repeats interleaved; first seed)")
    bench.add_argument("--repeats", type=int, default=3, help="repeats of each loop for --vs-reference")
    add_device_argument(bench)
    add_json_flag(bench)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from unlearn_core.distributed import world

    def log(text: str) -> None:
        if world().is_main:  # under torchrun rank 0 alone reports
            print(text, file=sys.stderr, flush=True)

    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    if args.vs_reference:
        if world().active:
            from unlearn_core.errors import UserError

            raise UserError("bench --vs-reference times one process against the published loop; run it "
                            "without torchrun.")
        from unlearn_core.bench_reference import format_vs_reference, run_vs_reference

        report = run_vs_reference((args.scenarios or ["digits_class"])[0], device=args.device,
                                  repeats=args.repeats, seed=args.seeds[0], log=log)
        print_json(report.as_dict()) if args.json else print(format_vs_reference(report))
        return 0
    if args.large:
        from unlearn_core.bench_large import run_large

        result = run_large(device=args.device, log=log)
        print_json(result)
        return 0
    from unlearn_core.bench import run_benchmark
    from unlearn_core.bench_scenarios import select

    rows = run_benchmark(select(args.scenarios, args.part), args.methods, seeds=args.seeds, device=args.device,
                         out_dir=args.out_dir or None, cache_dir=args.cache_dir, log=log)
    if args.json:
        print_json(rows)
    elif args.out_dir:
        print(f"wrote {args.out_dir}/benchmark.md and the part CSV(s) in {args.out_dir}")
    return 0
