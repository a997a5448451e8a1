"""HiResCAM (Draelos & Carin 2020, arXiv 2011.08891): element-wise gradient x activation, summed over channels.

Grad-CAM averages each channel's gradient over space before weighting the activations, so a location's
value mixes in gradients from everywhere in the window; HiResCAM keeps the gradient where it is,
``ReLU(sum_k dS/dA_k * A_k)``, which for a layer followed only by 1x1 convolutions equals that layer's exact
contribution to the score S (the masked Seg-Grad-CAM score of :mod:`.gradcam`). Computed on
``spec.hirescam_layer`` (the layer that scored best in ``hybridseg explain-eval``), else ``spec.gradcam_layer``.

Hand-written as a MONAI ``GradCAM`` subclass (one line differs) instead of the ``grad-cam`` package's
``HiResCAM``: that package min-max normalises every map by itself (per sliding window, which breaks the
stitching of windows), resizes 3D maps with reversed target axes in 1.5.x, and would pull torchvision and
OpenCV into the extension.
"""

from __future__ import annotations

import torch.nn.functional as F
from monai.visualize import GradCAM

from .gradcam import GradCAMExplainer


class _HiResCAM(GradCAM):
    """MONAI ``GradCAM`` with HiResCAM's element-wise weighting."""

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        return F.relu((acti[layer_idx] * grad[layer_idx]).sum(1, keepdim=True))


class HiResCAMExplainer(GradCAMExplainer):
    """HiResCAM of ``target_class`` (own forward + backward per window)."""

    name = "hirescam"
    cam_class = _HiResCAM

    def target_layer(self) -> str:
        return self.spec.hirescam_layer or self.spec.gradcam_layer
