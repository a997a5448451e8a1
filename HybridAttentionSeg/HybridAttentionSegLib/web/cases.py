"""The review app's case list: which ``segment`` / ``demo`` outputs a served folder holds (no slicer, no web).

A *case* is ``STEM.json`` next to ``STEM.seg.nrrd`` (``core.inference.results.write_result``'s naming), with its
``STEM.attention-METHOD.nrrd`` maps and optional ``STEM.probabilities.nrrd``. Files are found by that naming
scheme inside the served folder, never through the absolute paths written in the JSON (the folder may have been
moved). The image the case was computed from is, in this order: the JSON's ``input`` entry, a volume file
``STEM.nrrd`` (``.nii``, ``.nii.gz``, ``.mha``), the ``input`` of a ``demo-summary.json`` in the folder, else the
one volume file in the folder that is not an output. ``STEM.reviewed.seg.nrrd`` files (what the app saves) are
not cases of their own; the case they belong to says that a reviewed version exists.

**Only files inside the served folder are ever read** (after resolving symbolic links): an image that lies
outside makes the case unavailable, with the reason shown. The browser only ever sends a case *id*, which must
be one of the listed ones (:func:`case_by_id`), so no request can name a path.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserInputError

logger = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd")
OUTPUT_MARKERS = (".seg.", ".attention-", ".probabilities.", ".reviewed.")
#: largest JSON summary read (a summary is a few kB; anything huge is not ours)
MAX_JSON_BYTES = 2_000_000


@dataclass
class Case:
    """One reviewable result in the served folder.

    Attributes:
        id: the file stem (``STEM``), also the id the browser sends.
        segmentation: ``STEM.seg.nrrd``.
        summary: the parsed ``STEM.json`` (``{}`` if unreadable).
        image: the volume the case was computed from (None if not found: see ``problem``).
        attention: ``{method: STEM.attention-METHOD.nrrd}``.
        probabilities: ``STEM.probabilities.nrrd`` if kept.
        problem: why the case cannot be opened (None when it can).
    """

    id: str
    segmentation: Path
    summary: dict = field(default_factory=dict)
    image: Path | None = None
    attention: dict = field(default_factory=dict)
    probabilities: Path | None = None
    problem: str | None = None

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or "")

    def describe(self) -> dict:
        """JSON-ready entry for the case list (no paths: the browser never sees file locations)."""
        reviewed = self.segmentation.with_name(f"{self.id}.reviewed.seg.nrrd").is_file()
        return {"id": self.id, "model": self.model, "methods": sorted(self.attention),
                "probabilities": self.probabilities is not None, "reviewed": reviewed,
                "problem": self.problem or ""}


def inside(root: Path, path) -> Path | None:
    """``path`` (relative to ``root`` if not absolute) resolved, if it is a file inside ``root``; else None."""
    root = Path(root).resolve()
    candidate = Path(path)
    candidate = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if candidate != root and root in candidate.parents and candidate.is_file():
        return candidate
    return None


def _read_json(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("cannot read %s: %s", path.name, err)
        return {}
    return data if isinstance(data, dict) else {}


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(VOLUME_SUFFIXES) and not any(marker in name for marker in OUTPUT_MARKERS)


def _image_for(root: Path, stem: str, summary: dict, volumes: list[Path],
               fallback: Path | None) -> tuple[Path | None, str | None]:
    given = summary.get("input")
    if isinstance(given, str) and given:
        found = inside(root, given)
        if found is not None:
            return found, None
        # the result names its image: never guess another one
        return None, "its input image is not inside the served folder; copy the image into the folder"
    named = [p for p in volumes if p.name.split(".")[0] == stem and inside(root, p.name)]
    if len(named) == 1:
        return named[0], None
    if fallback is not None:
        return fallback, None
    return None, "no input image found in the served folder; copy the image the case was computed from into it"


def discover_cases(root) -> list[Case]:
    """All cases in ``root`` (not recursive), sorted by id.

    Raises:
        UserInputError: ``root`` is not a folder.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        message = f"{root} is not a folder; give a folder of `hybridseg segment` outputs"
        raise UserInputError(message)
    files = sorted(p for p in root.iterdir() if p.is_file())
    demo = _read_json(root / "demo-summary.json") if (root / "demo-summary.json").is_file() else {}
    demo_input = inside(root, demo["input"]) if isinstance(demo.get("input"), str) else None
    volumes = [p for p in files if _is_volume(p)]
    fallback = demo_input or (inside(root, volumes[0].name) if len(volumes) == 1 else None)
    cases = []
    for path in files:
        if (not path.name.endswith(".seg.nrrd") or ".reviewed." in path.name or path.name.startswith(".")
                or inside(root, path.name) is None):
            continue
        stem = path.name[: -len(".seg.nrrd")]
        summary_path = root / f"{stem}.json"
        summary = _read_json(summary_path) if summary_path.is_file() else {}
        attention = {}
        prefix = f"{stem}.attention-"
        for other in files:
            if other.name.startswith(prefix) and other.name.endswith(".nrrd") and inside(root, other.name):
                attention[other.name[len(prefix): -len(".nrrd")]] = other
        probabilities = inside(root, f"{stem}.probabilities.nrrd")
        image, problem = _image_for(root, stem, summary, volumes, fallback)
        cases.append(Case(stem, path.resolve(), summary, image, attention, probabilities, problem))
    return cases


def case_by_id(cases: list[Case], case_id) -> Case:
    """The listed case with this id; anything else (a path, an unknown name) raises ``UserInputError``."""
    for case in cases:
        if case.id == case_id:
            return case
    message = f"no case {str(case_id)[:80]!r} in the served folder; pick one from the case list"
    raise UserInputError(message)
