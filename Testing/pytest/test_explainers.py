"""Window explainers on tiny random-weight models, driven by the registry.

For every architecture and every window method it declares: the map has the contract's shape and is finite and
non-negative, and no hook survives the ``with explainer:`` block. Then the method-specific facts: rollout
formula, segment-attention depends on the structure, Swin un-windowing is the exact inverse of MONAI's
partition, Grad-CAM equals a hand-computed Seg-Grad-CAM and is not inverted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from HybridAttentionSegLib.core.errors import UnsupportedMethodError
from HybridAttentionSegLib.core.explain import WINDOW_EXPLAINERS
from HybridAttentionSegLib.core.explain.gradcam import GradCAMExplainer
from HybridAttentionSegLib.core.explain.rollout import RolloutExplainer, SegmentAttentionExplainer
from HybridAttentionSegLib.core.explain.window_attention import WindowAttentionExplainer
from HybridAttentionSegLib.core.models.registry import get_architecture, list_architectures
from monai.networks.nets.swin_unetr import get_window_size, window_partition

OUT = 3
CASES = [(s, m) for s in list_architectures() for m in s.attention_methods if m != "uncertainty"]
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _tiny(spec, **overrides):
    return spec.build(1, OUT, spec.tiny_roi, **{**spec.tiny_kwargs, **overrides}).eval()


def _hooks_left(model):
    return {name: [h for h in HOOK_DICTS if len(getattr(m, h, {}))] for name, m in model.named_modules()
            if any(len(getattr(m, h, {})) for h in HOOK_DICTS)}


def _run(explainer_cls, model, spec, x, target_class=1, logits=None):
    explainer = explainer_cls(model, spec, tuple(x.shape[2:]), target_class)
    with torch.no_grad(), explainer:
        out = model(x)
        return explainer.window_map(x, out if logits is None else logits)


@pytest.mark.parametrize(("spec", "method"), CASES, ids=[f"{s.name}-{m}" for s, m in CASES])
def test_every_declared_method_gives_a_map(spec, method):
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    assert not _hooks_left(model)
    with torch.no_grad():
        reference = model(x)
    result = _run(WINDOW_EXPLAINERS[method], model, spec, x)
    assert result.shape == (1, 1, *spec.tiny_roi)
    assert result.dtype == torch.float32
    assert torch.isfinite(result).all()
    assert (result >= 0).all()
    assert result.max() > 0
    assert not _hooks_left(model), "explainer hooks must be removed on exit"
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():  # the model is unchanged by the explainer (flags restored, no stale state)
        torch.testing.assert_close(model(x), reference)


@pytest.mark.parametrize("spec", list_architectures(), ids=lambda s: s.name)
def test_undeclared_methods_are_refused(spec):
    from HybridAttentionSegLib.core.models.registry import check_method

    model = _tiny(spec)
    for method in set(WINDOW_EXPLAINERS) - set(spec.attention_methods):
        with pytest.raises(UnsupportedMethodError, match=spec.name):
            check_method(spec, method)
        if method in ("gates", "window-attention", "rollout", "segment-attention"):
            with pytest.raises(UnsupportedMethodError):  # the explainer itself refuses too
                WINDOW_EXPLAINERS[method](model, spec, spec.tiny_roi, 1)


def test_batch_of_two_windows():
    spec = get_architecture("transunet")
    model = _tiny(spec)
    x = torch.randn(2, 1, *spec.tiny_roi)
    for method in ("rollout", "segment-attention", "grad-cam"):
        result = _run(WINDOW_EXPLAINERS[method], model, spec, x)
        assert result.shape == (2, 1, *spec.tiny_roi)
        single = _run(WINDOW_EXPLAINERS[method], model, spec, x[1:])
        torch.testing.assert_close(result[1:], single, rtol=1e-4, atol=1e-5)


def test_map_needs_a_forward_inside_the_context():
    spec = get_architecture("transunet")
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    explainer = RolloutExplainer(model, spec, spec.tiny_roi)
    with explainer, pytest.raises(RuntimeError, match="with explainer"):
        explainer.window_map(x, torch.zeros(1, OUT, *spec.tiny_roi))


# rollout ----------------------------------------------------------------------------------------
def test_rollout_matches_the_formula():
    spec = get_architecture("unetr")
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    explainer = RolloutExplainer(model, spec, spec.tiny_roi)
    with torch.no_grad(), explainer:
        model(x)
        mats = [b.attn.att_mat[0].double().mean(0).numpy() for b in spec.vit_blocks(model)]
        result = explainer.window_map(x, None)
    n = mats[0].shape[0]
    rollout = np.eye(n)
    for a in mats:
        step = 0.5 * a + 0.5 * np.eye(n)
        step /= step.sum(axis=1, keepdims=True)
        rollout = step @ rollout
    received = rollout.mean(axis=0) * n
    grid = spec.token_grid(model, spec.tiny_roi)
    expected = F.interpolate(torch.tensor(received, dtype=torch.float32).reshape(1, 1, *grid),
                             size=spec.tiny_roi, mode="trilinear", align_corners=False)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)
    assert abs(result.mean().item() - 1.0) < 0.05  # uniform attention = 1


def test_rollout_forces_the_eager_saved_attention_and_restores_flags():
    spec = get_architecture("transunet")
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    with torch.no_grad():
        reference = _run(RolloutExplainer, model, spec, x)
    for block in spec.vit_blocks(model):  # a model saved without save_attn, running the SDPA path
        block.attn.save_attn = False
        block.attn.use_flash_attention = True
    with torch.no_grad():
        result = _run(RolloutExplainer, model, spec, x)
    torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-5)
    for block in spec.vit_blocks(model):
        assert block.attn.use_flash_attention and not block.attn.save_attn
        assert block.attn.att_mat.numel() == 0  # matrices freed on exit


def test_cross_attention_rollout_lives_on_the_key_grid():
    spec = get_architecture("cnn_self_attention")
    model = _tiny(spec, attention_type="cross")
    x = torch.randn(1, 1, *spec.tiny_roi)
    explainer = RolloutExplainer(model, spec, spec.tiny_roi)
    with torch.no_grad(), explainer:
        model(x)
        cross = torch.stack([b.attn.att_mat[0].mean(0) for b in model.attention_blocks]).mean(0)
        kv_grid = model.attention_blocks[-1].kv_grid
        result = explainer.window_map(x, None)
    expected = F.interpolate((cross.mean(0) * cross.shape[1]).reshape(1, 1, *kv_grid), size=spec.tiny_roi,
                             mode="trilinear", align_corners=False)
    assert kv_grid == (4, 4, 4)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)


def test_cnn_without_attention_layers():
    spec = get_architecture("cnn_self_attention")
    model = _tiny(spec, num_attention_layers=0)
    x = torch.randn(1, 1, *spec.tiny_roi)
    for cls in (RolloutExplainer, SegmentAttentionExplainer):
        with pytest.raises(UnsupportedMethodError, match="grad-cam"):
            cls(model, spec, spec.tiny_roi, 1)
    result = _run(GradCAMExplainer, model, spec, x)
    assert result.shape == (1, 1, *spec.tiny_roi) and torch.isfinite(result).all()


# segment-attention --------------------------------------------------------------------------------
def _two_structures(roi):
    """Crafted logits: class 1 in the first half along D, class 2 in the second half."""
    logits = torch.zeros(1, OUT, *roi)
    half = roi[0] // 2
    logits[0, 1, :half] = 5.0
    logits[0, 2, half:] = 5.0
    return logits


@pytest.mark.parametrize(("name", "overrides"), [("transunet", {}), ("unetr", {}),
                                                 ("cnn_self_attention", {}),
                                                 ("cnn_self_attention", {"attention_type": "cross"})])
def test_segment_attention_depends_on_the_structure(name, overrides):
    spec = get_architecture(name)
    model = _tiny(spec, **overrides)
    x = torch.randn(1, 1, *spec.tiny_roi)
    logits = _two_structures(spec.tiny_roi)
    maps = [_run(SegmentAttentionExplainer, model, spec, x, target_class=c, logits=logits) for c in (1, 2)]
    for m in maps:
        assert torch.isfinite(m).all() and (m >= 0).all() and m.max() > 0
    normalised = [(m - m.min()) / (m.max() - m.min()) for m in maps]
    assert (normalised[0] - normalised[1]).abs().max() > 0.05
    absent = _run(SegmentAttentionExplainer, model, spec, x, target_class=1, logits=torch.zeros_like(logits))
    assert absent.abs().max() == 0  # class 1 is not predicted anywhere (argmax is class 0): zeros


def test_segment_attention_uses_the_rows_inside_the_structure():
    spec = get_architecture("transunet")
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    logits = _two_structures(spec.tiny_roi)
    explainer = SegmentAttentionExplainer(model, spec, spec.tiny_roi, target_class=1)
    with torch.no_grad(), explainer:
        model(x)
        mats = [b.attn.att_mat[0].mean(0) for b in spec.vit_blocks(model)]
        result = explainer.window_map(x, logits)
    matrix = torch.stack(mats).mean(0)[None]
    grid = spec.token_grid(model, spec.tiny_roi)
    rows = matrix[0].reshape(*grid, -1)[: grid[0] // 2].reshape(-1, matrix.shape[-1])  # first half along D
    contrast = (rows.mean(0) - matrix[0].mean(0)) * matrix.shape[-1]  # vs the average query row
    expected = F.interpolate(contrast.reshape(1, 1, *grid), size=spec.tiny_roi,
                             mode="trilinear", align_corners=False).clamp_min(0.0)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)


def test_class_dependent_methods_need_a_class():
    spec = get_architecture("transunet")
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    for cls in (SegmentAttentionExplainer, GradCAMExplainer):
        assert cls.needs_class
        with pytest.raises(ValueError, match="target_class"):
            _run(cls, model, spec, x, target_class=None)


# gates ----------------------------------------------------------------------------------------------
def test_gates_are_the_mean_of_the_upsampled_sigmoid_gates():
    spec = get_architecture("attention_unet")
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    captured = []
    handles = [m.register_forward_hook(lambda _m, _i, o: captured.append(o.detach()))
               for n, m in model.named_modules() if n.endswith("attention.psi")]
    try:
        result = _run(WINDOW_EXPLAINERS["gates"], model, spec, x)
    finally:
        for h in handles:
            h.remove()
    assert len(captured) == 3 and len({c.shape[-1] for c in captured}) == 3  # three resolutions
    expected = torch.stack([F.interpolate(c, size=spec.tiny_roi, mode="trilinear") for c in captured]).mean(0)
    torch.testing.assert_close(result, expected)
    assert result.max() <= 1.0


# window attention -------------------------------------------------------------------------------
@pytest.mark.parametrize("shift_size", [(0, 0, 0), (3, 3, 3)])
def test_swin_unwindowing_inverts_monai_partition(shift_size):
    spec = get_architecture("swin_unetr")
    explainer = WindowAttentionExplainer(_tiny(spec), spec, spec.tiny_roi)
    size = (9, 10, 11)  # forces padding to 14^3 and, when shifted, the roll
    window, shift = get_window_size(size, (7, 7, 7), shift_size)
    assert shift == shift_size
    padded = tuple(math.ceil(s / w) * w for s, w in zip(size, window, strict=True))
    truth = torch.rand(2, *size)
    # what a block does (SwinTransformerBlock.forward_part1): pad, roll by -shift, partition into windows
    volume = F.pad(truth, (0, padded[2] - size[2], 0, padded[1] - size[1], 0, padded[0] - size[0]))
    volume = torch.roll(volume, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    tokens = window_partition(volume.unsqueeze(-1), window)[..., 0]  # (B*nW, 343), one value per token
    explainer._geometry[0] = (2, size, window, shift, padded)
    explainer._received[0] = tokens / math.prod(window)  # window_map multiplies by N
    got_size, got = explainer._block_map(0)
    assert got_size == size
    torch.testing.assert_close(got[:, 0], truth)


def test_swin_shifted_blocks_end_to_end():
    spec = get_architecture("swin_unetr")
    model = _tiny(spec, depths=(2, 1, 1, 1))
    explainer = WindowAttentionExplainer(model, spec, spec.tiny_roi)
    assert any(any(s > 0 for s in b.shift_size) for b in explainer.blocks)
    x = torch.randn(1, 1, *spec.tiny_roi)
    with torch.no_grad(), explainer:
        model(x)
        shifted = [i for i, g in explainer._geometry.items() if any(g[3])]
        assert shifted, "the shifted block at stage 1 (32^3 features, window 7) must be recorded as shifted"
        result = explainer.window_map(x, None)
    assert torch.isfinite(result).all() and (result >= 0).all()
    assert not _hooks_left(model)


def test_swin_hooks_reduce_in_place_and_fire_for_every_block():
    spec = get_architecture("swin_unetr")
    model = _tiny(spec)
    for block in WindowAttentionExplainer(model, spec, spec.tiny_roi).blocks:
        block.attn.use_flash_attention = True  # the explainer must switch the eager softmax on
    x = torch.randn(1, 1, *spec.tiny_roi)
    explainer = WindowAttentionExplainer(model, spec, spec.tiny_roi)
    with torch.no_grad(), explainer:
        model(x)
        assert sorted(explainer._received) == list(range(len(explainer.blocks)))
        assert all(r.dim() == 2 for r in explainer._received.values())  # (B*nW, N): heads/queries reduced
        result = explainer.window_map(x, None)
    assert all(b.attn.use_flash_attention for b in explainer.blocks)  # restored
    assert result.shape == (1, 1, *spec.tiny_roi) and abs(result.mean().item() - 1.0) < 0.1


# grad-cam ---------------------------------------------------------------------------------------
def _manual_seg_grad_cam(model, layer, x, c):
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, o: store.update(a=o))
    try:
        with torch.enable_grad():
            logits = model(x)
            mask = (logits.argmax(1) == c).float()
            if mask.sum() == 0:
                mask = torch.ones_like(mask)
            grad, = torch.autograd.grad((logits[:, c] * mask).sum(), store["a"])
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3, 4), keepdim=True)
    cam = F.relu((weights * store["a"]).sum(1, keepdim=True)).detach()
    return F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)


@pytest.mark.parametrize("name", ["transunet", "segresnet"])
def test_grad_cam_is_seg_grad_cam_and_not_inverted(name):
    spec = get_architecture(name)
    model = _tiny(spec)
    x = torch.randn(1, 1, *spec.tiny_roi)
    with torch.inference_mode():  # the engine may run the whole pass in inference mode
        result = _run(GradCAMExplainer, model, spec, x, target_class=2)
    expected = _manual_seg_grad_cam(model, spec.gradcam_layer, x, 2)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-6)
    assert not _hooks_left(model)
    assert all(p.grad is None for p in model.parameters())  # no weight gradients were computed


def test_grad_cam_keeps_training_mode():
    spec = get_architecture("attention_unet")
    model = _tiny(spec).train()
    _run(GradCAMExplainer, model, spec, torch.randn(2, 1, *spec.tiny_roi))
    assert model.training
