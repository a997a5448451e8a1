"""Disk faults against a real ``hybridseg segment``: a size-limited file system, a full disk mid-run, a read-only
mount. Nothing partial may be left; each case exits 2 with one line.

Where the machine allows it, each scenario runs in a private mount namespace (``unshare --user
--map-root-user --mount``) on a real tmpfs mounted with ``size=`` or ``ro`` (``full_disk_scenario.py``).
Where mounting is not permitted (e.g. unprivileged user namespaces switched off), the closest real
alternative runs instead: the kernel's file-size limit (``RLIMIT_FSIZE``), which makes the result writes
fail with EFBIG exactly as a full disk makes them fail with ENOSPC.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_process import cli_env, everything_in, run

HERE = Path(__file__).resolve().parent
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]


def _can_mount(tmp_path) -> bool:
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    target = tmp_path / "probe"
    target.mkdir()
    probe = subprocess.run([*UNSHARE, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def mounting(tmp_path_factory):
    if os.environ.get("HYBRIDSEG_TEST_NO_MOUNT"):  # exercise the fallback on machines that can mount
        return False
    return _can_mount(tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    data = np.random.default_rng(0).random((128, 128, 128)).astype(np.float32)
    path = tmp_path_factory.mktemp("disk") / "slow.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _scenario(tmp_path, scenario, catalog, model, image) -> dict:
    mount = tmp_path / "mnt"
    mount.mkdir()
    proc = subprocess.run([*UNSHARE, sys.executable, str(HERE / "full_disk_scenario.py"), str(mount), scenario,
                           catalog, model, str(image)], capture_output=True, text=True, timeout=900,
                          cwd=str(HERE))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert everything_in(mount) == []  # the tmpfs lived only in the namespace
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_too_little_space_is_refused_before_inference(tmp_path, mounting, tiny_catalog, image):
    if not mounting:
        pytest.skip("mounting a tmpfs is not permitted here; test_outputs.py::test_not_enough_space_is_refused "
                    "checks the same refusal against the real free space")
    report = _scenario(tmp_path, "small", tiny_catalog["tiny-gates-fine"], "tiny-gates-fine", image)
    assert report["rc"] == 2 and report["last"].startswith("hybridseg: error: not enough free space")
    assert not report["progress_seen"]  # refused before any inference
    assert report["left"] == []


def test_disk_full_mid_run_leaves_nothing_partial(tmp_path, mounting, tiny_catalog, image):
    if mounting:
        report = _scenario(tmp_path, "fill", tiny_catalog["tiny-gates-fine"], "tiny-gates-fine", image)
        assert report["filled"] > 50 * 2**20  # the disk really was filled, after the pre-flight check
        assert report["rc"] == 2, report
        assert "No space left on device" in report["last"] and "nothing was written" in report["last"]
        assert report["left"] == []  # no staging folder, no out folder, no half-written file
        return
    # closest real alternative: the kernel refuses writes past RLIMIT_FSIZE (EFBIG)
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = tmp_path / "out"
    proc = run(["--catalog", tiny_catalog["tiny-gates"], "segment", image, "--model", "tiny-gates", "--out",
                out, "--no-progress"], cli_env(tmp_path / "cache"), preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "File too large" in proc.stderr.splitlines()[-1]
    assert everything_in(out) == []


def test_read_only_out_is_refused_before_inference(tmp_path, mounting, tiny_catalog, image):
    if not mounting:
        pytest.skip("mounting is not permitted here; test_cli_outputs.py covers a read-only folder (chmod)")
    report = _scenario(tmp_path, "readonly", tiny_catalog["tiny-gates-fine"], "tiny-gates-fine", image)
    assert report["rc"] == 2 and "not writable" in report["last"] and "--out" in report["last"]
    assert not report["progress_seen"] and report["left"] == []
