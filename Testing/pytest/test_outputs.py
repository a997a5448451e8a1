"""All-or-nothing output sets (core.outputs) on real files, real processes and real signals; output stems."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from HybridAttentionSegLib.core.errors import UserInputError
from HybridAttentionSegLib.core.inference.io import stem_of
from HybridAttentionSegLib.core.outputs import PARTIAL_SUFFIX, OutputSet, deferred_signals


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(("name", "stem"), [
    ("sub01.T1.nii.gz", "sub01.T1"), ("sub01.T2.NII.GZ", "sub01.T2"), ("ct.seg.nrrd", "ct"),
    ("scan.v2.nrrd", "scan.v2"), ("brain.mha", "brain"), (".x.nii.gz", "x"), ("..hidden.nrrd", "hidden"),
    (".nii.gz", "volume"), ("plain", "plain"), ("archive.tar.gz", "archive.tar.gz"),
])
def test_stem_strips_only_known_image_extensions(tmp_path, name, stem):
    assert stem_of(tmp_path / name) == stem


def test_stem_of_dicom_folder_is_its_name(tmp_path):
    (tmp_path / "series.1.2").mkdir()
    assert stem_of(tmp_path / "series.1.2") == "series.1.2"


def test_commit_moves_everything_in_and_leaves_no_staging(tmp_path):
    out = tmp_path / "new" / "deeper"
    outputs = OutputSet(out, "a", ["a.seg.nrrd", "a.json"])
    outputs.check()
    with outputs:
        assert outputs.staging.name == f".a{PARTIAL_SUFFIX}" and outputs.staging.parent == out
        for name in outputs.names:
            outputs.path(name).write_text(name)
        assert _files(out) == [f".a{PARTIAL_SUFFIX}"]  # nothing visible before the commit
        final = outputs.commit()
    assert _files(out) == ["a.json", "a.seg.nrrd"]
    assert final["a.json"].read_text() == "a.json"


def test_failure_removes_staging_and_the_folders_it_created(tmp_path):
    out = tmp_path / "made" / "by-run"
    with pytest.raises(RuntimeError, match="boom"), OutputSet(out, "a", ["a.json"]) as outputs:
        outputs.path("a.json").write_text("{}")
        raise RuntimeError("boom")
    assert not (tmp_path / "made").exists()


def test_existing_outputs_refused_listed_and_kept(tmp_path):
    (tmp_path / "a.json").write_text("old")
    (tmp_path / "a.attention-gates.nrrd").write_text("old map")
    outputs = OutputSet(tmp_path, "a", ["a.seg.nrrd", "a.json"], replaces=["a.attention-*.nrrd"])
    with pytest.raises(UserInputError) as err:
        outputs.check()
    message = str(err.value)
    assert "a.json" in message and "a.attention-gates.nrrd" in message and "--overwrite" in message
    assert "\n" not in message
    assert (tmp_path / "a.json").read_text() == "old"


def test_overwrite_replaces_and_removes_superseded_outputs(tmp_path):
    (tmp_path / "a.json").write_text("old")
    (tmp_path / "a.attention-rollout.nrrd").write_text("map of a method not run this time")
    (tmp_path / "b.json").write_text("another input's result")
    with OutputSet(tmp_path, "a", ["a.seg.nrrd", "a.json"], overwrite=True,
                   replaces=["a.attention-*.nrrd"]) as outputs:
        outputs.path("a.seg.nrrd").write_text("new seg")
        outputs.path("a.json").write_text("new")
        outputs.commit()
    assert _files(tmp_path) == ["a.json", "a.seg.nrrd", "b.json"]
    assert (tmp_path / "a.json").read_text() == "new"


def test_output_appearing_during_the_run_is_not_replaced(tmp_path):
    with OutputSet(tmp_path, "a", ["a.json"]) as outputs:
        outputs.path("a.json").write_text("ours")
        (tmp_path / "a.json").write_text("written by someone else meanwhile")
        with pytest.raises(UserInputError, match="appeared"):
            outputs.commit()
    assert (tmp_path / "a.json").read_text() == "written by someone else meanwhile"
    assert _files(tmp_path) == ["a.json"]


@pytest.mark.parametrize("bad", ["file", "below-file", "empty"])
def test_bad_destinations_refused_before_anything_is_written(tmp_path, bad):
    target = {"file": tmp_path / "f.txt", "below-file": tmp_path / "f.txt" / "sub", "empty": ""}[bad]
    (tmp_path / "f.txt").write_text("user data")
    with pytest.raises(UserInputError) as err:
        OutputSet(target, "a", ["a.json"]).check()
    assert "\n" not in str(err.value) and "--out" in str(err.value)
    assert _files(tmp_path) == ["f.txt"]


def test_not_enough_space_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="free space"):
        OutputSet(tmp_path, "a", ["a.json"]).check_space(2**62)
    OutputSet(tmp_path, "a", ["a.json"]).check_space(1)


def test_lock_held_by_a_live_process_refuses_a_second_run(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        staging = tmp_path / f".a{PARTIAL_SUFFIX}"
        staging.mkdir()
        (staging / "owner.json").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(UserInputError) as err:
            OutputSet(tmp_path, "a", ["a.json"]).open()
        assert f"pid {holder.pid}" in str(err.value) and "another hybridseg run" in str(err.value)
        assert staging.is_dir()  # the live run's staging is untouched
        # another stem in the same folder is not blocked
        with OutputSet(tmp_path, "b", ["b.json"]) as other:
            other.path("b.json").write_text("{}")
            other.commit()
    finally:
        holder.kill()
        holder.wait()


def test_staging_of_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    staging = tmp_path / f".a{PARTIAL_SUFFIX}"
    staging.mkdir()
    (staging / "owner.json").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    (staging / "a.seg.nrrd").write_text("half-written by the killed run")
    with OutputSet(tmp_path, "a", ["a.json"]) as outputs:
        outputs.path("a.json").write_text("{}")
        outputs.commit()
    assert _files(tmp_path) == ["a.json"]


def test_signals_during_commit_wait_until_the_moves_are_done(tmp_path):
    """A real SIGINT sent to this process inside the commit window arrives only after it."""
    events = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            events.append("still running after SIGINT")
    assert events == ["still running after SIGINT"]
    # and the previous handler (Python's default: KeyboardInterrupt) is back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
