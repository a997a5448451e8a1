"""Safe weight loading: resolve (bundled/cache/download), re-check the hash, parse, map keys, load strictly.

Only two parsers are ever used on weight files:

* safetensors (``safetensors.torch.load``): tensors only, cannot run code;
* ``torch.load(..., weights_only=True)`` passed *explicitly* (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot
  switch it off), on torch >= 2.10 (CVE-2025-32434, CVE-2026-24747). There is no fallback: a file the
  restricted unpickler refuses is refused. The only globals added to its allow-list are NumPy scalar/dtype
  reconstructors (research checkpoints store ``best_acc`` as a NumPy float); they build numbers, not code.

TorchScript, ``torch.package``, ``.pt2`` and other zips are recognised by their member names and refused
before any parser sees them. Every load reads the file once into memory, checks its hash on those bytes and
parses the same bytes, so what was verified is what is loaded.

Key layouts (card ``weights.key_layout``) translate upstream checkpoints to the MONAI 1.6.1 modules we build:

* ``monai`` (default; alias ``monai-bundle``): unwrap ``state_dict``/``model``/``network`` nesting, strip a
  ``module.`` (DataParallel) prefix, drop stale ``blocks.N.cross_attn.*`` keys written by MONAI < 1.4 ViTs
  and supply the unused ``norm_cross_attn`` LayerNorms that pre-1.3 ViTs never had (only for blocks built
  with ``with_cross_attention=False``, where MONAI never calls them);
* ``monai-research-unetr``: ``monai`` plus dropping the old ``vit.patch_embedding.cls_token`` (MONAI <= 0.7
  always created it; unused without classification). Build with ``proj_type`` (old ``pos_embed``);
* ``research-swin-unetr``: research-contributions checkpoints ``{"epoch", "best_acc", "state_dict"}`` with an
  optional ``module.`` prefix;
* ``hybridseg``: exact keys (files written by ``hybridseg import-model``).
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from . import download as dl
from .errors import DownloadError, UnsafeModelError, WeightsError

logger = logging.getLogger(__name__)

#: torch versions older than this have weights_only bypasses (CVE-2025-32434 < 2.6, CVE-2026-24747 < 2.10)
MIN_TORCH_FOR_PICKLE = "2.10"
_NESTING_KEYS = ("state_dict", "model", "network", "net", "model_state_dict")
_MAX_LISTED = 6


# ------------------------------------------------------------------------------------------ format sniffing
def sniff_format(path: Path) -> str:
    """Classify a weights file by content.

    Returns one of ``safetensors``, ``torch-zip`` (``torch.save`` checkpoint), ``torch-legacy`` (pre-1.6
    ``torch.save`` / plain pickle), ``torchscript``, ``torch-package``, ``pt2``, ``bundle-zip``, ``zip``,
    ``tar``, ``unknown``.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= 100 * 1024 * 1024:
            return "safetensors"
    if head.startswith(b"PK"):
        return _zip_kind(path)
    if head[:1] == b"\x80":
        return "torch-legacy"
    from .archive import archive_kind

    return "tar" if archive_kind(path) == "tar" else "unknown"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            return _classify_zip(zf.namelist())
    except zipfile.BadZipFile:
        return "unknown"


def _classify_zip(names: list[str]) -> str:
    """Kind of a zip from its member names (TorchScript ``code/``, torch.package ``.data/extern_modules``)."""
    names = [n.replace("\\", "/") for n in names]
    inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if any(n.startswith("code/") or n == "constants.pkl" for n in inner):
        return "torchscript"
    if ".data/extern_modules" in inner:
        return "torch-package"
    if "archive_format" in inner or any(n.startswith("data/aotinductor") for n in inner):
        return "pt2"
    if any(n == "configs/metadata.json" or n.endswith("/configs/metadata.json") for n in names):
        return "bundle-zip"
    if "data.pkl" in inner:
        return "torch-zip"
    return "zip"


_CODE_FORMATS = {
    "torchscript": "a TorchScript archive (it carries code and is run by torch.jit.load)",
    "torch-package": "a torch.package archive (it imports and runs the code it carries)",
    "pt2": "a torch.export .pt2 archive (its loader unpickles with weights_only=False)",
}


def refuse_code_format(kind: str, path: Path) -> None:
    """Raise :class:`UnsafeModelError` for formats that carry code."""
    if kind in _CODE_FORMATS:
        message = (
            f"{Path(path).name} is {_CODE_FORMATS[kind]}; refusing to load it. Export a plain state dict "
            f"instead: safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
        )
        raise UnsafeModelError(message)


# ------------------------------------------------------------------------------------------------- parsing
def check_torch_for_pickle() -> None:
    """Raise unless torch is new enough to unpickle untrusted files with ``weights_only=True``."""
    if torch.__version__ < MIN_TORCH_FOR_PICKLE:
        message = (
            f"loading PyTorch .pt/.pth weights needs torch >= {MIN_TORCH_FOR_PICKLE} (weights_only fixes for "
            f"CVE-2025-32434 and CVE-2026-24747), found {torch.__version__}; upgrade torch or convert the "
            f"weights to safetensors"
        )
        raise WeightsError(message)


def _numpy_safe_globals() -> list:
    """NumPy scalar and dtype reconstructors (numbers only), under their NumPy 1.x and 2.x pickle names."""
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    items: list = [
        np.dtype,
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
    ]
    for name in (
        "Float64DType",
        "Float32DType",
        "Float16DType",
        "Int64DType",
        "Int32DType",
        "Int16DType",
        "Int8DType",
        "UInt8DType",
        "BoolDType",
    ):
        dtype_class = getattr(getattr(np, "dtypes", None), name, None)
        if dtype_class is not None:
            items.append(dtype_class)
    return items


def _unsafe_globals(data: bytes) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
    except Exception:  # noqa: BLE001  (only used to word the error message)
        return []


def torch_load_bytes(data: bytes, source: str):
    """``torch.load(weights_only=True)`` on bytes; code-carrying pickles raise :class:`UnsafeModelError`."""
    check_torch_for_pickle()
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            # weights_only passed explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override it
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (UnpicklingError, RuntimeError...: all mean "not loadable safely")
        found = _unsafe_globals(data)
        detail = (
            f" (it references {', '.join(found[:5])})" if found else f" ({str(err).splitlines()[0][:160]})"
        )
        message = (
            f"{source} contains non-tensor objects or is not a plain PyTorch state dict{detail}; refusing "
            f"to unpickle it (no weights_only=False fallback). Save only tensors: "
            f"torch.save(model.state_dict(), path) or safetensors"
        )
        raise UnsafeModelError(message) from err


def parse_weights(data: bytes, kind: str, source: str):
    """Parse verified bytes of a file whose :func:`sniff_format` kind is ``kind``."""
    if kind == "safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(data)
        except Exception as err:  # noqa: BLE001  (SafetensorError has no stable import path)
            message = f"{source} is not a valid safetensors file ({err}); re-export it"
            raise WeightsError(message) from err
    if kind in ("torch-zip", "torch-legacy"):
        return torch_load_bytes(data, source)
    refuse_code_format(kind, Path(source))
    message = (f"{source} is not a weights file this loader accepts (detected: {kind}); use safetensors or a "
               f".pt state dict")
    raise WeightsError(message)


def sniff_bytes(data: bytes) -> str:
    """:func:`sniff_format` on bytes already read (the verified ones)."""
    if len(data) >= 9 and data[8:9] == b"{" and 2 <= int.from_bytes(data[:8], "little") <= 100 * 1024 * 1024:
        return "safetensors"
    if data[:2] == b"PK":
        try:
            return _classify_zip(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return "unknown"
    return "torch-legacy" if data[:1] == b"\x80" else "unknown"


def read_state_file(
    path: Path, *, sha256: str | None = None, md5: str | None = None, what: str = "weights", remedy: str = ""
):
    """Read ``path`` once, verify its hash on the bytes read, then parse those bytes (no TOCTOU window)."""
    path = Path(path)
    data = path.read_bytes()
    if sha256 or md5:
        dl.verify_bytes(data, sha256=sha256, md5=md5, what=what, where=str(path), remedy=remedy)
    else:
        sidecar = dl.sidecar_path(path)
        if sidecar.is_file():
            dl.verify_bytes(
                data, sha256=sidecar.read_text().strip(), what=what, where=str(path), remedy=remedy
            )
        else:
            logger.warning("%s at %s has no hash to check against", what, path)
    return parse_weights(data, sniff_bytes(data), str(path))


# --------------------------------------------------------------------------------------------- key layouts
def _unwrap(obj, state_dict_key: str | None, source: str) -> dict:
    if state_dict_key:
        for part in state_dict_key.split("/"):
            if not isinstance(obj, dict) or part not in obj:
                keys = list(obj)[:_MAX_LISTED] if isinstance(obj, dict) else type(obj).__name__
                message = (
                    f"{source} has no entry {state_dict_key!r} (top-level keys: {keys}); fix "
                    f"weights.state_dict_key in the card"
                )
                raise WeightsError(message)
            obj = obj[part]
    elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _NESTING_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise WeightsError(f"{source} does not hold a state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        message = (
            f"{source}: entries {bad[:_MAX_LISTED]} are not tensors; set weights.state_dict_key to the "
            f"entry that holds the model's state dict"
        )
        raise WeightsError(message)
    return dict(obj)


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
) -> dict:
    """Translate an upstream checkpoint into the key layout of ``model`` (see :data:`KEY_LAYOUTS`)."""
    try:
        mapper = KEY_LAYOUTS[key_layout]
    except KeyError:
        from .names import unknown_name_error

        raise unknown_name_error("weights key layout", key_layout, KEY_LAYOUTS) from None
    return mapper(checkpoint, model, state_dict_key, source)


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
) -> None:
    """Map ``state_dict`` with ``key_layout`` and load it strictly into ``model``.

    Keys and shapes are compared *before* anything is copied, so a mismatch leaves ``model`` untouched.

    Raises:
        WeightsError: one line listing missing keys, unexpected keys and shape mismatches.
    """
    sd = map_state_dict(state_dict, key_layout, model, state_dict_key, source)
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


# ------------------------------------------------------------------------------------------ card-level API
def _weights(card) -> dict:
    return card.weights


def _archive(card) -> dict | None:
    return _weights(card).get("archive")


def _expected_hashes(card, path: Path) -> tuple[str | None, str | None]:
    """(sha256, md5) that the file at ``path`` must have."""
    weights, archive = _weights(card), _archive(card)
    if archive:
        return archive.get("member_sha256"), None
    return weights.get("sha256"), weights.get("md5")


def _urls(card) -> list[str]:
    weights = _weights(card)
    return ([weights["url"]] if weights.get("url") else []) + list(weights.get("urls") or [])


def resolve_weights_file(
    card,
    download: bool = True,
    progress: dl.ProgressFn | None = None,
    *,
    verify: bool = False,
    force: bool = False,
) -> Path:
    """Path of ``card``'s weights: the bundled file, the cached download, or a fresh download.

    Args:
        card: a :class:`~.cards.ModelCard`.
        download: download when not cached yet (first use). False raises if missing.
        progress: ``progress(done_bytes, total_bytes)`` during a download.
        verify: re-check the hash of an existing file too (loads always re-check).
        force: download again even if a cached copy exists.

    Raises:
        WeightsError, ChecksumError, DownloadError: one-line messages with a remedy.
    """
    what = f"weights of model {card.id!r}"
    local = card.local_weights_path()
    if local is not None and not _urls(card):
        if not local.is_file():
            message = f"{what}: bundled file {local} is missing; reinstall the extension or fix weights.file"
            raise WeightsError(message)
        if verify:
            sha256, md5 = _expected_hashes(card, local)
            dl.verify_file(local, sha256=sha256, md5=md5, what=what)
        return local
    if local is not None and local.is_file() and not force:
        return local
    cached = card.cached_weights_path()
    if force:
        for stale in (cached, dl.sidecar_path(cached)):
            stale.unlink(missing_ok=True)
    if cached.is_file():
        if verify:
            sha256, md5 = _expected_hashes(card, cached)
            dl.verify_file(cached, sha256=sha256, md5=md5, what=what, remedy=_redownload(card))
        return cached
    if not download:
        message = f"{what} are not downloaded yet; run `hybridseg download {card.id}` (needs internet)"
        raise WeightsError(message)
    urls = _urls(card)
    if not urls:
        raise DownloadError(f"{what}: the card has no weights.url; add one or import the model")
    weights = _weights(card)
    archive = _archive(card)
    if archive is None:
        return dl.fetch(
            urls, cached, sha256=weights.get("sha256"), md5=weights.get("md5"), progress=progress, what=what
        )
    return _fetch_archive_member(card, urls, cached, progress, what)


def _fetch_archive_member(card, urls, cached: Path, progress, what: str) -> Path:
    from . import archive as arc

    weights, spec = _weights(card), _archive(card)
    name = urls[0].rsplit("/", 1)[-1].split("?")[0] or "weights-archive"
    archive_path = cached.parent / ("download-" + name)
    dl.fetch(
        urls, archive_path, sha256=weights.get("sha256"), md5=weights.get("md5"), progress=progress, what=what
    )
    try:
        member = arc.find_member(arc.list_members(archive_path), spec["member"])
        arc.extract_member(archive_path, member, cached)
        if spec.get("member_sha256"):
            try:
                dl.verify_file(cached, sha256=spec["member_sha256"], what=f"{what} ({member.name})")
            except Exception:
                cached.unlink(missing_ok=True)
                raise
        else:
            dl.sidecar_path(cached).write_text(dl.file_digest(cached) + "\n")
    finally:
        archive_path.unlink(missing_ok=True)
    return cached


def _redownload(card) -> str:
    if _urls(card):
        return f"Run `hybridseg download {card.id} --force` to fetch it again."
    return "Reinstall the extension or re-import the model."


def _load_checkpoint(card, download: bool, progress) -> object:
    path = resolve_weights_file(card, download=download, progress=progress)
    sha256, md5 = _expected_hashes(card, path)
    return read_state_file(
        path, sha256=sha256, md5=md5, what=f"weights of model {card.id!r}", remedy=_redownload(card)
    )


def load_state_dict_for_card(card, download: bool = True, progress: dl.ProgressFn | None = None) -> dict:
    """The card's weights as ``{key: tensor}`` (unwrapped, prefix-stripped), hash-checked on every call.

    Model-dependent fixes of the key layout (old ViT blocks) are applied by :func:`load_weights_into`.
    """
    weights = _weights(card)
    checkpoint = _load_checkpoint(card, download, progress)
    return map_state_dict(
        checkpoint,
        weights.get("key_layout", "monai"),
        None,
        weights.get("state_dict_key"),
        f"weights of model {card.id!r}",
    )


def load_model_weights(
    card, model: nn.Module, *, download: bool = True, progress: dl.ProgressFn | None = None
) -> None:
    """Resolve, hash-check, parse, key-map and strictly load ``card``'s weights into ``model``.

    Raises:
        WeightsError / ChecksumError / UnsafeModelError / DownloadError: one-line messages.
    """
    weights = _weights(card)
    checkpoint = _load_checkpoint(card, download, progress)
    load_weights_into(
        model,
        checkpoint,
        weights.get("key_layout", "monai"),
        state_dict_key=weights.get("state_dict_key"),
        source=f"weights of model {card.id!r}",
    )
