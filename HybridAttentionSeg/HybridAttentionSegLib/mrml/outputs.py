"""Result files -> MRML nodes on the input's exact grid (segments, attention heat maps, probabilities, table).

MRML/VTK only (no Qt), so it runs inside Slicer and under plain slicer-core. Every node goes into the scene of
the input volume, under the input's parent in the subject hierarchy (its study, for DICOM data), and under the
input's parent transform. Files are read with Slicer's own volume storage node (ITK readers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from ..core.inference.io import terminology_entry
from . import rendering
from .options import COLOR_MAPS  # also imported from here by the panel and tests

logger = logging.getLogger(__name__)

ROLE_PREFIX = "HybridAttentionSeg."
ATTENTION_ROLE = ROLE_PREFIX + "attention."
PROBABILITIES_ROLE = ROLE_PREFIX + "probabilities"
TABLE_ROLE = ROLE_PREFIX + "segmentStatistics"
INPUT_ROLE = ROLE_PREFIX + "input"
MODEL_TAG = ROLE_PREFIX + "ModelId"
#: largest IJK->RAS difference (mm) accepted between a result file and the input before it is snapped
GEOMETRY_TOLERANCE_MM = 1e-3


@dataclass
class ProcessResult:
    """The nodes one run produced or updated, and the worker's summary (without its temporary file paths)."""

    segmentationNode: object
    attentionNodes: dict
    probabilitiesNode: object | None
    tableNode: object
    summary: dict
    newSegmentIds: list[str] = field(default_factory=list)


def segmentId(modelId: str, value: int) -> str:
    """The segment ID used for label ``value`` of model ``modelId`` (stable across re-runs)."""
    return f"HybridAttentionSeg_{modelId}_{int(value)}"


def ijkToRasArray(volumeNode) -> np.ndarray:
    """The volume's IJK->RAS matrix as a 4x4 array."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def readVolumeFile(path, node, referenceVolume) -> None:
    """Read a volume file into ``node`` and put it on ``referenceVolume``'s exact grid.

    The file was written on the reference grid; a difference above :data:`GEOMETRY_TOLERANCE_MM` or other
    dimensions means a broken result and raises. Within tolerance, the matrix is copied so that the grids are
    bit-identical (text NRRD headers round the last digits).
    """
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        message = f"Slicer could not read the result file {path}; re-run the segmentation"
        raise RuntimeError(message)
    expected = referenceVolume.GetImageData().GetDimensions()
    got = node.GetImageData().GetDimensions()
    difference = float(np.abs(ijkToRasArray(node) - ijkToRasArray(referenceVolume)).max())
    if got != expected or difference > GEOMETRY_TOLERANCE_MM:
        message = (f"result {node.GetName()} is not on the input grid (dimensions {got} vs {expected}, "
                   f"IJK->RAS differs by {difference:.3g} mm); this is a bug, please report it")
        raise RuntimeError(message)
    matrix = vtk.vtkMatrix4x4()
    referenceVolume.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)


def _referencedOrNew(scene, ownerNode, role: str, className: str, name: str, created: list):
    """The node ``ownerNode`` references under ``role`` (re-runs update it), else a new node."""
    node = ownerNode.GetNodeReference(role) if ownerNode is not None else None
    if node is not None and node.GetScene() is scene and node.IsA(className):
        return node
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
    created.append(node)
    return node


def importSegments(segmentationNode, inputVolume, labelmapPath, labels: list[dict],
                   modelId: str) -> list[str]:
    """Import the labelmap file as one segment per card label; returns the IDs of segments that are new.

    Segments of this model from an earlier run are updated in place; every other segment is left alone.
    """
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()  # never added to the scene
    labelmap.SetName("labelmap")
    readVolumeFile(labelmapPath, labelmap, inputVolume)
    segmentation = segmentationNode.GetSegmentation()
    maxValue = max(int(label["value"]) for label in labels)
    byValue = {int(label["value"]): label for label in labels}
    ids = vtk.vtkStringArray()
    for value in range(1, maxValue + 1):  # label value v goes to ids[v - 1]; "" skips a value
        ids.InsertNextValue(segmentId(modelId, value) if value in byValue else "")
    existing = {segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())}
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.ImportLabelmapToSegmentationNode(labelmap, segmentationNode, ids):
        message = f"importing the segmentation into {segmentationNode.GetName()} failed; run it again"
        raise RuntimeError(message)
    newIds = []
    for value, label in sorted(byValue.items()):
        identifier = segmentId(modelId, value)
        segment = segmentation.GetSegment(identifier)
        if segment is None:
            message = f"segment {label['name']!r} is missing after import; re-run the segmentation"
            raise RuntimeError(message)
        if identifier not in existing:
            newIds.append(identifier)
        segment.SetName(label["name"])
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*[float(c) for c in label["color"]])
        segment.SetColorAutoGenerated(False)
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_entry(label))
        segment.SetTag(MODEL_TAG, modelId)
    return newIds


def addAttentionVolume(scene, inputVolume, segmentationNode, method: str, path, created: list):
    """Load one attention map (float, [0, 1]) as a scalar volume referenced by the segmentation node."""
    role = ATTENTION_ROLE + method
    node = _referencedOrNew(scene, segmentationNode, role, "vtkMRMLScalarVolumeNode",
                            f"{inputVolume.GetName()} attention ({method})", created)
    readVolumeFile(path, node, inputVolume)
    node.SetAttribute(ROLE_PREFIX + "AttentionMethod", method)
    segmentationNode.SetNodeReferenceID(role, node.GetID())
    return node


def addProbabilities(scene, inputVolume, segmentationNode, path, labels: list[dict], created: list):
    """Load the per-class probabilities (component 0 = background) as a vector volume, kept for correction."""
    node = _referencedOrNew(scene, segmentationNode, PROBABILITIES_ROLE, "vtkMRMLVectorVolumeNode",
                            f"{inputVolume.GetName()} probabilities", created)
    readVolumeFile(path, node, inputVolume)
    names = ["Background"] + [f"{label['value']}:{label['name']}" for label in labels]
    node.SetAttribute(ROLE_PREFIX + "Components", "|".join(names))
    segmentationNode.SetNodeReferenceID(PROBABILITIES_ROLE, node.GetID())
    return node


def placeLikeInput(inputVolume, nodes) -> None:
    """Put ``nodes`` under the input's parent in the subject hierarchy and under its parent transform."""
    scene = inputVolume.GetScene()
    hierarchy = scene.GetSubjectHierarchyNode()
    if hierarchy is not None:
        inputItem = _hierarchyItem(hierarchy, inputVolume)
        parent = hierarchy.GetItemParent(inputItem)
        for node in nodes:
            hierarchy.SetItemParent(_hierarchyItem(hierarchy, node), parent)
    transformId = inputVolume.GetTransformNodeID()
    for node in nodes:
        if node.IsA("vtkMRMLTransformableNode"):
            node.SetAndObserveTransformNodeID(transformId)


def _hierarchyItem(hierarchy, node) -> int:
    # the Qt subject-hierarchy plugins create items automatically in Slicer; plain slicer-core does not
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    return item


def showAttention(attentionNode, backgroundVolume, opacity: float = 0.5, threshold: float = 0.2,
                  colorMap: str = "Inferno", showLegend: bool = True) -> None:
    """Show an attention map as the foreground of every slice view over ``backgroundVolume``.

    Perceptual colour map, fixed [0, 1] window, values below ``threshold`` transparent, ``opacity`` as the
    foreground opacity, and a colour legend (hidden when ``showLegend`` is off).
    """
    if colorMap not in COLOR_MAPS:
        message = f"unknown colour map {colorMap!r}; use one of {', '.join(COLOR_MAPS)}"
        raise ValueError(message)
    scene = attentionNode.GetScene()
    colorNode = rendering.addPerceptualColorTable(scene, colorMap)
    rendering.showHeatMap(attentionNode, colorNode, lowerThreshold=float(threshold))
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(attentionNode)
    if showLegend:
        method = attentionNode.GetAttribute(ROLE_PREFIX + "AttentionMethod") or "attention"
        legend = rendering.addColorLegend(attentionNode, title=f"Attention ({method})")
    if legend is not None:
        legend.SetVisibility(bool(showLegend))
    for composite in _sliceCompositeNodes(scene):
        wasModifying = composite.StartModify()
        if backgroundVolume is not None:
            composite.SetBackgroundVolumeID(backgroundVolume.GetID())
        composite.SetForegroundVolumeID(attentionNode.GetID())
        composite.SetForegroundOpacity(float(opacity))
        composite.EndModify(wasModifying)


def hideAttention(scene) -> None:
    """Remove attention maps from the foreground of every slice view."""
    for composite in _sliceCompositeNodes(scene):
        foreground = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if foreground is not None and foreground.GetAttribute(ROLE_PREFIX + "AttentionMethod"):
            composite.SetForegroundVolumeID(None)


def _sliceCompositeNodes(scene) -> list:
    # GetNodesByClass returns a new collection the caller must delete (vtkMRMLScene.h); Python holds a second
    # reference, so without UnRegister it leaks on every call. (slicer.util.getNodesByClass releases it too,
    # but reads slicer.mrmlScene whatever scene it is given.)
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    nodes.UnRegister(None)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def attentionNodes(segmentationNode) -> dict:
    """``{method: volume node}`` of the attention maps a segmentation node references."""
    out = {}
    for role in _referenceRoles(segmentationNode):
        if role.startswith(ATTENTION_ROLE):
            node = segmentationNode.GetNodeReference(role)
            if node is not None:
                out[role[len(ATTENTION_ROLE):]] = node
    return out


def _referenceRoles(node) -> list[str]:
    return [node.GetNthNodeReferenceRole(i) for i in range(node.GetNumberOfNodeReferenceRoles())]
