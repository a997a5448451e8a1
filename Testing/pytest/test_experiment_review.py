"""``hybridseg experiment review`` end to end on a real local Ray: a tiny grid (2 variants x 1 seed, 3 steps).

* the demo grid writes ``results.csv`` (one row per trial, the issue's columns), ``summary.csv`` (the paired
  comparison with the baseline), ``report.md`` (tables, plots, machine) and the plots; a rerun skips both
  finished trials and leaves their results untouched;
* a real interruption: a ``hybridseg`` child (joining this module's Ray with ``--ray-address``) gets SIGINT
  once its first trial is on disk; it exits 130, and the rerun trains only the trial that was cut off. This
  run uses an MSD folder and ``--test-data`` (a second dataset every variant is tested on).

One Ray for the module (started here, shut down in teardown); trials run in Ray's own worker processes.
"""

from __future__ import annotations

import csv
import json
import signal
import time

import pytest
from cli_process import Running, cli_env, everything_in
from HybridAttentionSegLib.cli import main
from msd_data import write_msd

REQUIRED = ["variant", "seed", "dice_mean", "hd95_mean", "params", "gflops", "train_s", "latency_s", "peak_mem_mb"]


def _csv(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _results(out):
    """The trial results in ``out`` (not the temporary files they are written under first)."""
    folder = out / "trials"
    return [p for p in folder.glob("*.json") if not p.name.startswith(".")] if folder.is_dir() else []


def _review(capsys, *args):
    rc = main(["experiment", "review", "--no-progress", "--steps", "3", "--seeds", "1", *map(str, args)])
    return rc, capsys.readouterr()


def test_tiny_demo_grid_then_a_rerun_skips_it(local_ray, tmp_path, capsys):
    out = tmp_path / "review"
    args = ["--data", "demo", "--quick", "--variants", "cnn,self-1", "--demo-cases", "1", "1", "2", "--out", out]
    rc, captured = _review(capsys, *args)
    assert rc == 0, captured.err[-3000:]
    assert "2 trial(s) run, 0 already finished, 0 failed" in captured.out

    rows = _csv(out / "results.csv")
    assert [(r["variant"], r["seed"]) for r in rows] == [("cnn", "0"), ("self-1", "0")]
    assert list(rows[0])[:len(REQUIRED)] == REQUIRED
    for row in rows:
        assert 0.0 <= float(row["dice_mean"]) <= 1.0 and float(row["hd95_mean"]) >= 0.0
        assert float(row["gflops"]) > 0 and float(row["latency_s"]) > 0 and float(row["train_s"]) > 0
        assert 100 < float(row["peak_mem_mb"]) < 16000  # a worker process's own peak, in MB
        assert row["dice_gray_matter"] and row["dice_white_matter"]
    cnn, attention = rows
    assert int(attention["params"]) > int(cnn["params"])  # the attention layer adds weights
    assert float(attention["gflops"]) > float(cnn["gflops"])

    summary = {r["variant"]: r for r in _csv(out / "summary.csv")}
    assert summary["cnn"]["d_dice"] == ""  # the baseline is not compared with itself
    difference = float(summary["self-1"]["d_dice"])
    assert float(summary["self-1"]["d_dice_ci_low"]) <= difference <= float(summary["self-1"]["d_dice_ci_high"])
    assert difference == pytest.approx(float(attention["dice_mean"]) - float(cnn["dice_mean"]), abs=2e-4)

    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| `self-1` | 1 self |" in report and "Machine (driver):" in report and "Ray 2." in report
    for plot in ("dice_vs_gflops.png", "dice_vs_layers.png", "per_class_dice.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot})" in report
    assert not [p for p in everything_in(out) if ".tmp" in p]

    trials = {p.name: p.read_bytes() for p in (out / "trials").iterdir()}
    assert sorted(trials) == ["cnn-seed0.json", "self-1-seed0.json"]
    rc, captured = _review(capsys, *args)
    assert rc == 0 and "0 trial(s) run, 2 already finished, 0 failed" in captured.out, captured.err[-3000:]
    assert {p.name: p.read_bytes() for p in (out / "trials").iterdir()} == trials
    assert _csv(out / "results.csv") == rows

    rc, captured = _review(capsys, *args[:-2], "--steps", "4", "--out", out)  # other settings, same folder
    assert rc == 2 and "other settings" in captured.err.strip().splitlines()[-1]
    assert {p.name: p.read_bytes() for p in (out / "trials").iterdir()} == trials


@pytest.mark.slow
def test_interrupted_grid_resumes_with_the_unfinished_trial_only(local_ray, tmp_path, capsys):
    data = write_msd(tmp_path / "balls", count=5)
    second = write_msd(tmp_path / "balls-2", count=2, first_seed=100, name="Task98_MoreBalls")
    out = tmp_path / "review"
    # two threads per trial on two cores: one trial at a time, so the first finishes while the second runs
    args = ["--data", data, "--test-data", second, "--variants", "cnn,cross-1", "--patch", "32",
            "--threads-per-trial", "2", "--out", out]
    child = Running(["experiment", "review", "--no-progress", "--steps", "3", "--seeds", "1", *args,
                     "--ray-address", local_ray], cli_env(tmp_path / "cache"))
    try:
        deadline = time.monotonic() + 240
        while not _results(out):
            assert child.proc.poll() is None, f"ended early (rc {child.proc.returncode}): {child.stderr[-2000:]}"
            assert time.monotonic() < deadline, child.stderr[-2000:]
            time.sleep(0.1)
        child.proc.send_signal(signal.SIGINT)
        assert child.finish(timeout=120) == 130, child.stderr[-2000:]
    finally:
        child.kill()
    finished = {p.name: p.read_bytes() for p in _results(out)}
    assert len(finished) == 1, sorted(finished)
    assert not [p for p in everything_in(out) if ".tmp" in p]
    assert not (out / "results.csv").exists()

    rc, captured = _review(capsys, *args)
    assert rc == 0, captured.err[-3000:]
    assert "1 trial(s) run, 1 already finished, 0 failed" in captured.out
    for name, content in finished.items():
        assert (out / "trials" / name).read_bytes() == content
    rows = _csv(out / "results.csv")
    assert [r["variant"] for r in rows] == ["cnn", "cross-1"]
    assert all(r["test2_dice_mean"] for r in rows)
    result = json.loads((out / "trials" / "cross-1-seed0.json").read_text(encoding="utf-8"))
    assert result["test2"]["dataset"] == "Task98_MoreBalls" and len(result["test2"]["cases"]) == 2
    assert len(result["test"]["cases"]) == 1 and result["threads"] == 2
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Generalisation: second test dataset" in report and "Task98_MoreBalls" in report
