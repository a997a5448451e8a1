"""Time the live threshold for a 256^3 volume: the core rule, and the slider in a slicer-core scene.

Run: ``PYTHONPATH=HybridAttentionSeg .venv/bin/python Testing/benchmarks/threshold_speed.py [--size 256]``.
Prints the median and the best of several moves (target: <= 100 ms per move on a CPU). Not a test: timings
on a shared machine are too noisy to assert.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def phantom(size: int):
    """Two nested balls and smooth probabilities (3 channels) on a size^3 grid."""
    grids = np.ogrid[tuple(slice(0, size) for _ in range(3))]
    centre = (size - 1) / 2
    radius = np.sqrt(sum((g - centre) ** 2 for g in grids)).astype(np.float32)
    labelmap = np.zeros((size,) * 3, np.uint8)
    labelmap[radius < 0.35 * size] = 1
    labelmap[radius < 0.2 * size] = 2
    inner = np.clip(1.5 - radius / (0.2 * size), 0, 1)
    outer = np.clip(1.5 - radius / (0.35 * size), 0, 1) - inner
    outer = np.clip(outer, 0, 1)
    probabilities = np.stack([1 - inner - outer, outer, inner]).astype(np.float32)
    return labelmap, probabilities


def time_moves(move, thresholds) -> list[float]:
    times = []
    for threshold in thresholds:
        start = time.perf_counter()
        move(threshold)
        times.append(1000 * (time.perf_counter() - start))
    return times


def report(name: str, times: list[float]) -> None:
    line = (f"{name:<44} median {statistics.median(times):7.1f} ms   best {min(times):7.1f} ms   "
            f"({len(times)} moves)")
    print(line)  # noqa: T201


def main() -> None:
    from HybridAttentionSegLib.core.correction.refine import threshold_segment

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    labelmap, probabilities = phantom(args.size)
    thresholds = [0.5, 0.45, 0.4, 0.35, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7]
    print(f"{args.size}^3 labelmap, {probabilities.shape[0]}-channel float32 probabilities")  # noqa: T201
    report("core threshold_segment (full map)", time_moves(
        lambda t: threshold_segment(labelmap, probabilities, 2, t), thresholds))
    channel = probabilities[2]
    report("core threshold_segment (one channel)", time_moves(
        lambda t: threshold_segment(labelmap, channel, 2, t), thresholds))
    try:
        import slicer  # noqa: F401
    except ImportError:
        print("slicer-core not installed: the Slicer slider is not timed")  # noqa: T201
        return
    from HybridAttentionSegLib.mrml.correction import CorrectionLogic
    from HybridAttentionSegLib.mrml.headless import HeadlessSlicer
    from HybridAttentionSegLib.mrml.outputs import segmentId

    app = HeadlessSlicer()
    scene = app.scene
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    slicer.util.updateVolumeFromArray(volume, labelmap.transpose(2, 1, 0).astype(np.float32))
    probabilityNode = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "probabilities")
    kjic = np.ascontiguousarray(probabilities.transpose(3, 2, 1, 0))
    slicer.util.updateVolumeFromArray(probabilityNode, kjic)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segmentation")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for value, name in ((1, "Outer"), (2, "Inner")):  # segment IDs as the Logic names them (channel = suffix)
        identifier = segmentId("bench", value)
        segmentation.GetSegmentation().AddEmptySegment(identifier, name)
        mask = (labelmap == value).transpose(2, 1, 0).astype(np.uint8)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, identifier, volume)
    logic = CorrectionLogic()
    inner = segmentId("bench", 2)
    assert logic.probabilityChannel(segmentation, inner, probabilityNode) == 2

    def move(threshold):
        logic.setSegmentThreshold(segmentation, inner, probabilityNode, threshold, volume)

    report("Slicer slider, first move (exports others)", time_moves(move, [0.5]))
    report("Slicer slider, later moves", time_moves(move, thresholds))


if __name__ == "__main__":
    main()
