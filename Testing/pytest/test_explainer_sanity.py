"""Explainer sanity on the bundled trained demo models (Adebayo et al.'s parameter-randomisation check).

A map that does not change when the trained weights are replaced by random ones explains the architecture,
not the model. And "where did the model look for *this* structure" must depend on the structure.
"""

import numpy as np
import pytest
import torch
from HybridAttentionSegLib.core.data.mni import load_template
from HybridAttentionSegLib.core.inference.engine import Segmenter, build_model
from HybridAttentionSegLib.core.inference.volume import Volume
from HybridAttentionSegLib.core.models.cards import load_catalog

DEMO_CARDS = [card for card in load_catalog().values() if card.bundled and card.id.startswith("mni-tissue-")]


def _crop(volume: Volume, size=64) -> Volume:
    """A central cube of the template (keeps the test fast); the affine is shifted to match."""
    start = [(s - size) // 2 for s in volume.shape]
    data = volume.data[:, start[0]:start[0] + size, start[1]:start[1] + size, start[2]:start[2] + size]
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(np.ascontiguousarray(data), volume.affine @ shift, name="crop")


@pytest.fixture(scope="module")
def template():
    return _crop(load_template(2))


def _correlation(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator else 1.0


def test_demo_models_exist():
    assert len(DEMO_CARDS) >= 2, "the bundled demo models (mni-tissue-*) are missing"


@pytest.mark.parametrize("card", DEMO_CARDS, ids=[c.id for c in DEMO_CARDS])
def test_parameter_randomisation_changes_the_natural_map(card, template):
    method = card.spec.natural_method
    trained = Segmenter(card, device="cpu")
    torch.manual_seed(1234)
    randomised = Segmenter(card, device="cpu", model=build_model(card))
    target = card.label_index("White matter")
    trained_map = trained.run(template, attention=[method], target_class=target).attention[method]
    random_map = randomised.run(template, attention=[method], target_class=target).attention[method]
    assert trained_map.std() > 0.01, f"{method} map of the trained model is flat"
    assert _correlation(trained_map, random_map) < 0.9, f"{method} barely depends on the learned weights"


@pytest.mark.parametrize("card", [c for c in DEMO_CARDS if "segment-attention" in c.attention_methods],
                         ids=lambda c: c.id)
def test_segment_attention_depends_on_the_structure(card, template):
    segmenter = Segmenter(card, device="cpu")
    grey = segmenter.run(template, attention=["segment-attention"], target_class="Gray matter")
    white = segmenter.run(template, attention=["segment-attention"], target_class="White matter")
    a, b = grey.attention["segment-attention"], white.attention["segment-attention"]
    assert np.abs(a - b).mean() > 0.01
    assert _correlation(a, b) < 0.99
