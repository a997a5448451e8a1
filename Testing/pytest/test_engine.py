"""Registry-driven engine tests: every registered architecture, every attention method it declares.

A new architecture added to the registry is tested here for free: built tiny with random weights, saved as
safetensors with a card, loaded back through the real weight loader, run through the real engine on a volume
that needs several sliding windows, and every map must be finite, in [0, 1] and on the input grid.
"""

import numpy as np
import pytest
from HybridAttentionSegLib.core.errors import CancelledError, UnsupportedMethodError
from HybridAttentionSegLib.core.inference.engine import Segmenter, count_windows
from HybridAttentionSegLib.core.inference.volume import Volume
from HybridAttentionSegLib.core.models.cards import load_card_file
from HybridAttentionSegLib.core.models.registry import ATTENTION_METHODS, list_architectures
from synthetic import write_random_weights_card

SPECS = list_architectures()


def _volume(roi, seed=0):
    rng = np.random.default_rng(seed)
    shape = (roi[0] + 6, roi[1], roi[2] - 3)  # two windows along I, padding along K
    data = rng.normal(size=shape).astype(np.float32)
    affine = np.diag([-1.1, 0.9, 1.3, 1.0])
    affine[:3, 3] = (10.0, -20.0, 5.0)
    return Volume(data, affine)


@pytest.fixture(scope="module", params=SPECS, ids=[s.name for s in SPECS])
def segmenter(request, tmp_path_factory):
    spec = request.param
    path = write_random_weights_card(tmp_path_factory.mktemp(spec.name), spec.name, spec.tiny_kwargs,
                                     spec.tiny_roi, model_id=f"tiny-{spec.name.replace('_', '-')}")
    (card,) = load_card_file(path)
    return Segmenter(card, device="cpu")


def test_every_method_gives_a_finite_unit_map_on_the_input_grid(segmenter):
    volume = _volume(segmenter.card.roi_size)
    calls = []
    result = segmenter.run(volume, attention=segmenter.spec.attention_methods,
                           on_progress=lambda done, total: calls.append((done, total)))
    assert result.labelmap.shape == volume.shape
    assert result.probabilities.shape == (segmenter.card.out_channels, *volume.shape)
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-4)
    assert set(result.attention) == set(segmenter.spec.attention_methods)
    for method, heat in result.attention.items():
        assert heat.shape == volume.shape, method
        assert heat.dtype == np.float32, method
        assert np.isfinite(heat).all(), method
        assert heat.min() >= 0.0 and heat.max() <= 1.0, method
    assert calls and calls[-1][0] == calls[-1][1], "progress must end at total"
    assert [d for d, _ in calls] == sorted(d for d, _ in calls), "progress must be monotonic"
    for name, module in segmenter.model.named_modules():
        assert not module._forward_hooks, f"forward hook left on {name}"
        assert not module._forward_pre_hooks, f"forward pre-hook left on {name}"
        assert not module._backward_hooks, f"backward hook left on {name}"


def test_unsupported_methods_are_refused_with_the_supported_list(segmenter):
    unsupported = [m for m in ATTENTION_METHODS if m not in segmenter.spec.attention_methods]
    for method in unsupported:
        with pytest.raises(UnsupportedMethodError) as info:
            segmenter.run(_volume(segmenter.card.roi_size), attention=[method])
        assert all(m in str(info.value) for m in segmenter.spec.attention_methods)


def test_cancel_stops_the_run(segmenter):
    volume = _volume(segmenter.card.roi_size)
    assert count_windows(volume.shape, segmenter.card.roi_size, segmenter.card.overlap) > 1
    with pytest.raises(CancelledError):
        segmenter.run(volume, should_cancel=lambda: True)
