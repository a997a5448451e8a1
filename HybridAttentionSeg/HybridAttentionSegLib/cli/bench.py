"""``hybridseg bench --model ID``: our pipeline vs MONAI's reference pipeline, same volume, one run."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="time our pipeline against MONAI's reference pipeline")
    parser.add_argument("--model", required=True, help="model id")
    parser.add_argument("--shape", default="128,128,128", help="synthetic volume shape D,H,W")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats (best is reported)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import UserInputError
    from ..core.inference.bench import run_bench
    from ..core.models.cards import get_card

    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError as err:
        raise UserInputError(f"--shape should be D,H,W integers, got {args.shape!r}") from err
    if len(shape) != 3 or min(shape) < 8:
        raise UserInputError(f"--shape should be three integers >= 8, got {args.shape!r}")
    report = run_bench(get_card(args.model, args.catalog), shape, args.device, args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model {report['model']}  shape {report['shape']}  device {report['device_name']} "
          f"({report['threads']} threads)  roi {report['roi']}")
    print(f"  ours            {report['ours_s']:8.3f} s   peak {report['ours_peak_mib']:8.1f} MiB")
    print(f"  MONAI reference {report['monai_reference_s']:8.3f} s   "
          f"peak {report['monai_reference_peak_mib']:8.1f} MiB")
    print(f"  speed-up (MONAI / ours) {report['speedup_vs_monai']:.2f}x   label agreement "
          f"{report['label_agreement']}")
    return 0
