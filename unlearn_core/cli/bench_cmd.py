"""``bench``: the method table on the demo scenarios, or the GPU-scale timing with ``--large``."""

from __future__ import annotations

import argparse
import sys

from unlearn_core.cli.common import add_json_flag, print_json
from unlearn_core.runs.requests import add_device_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmark every method against retraining (writes docs/benchmark.*)")
    bench.add_argument("--scenarios", nargs="*", help="subset of scenarios (default: all demo scenarios)")
    bench.add_argument("--methods", nargs="*", help="subset of methods (default: all registered)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out-dir", default="docs", help="where benchmark.md/.csv go ('' to skip writing)")
    bench.add_argument("--large", action="store_true",
                       help="time ResNet-18 at 224 px on ~1,000 forget images end to end (for a GPU)")
    bench.add_argument("--vs-reference", action="store_true",
                       help="time the psg_reference preset against a naive copy of the published loop "
                            "(first --scenarios entry, default digits_class; repeats interleaved)")
    bench.add_argument("--repeats", type=int, default=3, help="repeats of each loop for --vs-reference")
    add_device_argument(bench)
    add_json_flag(bench)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.vs_reference:
        from unlearn_core.bench_reference import format_vs_reference, run_vs_reference

        report = run_vs_reference((args.scenarios or ["digits_class"])[0], device=args.device,
                                  repeats=args.repeats, seed=args.seed, log=log)
        print_json(report.as_dict()) if args.json else print(format_vs_reference(report))
        return 0
    if args.large:
        from unlearn_core.bench_large import run_large

        result = run_large(device=args.device, log=log)
        print_json(result)
        return 0
    from unlearn_core.bench import run_benchmark

    rows = run_benchmark(args.scenarios, args.methods, device=args.device, seed=args.seed,
                         out_dir=args.out_dir or None, log=log)
    if args.json:
        print_json([row.as_dict() for row in rows])
    elif args.out_dir:
        print(f"wrote {args.out_dir}/benchmark.md and {args.out_dir}/benchmark.csv")
    return 0
