"""``hybridseg bench``: our pipeline against MONAI's reference pipeline on the same volume and network.

Timing is reported, never asserted; what is asserted is that both pipelines produce the same labels: the
reference (``bench_reference.py``) expresses the card's preprocessing with MONAI's own transforms, so a
disagreement is a defect on one side (the old reference's ``x != 0`` foreground gave 0.5-0.7 here).
"""

import json

import pytest
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.inference.bench import run_bench
from HybridAttentionSegLib.core.models.cards import ModelCard, get_card, load_card_file
from synthetic import card_dict, write_random_weights_card


def test_bench_reports_both_pipelines_and_they_agree(tmp_path):
    path = write_random_weights_card(tmp_path, "attention_unet", {"channels": [4, 8, 16, 32]}, (32, 32, 32),
                                     spacing=(2.0, 2.0, 2.0), intensity={"method": "zscore", "nonzero": True})
    (card,) = load_card_file(path)
    report = run_bench(card, shape=(40, 36, 44), device="cpu", repeats=1)
    for key in ("ours_s", "monai_reference_s", "ours_peak_mib", "monai_reference_peak_mib", "speedup_vs_monai"):
        assert report[key] > 0, key
    assert report["label_agreement"] >= 0.995 and report["label_agreement_foreground"] >= 0.99
    assert report["precision"] == "torch-fp32"  # the suite runs with HYBRIDSEG_FAST_PATH=off
    assert report["reference_s"] == report["monai_reference_s"] and report["speedup"] == report["speedup_vs_monai"]
    assert report["peak_rss_mb"] > 0 and report["shape"] == [40, 36, 44] and report["model"] == "synthetic"


@pytest.mark.parametrize("model_id", ["mni-tissue-attention-unet", "mni-tissue-transunet"])
def test_bench_bundled_models_agree_with_monai_reference(model_id):
    """The bundled models, on a volume that is re-oriented (LPS -> RAS) and resampled (anisotropic -> 2 mm):
    orientation, Spacingd grid, robust z-score, Gaussian blending and Invertd all have to match MONAI's."""
    report = run_bench(get_card(model_id), shape=(40, 44, 36), device="cpu", repeats=1, fast_path="off",
                       spacing=(1.6, 2.5, 1.8))
    assert report["weights"] == "card" and report["labelled_fraction"] > 0.3  # real labels, not background
    assert report["label_agreement"] >= 0.995
    assert report["label_agreement_foreground"] >= 0.995


@pytest.mark.parametrize(("intensity", "order", "crop"), [
    ({"method": "window", "window": [0.1, 0.8]}, "resample-first", True),
    ({"method": "percentile", "percentiles": [1, 99]}, "intensity-first", False),
    ({"method": "zscore", "nonzero": True}, "resample-first", False),
])
def test_bench_reference_follows_the_card(intensity, order, crop):
    """Window (with CropForegroundd), percentile and resample-first z-score cards agree with MONAI's transforms."""
    data = card_dict("attention_unet", {"channels": [4, 8, 16, 32]}, (32, 32, 32), spacing=(2.0, 2.0, 2.0),
                     intensity=intensity)
    data["preprocessing"].update(order=order, crop_foreground=crop)
    report = run_bench(ModelCard.from_dict(data), shape=(40, 36, 44), device="cpu", repeats=1,
                       spacing=(1.5, 2.5, 1.7))
    assert report["labelled_fraction"] > 0.1
    assert report["label_agreement"] >= 0.995 and report["label_agreement_foreground"] >= 0.99


def test_bench_cli_json(tmp_path, capsys):
    path = write_random_weights_card(tmp_path, "segresnet", {"init_filters": 8, "blocks_down": [1, 1, 1, 1],
                                                             "blocks_up": [1, 1, 1]}, (32, 32, 32))
    assert main(["--catalog", str(path), "bench", "--model", "synthetic", "--shape", "36,36,36", "--device",
                 "cpu", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == [36, 36, 36] and report["device"] == "cpu"
    assert main(["--catalog", str(path), "bench", "--model", "synthetic", "--shape", "36,36"]) == 2
