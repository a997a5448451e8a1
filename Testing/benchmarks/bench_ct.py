"""CT-sized run, profiled: a synthetic 512x512x300 CT through read -> segment (gates + uncertainty) -> write.

Run: ``.venv/bin/python Testing/benchmarks/bench_ct.py [--model mni-tissue-attention-unet] [--fast-path auto]``.
Each measurement runs in a fresh subprocess (so peak RSS is the run's own, ``VmHWM``), and prints one JSON
object with the wall time split into read / preprocess (intensity, orientation, resample) / windows (model +
maps) / stitch (padding + blending, the rest of the sliding-window passes) / inverse (labels and maps back to the
input grid) / write, plus the peak RSS after each phase. ``--source DIR`` runs another checkout's library (e.g. a
``git worktree`` of an older commit) on the same file, for before/after tables. Not a test: timings on a shared
machine are too noisy to assert.

The CT is int16 HU in a ``.nii.gz`` (0.78 x 0.78 x 1.5 mm): air, a body ellipse of soft tissue with fat, a few
organ-like blobs and bone, plus noise. The demo models are brain-MRI models; speed and memory do not depend on
what they segment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_ct(path: Path, shape=(512, 512, 300), spacing=(0.78, 0.78, 1.5), seed: int = 0) -> None:
    """Write the synthetic CT (built slab by slab: the generator itself stays small)."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.linspace(-1, 1, shape[0], dtype=np.float32),
                       np.linspace(-1, 1, shape[1], dtype=np.float32), indexing="ij")
    data = np.empty(shape, np.int16)
    blobs = [(rng.uniform(-0.4, 0.4, 3), rng.uniform(0.08, 0.2), rng.uniform(20, 80)) for _ in range(6)]
    for k in range(shape[2]):
        z = -1 + 2 * k / (shape[2] - 1)
        body = (i / 0.85) ** 2 + (j / 0.6) ** 2 < 1
        fat = (i / 0.85) ** 2 + (j / 0.6) ** 2 > 0.8
        hu = np.where(body, np.where(fat, -90.0, 40.0), -1000.0).astype(np.float32)
        for centre, radius, value in blobs:
            inside = (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (z - centre[2]) ** 2 < radius ** 2
            hu[inside] = value
        hu[(i ** 2 + (j + 0.45) ** 2) < 0.01] = 700.0  # a spine
        hu += rng.normal(0, 15, shape[:2]).astype(np.float32)
        data[:, :, k] = np.clip(hu, -1024, 3000).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _hwm_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def child(args) -> None:
    """One measured run in this process (called through a fresh subprocess)."""
    sys.path.insert(0, str(Path(args.source) / "HybridAttentionSeg"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from HybridAttentionSegLib.core.inference.engine import Segmenter
    from HybridAttentionSegLib.core.inference.io import read_volume
    from HybridAttentionSegLib.core.inference.results import write_result
    from HybridAttentionSegLib.core.models.cards import get_card

    report, peaks = {"source": args.source, "threads": torch.get_num_threads()}, {}
    t_start = time.perf_counter()
    card = get_card(args.model)
    segmenter = Segmenter(card, device=args.device)
    if hasattr(segmenter, "_fast_runner"):
        segmenter._fast_runner()  # calibration/conversion is a one-time cost per machine: not part of a run
    report["setup_s"] = round(time.perf_counter() - t_start, 2)
    peaks["setup"] = _hwm_mb()
    t0 = time.perf_counter()
    volume = read_volume(args.input)
    report["read_s"] = round(time.perf_counter() - t0, 2)
    peaks["read"] = _hwm_mb()
    result = segmenter.run(volume, attention=["gates", "uncertainty"], keep_probabilities=False)
    peaks["segment"] = _hwm_mb()
    t1 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("ct.*"):
        old.unlink()
    write_result(result, out, "ct")
    report["write_s"] = round(time.perf_counter() - t1, 2)
    peaks["write"] = _hwm_mb()
    timings = result.timings
    windows = timings.get("windows_s")
    report.update(
        preprocess_s=timings.get("preprocess_s"), inference_s=timings.get("inference_s"),
        windows_s=round(windows, 2) if windows is not None else None,
        stitch_s=round(timings["inference_s"] - windows, 2) if windows is not None else None,
        inverse_s=timings.get("postprocess_s"), engine_total_s=timings.get("total_s"),
        wall_s=round(time.perf_counter() - t0, 2), peak_rss_mb={k: round(v) for k, v in peaks.items()},
        fast_path=getattr(result, "fast_path", {}).get("path", "torch-fp32 (no fast path)"),
        shape=list(volume.shape))
    print(json.dumps(report))  # noqa: T201 (the benchmark's output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mni-tissue-attention-unet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fast-path", default="auto", help="HYBRIDSEG_FAST_PATH for the run (auto/off/name)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--source", default=str(ROOT), help="checkout whose library is measured")
    parser.add_argument("--workdir", default="/tmp/hybridseg-bench-ct")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    ct = work / "ct.nii.gz"
    if not ct.exists():
        make_ct(ct)
    env = dict(os.environ, HYBRIDSEG_FAST_PATH=args.fast_path)
    command = [sys.executable, __file__, "--child", "--model", args.model, "--device", args.device,
               "--threads", str(args.threads), "--source", args.source, "--input", str(ct),
               "--out", str(work / "out")]
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
