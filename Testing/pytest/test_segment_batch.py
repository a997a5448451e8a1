"""``hybridseg segment-batch`` on a real local Ray (issue 15): a cohort with a bad file, resume, interruption.

* three inputs, one of them a corrupt file: the two good cases get exactly what ``hybridseg segment`` writes
  (same files, same labels), the bad one is a ``failed`` row naming why, and the batch exits 1 without
  stopping at it;
* a rerun skips the finished cases (their files untouched) and reports the bad one again;
* a real SIGINT to a ``hybridseg segment-batch`` child (joining this module's Ray) once its first case is
  written: exit 130, no staging folder left, and the rerun segments only the cases that were not finished;
* a withheld attention map is refused once, before Ray starts or ``--out`` is made (exit 2, one line).

One Ray for the module (started here, shut down in teardown); cases run in Ray's own worker processes.
"""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
from cli_process import Running, cli_env, everything_in, one_error_line
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.outputs import PARTIAL_SUFFIX


def _nifti(path: Path, shape, spacing: float, seed: int) -> Path:
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])), str(path))
    return path


def _cohort(folder: Path, shape=(40, 40, 40), spacing=2.0) -> Path:
    folder.mkdir()
    for i, name in enumerate(("case-a", "case-b")):
        _nifti(folder / f"{name}.nii.gz", shape, spacing, seed=i)
    (folder / "case-c.nii.gz").write_bytes(b"not a NIfTI file at all")  # the bad file
    return folder


def _summary(out: Path) -> dict[str, dict]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def _batch(catalog, model, inputs, out, *extra) -> int:
    return main(["--catalog", catalog, "segment-batch", str(inputs), "--model", model, "--out", str(out),
                 "--no-progress", *map(str, extra)])


def test_a_cohort_with_a_bad_file_then_a_rerun_skips_the_finished_cases(local_ray, tiny_catalog, tmp_path,
                                                                        capsys):
    catalog = tiny_catalog["tiny-gates"]
    inputs, out = _cohort(tmp_path / "in"), tmp_path / "out"
    assert _batch(catalog, "tiny-gates", inputs, out) == 1
    captured = capsys.readouterr()
    assert "case case-c failed" in captured.err
    rows = _summary(out)
    assert [rows[c]["status"] for c in ("case-a", "case-b", "case-c")] == ["done", "done", "failed"]
    assert rows["case-c"]["reason"] and "\n" not in rows["case-c"]["reason"]
    for case in ("case-a", "case-b"):
        assert float(rows[case]["seconds"]) > 0
        single = tmp_path / f"single-{case}"  # what hybridseg segment writes for the same input
        assert main(["--catalog", catalog, "segment", str(inputs / f"{case}.nii.gz"), "--model", "tiny-gates",
                     "--out", str(single), "--no-progress"]) == 0
        assert sorted(p.name for p in out.glob(f"{case}.*")) == sorted(p.name for p in single.iterdir())
        batch_labels, _ = nrrd.read(str(out / f"{case}.seg.nrrd"))
        single_labels, _ = nrrd.read(str(single / f"{case}.seg.nrrd"))
        np.testing.assert_array_equal(batch_labels, single_labels)
        segments = json.loads((out / f"{case}.json").read_text(encoding="utf-8"))["segments"]
        for segment in segments:
            assert float(rows[case][f"{segment['name']} (mL)"]) == pytest.approx(segment["volume_ml"])
    assert not any(PARTIAL_SUFFIX in name for name in everything_in(out))

    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.csv"}
    assert _batch(catalog, "tiny-gates", inputs, out) == 1  # rerun: finished cases skipped, the bad one fails again
    capsys.readouterr()
    rows = _summary(out)
    assert [rows[c]["status"] for c in ("case-a", "case-b", "case-c")] == ["skipped", "skipped", "failed"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.csv"} == written


def test_interrupted_batch_leaves_no_partial_case_and_resumes(local_ray, tiny_catalog, tmp_path, capsys):
    catalog = tiny_catalog["tiny-gates-fine"]  # 1 mm: long enough per case to interrupt between cases
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(3):
        _nifti(inputs / f"case-{i}.nii.gz", (72, 72, 72), 1.0, seed=i)
    run = Running(["--catalog", catalog, "segment-batch", inputs, "--model", "tiny-gates-fine", "--out", out,
                   "--workers", "1", "--ray-address", local_ray, "--no-progress"], cli_env(tmp_path / "cache"))
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*.json")):  # the first finished case (STEM.json is written last)
            assert run.proc.poll() is None, run.stderr[-2000:]
            assert time.monotonic() < deadline, run.stderr[-2000:]
            time.sleep(0.1)
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=120) == 130, run.stderr[-2000:]
    finally:
        run.kill()
    finished = sorted(p.name.split(".")[0] for p in out.glob("*.json"))
    assert 1 <= len(finished) < 3
    assert not any(PARTIAL_SUFFIX in name for name in everything_in(out))
    assert _batch(catalog, "tiny-gates-fine", inputs, out, "--workers", "1") == 0
    capsys.readouterr()
    rows = _summary(out)
    assert sorted(c for c, r in rows.items() if r["status"] == "skipped") == finished
    assert sorted(c for c, r in rows.items() if r["status"] == "done") == sorted(
        {f"case-{i}" for i in range(3)} - set(finished))


def test_a_withheld_map_is_refused_before_ray_starts(tmp_path, capsys):
    from HybridAttentionSegLib.core.models import offers as rules
    from HybridAttentionSegLib.core.models.cards import get_card

    card = get_card("mni-tissue-transunet")
    withheld = [m for m, offer in rules.offers(card).items() if offer.status == rules.WITHHELD]
    assert withheld, "the TransUNet card withholds no map any more: pick another case for this test"
    inputs = _cohort(tmp_path / "in")
    rc = main(["segment-batch", str(inputs), "--model", card.id, "--out", str(tmp_path / "out"),
               "--attention", withheld[0], "--no-progress"])
    assert rc == 2 and "withheld" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
