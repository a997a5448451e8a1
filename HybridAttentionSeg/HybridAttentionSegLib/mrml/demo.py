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

The segmentation half (:func:`segment_models`) needs only the core; :func:`render_models` needs slicer-core.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_OUT = "demo-output"
GENERIC_METHODS = ("grad-cam", "uncertainty")
ORIENTATIONS = ("Axial", "Sagittal", "Coronal")
#: RAS point (mm) the three slice views pass through: left insula / basal ganglia level of the MNI template
FOCUS_RAS = (-24.0, -12.0, 14.0)
VIEW_SIZE = 384
#: slice-view segment colours used in the pictures only (the card's pale tissue colours vanish on a T1);
#: the .seg.nrrd files keep the card's colours
PICTURE_SEGMENT_COLORS = ((0.10, 0.80, 1.00), (0.20, 1.00, 0.30), (1.00, 0.35, 0.85), (1.00, 0.60, 0.10))
HEAT_OPACITY = 0.6
HEAT_THRESHOLD = 0.2
#: segmentation fill opacity: segmentation pictures / under a heat map (lighter, so the heat map stays readable)
FILL_OPACITY = 0.35
FILL_OPACITY_UNDER_HEAT = 0.12
#: input intensity above which a voxel counts as foreground when framing the 3D view (the template's brain mask)
BRAIN_THRESHOLD = 0.2


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
    """The card's natural attention method plus grad-cam and uncertainty: those its card offers (maps withheld
    for failing the faithfulness test are not shown; ``core/models/offers.py``), no repeats."""
    from ..core.models.offers import natural_method, offered_methods

    wanted = [natural_method(card), *GENERIC_METHODS]
    return [m for m in dict.fromkeys(wanted) if m in offered_methods(card)]


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
                  on_model: Callable[[str], None] | None = None) -> list[ModelRun]:
    """Run every card on ``volume`` with its demo methods and write the result files into ``out_dir``."""
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
    return runs


# ---------------------------------------------------------------------------------------------- pictures
def _style_segmentation(segmentation_node) -> None:
    from . import rendering

    rendering.showSegmentation(segmentation_node, fillOpacity=FILL_OPACITY, outline=True, surface=True)
    display = segmentation_node.GetDisplayNode()
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    for i, segment_id in enumerate(ids):
        display.SetSegmentOverrideColor(segment_id, *PICTURE_SEGMENT_COLORS[i % len(PICTURE_SEGMENT_COLORS)])
        # outer structures translucent in 3D so inner ones show (tissue: grey matter around white matter)
        display.SetSegmentOpacity3D(segment_id, 0.35 if i < len(ids) - 1 else 1.0)


def _foreground_bounds(volume_node, threshold: float) -> list[float]:
    """RAS bounding box (xmin, xmax, ...) of the voxels above ``threshold``: one 3D framing for every model."""
    import slicer
    import vtk

    array = slicer.util.arrayFromVolume(volume_node)  # (K, J, I)
    kji = np.argwhere(array > threshold)
    if not len(kji):
        return None  # nothing above threshold: frame whatever is visible
    lo, hi = kji.min(0)[::-1], kji.max(0)[::-1]  # (I, J, K)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    affine = slicer.util.arrayFromVTKMatrix(matrix)
    corners = np.array([[i, j, k, 1.0] for i in (lo[0], hi[0]) for j in (lo[1], hi[1]) for k in (lo[2], hi[2])])
    ras = corners @ affine.T
    return [v for axis in range(3) for v in (ras[:, axis].min(), ras[:, axis].max())]


def render_models(runs: list[ModelRun], input_path: Path, out_dir: Path, size: int = VIEW_SIZE,
                 focus_ras=FOCUS_RAS) -> None:
    """Render every model's slice/3D pictures into ``out_dir`` (fills ``run.pictures``); one scene, reused views."""
    from . import rendering
    from .headless import HeadlessSlicer

    app = HeadlessSlicer()
    scene = app.scene
    views = {o: rendering.OffscreenSliceView(scene, app.appLogic, rendering.SLICE_VIEW_NAMES[o], o, (size, size))
             for o in ORIENTATIONS}
    three_d = rendering.OffscreenThreeDView(scene, app.appLogic, size=(size, size))
    try:
        background = app.loadVolume(input_path, "T1")
        color_table = rendering.addPerceptualColorTable(scene, "Inferno")
        bounds = _foreground_bounds(background, BRAIN_THRESHOLD)
        for view in views.values():
            view.setLayers(background=background)
            view.fitToBackground()
            view.jumpToRAS(focus_ras)
        for run in runs:
            _render_run(app, run, views, three_d, background, color_table, out_dir, bounds)
    finally:
        for view in views.values():
            view.close()
        three_d.close()
        scene.Clear(True)


def _render_run(app, run: ModelRun, views, three_d, background, color_table, out_dir: Path, bounds) -> None:
    from . import rendering

    scene = app.scene
    stem = run.card.id
    segmentation = app.segmentationsLogic.LoadSegmentationFromFile(run.files["segmentation"], False)
    if segmentation is None:
        message = f"Slicer could not load {run.files['segmentation']}"
        raise RuntimeError(message)
    _style_segmentation(segmentation)
    added = [segmentation]
    display = segmentation.GetDisplayNode()
    for orientation, view in views.items():
        view.setLayers(background=background)
        run.pictures[f"segmentation.{orientation.lower()}"] = view.writePNG(
            out_dir / f"{stem}.segmentation.{orientation.lower()}.png")
    display.SetOpacity2DFill(FILL_OPACITY_UNDER_HEAT)
    for method in run.methods:
        heat = app.loadVolume(run.files[f"attention-{method}"], f"{stem} {method}")
        added.append(heat)
        rendering.showHeatMap(heat, color_table, lowerThreshold=HEAT_THRESHOLD)
        legend = rendering.addColorLegend(heat, method)
        added.append(legend)
        for orientation, view in views.items():
            view.setLayers(background=background, foreground=heat, foregroundOpacity=HEAT_OPACITY)
            run.pictures[f"{method}.{orientation.lower()}"] = view.writePNG(
                out_dir / f"{stem}.{method}.{orientation.lower()}.png")
    three_d.resetCamera(bounds=bounds)
    run.pictures["3d"] = three_d.writePNG(out_dir / f"{stem}.3d.png")
    for view in views.values():
        view.setLayers(background=background)
    for node in reversed(added):
        if node.GetScene() is not None:
            scene.RemoveNode(node)


def compose_montage(runs: list[ModelRun], path: Path, orientation: str = "axial", cell: int = 320) -> Path:
    """Grid of the pictures: rows = models; columns = segmentation, each model's own attention method (gates,
    rollout...), then the generic methods (grad-cam, uncertainty); labelled, composed with PIL, written atomically.
    """
    from PIL import Image, ImageDraw, ImageFont

    from ..core.inference.io import atomic_path

    generic = [m for m in GENERIC_METHODS if any(m in run.methods for run in runs)]
    own = sorted({run.methods[0] for run in runs if run.methods and run.methods[0] not in GENERIC_METHODS})
    columns = ["segmentation", *(["own attention (" + " / ".join(own) + ")"] if own else []), *generic]
    header, left, pad = 36, 240, 4
    width = left + len(columns) * (cell + pad)
    height = header + len(runs) * (cell + pad)
    montage = Image.new("RGB", (width, height), (16, 16, 16))
    draw = ImageDraw.Draw(montage)
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=14)
    for c, column in enumerate(columns):
        x = left + c * (cell + pad)
        draw.text((x + cell // 2, header // 2), column, fill=(235, 235, 235), font=font, anchor="mm")
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
                withheld = key in run.card.attention_methods and key not in run.methods  # card withholds it
                draw.text((x + cell // 2, y + cell // 2), "withheld: not faithful on validation" if withheld
                          else "n/a", fill=(255, 150, 40) if withheld else (120, 120, 120),
                          font=small if withheld else font, anchor="mm")
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
    from ..core.data import mni
    from ..core.inference.io import atomic_path, write_scalar_nrrd
    from .demo_render import render_in_child

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cards = bundled_cards(extra_catalog, models)
    volume = mni.load_template(resolution)
    input_path = write_scalar_nrrd(out_dir / f"MNI152_T1_{resolution}mm.nrrd", volume.data[0], volume.affine)
    runs = segment_models(cards, volume, out_dir, resolution, device, on_model)
    montage = None
    if render:
        t1 = time.perf_counter()
        render_in_child(runs, input_path, out_dir, size)  # never in this process: see demo_render
        montage = compose_montage(runs, out_dir / "montage.png")
        logger.info("pictures: %.1f s", time.perf_counter() - t1)
    report = DemoReport(out_dir, input_path, runs, montage, time.perf_counter() - t0)
    with atomic_path(out_dir / "demo-summary.json") as tmp:
        tmp.write_text(json.dumps(report.to_json(), indent=2))
    return report


def _render_job(job_path: str) -> None:
    """The child side of :func:`.demo_render.render_in_child`: render, write the picture paths into the job."""
    import sys
    from types import SimpleNamespace

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    runs = [SimpleNamespace(card=SimpleNamespace(id=r["id"]), methods=r["methods"], files=r["files"], pictures={})
            for r in job["runs"]]
    render_models(runs, Path(job["input"]), Path(job["out"]), job["size"])
    if "torch" in sys.modules:
        raise RuntimeError("the demo's render process imported torch; rendering must stay free of torch")
    Path(job_path).write_text(json.dumps({**job, "pictures": [run.pictures for run in runs]}), encoding="utf-8")


if __name__ == "__main__":  # python -m HybridAttentionSegLib.mrml.demo JOB: the render child
    import sys

    _render_job(sys.argv[1])
