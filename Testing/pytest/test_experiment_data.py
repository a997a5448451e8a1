"""``hybridseg experiment review``'s data: MSD folders checked before any work, loaded on RAS grids, split
reproducibly; malformed datasets and a foreign ``--out`` end with exit 2 and one line naming problem and remedy.

These need no Ray: every check runs before Ray would start.
"""

from __future__ import annotations

import json
import os
import socket
import time

import nibabel as nib
import numpy as np
import pytest
from cli_process import cli_env, run
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.errors import UserInputError
from HybridAttentionSegLib.core.experiments.datasets import split_indices
from HybridAttentionSegLib.core.experiments.msd import check_msd, load_msd
from HybridAttentionSegLib.core.experiments.runner import Grid
from HybridAttentionSegLib.core.experiments.variants import default_settings, grid, select
from msd_data import ball_case, write_msd


def _review(capsys, data, out, *extra):
    rc = main(["experiment", "review", "--data", str(data), "--out", str(out), "--no-progress", "--steps", "2",
               *extra])
    return rc, capsys.readouterr()


def _assert_one_line_error(rc, captured, out, *needles):
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured.err
    assert lines and lines[-1].startswith("hybridseg: error:"), captured.err
    assert sum(line.startswith("hybridseg: error:") for line in lines) == 1
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_folder_without_dataset_json(tmp_path, capsys):
    (tmp_path / "data" / "imagesTr").mkdir(parents=True)
    rc, captured = _review(capsys, tmp_path / "data", tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "no dataset.json", "--data demo")


def test_missing_label_file(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=4)
    (data / "labelsTr" / "ball_002.nii.gz").unlink()
    rc, captured = _review(capsys, data, tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "ball_002", "missing", "add the label file")


def test_label_on_another_grid(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=4)
    _, labels = ball_case(0, (32, 32, 30))
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(data / "labelsTr" / "ball_001.nii.gz"))
    rc, captured = _review(capsys, data, tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "ball_001", "[32, 32, 30]", "does not match",
                           "resample the label")


def test_label_with_shifted_origin(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=4)
    _, labels = ball_case(1)
    shifted = np.eye(4)
    shifted[:3, 3] = (5.0, 0.0, 0.0)
    nib.save(nib.Nifti1Image(labels, shifted), str(data / "labelsTr" / "ball_001.nii.gz"))
    rc, captured = _review(capsys, data, tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "ball_001", "does not match")


def test_label_values_dataset_json_does_not_declare(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=4, labels={"0": "background", "1": "ball"})
    rc, captured = _review(capsys, data, tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "values [2]", "add them to 'labels'")


def test_too_few_cases_to_split(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=2)
    rc, captured = _review(capsys, data, tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "2 labelled case(s)", "at least 3")


def test_manifest_without_training_list(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=3)
    (data / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "x"}}), encoding="utf-8")
    rc, captured = _review(capsys, data, tmp_path / "out")
    _assert_one_line_error(rc, captured, tmp_path / "out", "'training' list")


def test_test_data_with_other_classes(tmp_path, capsys):
    data = write_msd(tmp_path / "data", count=3)
    other = write_msd(tmp_path / "other", count=2, labels={"0": "background", "1": "ball"})
    rc, captured = _review(capsys, data, tmp_path / "out", "--test-data", str(other))
    _assert_one_line_error(rc, captured, tmp_path / "out", "--test-data", "same classes")


def test_out_holding_other_files_is_left_alone(tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.md").write_text("draft\n", encoding="utf-8")
    rc = main(["experiment", "review", "--data", "demo", "--quick", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("hybridseg: error:") and "holds other files" in err[-1]
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.md"]
    assert (out / "chapter1.md").read_text(encoding="utf-8") == "draft\n"


def test_overwrite_is_the_consent_to_write_into_a_foreign_folder(tmp_path, capsys):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n", encoding="utf-8")
    (tmp_path / "data").mkdir()  # no dataset.json: the next check after --out's
    rc, captured = _review(capsys, tmp_path / "data", out, "--overwrite")
    last = captured.err.strip().splitlines()[-1]
    assert rc == 2 and "no dataset.json" in last and "holds other files" not in last
    rc, captured = _review(capsys, tmp_path / "data", out)
    assert rc == 2 and "--overwrite" in captured.err.strip().splitlines()[-1]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep\n"


def test_results_from_other_settings_are_refused_or_rerun_with_overwrite(tmp_path):
    settings = default_settings(quick=True, steps=3)
    variants = select(grid(settings), "cnn,self-1")
    trials = Grid(tmp_path, variants, range(1), settings, {"source": "demo"}, None)
    (tmp_path / "trials").mkdir()
    good, stale = (path for _, _, _, path in trials.trials)
    good.write_text(json.dumps({"fingerprint": trials.trials[0][2], "variant": "cnn"}), encoding="utf-8")
    stale.write_text(json.dumps({"fingerprint": "made-with-other-steps"}), encoding="utf-8")
    with pytest.raises(UserInputError, match="--overwrite"):
        trials.finished()
    done = trials.finished(overwrite=True)
    assert list(done) == [good.stem] and [t[3] for t in trials.pending(done)] == [stale]
    other = Grid(tmp_path, variants, range(1), default_settings(quick=True, steps=4), {"source": "demo"}, None)
    assert other.trials[0][2] != trials.trials[0][2]  # the steps are part of every fingerprint


def test_ray_address_nobody_listens_on(tmp_path, capsys):
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    rc = main(["experiment", "review", "--quick", "--out", str(tmp_path / "out"), "--no-progress",
               "--ray-address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("hybridseg: error: cannot connect to the Ray cluster"), err
    assert "ray start --head" in err[-1] and time.monotonic() - start < 30  # not Ray's minutes of retries
    assert not (tmp_path / "out").exists()


def test_without_ray_one_line_says_how_to_install_it(tmp_path):
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray (simulated)')\n", encoding="utf-8")
    env = cli_env(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env["PYTHONPATH"]])
    proc = run(["experiment", "review", "--quick", "--out", tmp_path / "out", "--no-progress"], env, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("hybridseg: error:") and "[experiments]" in last, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needle", [(["--variants", "cnn,self-3"], "self-3"),
                                          (["--patch", "40"], "multiple of 16"),
                                          (["--seeds", "0"], "at least 1")])
def test_bad_options(tmp_path, capsys, args, needle):
    rc = main(["experiment", "review", "--quick", "--out", str(tmp_path / "out"), "--no-progress", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("hybridseg: error:") and needle in err[-1], err
    assert not (tmp_path / "out").exists()


def test_split_is_reproducible_disjoint_and_complete():
    first = split_indices(20, seed=3)
    assert first == split_indices(20, seed=3)
    assert [len(part) for part in first] == [12, 4, 4]
    assert sorted(sum(first, [])) == list(range(20))
    assert split_indices(20, seed=4) != first
    with pytest.raises(ValueError):
        split_indices(2)


def test_msd_cases_are_read_on_ras_grids_with_their_labels(tmp_path):
    flipped = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS axes: the loader must turn them to RAS
    data = write_msd(tmp_path / "data", count=5, affine=flipped)
    index = check_msd(data)
    assert index.classes == [(1, "ball"), (2, "core")] and index.channels == 1 and len(index.cases) == 5
    dataset = load_msd(index, spacing=None, split_seed=0)
    assert [len(dataset.train), len(dataset.validation), len(dataset.test)] == [3, 1, 1]
    assert dataset.out_channels == 3
    by_name = {case.name: case for case in dataset.train + dataset.validation + dataset.test}
    assert len(by_name) == 5
    for index_, name in enumerate(sorted(by_name)):
        case = by_name[name]
        _, written = ball_case(index_)
        np.testing.assert_array_equal(case.labels, written[::-1, ::-1, :])  # I and J reversed: now RAS
        assert case.image.shape == (1, 32, 32, 32) and case.spacing == (1.0, 1.0, 1.0)
        inside, outside = case.image[0][case.labels == 2].mean(), case.image[0][case.labels == 0].mean()
        assert inside > outside + 1.0  # image and labels still on the same voxels (z-scored intensities)


def test_msd_resampled_to_a_coarser_spacing(tmp_path):
    data = write_msd(tmp_path / "data", count=3)
    dataset = load_msd(check_msd(data), spacing=2.0, split_seed=0)
    for case in dataset.train + dataset.validation + dataset.test:
        assert case.image.shape == (1, 16, 16, 16) and case.labels.shape == (16, 16, 16)
        assert case.spacing == (2.0, 2.0, 2.0)
        assert set(np.unique(case.labels)) == {0, 1, 2}
        assert case.image[0][case.labels == 2].mean() > case.image[0][case.labels == 0].mean() + 1.0


def test_check_msd_reads_headers_only(tmp_path):
    data = write_msd(tmp_path / "data", count=3)
    image = data / "imagesTr" / "ball_000.nii.gz"
    image.write_bytes(image.read_bytes()[:400])  # header intact, voxels cut off
    assert len(check_msd(data).cases) == 3
    with pytest.raises(UserInputError):
        load_msd(check_msd(data), spacing=None)
