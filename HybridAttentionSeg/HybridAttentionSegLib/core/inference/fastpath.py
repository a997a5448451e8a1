"""Choosing the fast inference path per model and machine, behind a label-agreement gate.

Candidates (see :mod:`.runners`), tried only where the hardware runs them natively:

==================  ===============================================================================
``torch-fp32``      eager torch, float32: the reference; always allowed, the fallback
``torch-fp32-cl``   eager torch with ``channels_last_3d`` window batches (CPU)
``torch-bf16``      ``torch.autocast("cpu", bfloat16)``: only on CPUs with native bf16 (AVX512-BF16 or AMX);
                    emulated bf16 is slower than fp32 and is never tried
``openvino-fp32``   OpenVINO on the CPU, f32 precision hint (if the ``openvino`` package is installed)
``openvino-bf16``   OpenVINO, bf16 hint: native-bf16 CPUs only
``cuda-fp16``       CUDA autocast float16 (``cuda-bf16`` where the GPU supports it; ``cuda-fp32`` reference)
==================  ===============================================================================

``torch.compile`` is not a candidate: on the project's 2-core CPU it compiled for minutes and did not beat
OpenVINO (README "Speed"), and compiled torch must not run in a process that rendered with VTK's EGL (the
demo renders in-process). ONNX Runtime was measured slower than OpenVINO here and is not used.

**Gate** (:func:`calibrate`): fp32 and every candidate run the same non-overlapping windows of a reference
volume (the card's bundled sample volume, else smooth synthetic blobs on the card's grid); a candidate is kept
only if its labels agree with fp32 on >= 99.5 % of voxels and, for every class present, the Dice of its mask
against the fp32 mask is >= 1 - 0.002 (the "Dice change"). The fastest kept candidate wins; fp32 otherwise.
The decision is cached in ``<cache>/fastpath/KEY.json``; KEY hashes the weights, the CPU model and flags (or
GPU name), and the torch/OpenVINO versions, so a new machine, driver stack or weights file re-calibrates.

``HYBRIDSEG_FAST_PATH`` (``auto`` | ``off`` | a path name) overrides the ``fast_path`` argument's default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..paths import cache_dir
from .runners import OpenVinoRunner, TorchRunner

logger = logging.getLogger(__name__)

#: the gate: minimum voxel agreement with fp32 labels, maximum per-class Dice change
MIN_AGREEMENT = 0.995
MAX_DICE_CHANGE = 0.002
#: at most this many reference windows are compared (non-overlapping tiles of the reference volume)
MAX_CALIBRATION_WINDOWS = 8
REFERENCE = "torch-fp32"


def cpu_flags() -> set[str]:
    """The CPU feature flags (``/proc/cpuinfo``; empty where there is none, e.g. macOS/Windows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name, else what ``platform`` knows); the one reader of it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16(flags: set[str] | None = None) -> bool:
    """True only where the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), never by emulation."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    probe = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()  # no cpuinfo: ask torch
    return probe in ("AVX512_BF16", "AMX")


def openvino_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("openvino")
    except Exception:  # not installed, or a broken install: no OpenVINO candidates
        return None


def candidate_names(device: torch.device, flags: set[str] | None = None) -> list[str]:
    """Paths worth trying on ``device`` (the reference first)."""
    if device.type == "cuda":
        names = ["cuda-fp32", "cuda-fp16"]
        if torch.cuda.is_bf16_supported():
            names.append("cuda-bf16")
        return names
    bf16 = native_bf16(flags)
    names = [REFERENCE, "torch-fp32-cl"] + (["torch-bf16"] if bf16 else [])
    if openvino_version():
        names += ["openvino-fp32"] + (["openvino-bf16"] if bf16 else [])
    return names


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and bytes): the model actually resident."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: torch.nn.Module, device: torch.device, roi, extra: str = "") -> str:
    """Weights + machine + software versions -> a short hex key."""
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{cpu_name()}|{' '.join(sorted(cpu_flags()))}|threads={torch.get_num_threads()}")
    parts = [weights_hash(model), machine, torch.__version__, str(openvino_version()), str(tuple(roi)), extra]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def make_runner(name: str, model: torch.nn.Module, device: torch.device, in_channels: int, roi,
                cache_stem: Path | None = None):
    """The runner of path ``name`` (raises if the path cannot be built here)."""
    if name in (REFERENCE, "cuda-fp32"):
        return TorchRunner(name, model, device)
    if name == "torch-fp32-cl":
        return TorchRunner(name, model, device, channels_last=True)
    if name in ("torch-bf16", "cuda-bf16"):
        return TorchRunner(name, model, device, precision="bf16")
    if name == "cuda-fp16":
        return TorchRunner(name, model, device, precision="fp16")
    if name in ("openvino-fp32", "openvino-bf16"):
        return OpenVinoRunner(name, model, in_channels, roi, precision=name.rsplit("-", 1)[1],
                              cache_stem=cache_stem)
    message = f"unknown fast path {name!r}; use auto, off, or one of torch-fp32, openvino-fp32, ..."
    raise ValueError(message)


@dataclass
class PathChoice:
    """The chosen path, why, and the calibration numbers behind it (JSON-ready via :meth:`as_dict`)."""

    name: str
    reason: str
    candidates: dict = field(default_factory=dict)
    key: str = ""

    def as_dict(self) -> dict:
        return {"path": self.name, "reason": self.reason, "key": self.key, "candidates": self.candidates}


def label_gate(reference: np.ndarray, candidate: np.ndarray, labels) -> dict:
    """Voxel agreement and per-class Dice change of ``candidate`` labels against ``reference`` labels."""
    agreement = float((reference == candidate).mean()) if reference.size else 1.0
    changes = {}
    for value in labels:
        ref, cand = reference == value, candidate == value
        total = int(ref.sum()) + int(cand.sum())
        if total:
            changes[int(value)] = round(1.0 - 2.0 * int((ref & cand).sum()) / total, 6)
    worst = max(changes.values(), default=0.0)
    return {"agreement": round(agreement, 6), "dice_change": changes, "max_dice_change": worst,
            "passed": agreement >= MIN_AGREEMENT and worst <= MAX_DICE_CHANGE}


def tiles(tensor: torch.Tensor, roi, limit: int = MAX_CALIBRATION_WINDOWS) -> torch.Tensor:
    """Non-overlapping roi-sized tiles (zero-padded) of a (1, C, D, H, W) tensor -> (N, C, *roi), N <= limit."""
    pad = []
    for size, r in zip(reversed(tensor.shape[2:]), reversed(roi), strict=True):
        pad += [0, (-size) % r]
    padded = torch.nn.functional.pad(tensor, pad)
    blocks = padded[0]
    for axis, r in enumerate(roi):
        blocks = blocks.unfold(axis + 1, r, r)
    blocks = blocks.permute(1, 2, 3, 0, 4, 5, 6).reshape(-1, tensor.shape[1], *roi)
    keep = np.unique(np.linspace(0, len(blocks) - 1, min(limit, len(blocks))).round().astype(int))
    return blocks[torch.from_numpy(keep)].contiguous()


def _timed_labels(runner, windows: torch.Tensor, decide_fn) -> tuple[np.ndarray, float]:
    """Labels for every window (batch 1, as the engine runs on CPU) and the best per-window time."""
    runner(windows[:1])  # warm-up: compiles, allocates
    labels, best = [], float("inf")
    for window in windows:
        t0 = time.perf_counter()
        logits, _ = runner(window[None])
        best = min(best, time.perf_counter() - t0)
        labels.append(decide_fn(logits))
    return np.stack(labels), best


def calibrate(model, device: torch.device, in_channels: int, roi, labels, decide_fn, reference: torch.Tensor,
              names: list[str], cache_stem: Path | None = None) -> tuple[PathChoice, dict]:
    """Run the gate for ``names`` on ``reference`` (model grid); return the choice and the built runners."""
    windows = tiles(reference, roi)
    runners = {n: make_runner(n, model, device, in_channels, roi, cache_stem) for n in names[:1]}
    ref_labels, ref_s = _timed_labels(runners[names[0]], windows.to(device), decide_fn)
    results = {names[0]: {"window_s": round(ref_s, 4), "agreement": 1.0, "passed": True, "speedup": 1.0}}
    for name in names[1:]:
        try:
            runner = make_runner(name, model, device, in_channels, roi, cache_stem)
            cand_labels, cand_s = _timed_labels(runner, windows.to(device), decide_fn)
        except Exception as err:  # a path that cannot run here (missing plugin, unsupported op) is skipped
            logger.warning("fast path %s unavailable: %s", name, err)
            results[name] = {"passed": False, "error": f"{type(err).__name__}: {err}"[:300]}
            continue
        gate = label_gate(ref_labels, cand_labels, labels)
        gate.update(window_s=round(cand_s, 4), speedup=round(ref_s / max(cand_s, 1e-9), 3))
        results[name] = gate
        if gate["passed"]:
            runners[name] = runner
    best = min((n for n in results if results[n]["passed"]), key=lambda n: results[n]["window_s"])
    gate = results[best]
    reason = (f"calibrated on {len(windows)} reference windows: {gate['speedup']}x fp32 per window, "
              f"label agreement {gate['agreement']:.4f}")
    return PathChoice(best, reason, results), runners


def reference_volume(card):
    """The card's bundled sample volume (``sample_data.file``) if present, else smooth synthetic blobs."""
    from .io import read_volume
    from .volume import Volume

    sample = card.data.get("sample_data") or {}
    if sample.get("file") and card.path is not None and (card.path.parent / sample["file"]).is_file():
        volume = read_volume(card.path.parent / sample["file"])
        if volume.channels == card.in_channels:
            return volume
    spacing = card.spacing or (1.0, 1.0, 1.0)
    shape = [2 * r for r in card.roi_size]
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))
    channels = []
    for _ in range(card.in_channels):
        data = np.zeros(shape, np.float32)
        for _ in range(6):
            centre = rng.uniform(-0.6, 0.6, 3).astype(np.float32)[:, None, None, None]
            data += np.exp(-((grid - centre) ** 2).sum(0) / np.float32(rng.uniform(0.02, 0.1)))
        if card.intensity.get("method") == "window":  # spread the blobs over the card's intensity window
            lo, hi = card.intensity["window"]
            data = lo + (hi - lo) * data / max(float(data.max()), 1e-6)
        channels.append(data)
    return Volume(np.stack(channels), np.diag([*spacing, 1.0]), name="calibration")


def reference_tensor(card) -> torch.Tensor:
    """The reference volume on the model grid, (1, C, D, H, W)."""
    from .preprocess import prepare

    volume = reference_volume(card)
    return prepare(volume, card.orientation, card.spacing, card.intensity, order=card.preprocessing_order,
                   crop_foreground=card.crop_foreground).tensor


def load_cached(key: str) -> dict | None:
    path = cache_dir() / "fastpath" / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def save_cached(key: str, choice: PathChoice) -> None:
    folder = cache_dir() / "fastpath"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{key}-{os.getpid()}.json"
    tmp.write_text(json.dumps(choice.as_dict(), indent=1))
    tmp.replace(folder / f"{key}.json")


def requested_mode(mode: str | None) -> str:
    """``fast_path`` argument -> effective mode (``HYBRIDSEG_FAST_PATH`` when the argument is None)."""
    return (mode or os.environ.get("HYBRIDSEG_FAST_PATH") or "auto").strip().lower()


def select(model, device: torch.device, in_channels: int, roi, labels, decide_fn, reference_fn,
           mode: str | None = None):
    """The path to use: ``off`` -> fp32; a name -> that path unchecked; ``auto`` -> cached or calibrated.

    Returns ``(PathChoice, runner)``. ``reference_fn()`` gives the (1, C, D, H, W) model-grid reference
    volume; it is only called when a calibration has to run.
    """
    mode = requested_mode(mode)
    fp32 = "cuda-fp32" if device.type == "cuda" else REFERENCE
    if mode in ("off", "fp32", "reference"):
        return PathChoice(fp32, "fast path off (reference fp32)"), make_runner(fp32, model, device, in_channels,
                                                                             roi)
    key = cache_key(model, device, roi)
    stem = cache_dir() / "fastpath" / key
    if mode != "auto":
        runner = make_runner(mode, model, device, in_channels, roi, stem)
        return PathChoice(mode, "requested explicitly (not calibrated)", key=key), runner
    cached = load_cached(key)
    if cached and cached.get("path"):
        try:
            runner = make_runner(cached["path"], model, device, in_channels, roi, stem)
            return PathChoice(cached["path"], cached.get("reason", "") + " (cached)", cached.get("candidates", {}),
                              key), runner
        except Exception as err:  # e.g. OpenVINO uninstalled since: calibrate again
            logger.warning("cached fast path %s unusable (%s); re-calibrating", cached["path"], err)
    names = candidate_names(device)
    choice, runners = calibrate(model, device, in_channels, roi, labels, decide_fn, reference_fn(), names, stem)
    choice.key = key
    save_cached(key, choice)
    logger.info("fast path for this model and machine: %s (%s)", choice.name, choice.reason)
    return choice, runners[choice.name]
