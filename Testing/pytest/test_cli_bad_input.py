"""Bad input: exit code 2, one clear line naming the problem and the remedy, nothing written."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from HybridAttentionSegLib.cli import main
from synthetic import write_random_weights_card


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("catalog")
    return str(write_random_weights_card(tmp, "attention_unet", {"channels": [4, 8, 16, 32]}, (32, 32, 32),
                                         model_id="tiny-gates"))


def _nifti(path, data, zooms=(1.0, 1.0, 1.0)):
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
    return path


def _segment(catalog, input_path, out, *extra):
    return main(["--catalog", catalog, "segment", str(input_path), "--model", "tiny-gates", "--out", str(out),
                 "--no-progress", *extra])


def _assert_clean_error(capsys, rc, out, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err and err[-1].startswith("hybridseg: error:")
    for needle in needles:
        assert needle in err[-1]
    assert not out.exists() or not any(out.iterdir())


def test_two_dimensional_volume(tmp_path, catalog, capsys):
    path = _nifti(tmp_path / "slice.nii.gz", np.random.rand(40, 40, 1))
    _assert_clean_error(capsys, _segment(catalog, path, tmp_path / "out"), tmp_path / "out", "3D volume")


def test_too_thin_volume(tmp_path, catalog, capsys):
    path = _nifti(tmp_path / "thin.nii.gz", np.random.rand(40, 40, 3))
    _assert_clean_error(capsys, _segment(catalog, path, tmp_path / "out"), tmp_path / "out", "at least")


def test_four_d_given_to_single_channel_model(tmp_path, catalog, capsys):
    path = _nifti(tmp_path / "fmri.nii.gz", np.random.rand(24, 24, 24, 3))
    _assert_clean_error(capsys, _segment(catalog, path, tmp_path / "out"), tmp_path / "out",
                        "expects 1 channel", "3 channel")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path, catalog, capsys, bad):
    data = np.random.rand(24, 24, 24)
    data[3, 4, 5] = bad
    path = _nifti(tmp_path / "nan.nii.gz", data)
    _assert_clean_error(capsys, _segment(catalog, path, tmp_path / "out"), tmp_path / "out", "NaN/Inf")


def test_empty_file(tmp_path, catalog, capsys):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    _assert_clean_error(capsys, _segment(catalog, path, tmp_path / "out"), tmp_path / "out", "empty")


def test_unreadable_format(tmp_path, catalog, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("this is not an image\n" * 10)
    _assert_clean_error(capsys, _segment(catalog, path, tmp_path / "out"), tmp_path / "out",
                        "cannot read", "supported formats")


def test_unknown_model_suggests_close_names(tmp_path, catalog, capsys):
    path = _nifti(tmp_path / "ok.nii.gz", np.random.rand(24, 24, 24))
    rc = main(["--catalog", catalog, "segment", str(path), "--model", "tiny-gate", "--out",
               str(tmp_path / "out")])
    _assert_clean_error(capsys, rc, tmp_path / "out", "tiny-gates")


def test_unsupported_attention_method_lists_supported(tmp_path, catalog, capsys):
    path = _nifti(tmp_path / "ok.nii.gz", np.random.rand(24, 24, 24))
    rc = _segment(catalog, path, tmp_path / "out", "--attention", "rollout")
    _assert_clean_error(capsys, rc, tmp_path / "out", "gates", "grad-cam")


def test_constant_volume_gives_empty_segmentation_and_notice(tmp_path, catalog, capsys):
    path = _nifti(tmp_path / "flat.nii.gz", np.full((24, 24, 24), 7.0))
    rc = _segment(catalog, path, tmp_path / "out", "--attention", "gates", "uncertainty")
    captured = capsys.readouterr()
    assert rc == 0
    assert "constant" in captured.err
    from HybridAttentionSegLib.core.inference.io import read_segmentation_nrrd

    labelmap, _, segments = read_segmentation_nrrd(tmp_path / "out" / "flat.seg.nrrd")
    assert labelmap.shape == (24, 24, 24) and not labelmap.any()
    assert [s["name"] for s in segments] == ["Gray matter", "White matter"]


def test_console_script_exit_codes(tmp_path, catalog):
    proc = subprocess.run([sys.executable, "-m", "HybridAttentionSegLib.cli", "--catalog", catalog, "segment",
                           str(tmp_path / "missing.nii.gz"), "--model", "tiny-gates", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("hybridseg: error: input not found")
    proc = subprocess.run([sys.executable, "-m", "HybridAttentionSegLib.cli", "architectures", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
