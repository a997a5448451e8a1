"""Every registered architecture builds at its tiny config and runs; the custom hybrids' contracts hold.

Registry-driven: a newly registered architecture is built and run here without touching this file.
"""

from __future__ import annotations

import pytest
import torch
from HybridAttentionSegLib.core.models.networks import CNNSelfAttention3D, TransUNet3D
from HybridAttentionSegLib.core.models.registry import list_architectures

SPECS = list_architectures()
OUT = 3


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_tiny_build_and_forward(spec):
    spec.constraints.check_roi(spec.tiny_roi)
    model = spec.build(1, OUT, spec.tiny_roi, **spec.tiny_kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, *spec.tiny_roi))
    assert out.shape == (1, OUT, *spec.tiny_roi)
    assert torch.isfinite(out).all()
    assert spec.gradcam_layer in dict(model.named_modules()), "gradcam_layer must name a module"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.vit_blocks is not None], ids=lambda s: s.name)
def test_vit_blocks_expose_attention(spec):
    model = spec.build(1, OUT, spec.tiny_roi, **spec.tiny_kwargs).eval()
    with torch.no_grad():
        model(torch.randn(2, 1, *spec.tiny_roi))
    grid = spec.token_grid(model, spec.tiny_roi)
    n_tokens = grid[0] * grid[1] * grid[2]
    blocks = spec.vit_blocks(model)
    assert blocks
    for block in blocks:
        att = block.attn.att_mat
        assert att.dim() == 4 and att.shape[0] == 2 and att.shape[2] == n_tokens
        torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:3]))  # softmax rows


def test_transunet_token_grid_and_fixed_roi():
    model = TransUNet3D(1, 2, (32, 48, 64), channels=(4, 8, 16, 32), hidden_size=32, num_layers=2,
                        num_heads=2).eval()
    assert model.token_grid == (2, 3, 4)  # stride-16 tokens
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 48, 64)).shape == (1, 2, 32, 48, 64)
        assert model.transformer_blocks[1].attn.att_mat.shape == (1, 2, 24, 24)
        with pytest.raises(ValueError, match="roi_size"):
            model(torch.randn(1, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="multiple of 16"):
        TransUNet3D(1, 2, (40, 32, 32))


@pytest.mark.parametrize("channels", [(4, 8), (4, 8, 16, 32, 32)])
def test_transunet_level_counts(channels):
    model = TransUNet3D(1, 2, 32, channels=channels, hidden_size=16, num_layers=1, num_heads=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


@pytest.mark.parametrize("attention_type", ["self", "cross"])
@pytest.mark.parametrize("layers", [0, 2])
def test_cnn_self_attention_variants(attention_type, layers):
    model = CNNSelfAttention3D(1, 2, channels=(4, 8, 16, 32), num_attention_layers=layers, num_heads=2,
                               attention_type=attention_type).eval()
    assert len(model.attention_blocks) == layers
    roi = (32, 48, 64)  # any multiple of 16, no fixed size
    assert model.token_grid_for(roi) == (2, 3, 4)
    with torch.no_grad():
        assert model(torch.randn(2, 1, *roi)).shape == (2, 2, *roi)
    for block in model.attention_blocks:
        att = block.attn.att_mat
        if attention_type == "self":
            assert att.shape == (2, 2, 24, 24)
        else:  # queries: stride-16 bottleneck; keys: stride-8 encoder level
            assert att.shape == (2, 2, 24, 192)
            assert block.kv_grid == (4, 6, 8)
        torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:3]))


def test_cnn_self_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="attention_type"):
        CNNSelfAttention3D(1, 2, attention_type="global")
    with pytest.raises(ValueError, match="num_heads"):
        CNNSelfAttention3D(1, 2, channels=(4, 8, 16, 30), num_heads=4)
    model = CNNSelfAttention3D(1, 2, channels=(4, 8, 16, 32), num_heads=2).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 1, 32, 32, 40))


def test_cnn_self_attention_variants_of_a_seed_share_the_cnn_initialisation():
    """The review's paired comparison: with the same seed, every variant's CNN starts from the same weights."""

    def cnn_weights(layers, attention_type):
        torch.manual_seed(7)
        model = CNNSelfAttention3D(1, 2, channels=(4, 8, 16, 32), num_attention_layers=layers, num_heads=2,
                                   attention_type=attention_type)
        return {k: v for k, v in model.state_dict().items() if not k.startswith("attention_blocks.")}

    baseline = cnn_weights(0, "self")
    assert any(k.startswith("decoder.") for k in baseline)
    for layers, attention_type in ((1, "self"), (4, "self"), (2, "cross")):
        other = cnn_weights(layers, attention_type)
        assert other.keys() == baseline.keys() | ({"norm.weight", "norm.bias"} & other.keys())
        for key, value in baseline.items():
            torch.testing.assert_close(other[key], value, rtol=0, atol=0, msg=key)
    torch.manual_seed(8)
    reseeded = CNNSelfAttention3D(1, 2, channels=(4, 8, 16, 32), num_attention_layers=0, num_heads=2)
    assert not torch.equal(reseeded.out.conv.conv.weight, baseline["out.conv.conv.weight"])
