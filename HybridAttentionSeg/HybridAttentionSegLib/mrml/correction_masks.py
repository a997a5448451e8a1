"""Array helpers of :class:`~.correction.CorrectionLogic`: segment masks, grids and the review table.

MRML only (no Qt). Slicer arrays are (K, J, I); masks here are in that order too.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from . import outputs

REGION_COLUMNS = ("Rank", "Segment", "Voxels", "Volume [mL]", "Mean uncertainty", "Score", "R", "A", "S")


def listSegmentIds(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def contentTime(segmentationNode) -> int:
    """Modification time of the segments' contents (changes with every edit of any segment)."""
    segmentation = segmentationNode.GetSegmentation()
    times = [segmentation.GetMTime()]
    for segmentId in listSegmentIds(segmentationNode):
        representation = segmentation.GetSegment(segmentId).GetRepresentation(
            slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
        if representation is not None:
            times.append(representation.GetMTime())
    return max(times)


def segmentMask(segmentationNode, segmentId: str, referenceVolumeNode) -> np.ndarray:
    """(K, J, I) bool mask of one segment on the reference volume's grid."""
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode) > 0


def kjiShape(volumeNode) -> tuple[int, int, int]:
    dims = volumeNode.GetImageData().GetDimensions()
    return (dims[2], dims[1], dims[0])


def componentCount(volumeNode) -> int:
    return int(volumeNode.GetImageData().GetNumberOfScalarComponents())


def channelArray(volumeNode, channel: int) -> np.ndarray:
    """(K, J, I) view of one component of a (vector) volume."""
    array = slicer.util.arrayFromVolume(volumeNode)
    return array[..., channel] if array.ndim == 4 else array


def internalLabelmap(masks: list[np.ndarray], shape) -> np.ndarray:
    """Segment masks -> one uint8 labelmap (segment index + 1; later segments win where they overlap)."""
    labelmap = np.zeros(shape, np.uint8)
    for index, mask in enumerate(masks):
        labelmap[mask] = index + 1
    return labelmap


def checkSameGrid(volumeNode, referenceVolumeNode) -> None:
    if volumeNode is referenceVolumeNode:
        return
    same = (kjiShape(volumeNode) == kjiShape(referenceVolumeNode) and np.allclose(
        outputs.ijkToRasArray(volumeNode), outputs.ijkToRasArray(referenceVolumeNode),
        atol=outputs.GEOMETRY_TOLERANCE_MM))
    if not same:
        message = (f"{volumeNode.GetName()} is not on the grid of {referenceVolumeNode.GetName()}; use the "
                   "maps computed for this volume (or resample them onto it)")
        raise ValueError(message)


def worldToLocal(volumeNode):
    """Function mapping world RAS to the volume's local RAS (identity without a parent transform)."""
    transformNode = volumeNode.GetParentTransformNode()
    if transformNode is None:
        return lambda point: list(point)
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, transformNode, transform)
    return lambda point: list(transform.TransformPoint(point))


def boundingBox(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding all True voxels (a 1-voxel box at the origin if there are none)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 1))
    return tuple(box)


def writeSegmentMask(segmentationNode, segmentId: str, referenceVolumeNode, mask: np.ndarray,
                      box: tuple[slice, ...]) -> None:
    """Replace the segment by ``mask``, given inside ``box`` (K, J, I slices of the reference grid).

    ``box`` must hold every voxel the segment has now and will have: ``MODE_REPLACE`` replaces the whole
    segment. Writing an oriented image of just the box with ``SetBinaryLabelmapToSegment`` is about ten times
    faster than ``slicer.util.updateSegmentBinaryLabelmapFromArray`` (a temporary volume node and a full
    import) for a 256^3 volume. When the volume and the segmentation sit under different transforms, that
    helper (which resamples) is used instead.
    """
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, kjiShape(referenceVolumeNode), strict=False))
    if referenceVolumeNode.GetParentTransformNode() is not segmentationNode.GetParentTransformNode():
        full = segmentMask(segmentationNode, segmentId, referenceVolumeNode)
        full[box] = mask
        slicer.util.updateSegmentBinaryLabelmapFromArray(full.view(np.uint8), segmentationNode, segmentId,
                                                         referenceVolumeNode)
        return
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    extent = [box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1]
    image.SetExtent(extent)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(mask.shape)[:] = mask
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, logic.MODE_REPLACE, extent):
        message = f"writing segment {segmentId!r} of {segmentationNode.GetName()} failed"
        raise RuntimeError(message)


def fillRegionTable(tableNode, regions: list[dict]) -> None:
    table = vtk.vtkTable()
    kinds = (vtk.vtkIntArray, vtk.vtkStringArray, vtk.vtkIntArray) + (vtk.vtkDoubleArray,) * 6
    for title, kind in zip(REGION_COLUMNS, kinds, strict=False):
        array = kind()
        array.SetName(title)
        table.AddColumn(array)
    for region in regions:
        values = [region["rank"], region["name"], region["voxels"], region["volume_ml"],
                  region["mean_uncertainty"], region["score"], *region["focus_ras"]]
        for column, value in enumerate(values):
            table.GetColumn(column).InsertNextValue(value)
    tableNode.SetAndObserveTable(table)
    tableNode.SetUseColumnNameAsColumnHeader(True)
    tableNode.SetColumnUnitLabel("Volume [mL]", "mL")
