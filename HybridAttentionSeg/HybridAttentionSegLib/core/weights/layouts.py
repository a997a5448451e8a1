"""Key layouts: translate upstream checkpoints to the MONAI 1.6.1 modules we build, then load strictly.

Key layouts (card ``weights.key_layout``):

* ``monai`` (default; alias ``monai-bundle``): unwrap ``state_dict``/``model``/``network`` nesting, strip a
  ``module.`` (DataParallel) prefix, drop stale ``blocks.N.cross_attn.*`` keys written by MONAI < 1.4 ViTs
  and supply the unused ``norm_cross_attn`` LayerNorms that pre-1.3 ViTs never had (only for blocks built
  with ``with_cross_attention=False``, where MONAI never calls them);
* ``monai-research-unetr``: ``monai`` plus dropping the old ``vit.patch_embedding.cls_token`` (MONAI <= 0.8
  always created it; unused without classification). Build with ``proj_type`` (old ``pos_embed``);
* ``research-swin-unetr``: research-contributions checkpoints ``{"epoch", "best_acc", "state_dict"}`` with an
  optional ``module.`` prefix;
* ``hybridseg``: exact keys (files written by ``hybridseg import-model``).

The MONAI layouts (``monai``, ``monai-bundle``, ``monai-research-unetr``) also drop the residual-projection
weights (``conv3``, ``norm3``) that MONAI <= 0.8 ``UnetResBlock`` built in every block but used only where the
block changes channels or stride; MONAI >= 0.9 (PR #4317) builds them only there. Exactly the keys whose
module does not exist in a ``UnetResBlock`` of the network are dropped (never ``strict=False``), and each drop
is reported in ``notes``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from torch import nn

from ..errors import WeightsError
from .load import MAX_LISTED as _MAX_LISTED
from .load import unwrap as _unwrap

logger = logging.getLogger(__name__)


def _strip_prefix(sd: dict, prefix: str = "module.") -> dict:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


_CROSS = re.compile(r"^(.*blocks\.\d+)\.(cross_attn|norm_cross_attn)\.(.+)$")


def _fix_old_vit(sd: dict, model: nn.Module | None, source: str) -> dict:
    """Drop stale cross-attention keys; supply unused ``norm_cross_attn`` LayerNorms (module docstring)."""
    if model is None:
        return sd
    own = model.state_dict()
    out = {k: v for k, v in sd.items() if not (_CROSS.match(k) and k not in own)}
    dropped = len(sd) - len(out)
    filled = 0
    for key, value in own.items():
        match = _CROSS.match(key)
        if key in out or not match or match.group(2) != "norm_cross_attn":
            continue
        block = model.get_submodule(match.group(1))
        if getattr(block, "with_cross_attention", True) is False:
            out[key] = value.detach().clone()
            filled += 1
    if dropped or filled:
        logger.info(
            "%s: dropped %d stale cross_attn keys, supplied %d unused norm_cross_attn tensors",
            source,
            dropped,
            filled,
        )
    return out


_RES_EXTRA = re.compile(r"^(.*)\.(conv3|norm3)\.(.+)$")
#: layouts whose checkpoints may come from MONAI <= 0.8 (residual blocks with an unused conv3)
_OLD_RESBLOCK_LAYOUTS = ("monai", "monai-bundle", "monai-research-unetr")


def _drop_unused_residual_projection(sd: dict, model: nn.Module | None, source: str, notes: list) -> dict:
    """Drop ``conv3``/``norm3`` keys of ``UnetResBlock`` modules that (in MONAI >= 0.9) do not have them."""
    if model is None:
        return sd
    from monai.networks.blocks.dynunet_block import UnetResBlock

    own = model.state_dict()
    dropped = []
    for key in sd:
        match = _RES_EXTRA.match(key)
        if not match or key in own:
            continue
        try:
            block = model.get_submodule(match.group(1))
        except AttributeError:
            continue
        if isinstance(block, UnetResBlock) and not hasattr(block, match.group(2)):
            dropped.append(key)
    if dropped:
        notes.append(
            f"{source}: dropped {len(dropped)} unused residual-projection weights of MONAI <= 0.8 "
            f"UnetResBlocks (never used in the forward pass): {', '.join(dropped)}"
        )
        logger.info(notes[-1])
    return {k: v for k, v in sd.items() if k not in dropped}


def _layout_monai(obj, model, key, source):
    return _fix_old_vit(_strip_prefix(_unwrap(obj, key, source)), model, source)


def _layout_research_unetr(obj, model, key, source):
    sd = _layout_monai(obj, model, key, source)
    own = model.state_dict() if model is not None else {}
    stale = "vit.patch_embedding.cls_token"
    if stale in sd and stale not in own:
        del sd[stale]
    return sd


def _layout_research_swin(obj, model, key, source):
    return _strip_prefix(
        _unwrap(obj, key or ("state_dict" if isinstance(obj, dict) and "state_dict" in obj else None), source)
    )


def _layout_exact(obj, model, key, source):
    return _unwrap(obj, key, source)


#: name -> ``mapper(checkpoint, model_or_None, state_dict_key, source) -> state dict in our key layout``
KEY_LAYOUTS: dict[str, Callable] = {
    "monai": _layout_monai,
    "monai-bundle": _layout_monai,
    "monai-research-unetr": _layout_research_unetr,
    "research-swin-unetr": _layout_research_swin,
    "hybridseg": _layout_exact,
}


def map_state_dict(
    checkpoint,
    key_layout: str = "monai",
    model: nn.Module | None = None,
    state_dict_key: str | None = None,
    source: str = "weights",
    notes: list | None = None,
) -> dict:
    """Translate an upstream checkpoint into the key layout of ``model`` (see :data:`KEY_LAYOUTS`).

    ``notes`` (if given) receives one line per key that was dropped as unused by an old MONAI layout.
    """
    try:
        mapper = KEY_LAYOUTS[key_layout]
    except KeyError:
        from ..names import unknown_name_error

        raise unknown_name_error("weights key layout", key_layout, KEY_LAYOUTS) from None
    sd = mapper(checkpoint, model, state_dict_key, source)
    if key_layout in _OLD_RESBLOCK_LAYOUTS:
        sd = _drop_unused_residual_projection(sd, model, source, notes if notes is not None else [])
    return sd


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def load_weights_into(
    model: nn.Module,
    state_dict,
    key_layout: str = "monai",
    *,
    state_dict_key: str | None = None,
    source: str = "weights",
    notes: list | None = None,
) -> None:
    """Map ``state_dict`` with ``key_layout`` and load it strictly into ``model``.

    Keys and shapes are compared *before* anything is copied, so a mismatch leaves ``model`` untouched.
    ``notes`` (if given) receives the mapping's notices (keys dropped as unused by an old MONAI layout).

    Raises:
        WeightsError: one line listing missing keys, unexpected keys and shape mismatches.
    """
    sd = map_state_dict(state_dict, key_layout, model, state_dict_key, source, notes)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
        message = (
            f"{source} do not fit the network ({type(model).__name__}, key layout {key_layout!r}): "
            f"{'; '.join(parts)}; check architecture.kwargs, weights.key_layout and weights.state_dict_key "
            f"in the model card"
        )
        raise WeightsError(message)
    model.load_state_dict(sd, strict=True)
    logger.debug("%s: loaded %d tensors strictly", source, len(sd))


