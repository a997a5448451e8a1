"""Which volume nodes the Logic accepts as the image to segment (shared by the Logic and the panel).

MRML only (no Qt). Vector, DTI and DWI volumes derive from ``vtkMRMLScalarVolumeNode`` in MRML, so "a scalar
volume node" alone would let them (and this module's own probabilities output, a vector volume) through.
"""

from __future__ import annotations

from .outputs import ROLE_PREFIX

#: scalar-volume subclasses that are not an image to segment (vector, DTI and streaming volumes derive from
#: vtkMRMLTensorVolumeNode; the Logic's own probabilities output is a vector volume). The .ui's input selector
#: hides the same classes (``hideChildNodeTypes``; Testing/pytest/test_mrml_inputs.py checks that they agree).
REFUSED_INPUT_CLASSES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode")


def inputVolumeProblem(volumeNode) -> str:
    """Why ``volumeNode`` cannot be segmented, naming the fix ("" when it can): a label map, a vector / DTI /
    DWI volume, or one of this module's own outputs (probabilities, attention maps)."""
    name = volumeNode.GetName()
    if volumeNode.GetAttribute(ROLE_PREFIX + "AttentionMethod"):
        return f"{name!r} is an attention map made by this module; select the image it was computed on"
    if volumeNode.GetAttribute(ROLE_PREFIX + "Components"):
        return f"{name!r} holds this module's probabilities; select the image it was computed on"
    refused = next((c for c in REFUSED_INPUT_CLASSES if volumeNode.IsA(c)), None)
    if refused is not None:
        return (f"{name!r} is a {volumeNode.GetClassName()}, not a scalar image; select a scalar (image) "
                "volume node as input")
    return ""
