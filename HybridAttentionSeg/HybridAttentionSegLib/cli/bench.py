"""``hybridseg bench [--model ID]``: our pipeline vs MONAI's reference pipeline, same volume, one run."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="time our pipeline against MONAI's reference pipeline")
    parser.add_argument("--model", action="append", default=None,
                        help="model id (repeatable; default: every model whose weights are on this machine)")
    parser.add_argument("--shape", default="128,128,128", help="synthetic volume shape D,H,W")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats (best is reported)")
    parser.add_argument("--fast-path", default=None,
                        help="auto (default: calibrated per model and machine), off (torch fp32) or a path name")
    parser.add_argument("--explain", action="store_true",
                        help="also time the natural attention method and Grad-CAM (overhead vs segmentation)")
    parser.add_argument("--json", action="store_true", help="machine-readable output: one JSON object per line")
    parser.set_defaults(func=run)


#: largest synthetic volume a benchmark builds (512^3 float32 = 512 MiB before any model memory)
MAX_SIDE = 1024
MAX_VOXELS = 512**3


def run(args) -> int:
    from ..core.errors import UserInputError
    from ..core.inference.bench import run_bench
    from ..core.models.cards import get_card, load_catalog

    try:
        shape = tuple(int(s) for s in args.shape.split(","))
    except ValueError as err:
        raise UserInputError(f"--shape should be D,H,W integers, got {args.shape!r}") from err
    if len(shape) != 3 or min(shape) < 8:
        raise UserInputError(f"--shape should be three integers >= 8, got {args.shape!r}")
    if max(shape) > MAX_SIDE or shape[0] * shape[1] * shape[2] > MAX_VOXELS:
        message = (f"--shape {args.shape} is too large for a benchmark (at most {MAX_SIDE} per side and "
                   f"{MAX_VOXELS:,} voxels, i.e. 512^3); e.g. --shape 128,128,128")
        raise UserInputError(message)
    if args.repeats < 1:
        raise UserInputError(f"--repeats should be >= 1, got {args.repeats}")
    if args.model:
        cards = [get_card(model_id, args.catalog) for model_id in args.model]
    else:
        cards = [card for card in load_catalog(args.catalog).values() if card.bundled or card.downloaded]
        if not cards:
            raise UserInputError("no model has its weights on this machine; name one with --model ID")
    for card in cards:
        report = run_bench(card, shape, args.device, args.repeats, fast_path=args.fast_path, explain=args.explain)
        if args.json:
            print(json.dumps(report), flush=True)
            continue
        print(f"model {report['model']}  shape {report['shape']}  device {report['device_name']} "
              f"({report['threads']} threads)  roi {report['roi']}  path {report['precision']}")
        print(f"  ours            {report['ours_s']:8.3f} s   peak {report['ours_peak_mib']:8.1f} MiB")
        print(f"  MONAI reference {report['monai_reference_s']:8.3f} s   "
              f"peak {report['monai_reference_peak_mib']:8.1f} MiB")
        print(f"  speed-up (MONAI / ours) {report['speedup_vs_monai']:.2f}x   label agreement "
              f"{report['label_agreement']}")
        if args.explain:
            print(f"  + {report['attention_method']:<14}{report['attention_s']:8.3f} s   overhead "
                  f"{100 * report['attention_overhead']:+.1f} %")
            print(f"  + grad-cam      {report['gradcam_s']:8.3f} s   {report['gradcam_ratio']:.2f}x segmentation")
    return 0
