"""Benchmark: our pipeline vs MONAI's reference pipeline on the same synthetic volume, in one run.

Reference = the card's own preprocessing as MONAI dictionary transforms (``bench_reference.py``: intensity,
Orientationd, Spacingd in the card's order) + ``SlidingWindowInferer`` (card ROI, overlap and blending,
sw_batch_size 4, AMP on GPU) + activation + ``Invertd`` + argmax.
Ours = :class:`~.engine.Segmenter` on its chosen path (``fast_path``: calibrated per model and machine, see
``fastpath.py``; its one-time calibration runs in the warm-up, outside the timing). Both use the same network:
the card's weights when they are on this machine (bundled or downloaded), else random weights (speed does not
depend on the weight values; the label agreement then compares random-weight labels).

With ``explain=True`` the report adds our time with the model's natural attention method (``attention_s``,
``attention_overhead``) and with Grad-CAM for one class (``gradcam_s``, ``gradcam_ratio``), both relative to
our segmentation alone.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from ..models.cards import ModelCard
from .bench_reference import reference_labels
from .engine import Segmenter, build_model, resolve_device
from .volume import Volume


class _PeakMemory:
    """Peak resident memory (CPU, from /proc) or peak CUDA allocation while the block runs, in MiB."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss_mib() -> float:
        try:
            with open("/proc/self/status", encoding="utf-8") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._rss_mib())
            time.sleep(0.02)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
        return False


def synthetic_volume(shape, spacing, seed: int = 0) -> Volume:
    """Smooth random blobs on an anisotropic, LPS-oriented grid (exercises orientation and spacing)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    data = np.zeros(shape, np.float32)
    for _ in range(6):
        centre = rng.uniform(-0.6, 0.6, 3)[:, None, None, None]
        data += np.exp(-((grid - centre) ** 2).sum(0) / rng.uniform(0.02, 0.1)).astype(np.float32)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    return Volume(data, affine, name="synthetic")


def _model(card: ModelCard, dev: torch.device):
    """The card's network with its weights if they are on this machine, else seeded random weights."""
    torch.manual_seed(0)
    model = build_model(card)
    weights = "random"
    if card.bundled or card.downloaded:
        from ..weights import load_model_weights

        load_model_weights(card, model, download=False)
        weights = "card"
    return model.to(dev).eval(), weights


def run_bench(card: ModelCard, shape=(128, 128, 128), device: str = "auto", repeats: int = 3,
              fast_path: str | None = None, explain: bool = False, spacing=None) -> dict:
    """Time ours vs MONAI's reference (interleaved, best of ``repeats`` after a warm-up); returns a report.

    ``spacing``: voxel size of the synthetic volume (default: the card's, so neither side resamples).
    """
    from .fastpath import cpu_name

    dev = resolve_device(device)
    amp = dev.type == "cuda"
    model, weights = _model(card, dev)
    spacing = spacing or card.spacing or (1.0, 1.0, 1.0)
    volume = synthetic_volume(shape, spacing)
    if card.in_channels > 1:
        volume = Volume(np.repeat(volume.data, card.in_channels, axis=0), volume.affine, name=volume.name)
    ours = Segmenter(card, device=str(dev), model=model, fast_path=fast_path)
    report = {"model": card.id, "shape": list(shape), "device": str(dev),
              "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
              "threads": torch.get_num_threads(), "roi": list(card.roi_size), "weights": weights}
    runners = {
        "ours": lambda: ours.run(volume, keep_probabilities=False).labelmap,
        "monai_reference": lambda: reference_labels(card, model, volume, dev, amp),
    }
    if explain:
        natural = card.spec.natural_method
        runners["attention"] = lambda: ours.run(volume, attention=[natural], keep_probabilities=False).labelmap
        runners["gradcam"] = lambda: ours.run(volume, attention=["grad-cam"], keep_probabilities=False).labelmap
    labels, best, peaks = {}, dict.fromkeys(runners, float("inf")), dict.fromkeys(runners, 0.0)
    for fn in runners.values():
        fn()  # warm-up (allocator, kernels, caches)
    for _ in range(repeats):  # interleaved, best of n: fair under a noisy, shared machine
        for name, fn in runners.items():
            with _PeakMemory(dev) as peak:
                t0 = time.perf_counter()
                labels[name] = fn()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - t0)
            peaks[name] = max(peaks[name], peak.peak_mib)
    for name in runners:
        report[f"{name}_s"] = round(best[name], 3)
        report[f"{name}_peak_mib"] = round(peaks[name], 1)
    report["speedup_vs_monai"] = round(report["monai_reference_s"] / max(report["ours_s"], 1e-9), 3)
    same = labels["ours"].shape == labels["monai_reference"].shape
    report["label_agreement"] = (round(float((labels["ours"] == labels["monai_reference"]).mean()), 4)
                                 if same else None)
    if same:  # the same, over the voxels either pipeline labels (background alone cannot make it high)
        either = (labels["ours"] > 0) | (labels["monai_reference"] > 0)
        agree = labels["ours"][either] == labels["monai_reference"][either]
        report["label_agreement_foreground"] = round(float(agree.mean()), 4) if either.any() else None
        report["labelled_fraction"] = round(float(either.mean()), 4)
    # the issue-14 field names (the long names above are kept for older scripts)
    report.update(precision=ours.path_choice.name if ours.path_choice else "torch-fp32",
                  reference_s=report["monai_reference_s"], speedup=report["speedup_vs_monai"],
                  peak_rss_mb=round(peaks["ours"] * 1.048576, 1) if dev.type != "cuda" else None)
    if report["precision"] not in ("torch-fp32", "cuda-fp32"):  # the fast path against our own fp32 (untimed)
        fp32 = Segmenter(card, device=str(dev), model=model, fast_path="off").run(volume, keep_probabilities=False)
        report["agreement_vs_fp32"] = round(float((fp32.labelmap == labels["ours"]).mean()), 6)
    if dev.type == "cuda":
        report["peak_gpu_mb"] = round(peaks["ours"] * 1.048576, 1)
    if explain:
        report["attention_method"] = card.spec.natural_method
        report["attention_overhead"] = round(report["attention_s"] / max(report["ours_s"], 1e-9) - 1.0, 3)
        report["gradcam_ratio"] = round(report["gradcam_s"] / max(report["ours_s"], 1e-9), 3)
    return report
