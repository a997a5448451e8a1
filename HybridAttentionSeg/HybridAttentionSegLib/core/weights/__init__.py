"""Weights: safe loading, key layouts, card-level resolution, bundles, import, archives and downloads.

Submodules, by job: :mod:`.load` (parse files safely), :mod:`.layouts` (upstream key layouts, strict load),
:mod:`.resolve` (bundled/cache/download for a card), :mod:`.bundle` (MONAI bundles read as data),
:mod:`.importer` (bring-your-own model), :mod:`.archive` (safe extraction), :mod:`.download` (hash-verified
fetches). The names below are the package's public API.
"""

from .layouts import KEY_LAYOUTS, load_weights_into, map_state_dict
from .load import (
    MIN_TORCH_FOR_PICKLE,
    check_torch_for_pickle,
    parse_weights,
    read_state_file,
    refuse_code_format,
    sniff_bytes,
    sniff_format,
    torch_load_bytes,
)
from .resolve import load_model_weights, load_state_dict_for_card, resolve_weights_file

__all__ = [
    "KEY_LAYOUTS",
    "MIN_TORCH_FOR_PICKLE",
    "check_torch_for_pickle",
    "load_model_weights",
    "load_state_dict_for_card",
    "load_weights_into",
    "map_state_dict",
    "parse_weights",
    "read_state_file",
    "refuse_code_format",
    "resolve_weights_file",
    "sniff_bytes",
    "sniff_format",
    "torch_load_bytes",
]
