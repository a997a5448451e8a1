"""Class-conditional transformer relevance (Chefer, Gur & Wolf, ICCV 2021, arXiv 2103.15679).

Raw attention and rollout say where tokens looked, for every class at once. This method weights each
layer's attention by its gradient with respect to the class score, so it keeps only the attention that
raised the score of ``target_class``. For the self-attention blocks l = 1..L (``spec.vit_blocks``), with
A_l the (B, heads, N, N) attention probabilities and S the Seg-Grad-CAM score (class logits summed inside
the window's predicted mask of the class, as in :mod:`.gradcam`)::

    Ā_l = mean_heads( ReLU( dS/dA_l * A_l ) )
    R   = I;   R <- R + Ā_l @ R        (l = 1..L)

The map of a window is the relevance received by every token from the tokens inside the predicted
structure: the rows of R weighted by the fraction of each query token's voxels predicted as the class
(the whole window when the class is absent from it), on the token grid, trilinearly upsampled.

Hand-written: the authors' code replaces every ViT layer with LRP-aware modules for 2D classifiers with a CLS
token; captum and the ``grad-cam`` package have no attention-gradient rule. Here the attention probabilities
are captured with a forward hook on each block's ``attn.drop_weights`` (MONAI's ``SABlock`` stores only a
detached copy in ``att_mat``), and the graph is started at the first block, so the backward pass runs
through the transformer and the decoder only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UnsupportedMethodError
from .base import Explainer, tokens_to_volume


class RelevanceExplainer(Explainer):
    """Gradient-weighted attention relevance of ``target_class`` (see the module docstring)."""

    name = "relevance"
    needs_grad = True
    needs_class = True

    def __init__(self, model, spec, roi_size, target_class=None):
        super().__init__(model, spec, roi_size, target_class)
        self.blocks = list(spec.vit_blocks(model)) if spec.vit_blocks is not None else []
        if not self.blocks or any(getattr(b, "kv_grid", None) is not None or not hasattr(b.attn, "drop_weights")
                                  for b in self.blocks):
            message = (f"architecture {spec.name!r} (as built) has no self-attention transformer blocks, so "
                       "relevance has nothing to show; use grad-cam or hirescam")
            raise UnsupportedMethodError(message)

    def _capture(self, store: list, first: bool):
        def hook(_module, _inputs, output):
            if first and output.grad_fn is None and not output.requires_grad:
                output.requires_grad_(True)  # start the graph at the first attention matrix
            if output.requires_grad:
                output.retain_grad()
            store.append(output)
        return hook

    def window_map(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.target_class is None:
            message = "relevance needs a target class; pass target_class (a label index >= 1)"
            raise ValueError(message)
        c = int(self.target_class)
        captured: list[torch.Tensor] = []
        handles = [block.attn.drop_weights.register_forward_hook(self._capture(captured, i == 0))
                   for i, block in enumerate(self.blocks)]
        flash = [(b.attn, getattr(b.attn, "use_flash_attention", False)) for b in self.blocks]
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        try:
            with torch.inference_mode(False), torch.enable_grad():
                for attn, _ in flash:
                    if hasattr(attn, "use_flash_attention"):
                        attn.use_flash_attention = False  # SDPA never forms the matrix
                for p in params:
                    p.requires_grad_(False)
                out = self.model(x.detach().clone())
                predicted = out.detach().argmax(dim=1) == c
                mask = predicted.float()
                empty = ~predicted.flatten(1).any(dim=1)
                mask[empty] = 1.0
                (out[:, c] * mask).sum().backward()
            relevance = self._relevance(captured)
        finally:
            for h in handles:
                h.remove()
            for attn, value in flash:
                if hasattr(attn, "use_flash_attention"):
                    attn.use_flash_attention = value
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
        size = tuple(x.shape[2:])
        grid = tuple(self.spec.token_grid(self.model, size))
        if math.prod(grid) != relevance.shape[-1]:
            message = f"token grid {grid} does not match the {relevance.shape[-1]} attention tokens"
            raise RuntimeError(message)
        weights = F.adaptive_avg_pool3d(mask.unsqueeze(1), grid).flatten(1)  # (B, N)
        rows = torch.bmm(weights.unsqueeze(1), relevance).squeeze(1) / weights.sum(1, keepdim=True).clamp_min(1e-12)
        return tokens_to_volume(rows, grid, size).clamp_min(0.0).detach()

    def _relevance(self, captured: list[torch.Tensor]) -> torch.Tensor:
        if len(captured) != len(self.blocks):
            message = "attention of every transformer block was not captured; is the model's forward standard?"
            raise RuntimeError(message)
        relevance = None
        for attention in captured:
            grad = attention.grad if attention.grad is not None else torch.zeros_like(attention)
            weighted = (grad * attention).detach().float().clamp_min(0.0).mean(dim=1)  # (B, N, N)
            if relevance is None:
                eye = torch.eye(weighted.shape[-1], dtype=weighted.dtype, device=weighted.device)
                relevance = eye.expand_as(weighted).clone()
            relevance = relevance + torch.bmm(weighted, relevance)
        return relevance
