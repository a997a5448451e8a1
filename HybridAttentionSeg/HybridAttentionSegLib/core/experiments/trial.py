"""One trial of the grid: train one variant with one seed, evaluate it, measure its compute.

Training is the project's trainer (:func:`..training.trainer.train_model`: AdamW, warm-up and cosine
schedule, Dice + cross-entropy, seeded) fed by :class:`.datasets.CaseBatches`. The last step's weights are
evaluated (no checkpoint is picked on test or validation data). Inference is MONAI's
``sliding_window_inference`` (window = the training patch, Gaussian blending) on each prepared case, the
label the argmax; the latency of a volume is that call plus the argmax, after one warm-up window.

A trial runs in its own process (a Ray worker with ``max_calls=1``), so the peak RSS it reports is its own.
"""

from __future__ import annotations

import logging
import platform
import time

import numpy as np
import torch

from .metrics import case_metrics, count_parameters, gflops_per_window, peak_gpu_mb, peak_rss_mb

logger = logging.getLogger(__name__)


def trial_name(variant: str, seed: int) -> str:
    """File stem of a trial's result."""
    return f"{variant}-seed{seed}"


def _predict(model, image: np.ndarray, settings, device) -> tuple[np.ndarray, float]:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.array(image, dtype=np.float32))[None].to(device)  # a copy: Ray's arrays are read-only
    start = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(x, tuple(settings.patch), 1, model, overlap=settings.overlap,
                                          mode="gaussian")
        labels = logits.argmax(1)[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return labels.to(torch.uint8).cpu().numpy(), seconds


def evaluate(model, cases, values, settings, device) -> dict:
    """Dice and HD95 per case and class, and the latency per volume."""
    model.eval()
    with torch.no_grad():  # warm-up: allocator and kernels, so the first case is not timed cold
        model(torch.zeros((1, cases[0].image.shape[0], *settings.patch), device=device))
    dice, hd95, seconds = [], [], []
    for case in cases:
        labels, elapsed = _predict(model, case.image, settings, device)
        d, h = case_metrics(labels, case.labels, values, case.spacing)
        dice.append([round(v, 5) for v in d])
        hd95.append([round(v, 4) for v in h])
        seconds.append(elapsed)
    return {"cases": [c.name for c in cases], "dice": dice, "hd95": hd95,
            "latency_s": round(float(np.mean(seconds)), 4)}


def run_trial(variant, seed: int, settings, payload: dict, device: str = "auto") -> dict:
    """Train ``variant`` with ``seed`` on ``payload["train"]`` and evaluate it; return the result dict.

    ``payload``: ``classes`` [(value, name)], ``channels``, ``out_channels``, the ``train``, ``validation`` and
    ``test`` case lists, and optionally ``test2`` (a second test dataset) with ``test2_name``.
    """
    from ..inference.engine import resolve_device
    from ..training.trainer import TrainConfig, torch_settings, train_model
    from .datasets import CaseBatches

    device = resolve_device(device)
    values = [value for value, _ in payload["classes"]]
    config = TrainConfig(
        architecture=variant.architecture, model_id=trial_name(variant.name, seed), kwargs=dict(variant.kwargs),
        steps=settings.steps, patch=tuple(settings.patch), batch_size=settings.batch_size, lr=settings.lr,
        warmup=min(50, max(1, settings.steps // 10)), seed=seed, data="experiment", device=str(device),
        threads=settings.threads, progress=False, batches=CaseBatches(payload["train"], settings.patch, seed),
        in_channels=payload["channels"], out_channels=payload["out_channels"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, info = train_model(config)
    model = model.to(device)
    result = {
        "variant": variant.name, "seed": seed, "architecture": variant.architecture, "kwargs": variant.kwargs,
        "attention": variant.attention, "layers": variant.layers, "params": count_parameters(model),
        "train_s": info["wall_time_s"], "final_loss": round(float(np.mean(info["loss_history"][-10:])), 4),
        "device": info["device"], "host": platform.node(), "threads": settings.threads,
    }
    with torch_settings(settings.threads):
        result["gflops"] = round(gflops_per_window(model, payload["channels"], settings.patch, device), 4)
        if payload.get("validation"):
            result["validation"] = evaluate(model, payload["validation"], values, settings, device)
        result["test"] = evaluate(model, payload["test"], values, settings, device)
        if payload.get("test2"):
            result["test2"] = evaluate(model, payload["test2"], values, settings, device)
            result["test2"]["dataset"] = payload.get("test2_name", "test-data")
    result["latency_s"] = result["test"]["latency_s"]
    result["peak_mem_mb"] = round(peak_rss_mb(), 1)
    gpu = peak_gpu_mb(device)
    if gpu is not None:
        result["peak_gpu_mb"] = round(gpu, 1)
    logger.info("%s seed %d: test Dice %.4f", variant.name, seed, float(np.mean(result["test"]["dice"])))
    return result
