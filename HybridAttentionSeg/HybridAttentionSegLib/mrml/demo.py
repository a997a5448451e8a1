"""The demo job (``hybridseg demo``): every bundled model on the MNI152 template, files plus pictures.

Flat in the output folder:

* ``MNI152_T1_2mm.nrrd``: the input (the template shipped by nilearn, see ``core.data.mni``);
* per model ``ID.seg.nrrd``, ``ID.attention-METHOD.nrrd`` (the model's natural method, ``grad-cam``,
  ``uncertainty``) and ``ID.json`` (``core.results.write_result``), all on the input grid;
* per model ``ID.segmentation.VIEW.png`` and ``ID.METHOD.VIEW.png`` for VIEW in axial, sagittal, coronal:
  Slicer slice views (the T1, segmentation fill + outline, the attention map as an inferno heat map with a
  colour legend) and ``ID.3d.png`` (segmentation surfaces), all drawn offscreen by Slicer's displayable
  managers (:mod:`.rendering`);
* ``montage.png``: rows = models, columns = segmentation and attention methods (axial views);
* ``demo-summary.json``: the summary table.

The segmentation half (:func:`segment_models`) needs only the core. The pictures are drawn with slicer-core by a
child process (:mod:`.demo_pictures`, driven by :mod:`.demo_render`) while the next model segments.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .demo_pictures import VIEW_SIZE

logger = logging.getLogger(__name__)

DEFAULT_OUT = "demo-output"
GENERIC_METHODS = ("grad-cam", "uncertainty")


@dataclass
class ModelRun:
    """One model's demo outcome."""

    card: object
    methods: list[str]
    files: dict[str, str]
    seconds: float
    dice: dict[str, float] | None
    dice_region: str
    pictures: dict[str, str] = field(default_factory=dict)
    #: measured faithfulness of each map (``attention_quality`` of the result JSON, from the card)
    quality: dict[str, dict] = field(default_factory=dict)


@dataclass
class DemoReport:
    """Everything the demo produced."""

    out_dir: Path
    input_path: Path
    runs: list[ModelRun]
    montage: Path | None
    seconds: float

    def table(self) -> str:
        """The summary table (model, Dice per class, time) as text."""
        names = sorted({name for run in self.runs for name in (run.dice or {})})
        header = ["model", "architecture", *[f"Dice {name}" for name in names], "time (s)"]
        rows = [[run.card.id, run.card.architecture,
                 *[f"{run.dice[name]:.3f}" if run.dice and name in run.dice else "-" for name in names],
                 f"{run.seconds:.1f}"] for run in self.runs]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_json(self) -> dict:
        """JSON-ready summary."""
        return {
            "input": str(self.input_path), "out_dir": str(self.out_dir), "montage": str(self.montage or ""),
            "seconds": round(self.seconds, 2),
            "models": [{"model": run.card.id, "architecture": run.card.architecture, "methods": run.methods,
                        "seconds": round(run.seconds, 2), "dice": run.dice, "dice_region": run.dice_region,
                        "files": run.files, "pictures": run.pictures} for run in self.runs],
        }


# ---------------------------------------------------------------------------------------------- models
def bundled_cards(extra_catalog: list[str] | None = None, models: list[str] | None = None) -> list:
    """Cards of every bundled model (weights shipped next to the card), in catalog order.

    Args:
        extra_catalog: extra catalog files.
        models: only these model ids (each must be bundled).
    """
    from ..core.errors import UserInputError
    from ..core.models.cards import load_catalog
    from ..core.names import unknown_name_error

    catalog = load_catalog(extra_catalog)
    bundled = {model_id: card for model_id, card in catalog.items() if card.bundled}
    if models:
        for model_id in models:
            if model_id not in bundled:
                raise unknown_name_error("bundled model", model_id, bundled)
        return [bundled[model_id] for model_id in dict.fromkeys(models)]
    cards = list(bundled.values())
    if not cards:
        message = ("no bundled model found (cards with weights next to them in HybridAttentionSeg/Resources/Models); "
                   "reinstall the extension or pass --catalog FILE with a card whose weights.file exists")
        raise UserInputError(message)
    return cards


def demo_methods(card) -> list[str]:
    """The card's own attention map plus grad-cam and uncertainty, those its card offers (maps withheld for failing
    the faithfulness test are not shown; ``core/models/offers.py``), no repeats.

    The own map is the first offered one (the architecture's order) that is shipped for a class the offered generic
    maps share: one run computes every map for one target class.
    """
    from ..core.models.offers import WithheldMethodError, default_classes, offered_methods

    offered = offered_methods(card)
    generic = [m for m in GENERIC_METHODS if m in offered]
    for method in (m for m in offered if m not in GENERIC_METHODS):
        try:
            default_classes(card, [method, *generic])
        except WithheldMethodError:
            continue  # shipped only for classes the generic maps are not shipped for
        return [method, *generic]
    return generic


def own_map_note(card, methods: list[str]) -> tuple[str, bool] | None:
    """Why the montage shows no own map for this card: (text, withheld?), or ``None`` when it shows one."""
    from ..core.models.offers import offers

    if methods and methods[0] not in GENERIC_METHODS:
        return None
    own = {m: o for m, o in offers(card).items() if m not in GENERIC_METHODS}
    if not own:
        return "n/a", False
    shipped = [f"{m} is shipped for {' / '.join(o.classes)} only" for m, o in own.items() if o.offered and o.classes]
    if shipped:  # offered, but not for the class this run's maps share
        return "not shown:\n" + "\n".join(shipped), False
    return "withheld: not faithful on validation", True


def reference_dice(card, labelmap: np.ndarray, resolution: int) -> tuple[dict[str, float] | None, str]:
    """Held-out-slab Dice per class against the template's tissue labels, if the card's labels are those."""
    from ..core.data import mni
    from ..core.training.trainer import dice_per_class

    tissue = {label["value"]: label["name"].lower() for label in mni.TISSUE_LABELS}
    if {label["value"]: label["name"].lower() for label in card.labels} != tissue:
        return None, "no reference labels for this model's classes"
    reference = mni.tissue_labels(resolution)
    mask = mni.heldout_mask(labelmap.shape, resolution)
    scores = dice_per_class(labelmap, reference, list(tissue), mask)
    region = f"held-out slab (RAS z >= {mni.HELDOUT_Z_MIN_MM:g} mm) of the {resolution} mm template"
    return {card.label_name(v): round(float(s), 4) for v, s in scores.items()}, region


def segment_models(cards, volume, out_dir: Path, resolution: int = 2, device: str = "auto",
                  on_model: Callable[[str], None] | None = None,
                  on_run: Callable[[ModelRun], None] | None = None) -> list[ModelRun]:
    """Run every card on ``volume`` with its demo methods and write the result files into ``out_dir``.

    ``on_model(id)`` is called before each model, ``on_run(run)`` once its files are written.
    """
    from ..core.inference.engine import Segmenter
    from ..core.inference.results import write_result
    from ..core.models.offers import default_classes

    runs = []
    for card in cards:
        if on_model is not None:
            on_model(card.id)
        methods = demo_methods(card)
        t0 = time.perf_counter()
        result = Segmenter(card, device=device, download=False).run(
            volume, attention=methods, keep_probabilities=False, target_choices=default_classes(card, methods))
        seconds = time.perf_counter() - t0
        for notice in result.notices:
            logger.warning("%s: %s", card.id, notice)
        summary = write_result(result, out_dir, card.id, overwrite=True)  # the demo regenerates its folder
        dice, region = reference_dice(card, result.labelmap, resolution)
        runs.append(ModelRun(card, methods, summary["files"], seconds, dice, region,
                             quality=summary.get("attention_quality", {})))
        logger.info("%s: %.1f s, Dice %s", card.id, seconds, dice)
        if on_run is not None:
            on_run(runs[-1])
    return runs


# ---------------------------------------------------------------------------------------------- pictures
def compose_montage(runs: list[ModelRun], path: Path, orientation: str = "axial", cell: int = 320) -> Path:
    """Grid of the pictures: rows = models; columns = segmentation, each model's own attention method (gates,
    rollout...), then the generic methods (grad-cam, uncertainty); labelled, composed with PIL, written atomically.
    """
    from PIL import Image, ImageDraw, ImageFont

    from ..core.inference.io import atomic_path

    generic = [m for m in GENERIC_METHODS if any(m in run.methods for run in runs)]
    own = sorted({run.methods[0] for run in runs if run.methods and run.methods[0] not in GENERIC_METHODS})
    notes = [own_map_note(run.card, run.methods) for run in runs]  # why a row has no own map
    # the own-attention column names its methods on a second line (they do not fit the cell's width on one)
    columns = ["segmentation", *(["own attention\n(" + " / ".join(own) + ")"] if own else []), *generic]
    left, pad = 240, 4
    header = 58 if own else 36
    width = left + len(columns) * (cell + pad)
    height = header + len(runs) * (cell + pad)
    montage = Image.new("RGB", (width, height), (16, 16, 16))
    draw = ImageDraw.Draw(montage)
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=14)
    for c, column in enumerate(columns):
        x = left + c * (cell + pad)
        title, _, detail = column.partition("\n")
        draw.text((x + cell // 2, 18), title, fill=(235, 235, 235), font=font, anchor="mm")
        if detail:
            draw.text((x + cell // 2, 42), detail, fill=(200, 200, 200), font=small, anchor="mm")
    for r, run in enumerate(runs):
        y = header + r * (cell + pad)
        draw.text((10, y + 12), run.card.id, fill=(235, 235, 235), font=small)
        lines = [run.card.architecture]  # no timings here: they depend on the machine (see the table)
        lines += [f"Dice {name}: {value:.3f}" for name, value in (run.dice or {}).items()]
        for i, line in enumerate(lines):
            draw.text((10, y + 40 + 20 * i), line, fill=(190, 190, 190), font=small)
        row = ["segmentation", *([run.methods[0]] if own else []), *generic]
        for c, key in enumerate(row):
            picture = run.pictures.get(f"{key}.{orientation}")
            x = left + c * (cell + pad)
            if picture is None or (c == 1 and own and key in GENERIC_METHODS):
                if c == 1 and own and key in GENERIC_METHODS:
                    text, withheld = notes[r]
                else:
                    withheld = key in run.card.attention_methods and key not in run.methods  # card withholds it
                    text = "withheld: not faithful on validation" if withheld else "n/a"
                note_lines = text.split("\n")
                for i, line in enumerate(note_lines):
                    draw.text((x + cell // 2, y + cell // 2 + 20 * i - 10 * (len(note_lines) - 1)), line,
                              fill=(255, 150, 40) if withheld else (150, 150, 150),
                              font=small if text != "n/a" else font, anchor="mm")
                continue
            with Image.open(picture) as image:
                montage.paste(image.convert("RGB").resize((cell, cell), Image.LANCZOS), (x, y))
            draw.text((x + 6, y + 4), key, fill=(235, 235, 235), font=small)
            _quality_caption(draw, run.quality.get(key), x, y + cell, small, cell)
    with atomic_path(path) as tmp:
        montage.save(tmp, format="PNG")
    return Path(path)


def _quality_caption(draw, quality: dict | None, x: int, bottom: int, font, width: int) -> None:
    """The map's measured verdict under it: green when faithful on validation, orange (warning) when not.

    One line when it fits the cell's ``width``, else the verdict above the scores (never cut at the cell's edge).
    """
    if not quality or quality.get("faithful") is None:
        return
    if quality["faithful"]:
        verdict, colour = "faithful", (120, 220, 120)
    else:
        verdict, colour = "NOT faithful on validation", (255, 150, 40)
    if quality.get("class"):
        verdict += f" ({quality['class']})"
    scores = f"del {quality['deletion_margin']:+.2f} ins {quality['insertion_margin']:+.2f} vs random"
    lines = [f"{verdict}  {scores}"]
    if draw.textlength(lines[0], font=font) + 10 > width:
        lines = [verdict, scores]
    top = bottom - 4 - 19 * len(lines)
    draw.rectangle((x, top - 3, x + 10 + max(draw.textlength(t, font=font) for t in lines), bottom), fill=(16, 16, 16))
    for i, text in enumerate(lines):
        draw.text((x + 5, top + 19 * i), text, fill=colour, font=font)


# ---------------------------------------------------------------------------------------------- the job
def run_demo(out_dir=DEFAULT_OUT, extra_catalog: list[str] | None = None, models: list[str] | None = None,
             resolution: int = 2, device: str = "auto", size: int = VIEW_SIZE, render: bool = True,
             on_model: Callable[[str], None] | None = None) -> DemoReport:
    """The whole demo: segment the template with every bundled model, write files and pictures.

    Args:
        out_dir: output folder (created).
        extra_catalog: extra catalog files (``--catalog``).
        models: only these bundled model ids (default: all bundled models).
        resolution: template resolution in mm (1 or 2).
        device: engine device.
        size: slice/3D view size in pixels.
        render: also render the pictures and the montage (needs slicer-core).
        on_model: called with each model id before it runs (progress).
    """
    from contextlib import nullcontext

    from ..core.data import mni
    from ..core.inference.io import atomic_path, write_scalar_nrrd
    from .demo_render import RenderChild

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cards = bundled_cards(extra_catalog, models)
    volume = mni.load_template(resolution)
    input_path = write_scalar_nrrd(out_dir / f"MNI152_T1_{resolution}mm.nrrd", volume.data[0], volume.affine)
    montage = None
    # never rendered in this process (see demo_render); the child draws each model while the next one segments
    with RenderChild(input_path, out_dir, size) if render else nullcontext() as child:
        runs = segment_models(cards, volume, out_dir, resolution, device, on_model,
                              on_run=child.submit if child is not None else None)
        if child is not None:
            t1 = time.perf_counter()
            child.finish(runs)
            montage = compose_montage(runs, out_dir / "montage.png")
            logger.info("pictures: %.1f s after the last model", time.perf_counter() - t1)
    report = DemoReport(out_dir, input_path, runs, montage, time.perf_counter() - t0)
    with atomic_path(out_dir / "demo-summary.json") as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2))
    return report
