"""``hybridseg bench``: our pipeline against MONAI's reference pipeline on the same volume and network.

Timing is reported, never asserted; what is asserted is that both pipelines produce the same labels
(same network, same Gaussian-blended sliding window, exact orientation inverse on both sides).
"""

import json

from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.inference.bench import run_bench
from HybridAttentionSegLib.core.models.cards import load_card_file
from synthetic import write_random_weights_card


def test_bench_reports_both_pipelines_and_they_agree(tmp_path):
    path = write_random_weights_card(tmp_path, "attention_unet", {"channels": [4, 8, 16, 32]}, (32, 32, 32),
                                     spacing=(2.0, 2.0, 2.0), intensity={"method": "zscore", "nonzero": True})
    (card,) = load_card_file(path)
    report = run_bench(card, shape=(40, 36, 44), device="cpu", repeats=1)
    for key in ("ours_s", "monai_reference_s", "ours_peak_mib", "monai_reference_peak_mib", "speedup_vs_monai"):
        assert report[key] > 0, key
    assert report["label_agreement"] >= 0.98
    assert report["precision"] == "torch-fp32"  # the suite runs with HYBRIDSEG_FAST_PATH=off
    assert report["reference_s"] == report["monai_reference_s"] and report["speedup"] == report["speedup_vs_monai"]
    assert report["peak_rss_mb"] > 0 and report["shape"] == [40, 36, 44] and report["model"] == "synthetic"


def test_bench_cli_json(tmp_path, capsys):
    path = write_random_weights_card(tmp_path, "segresnet", {"init_filters": 8, "blocks_down": [1, 1, 1, 1],
                                                             "blocks_up": [1, 1, 1]}, (32, 32, 32))
    assert main(["--catalog", str(path), "bench", "--model", "synthetic", "--shape", "36,36,36", "--device",
                 "cpu", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shape"] == [36, 36, 36] and report["device"] == "cpu"
    assert main(["--catalog", str(path), "bench", "--model", "synthetic", "--shape", "36,36"]) == 2
