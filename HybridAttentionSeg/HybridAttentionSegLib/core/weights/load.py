"""Safe parsing of weight files: format sniffing, safetensors or ``torch.load(weights_only=True)`` only.

Only two parsers are ever used on weight files:

* safetensors (``safetensors.torch.load``): tensors only, cannot run code;
* ``torch.load(..., weights_only=True)`` passed *explicitly* (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot
  switch it off), on torch >= 2.10 (CVE-2025-32434, CVE-2026-24747). There is no fallback: a file the
  restricted unpickler refuses is refused. The only globals added to its allow-list are NumPy scalar/dtype
  reconstructors (research checkpoints store ``best_acc`` as a NumPy float); they build numbers, not code.

TorchScript, ``torch.package``, ``.pt2`` and other zips are recognised by their member names and refused
before any parser sees them. Every load reads the file once into memory, checks its hash on those bytes and
parses the same bytes, so what was verified is what is loaded.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import torch

from ..errors import UnsafeModelError, WeightsError
from . import download as dl

logger = logging.getLogger(__name__)

#: torch versions older than this have weights_only bypasses (CVE-2025-32434 < 2.6, CVE-2026-24747 < 2.10)
MIN_TORCH_FOR_PICKLE = "2.10"
_NESTING_KEYS = ("state_dict", "model", "network", "net", "model_state_dict")
MAX_LISTED = 6

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
def unwrap(obj, state_dict_key: str | None, source: str) -> dict:
    if state_dict_key:
        for part in state_dict_key.split("/"):
            if not isinstance(obj, dict) or part not in obj:
                keys = list(obj)[:MAX_LISTED] if isinstance(obj, dict) else type(obj).__name__
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
            f"{source}: entries {bad[:MAX_LISTED]} are not tensors; set weights.state_dict_key to the "
            f"entry that holds the model's state dict"
        )
        raise WeightsError(message)
    return dict(obj)


