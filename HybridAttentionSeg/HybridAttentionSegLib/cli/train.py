"""``hybridseg train``: train a demo model on the embedded MNI152 tissue task (seeded, reproducible).

Example (the bundled Attention U-Net)::

    hybridseg train --architecture attention_unet --kwargs '{"channels": [16, 32, 64, 128], "strides": [2, 2, 2]}' \
        --steps 1500 --patch 64 64 48 --seed 0 --out-dir HybridAttentionSeg/Resources/Models \
        --id mni-tissue-attention-unet

Writes ``<out-dir>/<id>.safetensors`` and ``<out-dir>/<id>.json`` (a model card with the held-out Dice).
"""

from __future__ import annotations

import json
import re
import shlex

#: what a model id may look like (also a file stem: no folders, no hidden files)
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a demo model on the embedded MNI152 grey/white-matter task",
        description="Train a registry architecture on the MNI152 template (nilearn) outside the held-out slab; "
                    "write safetensors weights and a model card with held-out Dice per class.")
    parser.add_argument("--architecture", required=True, help="registry name (see 'hybridseg architectures')")
    parser.add_argument("--kwargs", default="{}", metavar="JSON", help="architecture kwargs as a JSON object")
    parser.add_argument("--id", dest="model_id", required=True, help="model id (card id and file stem)")
    parser.add_argument("--out-dir", default=".", help="where to write <id>.safetensors and <id>.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing model <id> in --out-dir (default: refuse before training)")
    parser.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000)")
    parser.add_argument("--patch", type=int, nargs="+", default=[64, 64, 48], metavar="N",
                        help="patch / inference ROI size: one or three ints (default 64 64 48)")
    parser.add_argument("--batch-size", type=int, default=2, help="patches per step (default 2)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in the card")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--data", choices=("synthetic", "template", "mixed"), default="synthetic",
                        help="synthetic subjects from the template's tissue maps (default), the template itself, or "
                             "mixed (each step one or the other, p 0.5)")
    parser.add_argument("--contrast", choices=("t1", "any"), default="t1",
                        help="synthetic tissue contrast: T1-like ordering (default) or contrast-agnostic")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--title", default=None, help="card title")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _config(args):
    from ..core.errors import UserInputError
    from ..core.training.trainer import TrainConfig

    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as err:
        message = f"--kwargs is not valid JSON ({err.msg}); pass an object such as '{{\"channels\": [8, 16, 32]}}'"
        raise UserInputError(message) from err
    if not isinstance(kwargs, dict):
        message = "--kwargs must be a JSON object, e.g. '{\"feature_size\": 16}'"
        raise UserInputError(message)
    if len(args.patch) not in (1, 3) or min(args.patch) < 8:
        message = f"--patch takes one or three sizes >= 8, got {args.patch}; e.g. --patch 64 64 48"
        raise UserInputError(message)
    if args.steps < 1 or args.batch_size < 1:
        message = "--steps and --batch-size must be at least 1"
        raise UserInputError(message)
    patch = tuple(args.patch * 3 if len(args.patch) == 1 else args.patch)
    command = ["hybridseg", "train", "--architecture", args.architecture,
               "--kwargs", json.dumps(kwargs, separators=(", ", ": ")), "--steps", str(args.steps),
               "--patch", *map(str, patch), "--batch-size", str(args.batch_size), "--lr", f"{args.lr:g}",
               "--seed", str(args.seed), "--overlap", f"{args.overlap:g}", "--device", args.device,
               "--data", args.data]
    if args.data in ("synthetic", "mixed"):
        command += ["--contrast", args.contrast]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.no_augment:
        command.append("--no-augment")
    if args.title:
        command += ["--title", args.title]
    command += ["--out-dir", args.out_dir, "--id", args.model_id]
    return TrainConfig(architecture=args.architecture, model_id=args.model_id, kwargs=kwargs, steps=args.steps,
                       patch=patch, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       augment=not args.no_augment, data=args.data, contrast=args.contrast,
                       overlap=args.overlap, device=args.device,
                       threads=args.threads, title=args.title, command=shlex.join(command),
                       progress=not args.no_progress)


def run(args) -> int:
    from pathlib import Path

    from ..core.errors import UserInputError
    from ..core.models.registry import get_architecture
    from ..core.training.trainer import run_training

    config = _config(args)
    if not MODEL_ID.match(config.model_id):
        message = (f"--id {config.model_id!r} is not a valid model id: use lower-case letters, digits, '.', '_' "
                   "and '-' (e.g. --id my-brain-model)")
        raise UserInputError(message)
    spec = get_architecture(config.architecture)
    try:
        spec.constraints.check_roi(config.patch)
    except ValueError as err:
        limits = spec.constraints
        message = (f"--patch {' '.join(map(str, config.patch))} does not suit {spec.name}: every side must be a "
                   f"multiple of {limits.divisor} and at least {limits.min_size}; e.g. --patch 64 64 48")
        raise UserInputError(message) from err
    card = run_training(config, Path(args.out_dir), overwrite=args.overwrite)
    dice = ", ".join(f"{m['label']} {m['value']:.3f}" for m in card["metrics"] if m["name"] == "dice")
    print(f"{card['id']}: held-out Dice {dice}; wall time {card['training']['wall_time_s']} s "
          f"-> {Path(args.out_dir) / card['weights']['file']}")
    return 0
