"""Issue 10 #5: a DICOM folder holding several series is never segmented by guessing; ``--series UID`` chooses."""

from __future__ import annotations

import locale

import numpy as np
import pytest
import SimpleITK as sitk
from cli_process import everything_in, one_error_line
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.errors import InvalidVolumeError
from HybridAttentionSegLib.core.inference.dicom import list_series
from HybridAttentionSegLib.core.inference.io import read_volume

T1 = "1.2.826.0.1.3680043.2.1125.1.101"
T2 = "1.2.826.0.1.3680043.2.1125.1.202"


def _write_series(folder, uid, description, size, value_offset):
    """One MR series of ``size`` (I, J, K) written slice by slice as DICOM files into ``folder``."""
    rng = np.random.default_rng(len(description))
    array = (rng.integers(0, 1000, size=size[::-1]) + value_offset).astype(np.int16)  # (K, J, I)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(size[2]):
        slice_image = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR", "0020|000e": uid, "0020|000d": "1.2.826.0.1.3680043.2.1125.1.9",
            "0008|103e": description, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{c:.4f}" for c in origin), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": "2.0", "0028|0030": "2.0\\2.0", "0008|0018": f"{uid}.{k + 10}",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{description}-{k:03d}.dcm"))
        writer.Execute(slice_image)
    return array.transpose(2, 1, 0)


@pytest.fixture(scope="module")
def two_series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "study"
    folder.mkdir()
    t1 = _write_series(folder, T1, "T1 MPRAGE", (24, 28, 20), 0)
    t2 = _write_series(folder, T2, "T2 FLAIR", (26, 22, 18), 5000)
    return folder, {T1: t1, T2: t2}


def test_listing_gives_uid_description_and_slices(two_series):
    folder, _ = two_series
    found = {s["uid"]: (s["description"], s["slices"]) for s in list_series(folder)}
    assert found == {T1: ("T1 MPRAGE", 20), T2: ("T2 FLAIR", 18)}


def test_two_series_without_choice_exit_2_listing_them(tmp_path, two_series, tiny_catalog, capsys):
    folder, _ = two_series
    rc = main(["--catalog", tiny_catalog["tiny-gates"], "segment", str(folder), "--model", "tiny-gates", "--out",
               str(tmp_path / "out"), "--no-progress"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    for needle in (T1, T2, "T1 MPRAGE", "T2 FLAIR", "20 slices", "18 slices", "--series UID"):
        assert needle in line
    assert everything_in(tmp_path / "out") == []


@pytest.mark.parametrize("uid", [T1, T2])
def test_series_option_reads_exactly_that_series(tmp_path, two_series, tiny_catalog, capsys, uid):
    folder, arrays = two_series
    volume = read_volume(folder, series=uid)
    np.testing.assert_array_equal(volume.data[0], arrays[uid])
    rc = main(["--catalog", tiny_catalog["tiny-gates"], "segment", str(folder), "--model", "tiny-gates", "--out",
               str(tmp_path / "out"), "--no-progress", "--series", uid, "--attention", "none"])
    capsys.readouterr()
    assert rc == 0
    seg = sitk.ReadImage(str(tmp_path / "out" / "study.seg.nrrd"))
    assert seg.GetSize() == arrays[uid].shape


def test_unknown_series_and_series_on_a_file(tmp_path, two_series, tiny_catalog, capsys):
    folder, _ = two_series
    with pytest.raises(InvalidVolumeError, match="is not in"):
        read_volume(folder, series="1.2.3.4")
    rc = main(["--catalog", tiny_catalog["tiny-gates"], "segment", str(folder), "--model", "tiny-gates", "--out",
               str(tmp_path / "out"), "--series", "1.2.3.4"])
    assert rc == 2 and T1 in one_error_line(capsys.readouterr().err)
    single = tmp_path / "one.nrrd"
    sitk.WriteImage(sitk.Image(24, 24, 24, sitk.sitkFloat32), str(single))
    rc = main(["--catalog", tiny_catalog["tiny-gates"], "segment", str(single), "--model", "tiny-gates", "--out",
               str(tmp_path / "out"), "--series", T1])
    assert rc == 2 and "--series applies to a DICOM folder" in one_error_line(capsys.readouterr().err)
    assert everything_in(tmp_path / "out") == []


def test_reading_dicom_leaves_the_process_locale_alone(two_series):
    """ITK's GDCM *writer* switches the whole process to the C locale (ASCII text); reading must not."""
    folder, _ = two_series
    locale.setlocale(locale.LC_ALL, "")  # the environment's locale (the fixture's writer may have left C)
    before = (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False))
    list_series(folder)
    read_volume(folder, series=T1)
    assert (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False)) == before
