"""The cases of a batch: where their inputs are, a unique output stem each, and which are already finished.

An input is a folder (every image file in it, and every sub-folder holding ``*.dcm`` files as a DICOM series)
or a text file listing one input per line (paths relative to the list's folder; blank lines and ``#``
comments skipped). Each case's stem is ``stem_of`` its input (``sub01.T1.nii.gz`` -> ``sub01.T1``, so
``sub01.T2.nii.gz`` stays apart). Inputs whose stems would collide (``a/sub01.nii.gz`` and ``b/sub01.nii.gz``,
or ``sub01.nii`` beside ``sub01.nrrd``) get their folder (``a__sub01``) or extension (``sub01_nrrd``) added.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from ..inference.case import CaseOptions
from ..inference.io import MEDICAL_EXTENSIONS, SUPPORTED, stem_of
from ..inference.results import result_names, result_outputs

logger = logging.getLogger(__name__)

#: files in an input folder that are not cases: earlier segmentations, the data half of Analyze pairs
_NOT_INPUTS = (".seg.nrrd", ".img", ".img.gz")


@dataclass(frozen=True)
class Case:
    """One input and the stem of its outputs."""

    stem: str
    input: str


def _extension(path: Path) -> str:
    lower = path.name.lower()
    return next((ext for ext in MEDICAL_EXTENSIONS if lower.endswith(ext)), "")


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(entry.is_file() and entry.name.lower().endswith(".dcm") for entry in os.scandir(path))


def _folder_inputs(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and _extension(path) and not path.name.lower().endswith(_NOT_INPUTS):
            found.append(path)
        elif _is_dicom_folder(path):
            found.append(path)
    return found


def _list_inputs(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        message = f"cannot read the input list {list_file} ({err}); give a folder or a text file of paths"
        raise UserInputError(message) from err
    inputs = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line).expanduser()
            inputs.append(path if path.is_absolute() else list_file.parent / path)
    return inputs


def list_inputs(source) -> list[Path]:
    """The inputs named by ``source`` (a folder or a list file), absolute, duplicates removed, in order."""
    source = Path(source).expanduser()
    if not source.exists():
        raise UserInputError(f"input not found: {source}; give a folder of images or a text file listing them")
    if source.is_dir():
        inputs = _folder_inputs(source)
        where = f"folder {source} holds no image ({SUPPORTED}); point at the folder of the scans"
    elif _extension(source):
        message = (f"{source} is an image, not a folder or a list; use `hybridseg segment` for one volume, or "
                   "give its folder")
        raise UserInputError(message)
    else:
        inputs = _list_inputs(source)
        where = f"input list {source} names no input; write one image path per line"
    if not inputs:
        raise UserInputError(where)
    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in inputs))
    if len(unique) < len(inputs):
        logger.warning("%d inputs are listed more than once; each is segmented once", len(inputs) - len(unique))
    return unique


def _qualified(path: Path, depth: int) -> str:
    return "__".join([*path.parent.parts[len(path.parent.parts) - depth:], stem_of(path)])


def assign_stems(inputs: list[Path]) -> list[Case]:
    """One case per input with a stem no other case has (case-insensitively: some file systems ignore case)."""
    stems = {path: stem_of(path) for path in inputs}
    groups = defaultdict(list)
    for path, stem in stems.items():
        groups[stem.casefold()].append(path)
    for group in (g for g in groups.values() if len(g) > 1):
        depth_limit = max(len(p.parent.parts) for p in group)
        for depth in range(1, depth_limit + 1):
            names = {p: _qualified(p, depth) for p in group}
            if len({n.casefold() for n in names.values()}) == len(group):
                stems.update(names)
                break
        else:  # same folder, same name, different extension
            for path in group:
                stems[path] = f"{stems[path]}_{_extension(path).lstrip('.').replace('.', '_') or 'dir'}"
    seen: dict[str, Path] = {}
    for path, stem in stems.items():
        if stem.casefold() in seen:
            message = (f"{path} and {seen[stem.casefold()]} would both write outputs named {stem!r}; rename one "
                       "of them")
            raise UserInputError(message)
        seen[stem.casefold()] = path
    return [Case(stem=stems[path], input=str(path)) for path in inputs]


def discover_cases(source) -> list[Case]:
    """The batch's cases from a folder or a list file (see the module docstring)."""
    return assign_stems(list_inputs(source))


def earlier_result(out_dir, case: Case, model_id: str, options: CaseOptions) -> tuple[str, dict | None]:
    """What ``out_dir`` already holds for ``case``: ``("none", None)``, ``("finished", summary)`` (the complete
    outputs of this same run: model, maps, probabilities) or ``("other", reason)`` (outputs this run would
    have to replace)."""
    existing = result_outputs(out_dir, case.stem, options.methods, options.probabilities).existing()
    if not existing:
        return "none", None
    names = result_names(case.stem, options.methods, options.probabilities)
    folder = Path(out_dir)
    try:
        summary = json.loads((folder / names[-1]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "other", {"reason": f"incomplete earlier outputs ({', '.join(p.name for p in existing[:3])})"}
    same = (summary.get("model") == model_id and sorted(summary.get("attention_methods", [])) == sorted(options.methods)
            and sorted(p.name for p in existing) == sorted(names))
    if not same:
        return "other", {"reason": f"earlier outputs of another run (model {summary.get('model')!r}, maps "
                                   f"{summary.get('attention_methods')})"}
    return "finished", summary
