"""Issue 10 #6: every user-caused failure exits 2 with ONE line naming the problem and the fix; never exit 1.

The 13 cases of the issue (the two ``--out`` ones are in ``test_cli_outputs.py`` and ``test_full_disk.py``), plus
``refine`` writing the format its ``--out`` names, ``--click -10,...`` without ``=``, and argparse's own errors.
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from cli_process import cli_env, everything_in, one_error_line, run
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.inference.io import (
    read_segmentation_nrrd,
    write_scalar_nrrd,
    write_segmentation_nrrd,
)
from HybridAttentionSegLib.core.inference.volume import ijk_to_ras
from phantoms import LABELS, make_phantom


def _exit_2(capsys, argv, *needles) -> str:
    rc = main([str(a) for a in argv])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2, line
    for needle in needles:
        assert needle in line, line
    return line


def _raw_nifti(path, setup):
    """A NIfTI written byte for byte (nibabel's image API would "fix" a zero pixdim on save)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((24, 24, 24))
    setup(header)
    header["vox_offset"] = 352
    with open(path, "wb") as stream:
        header.write_to(stream)
        stream.write(np.random.default_rng(0).random((24, 24, 24), dtype=np.float32).tobytes(order="F"))
    return path


def _zero_spacing(header):
    header.set_qform(np.eye(4), 1)
    header["pixdim"][1:4] = (1.0, 0.0, 1.0)


def _singular_direction(header):
    singular = np.eye(4)
    singular[:3, :3] = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    header.set_qform(None, 0)
    header.set_sform(singular, 1)


@pytest.mark.parametrize(("setup", "needle"), [(_zero_spacing, "spacing"), (_singular_direction, "orientation")],
                         ids=["zero-spacing", "singular-direction"])
def test_degenerate_nifti_header(tmp_path, tiny_catalog, capsys, setup, needle):
    path = _raw_nifti(tmp_path / "bad.nii", setup)
    _exit_2(capsys, ["--catalog", tiny_catalog["tiny-gates"], "segment", path, "--model", "tiny-gates", "--out",
                     tmp_path / "out", "--no-progress"], needle, "fix")
    assert everything_in(tmp_path / "out") == []


@pytest.fixture
def refine_files(tmp_path):
    phantom = make_phantom()
    return phantom, {
        "image": write_scalar_nrrd(tmp_path / "image.nrrd", phantom.image, phantom.affine),
        "seg": write_segmentation_nrrd(tmp_path / "model.seg.nrrd", phantom.labelmap, phantom.affine, LABELS),
        "probabilities": write_scalar_nrrd(tmp_path / "model.probabilities.nrrd", phantom.probabilities,
                                           phantom.affine),
    }


def _refine(files, out, *extra):
    return ["refine", files["image"], "--seg", files["seg"], "--probabilities", files["probabilities"], "--out",
            out, *extra]


@pytest.mark.parametrize("radius", ["-5", "nan", "0", "inf"])
def test_refine_radius_must_be_a_positive_number(tmp_path, refine_files, capsys, radius):
    _, files = refine_files
    _exit_2(capsys, _refine(files, tmp_path / "fixed.seg.nrrd", "--radius-mm", radius), "--radius-mm")
    assert not (tmp_path / "fixed.seg.nrrd").exists()


@pytest.mark.parametrize("out", ["folder", "folder/", "trailing-slash/"])
def test_refine_out_a_folder(tmp_path, refine_files, capsys, out):
    _, files = refine_files
    (tmp_path / "folder").mkdir()
    _exit_2(capsys, _refine(files, str(tmp_path / out) + ("/" if out.endswith("/") else "")), "is a folder",
            ".seg.nrrd")
    assert everything_in(tmp_path / "folder") == [] and not (tmp_path / "trailing-slash").exists()


@pytest.mark.parametrize("which", ["image", "seg", "probabilities", "seg-through-symlink"])
def test_refine_never_writes_over_an_input(tmp_path, refine_files, capsys, which):
    _, files = refine_files
    before = {k: v.read_bytes() for k, v in files.items()}
    target = files[which.split("-")[0]]
    if which == "seg-through-symlink":
        os.symlink(files["seg"], tmp_path / "link.seg.nrrd")
        target = tmp_path / "link.seg.nrrd"
    _exit_2(capsys, _refine(files, target, "--overwrite"), "one of the inputs")
    assert {k: v.read_bytes() for k, v in files.items()} == before


@pytest.mark.parametrize("name", ["fixed.nrrd", "fixed.txt", "fixed", ".nii.gz"])
def test_refine_out_must_name_a_format(tmp_path, refine_files, capsys, name):
    _, files = refine_files
    _exit_2(capsys, _refine(files, tmp_path / name), ".seg.nrrd", ".nii.gz")
    assert not (tmp_path / name).exists()


def test_refine_writes_the_format_its_extension_names(tmp_path, refine_files, capsys):
    phantom, files = refine_files
    r, a, s = ijk_to_ras(phantom.affine, [(12, 24, 20)])[0]
    click = f"{-abs(r) - 1:.1f},{a},{s},background"  # a negative R, written without '='
    assert main([str(x) for x in _refine(files, tmp_path / "fixed.seg.nrrd", "--click", click)]) == 0
    assert main([str(x) for x in _refine(files, tmp_path / "fixed.nii.gz", "--click", click)]) == 0
    capsys.readouterr()
    assert (tmp_path / "fixed.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip, not NRRD text
    labels, affine, _ = read_segmentation_nrrd(tmp_path / "fixed.seg.nrrd")
    image = sitk.ReadImage(str(tmp_path / "fixed.nii.gz"))  # SimpleITK, i.e. how Slicer reads it
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), labels)
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, affine, atol=1e-4)
    # existing --out: refused before any work, replaced with --overwrite
    before = (tmp_path / "fixed.nii.gz").read_bytes()
    _exit_2(capsys, _refine(files, tmp_path / "fixed.nii.gz"), "already exist", "--overwrite")
    assert (tmp_path / "fixed.nii.gz").read_bytes() == before
    assert main([str(x) for x in _refine(files, tmp_path / "fixed.nii.gz", "--overwrite")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("fixed", ".fixed"))) == [
        "fixed.nii.gz", "fixed.seg.nrrd"]


def test_negative_click_without_equals_in_a_real_process(tmp_path, refine_files):
    phantom, files = refine_files
    r, a, s = ijk_to_ras(phantom.affine, [(12, 24, 20)])[0]
    proc = run(_refine(files, tmp_path / "f.seg.nrrd", "--click", f"-{abs(r) + 1:.1f},{a},{s},Shell"),
               cli_env(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clicks"][0]["ras"][0] < 0


@pytest.mark.parametrize(("args", "needle"), [
    (["--repeats", "0"], "--repeats"),
    (["--shape", "100000,100000,100000"], "too large"),
    (["--shape", "4096,4096,4096"], "too large"),
    (["--shape", "64,64"], "--shape"),
])
def test_bench_bad_arguments(tiny_catalog, capsys, args, needle):
    _exit_2(capsys, ["--catalog", tiny_catalog["tiny-gates"], "bench", "--model", "tiny-gates", *args], needle)


CATALOGS = {
    "a-number": (b"42", "model card"),
    "a-list-of-strings": (b'["a", "b"]', "model card"),
    "bad-utf8": (b'\xff\xfe{"id": 1}', "UTF-8"),
    "a-folder": (None, "folder"),
}


@pytest.mark.parametrize("kind", sorted(CATALOGS))
@pytest.mark.parametrize("via", ["option", "environment"])
def test_bad_catalog(tmp_path, capsys, monkeypatch, kind, via):
    data, needle = CATALOGS[kind]
    path = tmp_path / "catalog.json"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    if via == "environment":
        monkeypatch.setenv("HYBRIDSEG_CATALOG", str(path))
        _exit_2(capsys, ["models"], needle, str(path))
    else:
        monkeypatch.delenv("HYBRIDSEG_CATALOG", raising=False)
        _exit_2(capsys, ["--catalog", path, "models"], needle, str(path))


def test_import_model_card_a_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    (tmp_path / "weights.safetensors").write_bytes(b"x" * 64)
    (tmp_path / "card").mkdir()
    _exit_2(capsys, ["import-model", tmp_path / "weights.safetensors", "--card", tmp_path / "card"],
            "is a folder", "--card")
    assert everything_in(tmp_path / "cache") == []


def test_usage_errors_are_one_line(tmp_path):
    proc = run(["segment", "x.nii.gz"], cli_env(tmp_path / "cache"))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--model" in lines[0] and "--help" in lines[0], proc.stderr
