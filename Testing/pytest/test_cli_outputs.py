"""``hybridseg segment`` never replaces silently and leaves all outputs or none (issue 10).

Refusals run in-process with a card whose weights are corrupt: the refusal (not the checksum error) proves the
outputs are checked before any weights are loaded. Interruptions run a real ``hybridseg`` subprocess that gets
a real SIGINT / SIGTERM / SIGKILL while its progress bar shows it is mid-inference.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from cli_process import Running, cli_env, everything_in, one_error_line
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.outputs import PARTIAL_SUFFIX


def _nifti(path: Path, shape=(40, 40, 40), spacing=2.0, seed=0) -> Path:
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([spacing, spacing, spacing, 1.0])), str(path))
    return path


@pytest.fixture(scope="module")
def corrupt_catalog(tiny_catalog, tmp_path_factory):
    """``tiny-gates`` whose card declares a wrong SHA-256: loading its weights fails with a checksum error."""
    card = json.loads(Path(tiny_catalog["tiny-gates"]).read_text(encoding="utf-8"))
    card["weights"]["file"] = str(Path(tiny_catalog["tiny-gates"]).parent / card["weights"]["file"])
    card["weights"]["sha256"] = "f" * 64
    path = tmp_path_factory.mktemp("corrupt") / "tiny-gates.json"
    path.write_text(json.dumps(card))
    return str(path)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cli-outputs-cache"))


def _segment(catalog, image, out, *extra):
    return main(["--catalog", catalog, "segment", str(image), "--model", "tiny-gates", "--out", str(out),
                 "--no-progress", *extra])


def test_corrupt_card_really_fails_at_weights(tmp_path, corrupt_catalog, capsys):
    """The control: with nothing in the way, this card fails only when its weights are loaded."""
    rc = _segment(corrupt_catalog, _nifti(tmp_path / "a.nii.gz"), tmp_path / "out")
    assert rc == 2 and "checksum mismatch" in one_error_line(capsys.readouterr().err)
    assert everything_in(tmp_path / "out") == []  # the failed run left no folder, no staging


def test_existing_outputs_refused_before_inference(tmp_path, corrupt_catalog, capsys):
    image = _nifti(tmp_path / "a.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.seg.nrrd").write_bytes(b"the user's earlier result")
    (out / "a.attention-rollout.nrrd").write_bytes(b"an earlier map")
    rc = _segment(corrupt_catalog, image, out)
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "a.seg.nrrd" in line and "a.attention-rollout.nrrd" in line and "--overwrite" in line
    assert "checksum" not in line
    assert (out / "a.seg.nrrd").read_bytes() == b"the user's earlier result"
    assert everything_in(out) == ["a.attention-rollout.nrrd", "a.seg.nrrd"]


@pytest.mark.parametrize("case", ["out-is-a-file", "out-below-a-file", "out-empty", "out-read-only"])
def test_bad_out_refused_before_inference(tmp_path, corrupt_catalog, capsys, monkeypatch, case):
    image = _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "notes.txt").write_text("user data")
    monkeypatch.chdir(tmp_path)
    out = {"out-is-a-file": "notes.txt", "out-below-a-file": "notes.txt/sub", "out-empty": "",
           "out-read-only": str(tmp_path / "locked")}[case]
    if case == "out-read-only":
        if os.geteuid() == 0:
            pytest.skip("root ignores permission bits; test_full_disk.py covers a read-only mount")
        (tmp_path / "locked").mkdir(mode=0o555)
    before = everything_in(tmp_path)
    rc = _segment(corrupt_catalog, image, out)
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "--out" in line and "checksum" not in line
    assert everything_in(tmp_path) == before  # nothing written, not even into the working folder
    assert (tmp_path / "notes.txt").read_text() == "user data"


def test_stems_keep_dots_and_are_never_hidden(tmp_path, tiny_catalog, capsys):
    out = tmp_path / "out"
    for name in ("sub01.T1.nii.gz", "sub01.T2.nii.gz", ".x.nii.gz"):
        assert _segment(tiny_catalog["tiny-gates"], _nifti(tmp_path / name, seed=len(name)), out) == 0
    capsys.readouterr()
    names = everything_in(out)
    assert names == sorted(f"{stem}.{suffix}" for stem in ("sub01.T1", "sub01.T2", "x")
                           for suffix in ("attention-gates.nrrd", "json", "seg.nrrd"))
    # each summary describes its own input's output files
    summary = json.loads((out / "sub01.T2.json").read_text())
    assert Path(summary["files"]["segmentation"]).name == "sub01.T2.seg.nrrd"
    assert sitk.ReadImage(str(out / "sub01.T1.seg.nrrd")).GetSize() == (40, 40, 40)


def test_overwrite_replaces_the_whole_set(tmp_path, tiny_catalog, capsys):
    image, out = _nifti(tmp_path / "a.nii.gz"), tmp_path / "out"
    assert _segment(tiny_catalog["tiny-gates"], image, out) == 0
    first = (out / "a.json").read_text()
    assert _segment(tiny_catalog["tiny-gates"], image, out, "--attention", "none") == 2
    assert "--overwrite" in one_error_line(capsys.readouterr().err)
    assert (out / "a.json").read_text() == first
    assert _segment(tiny_catalog["tiny-gates"], image, out, "--attention", "none", "--overwrite") == 0
    # the gates map of the first run would now describe a different run: it is gone, not left stale
    assert everything_in(out) == ["a.json", "a.seg.nrrd"]
    assert json.loads((out / "a.json").read_text())["attention_methods"] == []


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory):
    """A 1 mm volume the ``tiny-gates-fine`` model needs hundreds of windows for (seconds of inference)."""
    return _nifti(tmp_path_factory.mktemp("slow") / "slow.nii.gz", shape=(160, 160, 160), spacing=1.0)


@pytest.mark.parametrize(("signum", "rc", "out_exists"), [
    (signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_signal_mid_inference_leaves_nothing_partial(tmp_path, tiny_catalog, slow_input, signum, rc, out_exists):
    out = tmp_path / "out"
    if out_exists:
        out.mkdir()
        (out / "keep.txt").write_text("the user's file")
    run = Running(["--catalog", tiny_catalog["tiny-gates-fine"], "segment", slow_input, "--model",
                   "tiny-gates-fine", "--out", out], cli_env(tmp_path / "cache"))
    try:
        run.wait_mid_inference()
        assert (out / f".slow{PARTIAL_SUFFIX}").is_dir()  # staging (the lock) exists while it runs
        run.proc.send_signal(signum)
        assert run.finish() == rc
    finally:
        run.kill()
    assert ("terminated" if signum == signal.SIGTERM else "interrupted") in run.stderr.splitlines()[-1]
    assert everything_in(out) == (["keep.txt"] if out_exists else [])
    assert not out.exists() or out_exists  # a folder the run created is removed again


def test_second_run_on_the_same_stem_is_locked_out_and_a_killed_run_is_cleaned(tmp_path, tiny_catalog,
                                                                               slow_input, capsys):
    out = tmp_path / "out"
    first = Running(["--catalog", tiny_catalog["tiny-gates-fine"], "segment", slow_input, "--model",
                     "tiny-gates-fine", "--out", out], cli_env(tmp_path / "cache"))
    try:
        first.wait_mid_inference()
        # a second run writing the same stem into the same folder: refused at once, one line
        rc = main(["--catalog", tiny_catalog["tiny-gates-fine"], "segment", str(slow_input), "--model",
                   "tiny-gates-fine", "--out", str(out), "--no-progress"])
        line = one_error_line(capsys.readouterr().err)
        assert rc == 2 and f"pid {first.proc.pid}" in line and "another hybridseg run" in line
        assert first.proc.poll() is None  # the first run is not disturbed
        # SIGKILL cannot be caught: the staging folder stays behind ...
        first.proc.kill()
        first.finish()
        assert everything_in(out)[0] == f".slow{PARTIAL_SUFFIX}"
    finally:
        first.kill()
    # ... and the next run sees that its owner is gone, clears it and succeeds
    rc = main(["--catalog", tiny_catalog["tiny-gates"], "segment", str(slow_input), "--model", "tiny-gates",
               "--out", str(out), "--no-progress", "--attention", "none"])
    capsys.readouterr()
    assert rc == 0
    assert everything_in(out) == ["slow.json", "slow.seg.nrrd"]
