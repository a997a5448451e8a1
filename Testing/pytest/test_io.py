"""Reading inputs: NIfTI, NRRD, MHA and a DICOM series folder all give the same (C, I, J, K) voxels and RAS grid."""

import numpy as np
import SimpleITK as sitk
from HybridAttentionSegLib.core.inference.io import read_volume, write_scalar_nrrd


def _image():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 1000, size=(12, 20, 16)).astype(np.int16)  # (K, J, I) in SimpleITK order
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.0, 5.0))
    return image, array


def _expected_affine(image):
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_nrrd_mha_nifti_agree(tmp_path):
    image, array = _image()
    volumes = []
    for name in ("v.nrrd", "v.mha", "v.nii.gz"):
        sitk.WriteImage(image, str(tmp_path / name))
        volumes.append(read_volume(tmp_path / name))
    for volume in volumes:
        np.testing.assert_array_equal(volume.data[0], array.transpose(2, 1, 0))
        np.testing.assert_allclose(volume.affine, _expected_affine(image), atol=1e-5)


def test_dicom_series_folder(tmp_path):
    image, array = _image()
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.4242"
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "MR", "0020|000e": series_uid, "0020|000d": series_uid + ".1",
            "0020|0013": str(k + 1), "0020|0032": "\\".join(f"{c:.4f}" for c in origin),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": "2.5", "0028|0030": "0.9\\0.8",
            "0008|0018": f"{series_uid}.{k + 10}",
        }.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_image)
    volume = read_volume(folder)
    assert volume.shape == (16, 20, 12)
    np.testing.assert_array_equal(volume.data[0], array.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, _expected_affine(image), atol=1e-3)


def test_written_nrrd_reads_back_on_the_same_grid(tmp_path):
    affine = np.array([[0.0, -1.2, 0.0, 4.0], [0.9, 0.0, 0.0, -3.0], [0.0, 0.0, 2.0, 7.0], [0, 0, 0, 1]])
    data = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    write_scalar_nrrd(tmp_path / "m.nrrd", data, affine)
    back = read_volume(tmp_path / "m.nrrd")
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(back.data[0], data)


def test_streamed_map_nrrd_is_the_file_pynrrd_writes(tmp_path, monkeypatch):
    """The streamed float32 map writer (no full-size ``tobytes`` copy) gives pynrrd's header and voxels, as
    pynrrd and ITK read them, with the map cut into several compressed pieces."""
    import nrrd
    from HybridAttentionSegLib.core.inference import io

    monkeypatch.setattr(io, "_STREAM_VOXELS", 100)
    array = np.random.default_rng(0).random((37, 29, 23)).astype(np.float32)
    affine = np.array([[0, -1.6, 0, 5.0], [-1.8, 0, 0, -3.0], [0, 0, 2.4, 7.0], [0, 0, 0, 1]])
    write_scalar_nrrd(tmp_path / "new.nrrd", array, affine)
    header = {"encoding": "gzip", "kinds": ["domain"] * 3, **io._nrrd_geometry(affine)}
    nrrd.write(str(tmp_path / "old.nrrd"), array, header, index_order="F", compression_level=io.GZIP_LEVEL)
    new, new_header = nrrd.read(str(tmp_path / "new.nrrd"), index_order="F")
    old, old_header = nrrd.read(str(tmp_path / "old.nrrd"), index_order="F")
    assert np.array_equal(new, array) and np.array_equal(old, array)
    assert {k: str(v) for k, v in new_header.items()} == {k: str(v) for k, v in old_header.items()}
    new_itk, old_itk = sitk.ReadImage(str(tmp_path / "new.nrrd")), sitk.ReadImage(str(tmp_path / "old.nrrd"))
    assert np.array_equal(sitk.GetArrayFromImage(new_itk), sitk.GetArrayFromImage(old_itk))
    assert new_itk.GetDirection() == old_itk.GetDirection() and new_itk.GetOrigin() == old_itk.GetOrigin()
    assert new_itk.GetSpacing() == old_itk.GetSpacing()
