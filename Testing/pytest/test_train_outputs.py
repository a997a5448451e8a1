"""Issue 10 #1: ``hybridseg train`` refuses an existing ``--id`` and writes weights and card as one unit.

A real ``hybridseg train`` subprocess gets a real SIGINT after its weights are written (while it evaluates the
held-out slab, before the card exists): the model already in ``--out-dir`` must be untouched, its card's
SHA-256 still matching its weights, and nothing partial left.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from pathlib import Path

import pytest
from cli_process import Running, cli_env, everything_in, one_error_line
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.outputs import PARTIAL_SUFFIX

MODELS = Path(__file__).resolve().parents[2] / "HybridAttentionSeg" / "Resources" / "Models"
KWARGS = '{"channels": [4, 8, 16, 32], "strides": [2, 2, 2]}'


def _train_args(out_dir, *extra):
    return ["train", "--architecture", "attention_unet", "--kwargs", KWARGS, "--steps", "2", "--patch", "32",
            "--batch-size", "1", "--id", "tiny-train", "--out-dir", str(out_dir), "--no-progress", *extra]


@pytest.fixture
def existing_model(tmp_path):
    """A consistent model pair ``tiny-train.{safetensors,json}`` (a bundled model under another id)."""
    out = tmp_path / "models"
    out.mkdir()
    shutil.copy(MODELS / "mni-tissue-attention-unet.safetensors", out / "tiny-train.safetensors")
    card = json.loads((MODELS / "mni-tissue-attention-unet.json").read_text())
    card["id"], card["weights"]["file"] = "tiny-train", "tiny-train.safetensors"
    (out / "tiny-train.json").write_text(json.dumps(card, indent=2))
    return out


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _consistent(folder) -> bool:
    card = json.loads((folder / "tiny-train.json").read_text())
    return hashlib.sha256((folder / "tiny-train.safetensors").read_bytes()).hexdigest() == card["weights"]["sha256"]


def test_existing_id_refused_before_training(existing_model, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    before = _snapshot(existing_model)
    started = time.monotonic()
    rc = main(_train_args(existing_model))
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "tiny-train.json" in line and "tiny-train.safetensors" in line and "--overwrite" in line
    assert time.monotonic() - started < 60  # refused at once, not after a training run
    assert _snapshot(existing_model) == before


@pytest.mark.parametrize("model_id", ["../escape", ".hidden", "Upper", ""])
def test_model_id_must_be_a_plain_name(tmp_path, capsys, model_id):
    args = _train_args(tmp_path)
    args[args.index("tiny-train")] = model_id
    rc = main(args)
    assert rc == 2 and "--id" in one_error_line(capsys.readouterr().err)
    assert everything_in(tmp_path) == []


def test_interrupt_after_the_weights_keeps_the_old_model_consistent(existing_model, tmp_path):
    assert _consistent(existing_model)
    before = _snapshot(existing_model)
    staging = existing_model / f".tiny-train{PARTIAL_SUFFIX}"
    run = Running(_train_args(existing_model, "--overwrite"), cli_env(tmp_path / "cache"))
    try:
        deadline = time.monotonic() + 600
        while not (staging / "tiny-train.safetensors").is_file():  # trained; now evaluating, card not yet written
            assert run.proc.poll() is None, run.stderr[-2000:]
            assert time.monotonic() < deadline, run.stderr[-2000:]
            time.sleep(0.02)
        assert not (staging / "tiny-train.json").exists()
        run.proc.send_signal(signal.SIGINT)
        assert run.finish() == 130
    finally:
        run.kill()
    assert _snapshot(existing_model) == before  # the old pair, byte for byte
    assert _consistent(existing_model)
    assert everything_in(existing_model) == ["tiny-train.json", "tiny-train.safetensors"]
