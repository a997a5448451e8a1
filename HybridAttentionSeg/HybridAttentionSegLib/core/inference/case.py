"""One case, input file to result files: the code path of ``hybridseg segment`` and of every batch worker.

:func:`prepare_case` does every check that needs no weights (outputs, readable input, channels, label-map
look-alike, target class, free space) and returns the opened-later :class:`~..outputs.OutputSet` with the
volume; :func:`segment_case` runs a resident :class:`~.engine.Segmenter` on it and writes the files through
that set, all or nothing. ``segment`` loads its weights between the two; a batch worker has them loaded once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserInputError
from ..models.cards import ModelCard
from ..models.offers import check_request, default_classes, natural_method
from ..models.registry import check_method
from ..outputs import OutputSet
from .engine import Segmenter
from .intensity import label_map_reason
from .io import read_volume, stem_of
from .preprocess import check_volume
from .results import estimate_result_bytes, result_outputs, write_result
from .volume import Volume


@dataclass
class CaseOptions:
    """What a run asks of each case (``segment``'s options, minus input and output folder)."""

    methods: list[str] = field(default_factory=list)
    target_class: str | None = None
    probabilities: bool = False
    tta: bool = False
    overwrite: bool = False
    force: bool = False
    series: str | None = None
    #: compute maps the card withholds (failed the faithfulness test); they stay labelled (core/models/offers.py)
    allow_unfaithful: bool = False


def resolve_methods(card: ModelCard, requested: list[str] | None) -> list[str]:
    """``None`` -> the card's natural method (the first one it ships); ``["none"]`` -> no maps; each one checked
    against the card."""
    if requested is None:
        methods = [natural_method(card)] if natural_method(card) else []
    elif list(requested) == ["none"]:
        methods = []
    else:
        methods = list(requested)
    for method in methods:
        check_method(card.spec, method)
    return methods


def prepare_case(card: ModelCard, input_path, out_dir, options: CaseOptions,
                 stem: str | None = None) -> tuple[OutputSet, Volume]:
    """Check the outputs and read the input, before any weights are needed.

    Args:
        card: the model card.
        input_path: volume file or DICOM series folder.
        out_dir: output folder (created when the outputs are written).
        options: the run's options.
        stem: output name (default: :func:`~.io.stem_of` the input).

    Returns:
        ``(outputs, volume)``: the checked (not yet opened) output set and the volume.

    Raises:
        UserInputError: any problem a user can fix, as one line naming the remedy.
    """
    target = card.label_name(card.label_index(options.target_class)) if options.target_class is not None else None
    check_request(card, options.methods, target, options.allow_unfaithful)  # withheld maps: refused at once
    if options.series and not Path(input_path).is_dir():
        message = f"--series applies to a DICOM folder; {input_path} is not a folder (drop --series)"
        raise UserInputError(message)
    # every output problem (existing files, --out a file, not writable, no space) is found before inference
    outputs = result_outputs(out_dir, stem or stem_of(input_path), options.methods, options.probabilities,
                             options.overwrite)
    outputs.check()
    volume = read_volume(input_path, series=options.series)
    check_volume(volume, card.in_channels)  # fail fast, before any weights are loaded
    reason = None if options.force else label_map_reason(volume.data)
    if reason:
        message = (f"{input_path} does not look like an image: {reason}; pass the scan itself, or --force to "
                   "segment it anyway")
        raise UserInputError(message)
    if options.target_class is not None:
        card.label_index(options.target_class)
    outputs.check_space(estimate_result_bytes(volume.shape, len(options.methods) + int(options.tta),
                                              card.out_channels if options.probabilities else 0))
    return outputs, volume


def segment_case(segmenter: Segmenter, outputs: OutputSet, volume: Volume, options: CaseOptions,
                 on_progress=None, should_cancel=None) -> tuple[dict, list[str]]:
    """Segment ``volume`` and write its files through ``outputs`` (opened here if it is not yet).

    Returns:
        ``(summary, notices)``: the summary written as ``STEM.json`` and the engine's notices.
    """
    # the default class of class maps: the largest structure among the classes the card ships them for
    choices = (None if options.allow_unfaithful or options.target_class is not None
               else default_classes(segmenter.card, options.methods))
    with outputs:  # staging folder beside the results = the lock of this stem; removed on any failure
        result = segmenter.run(volume, attention=options.methods, target_class=options.target_class,
                               tta=options.tta, keep_probabilities=options.probabilities, on_progress=on_progress,
                               should_cancel=should_cancel, target_choices=choices)
        summary = write_result(result, outputs.folder, outputs.key, probabilities=options.probabilities,
                               outputs=outputs)
    return summary, list(result.notices)
