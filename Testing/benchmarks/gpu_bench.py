"""GPU check in one go (about 10 minutes on an H100/H200): SwinUNETR fs48 on a synthetic 512x512x300 CT.

Run on the GPU machine: ``.venv/bin/python Testing/benchmarks/gpu_bench.py [--out DIR] [--repeats 3]``.
Random weights (the machine has no network; speed does not depend on the weight values). One process, one run:

1. the fast-path calibration on the GPU (cuda-fp32 vs cuda-fp16/-bf16 on reference windows, the label gate);
2. interleaved, best of ``--repeats`` after a warm-up, on the same volume in RAM:
   ``ours_seg`` (segmentation), ``ours_attention`` (segmentation + window-attention), and MONAI's reference
   pipeline (``bench._reference``: MONAI transforms, SlidingWindowInferer with AMP, Invertd);
3. label agreement ours vs reference, peak GPU memory (``torch.cuda.max_memory_allocated``) and peak RSS.

Writes ``gpu_bench.json`` into ``--out`` (default ``$OUT`` or the current folder) and prints it.
Targets (issue 14): ours_attention <= 0.5 s end-to-end, >= 8x the reference, peak GPU <= 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "HybridAttentionSeg"))


def ct_volume(shape=(512, 512, 300), spacing=(0.78, 0.78, 1.5)):
    """A synthetic HU volume (air, body ellipse with fat rim, organ-like blobs, spine, noise), float32 in RAM."""
    import numpy as np
    import torch
    from HybridAttentionSegLib.core.inference.volume import Volume

    g = torch.Generator().manual_seed(0)
    i = torch.linspace(-1, 1, shape[0])[:, None, None]
    j = torch.linspace(-1, 1, shape[1])[None, :, None]
    k = torch.linspace(-1, 1, shape[2])[None, None, :]
    ellipse = (i / 0.85) ** 2 + (j / 0.6) ** 2
    hu = torch.full(shape, -1000.0)
    hu[(ellipse < 1).expand(shape)] = 40.0
    hu[((ellipse < 1) & (ellipse > 0.8)).expand(shape)] = -90.0
    for _ in range(6):
        c = torch.rand(3, generator=g) * 0.8 - 0.4
        r = float(torch.rand(1, generator=g)) * 0.12 + 0.08
        hu[(i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2 < r ** 2] = float(torch.rand(1, generator=g)) * 60 + 20
    hu[((i ** 2 + (j + 0.45) ** 2) < 0.01).expand(shape)] = 700.0
    hu += torch.randn(shape, generator=g) * 15
    return Volume(hu.numpy()[None].astype(np.float32), np.diag([-spacing[0], -spacing[1], spacing[2], 1.0]),
                  name="ct")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swin-unetr-btcv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window-batch", type=int, default=4, help="window batch on the GPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()

    import torch
    from HybridAttentionSegLib.core.inference.bench import _reference
    from HybridAttentionSegLib.core.inference.engine import Segmenter, build_model
    from HybridAttentionSegLib.core.models.cards import get_card

    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device; run this on the GPU machine", file=sys.stderr)  # noqa: T201
        return 2
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    card = get_card(args.model)
    torch.manual_seed(0)
    model = build_model(card).to(dev).eval()
    volume = ct_volume()
    report = {"model": card.id, "device_name": torch.cuda.get_device_name(dev), "shape": list(volume.shape),
              "torch": torch.__version__, "window_batch": args.window_batch, "roi": list(card.roi_size)}

    t0 = time.perf_counter()
    ours = Segmenter(card, device="cuda", model=model, fast_path="auto")
    ours.gpu_window_batch = args.window_batch
    ours._fast_runner()
    report["calibration_s"] = round(time.perf_counter() - t0, 2)
    report["path"] = ours.path_choice.as_dict()

    def sync(fn):
        def wrapped():
            out = fn()
            torch.cuda.synchronize()
            return out
        return wrapped

    runners = {
        "ours_seg": sync(lambda: ours.run(volume, keep_probabilities=False).labelmap),
        "ours_attention": sync(lambda: ours.run(volume, attention=["window-attention"],
                                                keep_probabilities=False).labelmap),
        "monai_reference": sync(lambda: _reference(card, model, volume, dev, True)),
    }
    best, peaks, labels = {}, {}, {}
    for name, fn in runners.items():  # warm-up (cudnn autotuning, allocator)
        t = time.perf_counter()
        fn()
        report[f"{name}_first_s"] = round(time.perf_counter() - t, 3)
        print(f"warm-up {name}: {report[f'{name}_first_s']} s", file=sys.stderr, flush=True)  # noqa: T201
    for _ in range(args.repeats):
        for name, fn in runners.items():
            torch.cuda.reset_peak_memory_stats(dev)
            t = time.perf_counter()
            labels[name] = fn()
            elapsed = time.perf_counter() - t
            best[name] = min(best.get(name, float("inf")), elapsed)
            peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated(dev) / 2**20)
    for name in runners:
        report[f"{name}_s"] = round(best[name], 3)
        report[f"{name}_peak_gpu_mb"] = round(peaks[name] * 1.048576, 1)
    report["speedup_seg"] = round(best["monai_reference"] / best["ours_seg"], 2)
    report["speedup_attention"] = round(best["monai_reference"] / best["ours_attention"], 2)
    same = labels["ours_seg"].shape == labels["monai_reference"].shape
    report["label_agreement"] = (round(float((labels["ours_seg"] == labels["monai_reference"]).mean()), 4)
                                 if same else None)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    report["targets"] = {"ours_attention_le_0.5s": best["ours_attention"] <= 0.5,
                         "speedup_ge_8x": report["speedup_attention"] >= 8,
                         "peak_gpu_le_6GB": report["ours_attention_peak_gpu_mb"] <= 6000}
    text = json.dumps(report, indent=1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_bench.json").write_text(text)
    print(text)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
