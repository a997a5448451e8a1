"""Attention rollout and segment-conditioned attention over ``spec.vit_blocks(model)``.

Rollout (Abnar & Zuidema 2020, arXiv 2005.00928), for self-attention blocks l = 1..L with ``att_mat``
A_l (B, heads, N, N)::

    Â_l = row_normalise(0.5 * mean_heads(A_l) + 0.5 * I)
    R   = Â_L @ ... @ Â_1                      (row i: what output token i draws from every input token)

Cross-attention blocks (``att_mat`` (B, heads, Nq, Nk) with Nk != Nq, e.g. ``CNNSelfAttention3D`` with
``attention_type="cross"``) map query tokens to key tokens on another grid (the block's ``kv_grid``), so
they cannot be chained with the identity; the query->key matrices, head-averaged and averaged over the cross
blocks, give C (B, Nq, Nk), used as the last step: ``M = R @ C`` (``M = C`` with no self-attention block).
The spatial map lives on the key grid of M's columns.

No CLS token exists in these models, so:

* ``rollout``: attention *received* per token = mean over all query rows of M (times Nk, so uniform = 1).
* ``segment-attention``: attention received from the query tokens inside the predicted structure, using the
  **layer-averaged, head-averaged raw attention** L = mean_l mean_heads(A_l) (the cross blocks' matrices when
  the model has cross blocks), not the rollout matrix: rollout rows converge with depth (product of
  stochastic matrices), so for a 12-layer UNETR the rows of two structures differ by < 0.1 % and the map
  would not depend on the structure (measured on the tiny random model; 2-layer stacks keep them apart).
  Rows are weighted by the fraction of each query token's voxels predicted as ``target_class`` (argmax of the
  window's logits, average-pooled onto the query token grid); no such voxel in the window -> zeros. The
  average row of all queries is subtracted (negative values clipped): what remains is where this structure's
  tokens look *more* than tokens in general. Without that contrast, tokens of neighbouring structures (a 16^3
  token holds both grey and white matter) give near-identical maps dominated by shared attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UnsupportedMethodError
from .base import Explainer, tokens_to_volume


class RolloutExplainer(Explainer):
    """Attention received per token under the rollout matrix (see the module docstring)."""

    name = "rollout"

    def __init__(self, model, spec, roi_size, target_class=None):
        super().__init__(model, spec, roi_size, target_class)
        self.blocks = list(spec.vit_blocks(model)) if spec.vit_blocks is not None else []
        if not self.blocks:
            message = (f"architecture {spec.name!r} (as built) has no attention layers, so {self.name!r} has "
                       "nothing to show; use grad-cam, or a model with attention layers")
            raise UnsupportedMethodError(message)
        self._saved_flags: list[tuple] = []

    # the blocks must run the eager softmax path and keep ``att_mat`` while attached ----------------
    def attach(self) -> None:
        self._saved_flags = []
        for block in self.blocks:
            attn = block.attn
            self._saved_flags.append((attn, attn.save_attn, getattr(attn, "use_flash_attention", False)))
            attn.save_attn = True
            if hasattr(attn, "use_flash_attention"):
                # SDPA never forms the matrix; the eager output equals it to ~1e-6
                attn.use_flash_attention = False
            attn.att_mat = torch.Tensor()  # forget a previous window's matrix

    def detach(self) -> None:
        super().detach()
        for attn, save_attn, flash in self._saved_flags:
            attn.save_attn = save_attn
            if hasattr(attn, "use_flash_attention"):
                attn.use_flash_attention = flash
            attn.att_mat = torch.Tensor()  # free the matrices
        self._saved_flags = []

    # matrices ---------------------------------------------------------------------------------------
    def _attention(self, batch: int) -> list[tuple[torch.Tensor, tuple | None]]:
        """Head-averaged attention (B, Nq, Nk) of every block, with its key grid (None: self-attention)."""
        out = []
        for block in self.blocks:
            att = block.attn.att_mat
            if att.numel() == 0 or att.shape[0] != batch:
                message = "no attention matrix was captured; call the model inside `with explainer:`"
                raise RuntimeError(message)
            att = att.float().mean(dim=1)
            kv_grid = getattr(block, "kv_grid", None)
            if kv_grid is None and att.shape[-1] != att.shape[-2]:
                message = (f"cross-attention block {type(block).__name__} does not expose its key grid "
                           "(kv_grid)")
                raise RuntimeError(message)
            out.append((att, tuple(kv_grid) if kv_grid is not None else None))
        return out

    def _key_grid(self, matrix: torch.Tensor, kv_grid, size) -> tuple[int, int, int]:
        grid = kv_grid if kv_grid is not None else tuple(self.spec.token_grid(self.model, tuple(size)))
        if math.prod(grid) != matrix.shape[-1]:
            message = f"token grid {grid} does not match the {matrix.shape[-1]} attention keys"
            raise RuntimeError(message)
        return grid

    def rollout_matrix(self, batch: int, size) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Return the rollout M (B, Nq, Nk) and the token grid of its columns, for a window of ``size``."""
        rollout = None
        cross = []
        kv_grid = None
        for att, grid in self._attention(batch):
            if grid is not None:
                cross.append(att)
                kv_grid = grid
                continue
            eye = torch.eye(att.shape[-1], device=att.device, dtype=att.dtype)
            step = 0.5 * att + 0.5 * eye
            step = step / step.sum(dim=-1, keepdim=True)
            rollout = step if rollout is None else step @ rollout
        if cross:
            matrix = torch.stack(cross).mean(dim=0)
            if rollout is not None:
                matrix = rollout @ matrix
        else:
            matrix = rollout
        return matrix, self._key_grid(matrix, kv_grid, size)

    def layer_mean_matrix(self, batch: int, size) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Mean over blocks of the head-averaged attention (cross blocks only, if any), and its key grid."""
        attention = self._attention(batch)
        cross = [(att, grid) for att, grid in attention if grid is not None]
        chosen = cross or attention
        matrix = torch.stack([att for att, _ in chosen]).mean(dim=0)
        return matrix, self._key_grid(matrix, chosen[-1][1], size)

    def window_map(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        matrix, grid = self.rollout_matrix(x.shape[0], x.shape[2:])
        received = matrix.mean(dim=1) * matrix.shape[-1]
        return tokens_to_volume(received, grid, x.shape[2:]).clamp_min(0.0)


class SegmentAttentionExplainer(RolloutExplainer):
    """Layer-averaged attention rows of the query tokens inside ``target_class`` (see module docstring)."""

    name = "segment-attention"
    needs_class = True

    def window_map(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.target_class is None:
            message = "segment-attention needs a target class; pass target_class (a label index >= 1)"
            raise ValueError(message)
        size = tuple(x.shape[2:])
        matrix, grid = self.layer_mean_matrix(x.shape[0], size)
        query_grid = tuple(self.spec.token_grid(self.model, size))
        if math.prod(query_grid) != matrix.shape[1]:
            message = f"query token grid {query_grid} does not match the {matrix.shape[1]} attention queries"
            raise RuntimeError(message)
        inside = (logits.detach().argmax(dim=1, keepdim=True) == int(self.target_class)).float()
        weights = F.adaptive_avg_pool3d(inside, query_grid).flatten(1).to(matrix.device)  # (B, Nq)
        total = weights.sum(dim=1, keepdim=True)
        rows = torch.bmm(weights.unsqueeze(1), matrix).squeeze(1)  # (B, Nk)
        # contrast with the average query row: "where did this structure's tokens look *more* than tokens in
        # general" -- without it every structure's map is dominated by the attention all tokens share
        baseline = matrix.mean(dim=1)
        received = torch.where(total > 0, rows / total.clamp_min(1e-12) - baseline, torch.zeros_like(rows))
        received = received * matrix.shape[-1]
        return tokens_to_volume(received, grid, size).clamp_min(0.0)
