"""Soak: many consecutive ``HybridAttentionSegLogic.process()`` runs in one Logic, on a real slicer-core scene.

Checks what a long Slicer session would show: resident memory of this (the "Slicer") process and of the worker
back within 5 % of the post-warm-up level, and no growth in MRML nodes or in MRML observations (the
``vtkEventBroker``, through which MRML nodes observe each other). A tiny random-weight Attention U-Net on a
small volume (real safetensors file, real worker process), so 100 runs take a few minutes on 2 CPU cores.

Run (not part of the default test run)::

    PYTHONPATH=HybridAttentionSeg:Testing/pytest OMP_NUM_THREADS=1 \\
        .venv/bin/python Testing/benchmarks/soak_logic.py [--runs 100] [--warmup 5] [--mode update|new]

``--mode update`` (default) re-runs into the same segmentation (a user refining one result);
``--mode new`` creates new nodes every run and removes them again afterwards (a user who deletes results).
Exit code 0 when every limit holds, 1 otherwise. Prints one line per ``--every`` runs and a JSON summary.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
for extra in (ROOT / "HybridAttentionSeg", ROOT / "Testing" / "pytest"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

logger = logging.getLogger("soak")
RSS_TOLERANCE = 0.05
TINY_KWARGS = {"channels": (4, 8, 16, 32), "strides": (2, 2, 2)}


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def blob_volume(path: Path) -> Path:
    """A smooth 48x48x40 blob at 2 mm (NIfTI), so the tiny model has something to segment."""
    import nibabel as nib

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in (48, 48, 40)], indexing="ij"))
    data = np.exp(-4 * (grid**2).sum(0)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-47.0, -47.0, -39.0)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def remove_outputs(scene, result) -> None:
    """Remove a run's nodes and their display/storage nodes, as Slicer's Data module does for a user."""
    nodes = [result.segmentationNode, result.tableNode, *result.attentionNodes.values()]
    nodes += [result.probabilitiesNode] if result.probabilitiesNode is not None else []
    for node in nodes:
        dependents = []
        if node.IsA("vtkMRMLDisplayableNode"):
            dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is not None:
            dependents.append(node.GetStorageNode())
        for dependent in [*dependents, node]:
            if dependent is not None and dependent.GetScene() is scene:
                scene.RemoveNode(dependent)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--mode", choices=("update", "new"), default="update")
    parser.add_argument("--every", type=int, default=10, help="print a line every N runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import slicer
    from HybridAttentionSegLib import HybridAttentionSegLogic
    from HybridAttentionSegLib.mrml.headless import HeadlessSlicer
    from HybridAttentionSegLib.worker.client import WorkerClient
    from synthetic import write_random_weights_card

    work = Path(tempfile.mkdtemp(prefix="hybridseg-soak-"))
    card = write_random_weights_card(work, "attention_unet", TINY_KWARGS, (32, 32, 32), model_id="soak-tiny",
                                     spacing=(4.0, 4.0, 4.0))
    app = HeadlessSlicer()
    scene = app.scene
    for name in ("Red", "Yellow", "Green"):  # slice views, so showAttention really rewires composites
        scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode").SetLayoutName(name)
    volume = app.loadVolume(blob_volume(work / "blob.nii.gz"), "blob")
    logic = HybridAttentionSegLogic(WorkerClient(threads=1), catalogFiles=[str(card)])
    broker = slicer.vtkEventBroker.GetInstance()
    display = {"opacity": 0.5, "threshold": 0.2, "colorMap": "Inferno", "showLegend": True}

    samples, output, baseline = [], None, None
    t0 = time.perf_counter()
    try:
        for run in range(1, args.runs + 1):
            start = time.perf_counter()
            result = logic.process(volume, "soak-tiny", attentionMethods=["gates", "uncertainty"],
                                   outputSegmentation=output, display=display, timeout=600)
            if args.mode == "update":
                output = result.segmentationNode
            else:
                remove_outputs(scene, result)
            del result
            gc.collect()
            sample = {"run": run, "seconds": round(time.perf_counter() - start, 3),
                      "rss_mib": rss_bytes() / 2**20, "worker_rss_mib": rss_bytes(logic.worker.pid) / 2**20,
                      "nodes": scene.GetNumberOfNodes(), "observations": broker.GetNumberOfObservations()}
            samples.append(sample)
            if run == args.warmup:
                baseline = dict(sample)
            if run % args.every == 0 or run == args.warmup:
                line = (f"run {run:4d}  {sample['seconds']:6.2f} s  RSS {sample['rss_mib']:7.1f} MiB  "
                        f"worker {sample['worker_rss_mib']:7.1f} MiB  nodes {sample['nodes']}  "
                        f"observations {sample['observations']}")
                print(line, flush=True)  # noqa: T201
    finally:
        logic.shutdown()
    final = samples[-1]
    checks = {
        "rss_within_5pct": final["rss_mib"] <= baseline["rss_mib"] * (1 + RSS_TOLERANCE),
        "worker_rss_within_5pct": final["worker_rss_mib"] <= baseline["worker_rss_mib"] * (1 + RSS_TOLERANCE),
        "no_node_growth": final["nodes"] == baseline["nodes"],
        "no_observation_growth": final["observations"] <= baseline["observations"],
    }
    summary = {
        "runs": args.runs, "warmup": args.warmup, "mode": args.mode, "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(), "total_seconds": round(time.perf_counter() - t0, 1),
        "median_run_seconds": float(np.median([s["seconds"] for s in samples[args.warmup:]])),
        "baseline": baseline, "final": final,
        "rss_change_pct": round(100 * (final["rss_mib"] / baseline["rss_mib"] - 1), 2),
        "worker_rss_change_pct": round(100 * (final["worker_rss_mib"] / baseline["worker_rss_mib"] - 1), 2),
        "peak_rss_mib": round(max(s["rss_mib"] for s in samples), 1), "checks": checks,
    }
    print(json.dumps(summary, indent=2))  # noqa: T201
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
