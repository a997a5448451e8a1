"""``hybridseg explain-eval``: the measuring instruments on known cases, and the cards' scores kept true.

The instruments are checked where the right answer is known without the code under test: a voxel-wise toy
"model" whose probability is a function of the voxel's own intensity (so deleting its brightest voxels is the
most damaging deletion there is), scipy's Spearman, hand-computed areas. Then the bundled cards: their
``explanations`` block must be for their weights and their recomputed quick-mode AUCs must match the stored ones
(the staleness contract of ``core/explain/evaluation/card_block.py``).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from HybridAttentionSegLib.core.explain.evaluation import QUICK, evaluate_card, explanation_methods
from HybridAttentionSegLib.core.explain.evaluation.card_block import method_verdicts, quick_scores, staleness
from HybridAttentionSegLib.core.explain.evaluation.localisation import localisation
from HybridAttentionSegLib.core.explain.evaluation.perturbation import (
    Perturber,
    SegmentScorer,
    auc,
    baseline_image,
    order_by_map,
    random_map,
)
from HybridAttentionSegLib.core.explain.evaluation.protocol import MAX_RANDOMISED_CORRELATION, MIN_AUC_MARGIN
from HybridAttentionSegLib.core.explain.evaluation.sanity import (
    cascade_groups,
    forward_order,
    randomised_state,
    spearman,
)
from HybridAttentionSegLib.core.models.cards import MODELS_DIR, load_card_file
from HybridAttentionSegLib.core.models.offers import natural_method
from HybridAttentionSegLib.core.models.registry import get_architecture

DEMO_CARDS = [card for path in sorted(MODELS_DIR.glob("mni-tissue-*.json")) for card in load_card_file(path)
              if card.bundled]


# instruments ----------------------------------------------------------------------------------------
def _toy_case(seed=0, shape=(12, 12, 12)):
    """Smooth random image in [0, 1]; 'model': p(class 1) = sigmoid(12 (x - 0.5)) voxel by voxel."""
    image = random_map(shape, seed, 1.5)
    image = (image - image.min()) / (image.max() - image.min())

    def predict(data):
        p1 = 1.0 / (1.0 + np.exp(-12.0 * (data[0] - 0.5)))
        return np.stack([1.0 - p1, p1]).astype(np.float32)

    region = np.ones(shape, bool)
    mask = predict(image[None])[1] > 0.5
    return image[None].astype(np.float32), region, predict, SegmentScorer([1], [mask])


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_the_most_damaging_ranking_beats_random_and_its_reverse_loses(baseline):
    data, region, predict, scorer = _toy_case()
    fractions = (0.0, 0.05, 0.1, 0.2, 0.35)
    perturber = Perturber(predict, scorer, data, region, fractions, baseline_image(data, region, baseline, 2.0))
    best = order_by_map(data[0], region)  # brightest first: each removal lowers p(class 1) the most
    worst = order_by_map(-data[0], region)
    randoms = [order_by_map(random_map(region.shape, s, 2.0), region, s) for s in range(3)]
    deletion = {k: auc(perturber.deletion(o)[:, 0], fractions) for k, o in (("best", best), ("worst", worst))}
    random_deletion = np.mean([auc(perturber.deletion(o)[:, 0], fractions) for o in randoms])
    assert deletion["best"] < random_deletion - MIN_AUC_MARGIN < deletion["worst"]
    insertion = auc(perturber.insertion(best)[:, 0], fractions)
    random_insertion = np.mean([auc(perturber.insertion(o)[:, 0], fractions) for o in randoms])
    assert insertion > random_insertion + MIN_AUC_MARGIN
    assert perturber.deletion(best)[0, 0] == pytest.approx(scorer(predict(data))[0])  # f = 0: the clean input


def test_auc_is_the_mean_height_of_the_curve():
    assert auc([1.0, 0.0], [0.0, 0.5]) == pytest.approx(0.5)
    assert auc([1.0, 1.0, 0.0], [0.0, 0.1, 0.2]) == pytest.approx((0.1 * 1.0 + 0.1 * 0.5) / 0.2)


def test_ties_are_not_broken_by_voxel_index():
    region = np.ones((6, 6, 6), bool)
    order = order_by_map(np.zeros(region.shape), region, tiebreak_seed=3)
    assert sorted(order.tolist()) == list(range(region.size))
    assert order[: region.size // 4].max() > region.size // 2  # a flat map does not sweep slice by slice


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 500).astype(float)
    b = a + rng.normal(0, 2, 500)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-10)
    assert spearman(a, np.zeros(500)) == 0.0


def test_localisation_of_a_map_equal_to_the_target():
    region = np.ones((10, 10, 6), bool)
    target = np.zeros(region.shape, bool)
    target[2:5, 3:7, :] = True
    result = localisation(target.astype(float), target, region, dilation=1)
    assert result["energy_in_target"] == 1.0 and result["pointing_game"] == 1.0
    assert result["energy_in_target_uniform"] == pytest.approx(target.mean(), abs=1e-4)
    flat = localisation(np.zeros(region.shape), target, region, dilation=1)
    assert flat["pointing_game"] == 0.0  # a flat map points nowhere


def test_cascade_is_top_down_and_full_randomisation_is_a_fresh_network():
    spec = get_architecture("attention_unet")
    torch.manual_seed(0)
    trained = spec.build(1, 3, spec.tiny_roi, **spec.tiny_kwargs).eval()
    torch.manual_seed(1)
    fresh = spec.build(1, 3, spec.tiny_roi, **spec.tiny_kwargs).eval()
    order = forward_order(trained, torch.zeros(1, 1, *spec.tiny_roi))
    owners = {n for n, m in trained.named_modules() if any(True for _ in m.parameters(recurse=False))}
    assert set(order) == owners
    groups = cascade_groups(order, 3)
    assert "model.2.conv" in groups[0] and "model.0.conv.0.conv" in groups[-1]  # output conv first, input conv last
    state = randomised_state(trained, fresh, order)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(state[key], value)
    top = randomised_state(trained, fresh, groups[0])
    torch.testing.assert_close(top["model.0.conv.0.conv.weight"], trained.state_dict()["model.0.conv.0.conv.weight"])


def test_maps_are_zero_outside_the_body_and_not_flat_inside():
    """The gates' window-grid pattern in the background is gone: outside the brain every map is exactly 0."""
    pytest.importorskip("nilearn")
    from HybridAttentionSegLib.core.data.mni import load_template
    from HybridAttentionSegLib.core.inference.engine import Segmenter
    from HybridAttentionSegLib.core.inference.volume import Volume

    card = next(c for c in DEMO_CARDS if "gates" in c.attention_methods)
    template = load_template(2)
    crop = Volume(np.ascontiguousarray(template.data[:, 17:81, 27:91, 40:88]), template.affine, name="crop")
    result = Segmenter(card, device="cpu", fast_path="off").run(crop, attention=["gates", "uncertainty"])
    outside = crop.data[0] == 0
    assert outside.sum() > 1000 and (~outside).sum() > 1000
    for method, values in result.attention.items():
        assert float(np.abs(values[outside]).max()) == 0.0, method
        assert float(values[~outside].std()) > 0.01, method


# the cards -----------------------------------------------------------------------------------------
def test_demo_cards_carry_a_generated_block_that_labels_every_method():
    assert DEMO_CARDS, "no bundled demo models"
    for card in DEMO_CARDS:
        block = card.data.get("explanations")
        assert block, f"{card.id} has no explanations block; run hybridseg explain-eval --model {card.id} --write-card"
        assert block["generated_by"].startswith("hybridseg explain-eval")
        evaluated = {item["method"] for item in block["methods"]}
        assert evaluated == set(explanation_methods(card))
        for item in block["methods"]:
            rho = next(m["value"] for m in item["metrics"] if m["metric"] == "randomised_spearman")
            passes = (item["margin"]["deletion"] >= MIN_AUC_MARGIN and item["margin"]["insertion"] >= MIN_AUC_MARGIN
                      and rho is not None and rho < MAX_RANDOMISED_CORRELATION)
            assert item["faithful"] == passes, (card.id, item["method"], item["class"])
            assert item["verdict"] == ("faithful on validation" if passes else "not faithful on validation")
        verdicts = method_verdicts(card)
        assert set(verdicts) == evaluated and not any(v["stale"] for v in verdicts.values())


def test_staleness_keys_on_the_weights_and_on_the_scores():
    card = DEMO_CARDS[0]
    retrained = copy.deepcopy(card)
    retrained.data["weights"]["sha256"] = "0" * 64
    reasons = staleness(retrained)
    assert reasons and "--write-card" in reasons[0] and card.id in reasons[0]
    assert method_verdicts(retrained)[explanation_methods(card)[0]]["stale"]
    stored = card.data["explanations"]["quick"]["scores"]
    fake = {"methods": [{"method": s["method"], "class": s["class"],
                         "deletion": {"blur": {"auc": s["deletion_auc"] + 0.05}},
                         "insertion": {"blur": {"auc": s["insertion_auc"]}},
                         "randomisation": {"full": None}} for s in stored]}
    assert quick_scores(fake)[0]["deletion_auc"] == pytest.approx(stored[0]["deletion_auc"] + 0.05)
    assert any("quick deletion_auc" in r for r in staleness(card, fake))
    unchanged = copy.deepcopy(fake)
    for item, s in zip(unchanged["methods"], stored, strict=True):
        item["deletion"]["blur"]["auc"] = s["deletion_auc"]
    assert staleness(card, unchanged, explanation_methods(card)) == []


def test_panel_and_result_json_label_the_maps_that_failed():
    from HybridAttentionSegLib.core.explain.evaluation.card_block import attention_quality
    from HybridAttentionSegLib.gui.model_info import WARNING_COLOUR, attentionChoices, explanationsHtml, methodQuality

    for card in DEMO_CARDS:
        listing = {**card.to_json(), "natural_method": natural_method(card)}
        for item in card.data["explanations"]["methods"]:
            faithful, text = methodQuality(listing, item["method"])
            if not item["faithful"]:
                assert faithful is False and "not faithful on validation" in text
                # withheld entirely: not offered; withheld for some classes: the label names the shipped ones
                label = dict((m, lab) for lab, m in attentionChoices(listing)).get(item["method"])
                assert label is None or "shipped for" in label
                assert WARNING_COLOUR in explanationsHtml(listing)
            quality = attention_quality(card, [item["method"], "uncertainty"], item["class"])
            assert quality[item["method"]]["faithful"] == item["faithful"]
            assert quality["uncertainty"]["faithful"] is None


@pytest.mark.parametrize("card", DEMO_CARDS, ids=[c.id for c in DEMO_CARDS])
def test_card_scores_are_current(card):
    """Recompute the quick protocol (AUCs only) and compare with the card: fails after a retrain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quick = evaluate_card(card, protocol=QUICK, sanity=False)
    finally:
        torch.set_num_threads(threads)
    reasons = staleness(card, quick, explanation_methods(card))
    assert not reasons, "\n".join(reasons)


# the command --------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["explain-eval"],
    ["explain-eval", "--model", "mni-tissue-attention-unet", "--methods", "uncertainty"],
    ["explain-eval", "--model", "mni-tissue-attention-unet", "--methods", "rollout"],
    ["explain-eval", "--model", "mni-tissue-attention-unet", "--class", "Liver"],
    ["explain-eval", "--model", "mni-tissue-attention-unet", "--write-card", "--quick"],
    ["explain-eval", "--model", "mni-tissue-attention-unet", "--data-randomisation", "-1"],
])
def test_bad_usage_exits_2_with_one_line(argv, tmp_path, capsys):
    from HybridAttentionSegLib.cli import main

    assert main([*argv, "--out", str(tmp_path)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hybridseg")]
    assert len(lines) == 1 and "error" in lines[0]
    assert not list(tmp_path.iterdir())


def test_the_block_is_valid_json_schema_data():
    for card in DEMO_CARDS:
        json.dumps(card.data["explanations"])  # plain JSON types only


def test_permuted_labels_keep_the_images_and_each_patch_histogram_but_break_the_link():
    from HybridAttentionSegLib.core.explain.evaluation.data_randomisation import PermutedLabels

    class Source:  # labels that are a function of the image: the link the permutation must break
        def __init__(self):
            self.rng = np.random.default_rng(3)

        def batch(self, size):
            images = torch.from_numpy(self.rng.normal(size=(size, 1, 6, 6, 6)).astype(np.float32))
            return images, (images > 0.5).long() + (images > 1.0).long()

    images, labels = Source().batch(2)
    shuffled_images, shuffled = PermutedLabels(Source(), seed=0).batch(2)
    assert torch.equal(images, shuffled_images) and shuffled.shape == labels.shape
    for row, other in zip(labels.flatten(1), shuffled.flatten(1), strict=True):
        assert torch.equal(torch.bincount(row, minlength=3), torch.bincount(other, minlength=3))
    agreement = float((shuffled == labels).float().mean())
    assert agreement < 0.9  # most voxels moved: the true labels would agree everywhere
    assert torch.equal(PermutedLabels(Source(), seed=0).batch(2)[1], shuffled)  # seeded
    assert not torch.equal(PermutedLabels(Source(), seed=1).batch(2)[1], shuffled)
