"""NIfTI geometry exactly as 3D Slicer reads it: every header variant checked against SimpleITK (Slicer's reader).

Files are written with nibabel (the header bytes as given: negative ``pixdim`` and zero spacing survive), read
by our reader, segmented by a thresholding "model" whose answer is known, and the written outputs (labelmap,
attention, probabilities) are read back by SimpleITK, not by our reader. Expected positions are SimpleITK's
physical coordinates of the input's voxel centres; nothing expected comes from the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from HybridAttentionSegLib.core.errors import InvalidVolumeError, UserInputError
from HybridAttentionSegLib.core.inference.engine import Segmenter
from HybridAttentionSegLib.core.inference.io import read_volume
from HybridAttentionSegLib.core.inference.results import write_result
from HybridAttentionSegLib.core.models.cards import ModelCard
from synthetic import ThresholdNet, card_dict, rotation

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (26, 30, 22)
LPS = np.diag([-1.0, -1.0, 1.0])


def _affine(spacing, origin, directions=None) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if directions is None else np.asarray(directions)) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _ball() -> np.ndarray:
    """A ball at fixed voxel indices (off-centre, so a flip or shift moves it)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    return (np.linalg.norm(grid - np.array([10.0, 17.0, 9.0]), axis=-1) <= 6.0).astype(np.float32)


def _write(path: Path, header_setup) -> Path:
    """Write ``_ball()`` as a single-file NIfTI with the header bytes ``header_setup(header)`` leaves."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape(SHAPE)
    header_setup(header)
    header["vox_offset"] = 352
    with open(path, "wb") as stream:  # raw bytes: nibabel's image API would "fix" pixdim on save
        header.write_to(stream)  # 348 bytes plus the 4-byte extension flag of a single-file .nii
        assert stream.tell() == 352
        stream.write(_ball().tobytes(order="F"))
    return path


Q = _affine((2.0, 2.0, 2.0), (10.0, 20.0, 30.0))
S = _affine((2.0, 2.0, 2.0), (40.0, 20.0, 30.0))  # 30 mm from Q along x


def _q_and_s(qcode, scode, q=Q, s=S):
    def setup(header):
        header.set_qform(q, qcode)
        header.set_sform(s, scode)
    return setup


def _sform_only(s, pixdim):
    def setup(header):
        header.set_qform(None, 0)
        header.set_sform(s, 1)
        header["pixdim"][1:4] = pixdim
    return setup


def _qform_only(q, pixdim_x=None):
    def setup(header):
        header.set_qform(q, 1)
        header.set_sform(None, 0)
        if pixdim_x is not None:
            header["pixdim"][1] = pixdim_x
    return setup


def _pixdim_only(pixdim):
    def setup(header):
        header.set_qform(None, 0)
        header.set_sform(None, 0)
        header["pixdim"][1:4] = pixdim
    return setup


SHEAR = S.copy()
SHEAR[0, 1] = 0.8
OBLIQUE = _affine((1.5, 1.2, 2.5), (-30.0, 12.0, 5.0), rotation(2, 25.0) @ rotation(0, -15.0))

CASES = {
    "qform-and-sform-scanner": _q_and_s(1, 1),          # ITK: sform (code SCANNER_ANAT)
    "qform-scanner-sform-aligned": _q_and_s(1, 2),      # ITK: qform; nibabel would take the sform (30 mm off)
    "qform-talairach-sform-mni": _q_and_s(2, 4),        # ITK: qform
    "sform-only-pixdim-1": _sform_only(S, (1.0, 1.0, 1.0)),  # ITK: 1 mm from pixdim; nibabel 2 mm from sform
    "sform-only-oblique": _sform_only(OBLIQUE, (1.5, 1.2, 2.5)),
    "qform-only-oblique": _qform_only(OBLIQUE),
    "negative-pixdim": _qform_only(Q, pixdim_x=-2.0),   # ITK flips the axis; nibabel takes |pixdim|
    "sheared-sform-falls-back-to-qform": _q_and_s(1, 1, Q, SHEAR),
    "no-qform-no-sform": _pixdim_only((2.0, 3.0, 4.0)),
}


def _centres_lps(image: sitk.Image, indices) -> np.ndarray:
    return np.array([image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]) for ijk in indices])


def _probe_indices(shape) -> np.ndarray:
    corners = [[0 if c == 0 else s - 1 for c, s in zip(corner, shape, strict=True)]
               for corner in np.ndindex(2, 2, 2)]
    return np.array([*corners, [s // 2 for s in shape], [3, 7, 5]])


@pytest.fixture(scope="module")
def segmenter():
    card = ModelCard.from_dict(card_dict("attention_unet", roi=(32, 32, 32), spacing=(2.0, 2.0, 2.0)))
    return Segmenter(card, device="cpu", model=ThresholdNet())


@pytest.mark.parametrize("case", list(CASES))
def test_input_grid_and_outputs_land_where_simpleitk_puts_the_input(case, tmp_path, segmenter):
    path = _write(tmp_path / f"{case}.nii", CASES[case])
    reference = sitk.ReadImage(str(path))  # what Slicer shows
    volume = read_volume(path)

    # our grid: every probed voxel centre at SimpleITK's physical point (LPS -> RAS)
    probes = _probe_indices(SHAPE)
    ras = probes @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    np.testing.assert_allclose(ras @ LPS, _centres_lps(reference, probes), atol=1e-4)
    np.testing.assert_array_equal(volume.data[0], sitk.GetArrayFromImage(reference).transpose(2, 1, 0))

    result = segmenter.run(volume, attention=["uncertainty"])
    files = write_result(result, tmp_path / "out", case, probabilities=True)["files"]
    for key in ("segmentation", "attention-uncertainty", "probabilities"):
        written = sitk.ReadImage(files[key])
        assert written.GetSize() == reference.GetSize(), key
        np.testing.assert_allclose(_centres_lps(written, probes), _centres_lps(reference, probes), atol=1e-4,
                                   err_msg=f"{key} of {case} is not where SimpleITK puts the input")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(files["segmentation"])).transpose(2, 1, 0)
    truth = _ball() > 0.5
    dice = 2 * ((labels == 1) & truth).sum() / ((labels == 1).sum() + truth.sum())
    assert dice > 0.9, f"{case}: the ball is segmented at other voxels (Dice {dice:.2f})"


def test_ambiguous_header_is_reported(tmp_path, caplog):
    path = _write(tmp_path / "ambiguous.nii", CASES["qform-scanner-sform-aligned"])
    read_volume(path)
    assert any("ambiguous NIfTI geometry" in r.getMessage() and "30 mm" in r.getMessage() for r in caplog.records)


DEGENERATE = {
    "zero-pixdim": (_pixdim_only((2.0, 0.0, 2.0)), "zero or non-finite voxel spacing"),
    "zero-pixdim-with-qform": (_qform_only(Q, pixdim_x=0.0), "zero or non-finite voxel spacing"),
    "zero-pixdim-with-sform": (_sform_only(S, (2.0, 2.0, 0.0)), "zero or non-finite voxel spacing"),
    "nan-pixdim": (_pixdim_only((2.0, float("nan"), 2.0)), "zero or non-finite voxel spacing"),
    "singular-sform-no-qform": (_sform_only(_affine((2.0, 2.0, 2.0), (0, 0, 0), [[1, 0, 1], [0, 1, 0], [0, 0, 0]]),
                                            (2.0, 2.0, 2.0)), "degenerate orientation"),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_headers_are_refused_with_one_line(case, tmp_path):
    setup, words = DEGENERATE[case]
    path = _write(tmp_path / f"{case}.nii", setup)
    with pytest.raises(InvalidVolumeError) as err:
        read_volume(path)
    assert isinstance(err.value, UserInputError)
    message = str(err.value)
    assert words in message and "\n" not in message and "fix" in message


@pytest.mark.parametrize(("directions", "words"), [
    ([[2, 0, 0], [0, 0, 0], [0, 0, 2]], "zero voxel spacing"),
    ([[2, 0, 0], [0, 2, 0], [2, 0, 0]], "singular direction matrix"),
], ids=["zero-spacing", "singular-direction"])
def test_degenerate_nrrd_headers_are_refused_with_one_line(directions, words, tmp_path):
    import nrrd

    path = tmp_path / "degenerate.nrrd"
    nrrd.write(str(path), np.zeros((4, 5, 6), np.float32),
               {"space": "left-posterior-superior", "space directions": np.array(directions, float),
                "space origin": np.zeros(3), "kinds": ["domain"] * 3})
    with pytest.raises(InvalidVolumeError) as err:
        read_volume(path)
    assert words in str(err.value) and "\n" not in str(err.value) and "fix" in str(err.value)


def test_cli_exits_2_with_one_line_for_a_zero_spacing_header(tmp_path):
    path = _write(tmp_path / "zero.nii", DEGENERATE["zero-pixdim"][0])
    code = "import sys; from HybridAttentionSegLib.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "segment", str(path), "--model", "mni-tissue-attention-unet",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT / "HybridAttentionSeg"), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "zero or non-finite voxel spacing" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_written_nifti_labelmap_reads_back_on_the_input_grid_in_simpleitk(tmp_path):
    """The NIfTI writer (``refine --out x.nii.gz``): SimpleITK puts every voxel where it put the input's."""
    from HybridAttentionSegLib.core.inference.io import write_labelmap_nifti

    for case in ("qform-scanner-sform-aligned", "negative-pixdim", "qform-only-oblique"):
        path = _write(tmp_path / f"{case}.nii", CASES[case])
        volume = read_volume(path)
        labels = (_ball() > 0.5).astype(np.uint8) * 7
        out = write_labelmap_nifti(tmp_path / f"{case}.labels.nii.gz", labels, volume.affine)
        reference, written = sitk.ReadImage(str(path)), sitk.ReadImage(str(out))
        probes = _probe_indices(SHAPE)
        np.testing.assert_allclose(_centres_lps(written, probes), _centres_lps(reference, probes), atol=1e-4,
                                   err_msg=case)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), labels)
