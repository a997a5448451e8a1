"""``hybridseg experiment review``: the review's grid from options to outputs.

Order of work, so that bad input costs seconds: the options, the variants' window constraints, ``--out`` and
the datasets (``dataset.json`` and image headers only) are checked first; then the trials already finished in
``--out`` are read (a rerun resumes); only if trials are pending are the data loaded and Ray started. The
report is written from every finished trial of this grid, also when some trials failed (they are listed as
missing and run again by the next invocation).
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserInputError
from .variants import BASELINE, default_settings, grid, select

logger = logging.getLogger(__name__)

#: (train, validation, test) demo subjects of the full run and of --quick
DEMO_CASES = (32, 4, 20)
QUICK_DEMO_CASES = (8, 2, 6)
QUICK_SEEDS, FULL_SEEDS = 2, 3
#: files that mark a folder as an experiment's output (a rerun may write into it)
MARKERS = ("experiment.json", "trials")


@dataclass
class ReviewOptions:
    """The command line, parsed."""

    out: Path
    data: str = "demo"
    test_data: str | None = None
    seeds: int | None = None
    steps: int | None = None
    quick: bool = False
    ray_address: str | None = None
    variants: str | None = None
    threads: int = 1
    patch: tuple[int, ...] | None = None
    spacing: float | None = None
    split_seed: int = 0
    demo_cases: tuple[int, int, int] | None = None
    device: str = "auto"
    verbose: bool = False
    overwrite: bool = False
    argv: list[str] = field(default_factory=list)


@dataclass
class ReviewOutcome:
    """What a run did."""

    files: list[str]
    skipped: int
    ran: int
    failed: list[str]
    wall_s: float


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; pass a folder (new, empty, or a previous run's to resume)")
    if overwrite:
        return
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in MARKERS):
        raise UserInputError(f"--out {out} holds other files; pass a new or empty folder, a previous "
                             "experiment's folder to resume it, or --overwrite to write into it anyway")


def _check_options(options: ReviewOptions, settings, variants) -> None:
    from ..batch.runner import check_reachable
    from ..models.registry import get_architecture

    if options.seeds is not None and options.seeds < 1 or options.steps is not None and options.steps < 1:
        raise UserInputError("--seeds and --steps must be at least 1")
    if options.threads < 1:
        raise UserInputError("--threads-per-trial must be at least 1")
    if options.spacing is not None and options.spacing <= 0:
        raise UserInputError("--spacing must be a positive voxel size in mm, e.g. --spacing 2")
    try:
        import ray  # noqa: F401  (imported here so that a missing Ray costs seconds, not a data load)
    except ImportError as err:
        raise UserInputError(f"hybridseg experiment needs Ray, which does not import here ({err}); install it with "
                             "pip install 'hybridattentionseg[experiments]' (or ray==2.60.0)") from err
    check_reachable(options.ray_address)
    for variant in variants:
        try:
            get_architecture(variant.architecture).constraints.check_roi(settings.patch)
        except ValueError as err:
            raise UserInputError(f"--patch {' '.join(map(str, settings.patch))} does not suit {variant.name}: every "
                                 "side must be a multiple of 16 and at least 32; e.g. --patch 32") from err


def _sources(options: ReviewOptions):
    """(data identity, loader, classes, channels, test-data identity, test-data loader) without loading voxels."""
    from ..data import mni
    from .demo_data import demo_dataset, demo_identity
    from .msd import check_msd, load_msd, msd_identity

    if options.data == "demo":
        cases = options.demo_cases or (QUICK_DEMO_CASES if options.quick else DEMO_CASES)
        if min(cases) < 1:
            raise UserInputError("--demo-cases takes three counts >= 1 (train validation test), e.g. 8 2 6")
        factor = 2 if options.quick else 1
        identity = demo_identity(*cases, factor=factor)
        classes = [(label["value"], label["name"]) for label in mni.TISSUE_LABELS]
        channels = 1
        load = lambda: demo_dataset(*cases, factor=factor)  # noqa: E731
    else:
        index = check_msd(options.data, "--data")
        identity = msd_identity(index, options.spacing, options.split_seed)
        classes, channels = index.classes, index.channels
        load = lambda: load_msd(index, options.spacing, options.split_seed)  # noqa: E731
    if not options.test_data:
        return identity, load, classes, channels, None, None
    second = check_msd(options.test_data, "--test-data", min_cases=1)
    if [v for v, _ in second.classes] != [v for v, _ in classes] or second.channels != channels:
        raise UserInputError(f"--test-data {options.test_data} has label values {[v for v, _ in second.classes]} and "
                             f"{second.channels} channel(s), the training data {[v for v, _ in classes]} and "
                             f"{channels}; a generalisation set must have the same classes and channels")
    test_identity = msd_identity(second, options.spacing, all_test=True)
    return identity, load, classes, channels, test_identity, lambda: load_msd(second, options.spacing, all_test=True)


def _quick_note(options: ReviewOptions, settings) -> str | None:
    if not options.quick:
        return None
    cases = options.demo_cases or QUICK_DEMO_CASES
    data = (f"synthetic subjects block-averaged to 4 mm voxels, {cases[0]} training / "
            f"{cases[1]} validation / {cases[2]} test subjects, " if options.data == "demo" else "")
    return (f"{data}networks at quick size (CNN channels {list(settings.channels)}, SegResNet "
            f"{settings.segresnet_filters} initial filters), window {list(settings.patch)}, {settings.steps} steps of "
            f"batch {settings.batch_size}, window overlap {settings.overlap}. It shows that the pipeline and the "
            "compute measurements work end to end in minutes on a CPU; at this budget the differences in accuracy "
            "between variants are mostly training noise, not evidence for or against attention.")


def _payload(load, load_test) -> dict:
    """The data every trial gets (through Ray's object store)."""
    dataset = load()
    payload = {"classes": dataset.classes, "channels": dataset.channels, "out_channels": dataset.out_channels,
               "train": dataset.train, "validation": dataset.validation, "test": dataset.test}
    if load_test is not None:
        second = load_test()
        payload.update(test2=second.test, test2_name=second.name)
    return payload


def run_review(options: ReviewOptions, progress: Callable[[int, int], None] | None = None) -> ReviewOutcome:
    """Run (or resume) the grid and write the outputs; see the module docstring.

    Args:
        options: the command line.
        progress: called as ``progress(finished, total)`` with the grid's trials (finished or failed).

    Raises:
        UserInputError: bad options, an ``--out`` in the way, a malformed dataset, an unreachable cluster.
    """
    from .report import machine, write_outputs
    from .runner import Grid, run_pending, write_json

    start = time.perf_counter()
    out = Path(options.out)
    settings = default_settings(options.quick, options.steps, options.patch, options.threads)
    try:
        variants = select(grid(settings), options.variants)
    except ValueError as err:
        raise UserInputError(f"--variants: {err}") from err
    _check_options(options, settings, variants)
    _check_out(out, options.overwrite)
    identity, load, classes, channels, test_identity, load_test = _sources(options)
    seeds = range(options.seeds or (QUICK_SEEDS if options.quick else FULL_SEEDS))
    trials = Grid(out, variants, seeds, settings, identity, test_identity)
    done = trials.finished(options.overwrite)
    pending = trials.pending(done)
    logger.info("%d trial(s) in the grid, %d already finished in %s", len(trials.trials), len(done), out)
    command = shlex.join(["hybridseg", "experiment", "review", *options.argv])
    failed: list[str] = []
    if pending:  # the voxels are read (and label values checked) before anything is written to --out
        payload = _payload(load, load_test)
        write_json(out / "experiment.json", {"command": command, "settings": settings.as_dict(), "data": identity,
                                             "test_data": test_identity, "variants": [v.name for v in variants],
                                             "seeds": list(seeds), "machine": machine()})
        total, finished = len(trials.trials), len(done)

        def on_trial(*_):
            nonlocal finished
            finished += 1
            if progress:
                progress(finished, total)

        if progress:
            progress(finished, total)
        new, failed = run_pending(trials, pending, payload, options.ray_address, options.device, on_trial,
                                  options.verbose)
        done.update(new)
    results = [done[p.stem] for _, _, _, p in trials.trials if p.stem in done]
    missing = [p.stem for _, _, _, p in trials.trials if p.stem not in done]
    wall = time.perf_counter() - start
    info = {"classes": classes, "order": [v.name for v in variants], "baseline": BASELINE, "data": describe(identity),
            "test_data": describe(test_identity), "settings": _settings_text(settings, len(seeds)),
            "quick_note": _quick_note(options, settings), "command": command, "machine": machine(),
            "wall_s": wall if pending else None, "missing": missing}
    files = write_outputs(out, results, info) if results else []
    return ReviewOutcome(files, len(trials.trials) - len(pending), len(pending), failed, wall)


def describe(identity: dict | None) -> str | None:
    """One sentence on the data of a run, from its identity (the same whether or not the data were loaded)."""
    if identity is None:
        return None
    if identity["source"] == "demo":
        from ..data.synth import TRAINING_SEEDS, VALIDATION_SEEDS

        first = VALIDATION_SEEDS.start
        test = first + identity["test_offset"]
        return (f"synthetic subjects (core.data.synth, contrast {identity['contrast']!r}, {identity['voxel_mm']} mm "
                f"voxels) split by generator seed: train seeds {TRAINING_SEEDS.start}-{identity['train'] - 1} "
                f"(held-out slab's anatomy cut away), validation seeds {first}-{first + identity['validation'] - 1}, "
                f"test seeds {test}-{test + identity['test'] - 1} (whole brain)")
    grid = "native grids" if identity["spacing"] is None else f"resampled to {identity['spacing']:g} mm"
    if identity["all_test"]:
        return f"{identity['name']} ({identity['root']}, {len(identity['cases'])} cases, {grid}), every case tested"
    return (f"{identity['name']} ({identity['root']}, {len(identity['cases'])} cases, {grid}), split 60/20/20 by a "
            f"permutation seeded with {identity['split_seed']}")


def _settings_text(settings, seeds: int) -> str:
    return (f"{seeds} seed(s), {settings.steps} steps of batch {settings.batch_size}, window "
            f"{'×'.join(map(str, settings.patch))}, AdamW lr {settings.lr:g} (warm-up, cosine), Dice + CE loss, "
            f"random flips; CNN channels {list(settings.channels)}, {settings.num_heads} heads; SegResNet "
            f"{settings.segresnet_filters} initial filters; sliding-window overlap {settings.overlap}; "
            f"{settings.threads} torch thread(s) per CPU trial")
