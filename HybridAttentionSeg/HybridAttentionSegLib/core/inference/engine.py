"""Inference engine: a card's model over a volume -> labelmap, probabilities and attention maps on the input grid.

Sliding-window inference is MONAI's ``sliding_window_inference`` with the card's blending (``inference.blend``:
``constant`` as the upstream MONAI pipelines, ``gaussian`` by default). Its predictor returns a
tuple ``(logits, map_1, ..., map_n)`` so the explainers' maps are stitched with the very same weights as the
logits. Progress is counted in windows; cancellation is checked before every window batch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import CancelledError, UserInputError
from ..explain import WINDOW_EXPLAINERS
from ..explain.masking import body_mask, mask_outside
from ..models.cards import ModelCard
from ..models.registry import check_method
from . import fastpath
from .inverse import labels_on_input_grid, map_on_input_grid
from .preprocess import Prepared, check_volume, prepare
from .progress import PassProgress, ProgressFn
from .quantiles import chunks
from .volume import Volume

logger = logging.getLogger(__name__)

CancelFn = Callable[[], bool]


@dataclass
class SegmentationResult:
    """Everything one run produces, on the input grid (shape ``(I, J, K)``, ``affine``)."""

    labelmap: np.ndarray
    probabilities: np.ndarray | None
    attention: dict[str, np.ndarray]
    affine: np.ndarray
    card: ModelCard
    target_class: int | None
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    fast_path: dict = field(default_factory=dict)  # {"path", "reason", "maps": {method: path}} (fastpath.py)

    def segment_stats(self) -> list[dict]:
        """Per-label voxel counts and volumes in mL."""
        voxel_ml = float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0
        # piece by piece: bincount casts its input to int64, 8 bytes per voxel (0.6 GB for a CT-sized labelmap)
        counts = sum((np.bincount(piece, minlength=256) for piece in chunks(self.labelmap)), np.zeros(256, np.int64))
        return [
            {"value": label["value"], "name": label["name"], "voxels": int(counts[label["value"]]),
             "volume_ml": round(float(counts[label["value"]]) * voxel_ml, 3)}
            for label in self.card.labels
        ]


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA if present, else CPU; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        message = "device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto"
        raise UserInputError(message)
    if device not in ("cpu",) and not device.startswith("cuda"):
        message = f"unknown device {device!r}; use auto, cpu or cuda"
        raise UserInputError(message)
    return torch.device(device)


def build_model(card: ModelCard) -> torch.nn.Module:
    """Build the card's network with random weights."""
    return card.spec.build(card.in_channels, card.out_channels, card.roi_size, **card.architecture_kwargs)


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI will run for ``shape`` (same scan rule as MONAI)."""
    total = 1
    for size, r in zip(shape, roi, strict=True):
        if size <= r:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        total *= math.ceil((size - r) / interval) + 1
    return total


def normalise_map(volume: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] (robust max: 99.9th percentile), float32."""
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    volume = np.maximum(volume - float(volume.min()), 0.0)
    top = float(np.percentile(volume, 99.9)) if volume.size else 0.0
    if top <= 0:
        top = float(volume.max())
    if top <= 0:
        return np.zeros_like(volume, dtype=np.float32)
    return np.clip(volume / top, 0.0, 1.0).astype(np.float32)


def entropy_map(probabilities: torch.Tensor, activation: str = "softmax") -> torch.Tensor:
    """Normalised entropy (N, D, H, W) -> (D, H, W) in [0, 1].

    Softmax: entropy of the class distribution / log(N). Sigmoid (independent regions): mean binary entropy / log 2.
    """
    p = probabilities.clamp(1e-8, 1 - 1e-8)
    if activation == "sigmoid":
        binary = -(p * p.log() + (1 - p) * (1 - p).log()) / math.log(2)
        return binary.mean(0).clamp(0, 1)
    return (-(p * p.log()).sum(0) / math.log(p.shape[0])).clamp(0, 1)


def activate(card: ModelCard, logits: torch.Tensor) -> torch.Tensor:
    """Logits (1, N, ...) -> probabilities (N, ...): softmax, or sigmoid for region-based cards (BraTS)."""
    if card.activation == "sigmoid":
        return torch.sigmoid(logits.float())[0]
    return torch.softmax(logits.float(), dim=1)[0]


def decide(card: ModelCard, probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities (N, ...) -> uint8 labelmap: argmax (softmax) or regions painted in card order (sigmoid)."""
    if card.activation != "sigmoid":
        return probabilities.argmax(0).to(torch.uint8)
    labelmap = torch.zeros(probabilities.shape[1:], dtype=torch.uint8, device=probabilities.device)
    for region in card.output_regions:
        labelmap[probabilities[region["channel"]] > card.output_threshold] = int(region["label"])
    return labelmap


class Segmenter:
    """A card's model, built once and kept resident; :meth:`run` segments volumes.

    Args:
        card: the model card.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        amp: mixed precision on GPU (default: on for CUDA, off on CPU).
        model: an already-built model with weights (tests); otherwise built and loaded from the card.
        download: allow downloading weights on first use.
        fast_path: ``auto`` (calibrated, cached per model and machine: see ``fastpath.py``), ``off`` (torch
            fp32) or a path name; default: ``HYBRIDSEG_FAST_PATH`` or ``auto``. ``amp=False`` means ``off``.
    """

    def __init__(self, card: ModelCard, device: str = "auto", amp: bool | None = None,
                 model: torch.nn.Module | None = None, download: bool = True,
                 download_progress: ProgressFn | None = None, fast_path: str | None = None):
        self.card = card
        self.spec = card.spec
        self.device = resolve_device(device)
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.fast_path = "off" if amp is False else fast_path
        self.path_choice: fastpath.PathChoice | None = None
        self._runner = None
        #: window batch on CUDA (no gradient maps); CPU runs the card's batch size
        self.gpu_window_batch = 4
        self.window_seconds = 0.0
        if model is None:
            from ..weights import load_model_weights

            model = build_model(card)
            load_model_weights(card, model, download=download, progress=download_progress)
        self.model = model.to(self.device).eval()
        self.spec.constraints.check_roi(card.roi_size)

    # -------------------------------------------------------------------------------------------
    def run(self, volume: Volume, attention: Sequence[str] = (), target_class: int | str | None = None,
            tta: bool = False, keep_probabilities: bool = True, on_progress: ProgressFn | None = None,
            should_cancel: CancelFn | None = None, target_choices: Sequence[int | str] | None = None
            ) -> SegmentationResult:
        """Segment ``volume`` and compute the requested attention maps, all on its grid.

        Args:
            volume: input (channels must match the card).
            attention: method names (see ``registry.ATTENTION_METHODS``); each must be supported.
            target_class: label value or name for class-dependent methods; default: largest structure
                (among ``target_choices`` when given: the classes a card ships its class maps for).
            tta: add flip test-time-augmentation variance to ``uncertainty``.
            keep_probabilities: return per-class probabilities.
            on_progress: ``(windows_done, windows_total)`` callback.
            should_cancel: polled before each window batch; True raises :class:`CancelledError`.
        """
        t0 = time.perf_counter()
        card = self.card
        methods = list(dict.fromkeys(attention))
        for method in methods:
            check_method(self.spec, method)
        check_volume(volume, card.in_channels)
        target = card.label_index(target_class) if target_class is not None else None
        choices = [card.label_index(c) for c in target_choices] if target_choices else None
        timings: dict[str, float] = {}
        notices: list[str] = []

        prepared = prepare(volume, card.orientation, card.spacing, card.intensity,
                           order=card.preprocessing_order, crop_foreground=card.crop_foreground,
                           device=self.device,  # resampling on the GPU when there is one
                           keep_foreground=bool(methods))  # the maps' body mask
        timings["preprocess_s"] = time.perf_counter() - t0
        if prepared.constant:
            notice = "the volume is constant (no contrast): nothing to segment; returning an empty segmentation"
            logger.warning(notice)
            return self._empty_result(volume, methods, notices + [notice], timings, t0)

        runner = self._fast_runner()
        self.window_seconds = 0.0
        window_methods = [m for m in methods if m != "uncertainty"]
        needs_class = [m for m in window_methods if WINDOW_EXPLAINERS[m].needs_class]
        first_pass = [m for m in window_methods if m not in needs_class]
        passes = 1 + (1 if needs_class else 0) + (3 if tta and "uncertainty" in methods else 0)
        progress = PassProgress(on_progress, passes)

        t1 = time.perf_counter()
        logits, maps = self._infer(prepared.tensor, first_pass, None, progress, should_cancel)
        probabilities = activate(card, logits)
        del logits  # (N, D, H, W) float32 on the model grid: not needed past the activation
        timings["inference_s"] = time.perf_counter() - t1

        if needs_class:
            t2 = time.perf_counter()
            if target is None:
                target = self._largest_structure(probabilities, notices, choices)
            _, class_maps = self._infer(prepared.tensor, needs_class, target, progress, should_cancel,
                                        logits_needed=False)
            maps.update(class_maps)
            timings["class_explain_s"] = time.perf_counter() - t2
        elif target is None and card.labels:
            target = self._largest_structure(probabilities, notices)

        if "uncertainty" in methods:
            maps["uncertainty"] = entropy_map(probabilities, card.activation)[None, None]
            if tta:
                maps["uncertainty"] = self._tta_uncertainty(prepared, probabilities, progress, should_cancel)

        t3 = time.perf_counter()
        back = None
        if keep_probabilities:  # the full per-class arrays only when asked for
            back = prepared.to_input_grid(probabilities)
            labelmap = decide(card, back).numpy()
        else:  # class by class, on the outputs' device (inverse.py)
            labelmap = labels_on_input_grid(card, prepared, probabilities)
        del probabilities  # everything that needs them is done: the maps below are input-sized
        timings["inverse_labels_s"] = time.perf_counter() - t3
        result_maps = {}
        # maps mean nothing outside the body (the z-score's foreground when the card has one: computed once)
        body = body_mask(volume.data, card.intensity, foreground=prepared.foreground) if methods else None
        prepared.foreground = None
        if body is not None:  # the maps' layout (Fortran order: inverse.py); a mismatch made masking 25x slower
            body = np.asfortranarray(body)
        for method in methods:
            result_maps[method] = mask_outside(map_on_input_grid(prepared, maps.pop(method)[0, 0]), body)
        timings["postprocess_s"] = time.perf_counter() - t3
        timings["windows_s"] = self.window_seconds  # model + maps, all passes (the split in bench_ct.py)
        timings["total_s"] = time.perf_counter() - t0
        if not labelmap.any():
            notices.append("no structure was segmented in this volume")
        path = self._path_report(runner, methods, notices)
        return SegmentationResult(
            labelmap=labelmap, probabilities=back.numpy() if back is not None else None,
            attention=result_maps, affine=volume.affine.copy(), card=card, target_class=target,
            device=str(self.device), timings={k: round(v, 4) for k, v in timings.items()}, notices=notices,
            fast_path=path,
        )

    # -------------------------------------------------------------------------------------------
    def _infer(self, tensor: torch.Tensor, methods: list[str], target: int | None, progress,
               should_cancel: CancelFn | None, logits_needed: bool = True
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One sliding-window pass; returns stitched logits and stitched maps on the model grid.

        With ``logits_needed=False`` (the class-map pass: the labels come from the first pass) and only gradient
        explainers, which run their own forward, the fast path's forward is skipped and the returned logits are
        a meaningless zero channel.
        """
        from monai.inferers import sliding_window_inference

        card = self.card
        explainers = [WINDOW_EXPLAINERS[m](self.model, self.spec, card.roi_size, target) for m in methods]
        grad = any(e.needs_grad for e in explainers)
        hooked = [e for e in explainers if not e.needs_grad]  # run inside the fast path's graph
        gradient = [e for e in explainers if e.needs_grad]  # torch fp32 with autograd (explicit fallback)
        runner = self._runner or self._fast_runner()
        # GPU: larger window batches unless a gradient map needs its own backward per window
        cuda = self.device.type == "cuda"
        sw_batch = (1 if grad or (explainers and not cuda)
                    else max(card.sw_batch_size, self.gpu_window_batch if cuda else 1))
        skip_forward = not logits_needed and not hooked and bool(gradient)
        total = count_windows(tensor.shape[2:], card.roi_size, card.overlap)
        progress.start_pass(total)
        done = 0

        def predictor(window: torch.Tensor):
            nonlocal done
            if should_cancel is not None and should_cancel():
                raise CancelledError("cancelled by the user")
            t_window = time.perf_counter()
            if skip_forward:
                out, fast_maps = window.new_zeros((window.shape[0], 1, *window.shape[2:])), []
            else:
                out, fast_maps = runner(window, hooked)
            by_explainer = dict(zip(map(id, hooked), fast_maps, strict=True))
            with ExitStack() as stack:  # gradient explainers run their own fp32 forward/backward
                for explainer in gradient:
                    stack.enter_context(explainer)
                for explainer in gradient:
                    by_explainer[id(explainer)] = explainer.window_map(window, out).float()
            window_maps = [by_explainer[id(e)].to(out.device) for e in explainers]
            self.window_seconds += time.perf_counter() - t_window  # the rest of a pass is padding + stitching
            done += window.shape[0]
            progress.update(min(done, total))
            return (out, *window_maps) if window_maps else out

        stitch_device = torch.device("cpu") if tensor[0, 0].numel() > 256 ** 3 else self.device
        with torch.inference_mode(not grad):
            outputs = sliding_window_inference(
                tensor.to(self.device), card.roi_size, sw_batch, predictor, overlap=card.overlap,
                mode=card.blend, device=stitch_device)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        logits = outputs[0]
        if not skip_forward and not runner.name.endswith("fp32") and not torch.isfinite(logits).all():
            logger.warning("non-finite logits on the %s path; re-running in float32", runner.name)
            self.fast_path = "off"
            self.path_choice, self._runner = None, None
            return self._infer(tensor, methods, target, progress, should_cancel, logits_needed)
        # outputs stay on the stitching device (the GPU for GPU-sized volumes): inverse.py maps them back there
        maps = {m: o.detach().float() for m, o in zip(methods, outputs[1:], strict=True)}
        return logits.detach().float(), maps

    def _fast_runner(self):
        """The window runner of this Segmenter's path (chosen on first use; calibrated once per machine)."""
        if self._runner is None:
            card = self.card
            self.path_choice, self._runner = fastpath.select(
                self.model, self.device, card.in_channels, card.roi_size, [lab["value"] for lab in card.labels],
                lambda logits: decide(card, activate(card, logits)).cpu().numpy(),
                lambda: fastpath.reference_tensor(card), self.fast_path)
        return self._runner

    def _path_report(self, runner, methods, notices: list[str]) -> dict:
        """Which path made the labels and each map; gradient maps fall back to fp32 with a notice."""
        fp32 = "cuda-fp32" if self.device.type == "cuda" else fastpath.REFERENCE
        maps = {}
        for method in methods:
            maps[method] = runner.name
            if method != "uncertainty" and WINDOW_EXPLAINERS[method].needs_grad:
                maps[method] = fp32
                if runner.name != fp32:
                    notices.append(f"{method} was computed with {fp32} (it needs gradients, which the "
                                   f"{runner.name} path does not give); the segmentation used {runner.name}")
        reason = self.path_choice.reason if self.path_choice else ""
        return {"path": runner.name, "reason": reason, "maps": maps}

    def _largest_structure(self, probabilities: torch.Tensor, notices: list[str], choices=None) -> int:
        values = choices or [label["value"] for label in self.card.labels]
        counts = torch.bincount(decide(self.card, probabilities).ravel().long(), minlength=256)
        best = max(values, key=lambda v: int(counts[v]))
        if int(counts[best]) == 0:
            notices.append(f"no structure predicted; class-dependent maps use {self.card.label_name(best)!r}")
        return best

    def _tta_uncertainty(self, prepared: Prepared, probabilities: torch.Tensor, progress,
                         should_cancel) -> torch.Tensor:
        """Entropy of the flip-TTA mean plus the mean per-class variance across flips, in [0, 1]."""
        stack = [probabilities]
        for axis in (2, 3, 4):
            flipped = prepared.tensor.flip(axis)
            logits, _ = self._infer(flipped, [], None, progress, should_cancel)
            stack.append(activate(self.card, logits).flip(axis - 1))
        probs = torch.stack(stack)
        variance = probs.var(0).mean(0)  # a probability's variance is at most 0.25
        return ((entropy_map(probs.mean(0), self.card.activation) + variance / 0.25).clamp(0, 1) / 2)[None, None]

    def _empty_result(self, volume: Volume, methods, notices, timings, t0) -> SegmentationResult:
        shape = volume.shape
        n = self.card.out_channels
        probabilities = np.zeros((n, *shape), np.float32)
        if self.card.activation != "sigmoid":
            probabilities[0] = 1.0
        timings["total_s"] = time.perf_counter() - t0
        return SegmentationResult(
            labelmap=np.zeros(shape, np.uint8), probabilities=probabilities,
            attention={m: np.zeros(shape, np.float32) for m in methods}, affine=volume.affine.copy(),
            card=self.card, target_class=None, device=str(self.device), timings=timings, notices=notices)


def segment(volume: Volume, card: ModelCard, **kwargs) -> SegmentationResult:
    """One-shot convenience: build a :class:`Segmenter` and run it (kwargs split between both)."""
    init_keys = {"device", "amp", "model", "download"}
    segmenter = Segmenter(card, **{k: v for k, v in kwargs.items() if k in init_keys})
    return segmenter.run(volume, **{k: v for k, v in kwargs.items() if k not in init_keys})
