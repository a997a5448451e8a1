"""Bundled demo models (``mni-tissue-*``): accuracy recomputed through the engine, and reproducible training.

The held-out Dice of every bundled demo card is recomputed with the real engine on the embedded MNI152
template, so a weights change that breaks accuracy fails here; labels must not depend on the background
(zero, near-zero or noise) of a held-out synthetic subject. ``hybridseg train`` must give bit-identical weights
for the same seed. The full protocol (``hybridseg validate``, Resources/docs/validation.md) is too slow for the
suite; its numbers are in the cards and checked for presence and consistency here.
"""

from __future__ import annotations

import hashlib
import shlex

import numpy as np
import pytest
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.data import mni
from HybridAttentionSegLib.core.models.cards import MODELS_DIR, load_card_file
from HybridAttentionSegLib.core.training.trainer import evaluate_heldout

#: floors on the held-out slab (min of grey and white) for the best model and for every model: the issue-13
#: targets; the four bundled models measure 0.904-0.939 (Resources/docs/validation.md)
TARGET_BEST = 0.90
TARGET_EVERY = 0.88
TOLERANCE = 0.01
#: share of tissue voxels labelled the same with a near-zero / noisy background as with a zero one; the
#: issue-13 target is 0.995 for both; the bundled models measure >= 0.9966 with noise (worst of 5 subjects)
MIN_AGREEMENT = {"near-zero": 0.995, "noise": 0.995}
VALIDATION_METRICS = ("dice_synthetic", "dice_template_2mm", "dice_template_1mm", "dice", "background_agreement")
MAX_WEIGHTS_BYTES = 10 * 1024 * 1024
CLASSES = ("Gray matter", "White matter")


def _demo_cards():
    cards = []
    for path in sorted(MODELS_DIR.glob("mni-tissue-*.json")):
        cards += [card for card in load_card_file(path) if card.id.startswith("mni-tissue-")]
    return cards


CARDS = _demo_cards()


def _reported(card, name: str) -> dict[str, float]:
    return {m["label"]: float(m["value"]) for m in card.data.get("metrics", []) if m["name"] == name}


@pytest.fixture(scope="module")
def heldout_scores():
    """Recomputed held-out Dice per card id: {"dice": {...}, "dice_perturbed": {...}}."""
    scores = {}
    for card in CARDS:
        scores[card.id] = {"dice": evaluate_heldout(card, device="cpu"),
                           "dice_perturbed": evaluate_heldout(card, device="cpu", perturbed=True)}
    return scores


def test_demo_models_answer_the_review_question_side_by_side():
    """A CNN baseline next to the hybrids (attention gates, ViT bottleneck, CNN + self-attention), trained alike."""
    families = {card.spec.family for card in CARDS}
    assert {"cnn", "attention-gates", "vit-hybrid", "cnn+self-attention"} <= families, families
    baseline = next(card for card in CARDS if card.spec.family == "cnn")
    hybrid = next(card for card in CARDS if card.spec.family == "cnn+self-attention")
    recipe = {key: value for key, value in baseline.data["training"].items()
              if key in ("data", "training_region", "steps", "batch_size", "patch", "seed", "lr", "schedule",
                         "loss", "augmentation")}
    assert recipe and all(hybrid.data["training"][key] == value for key, value in recipe.items()), recipe
    for card in CARDS:
        path = card.local_weights_path()
        assert card.bundled and path.suffix == ".safetensors"
        assert path.stat().st_size <= MAX_WEIGHTS_BYTES
        assert hashlib.sha256(path.read_bytes()).hexdigest() == card.weights["sha256"]
        assert [label["name"] for label in card.labels] == list(CLASSES)
        assert card.intensity == {"method": "zscore", "nonzero": True}
        assert card.spacing == (2.0, 2.0, 2.0) and card.orientation == "RAS"
        assert card.data["training"]["device"] and card.data["training"]["command"].startswith("hybridseg train")
        words = shlex.split(card.data["training"]["command"])  # the recipe is named: reruns train the same data
        assert words[words.index("--data") + 1] in ("template", "synthetic", "mixed")


def test_cards_hold_the_validation_protocol():
    for card in CARDS:
        names = {m["name"] for m in card.data["metrics"]}
        assert set(VALIDATION_METRICS) <= names, (card.id, names)
        for metric in card.data["metrics"]:
            if "ci" in metric:
                lo, hi = metric["ci"]
                assert lo <= metric["value"] <= hi, (card.id, metric)


def _dice_with_ci(card, name: str, label: str) -> str:
    metric = next(m for m in card.data["metrics"] if m["name"] == name and m["label"] == label)
    return f"{metric['value']:.3f} [{metric['ci'][0]:.3f}, {metric['ci'][1]:.3f}]"


def test_readme_validation_table_is_the_cards_numbers():
    """The README's table of the bundled models quotes the cards (generated numbers), for every bundled model."""
    readme = (MODELS_DIR.parents[2] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines()
            if line.startswith("| `mni-tissue-") and "held-out" not in line and "[" in line}
    assert set(rows) == {card.id for card in CARDS}, sorted(rows)
    for card in CARDS:
        row = rows[card.id].replace("*", "")
        for name in ("dice_synthetic", "dice"):
            quoted = " / ".join(_dice_with_ci(card, name, label) for label in CLASSES)
            assert quoted in row, (card.id, name, quoted)


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS, ids=[card.id for card in CARDS])
def test_heldout_dice_matches_card(card, heldout_scores):
    for metric in ("dice", "dice_perturbed"):
        reported = _reported(card, metric)
        assert set(reported) == set(CLASSES), f"{card.id} reports {metric} for {sorted(reported)}"
        recomputed = heldout_scores[card.id][metric]
        for name, value in reported.items():
            assert recomputed[name] >= value - TOLERANCE, (card.id, metric, name, recomputed[name], value)


@pytest.mark.slow
def test_demo_models_reach_targets(heldout_scores):
    worst = {card_id: min(s["dice"][name] for name in CLASSES) for card_id, s in heldout_scores.items()}
    assert max(worst.values()) >= TARGET_BEST, worst
    assert min(worst.values()) >= TARGET_EVERY, worst


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS, ids=[card.id for card in CARDS])
def test_labels_do_not_depend_on_the_background(card):
    from HybridAttentionSegLib.core.data.synth import VALIDATION_SEEDS, SyntheticSubjects
    from HybridAttentionSegLib.core.inference.engine import Segmenter

    generator = SyntheticSubjects(VALIDATION_SEEDS[:1])
    seed = VALIDATION_SEEDS[0]
    segmenter = Segmenter(card, device="cpu")
    runs = {kind: segmenter.run(generator.subject(seed, background=kind)[0], keep_probabilities=False).labelmap
            for kind in ("zero", "near-zero", "noise")}
    labels = generator.subject(seed)[1]
    for kind in ("near-zero", "noise"):
        region = (labels > 0) | (runs["zero"] > 0) | (runs[kind] > 0)
        agreement = np.mean(runs["zero"][region] == runs[kind][region])
        assert agreement >= MIN_AGREEMENT[kind], (card.id, kind, agreement)


def test_heldout_slab_is_disjoint_from_training_region():
    for resolution in mni.RESOLUTIONS:
        shape = mni.TEMPLATE_SHAPES[resolution]
        held = mni.heldout_mask(shape, resolution)
        assert not (held & mni.training_mask(shape, resolution)).any()
        labels = mni.tissue_labels(resolution)
        for value in (mni.GREY_MATTER, mni.WHITE_MATTER):  # the slab holds a real share of each class
            share = (labels[held] == value).sum() / (labels == value).sum()
            assert 0.1 < share < 0.3


def _train(out_dir, seed: int) -> bytes:
    code = main(["train", "--architecture", "attention_unet", "--kwargs",
                 '{"channels": [4, 8, 16, 32], "strides": [2, 2, 2]}', "--steps", "3", "--patch", "48",
                 "--seed", str(seed), "--threads", "1", "--no-progress", "--out-dir", str(out_dir),
                 "--data", "mixed", "--id", "repro-test"])  # the bundled models' recipe
    assert code == 0
    assert (out_dir / "repro-test.json").is_file()
    return (out_dir / "repro-test.safetensors").read_bytes()


@pytest.mark.slow
def test_train_is_reproducible(tmp_path):
    first = _train(tmp_path / "a", seed=5)
    second = _train(tmp_path / "b", seed=5)
    assert first == second
    assert _train(tmp_path / "c", seed=6) != first
