"""NIfTI reading with exactly the geometry 3D Slicer gives the same file: ITK's, not nibabel's.

Slicer reads NIfTI through ITK's ``NiftiImageIO``, whose rules differ from nibabel's ``get_best_affine``:

* the qform wins unless the sform code is ``SCANNER_ANAT`` (or there is no qform); nibabel takes any sform;
* the voxel spacing always comes from ``pixdim`` (an sform whose column lengths disagree is only used for its
  directions and origin: "unexpected scales in sform"); nibabel takes the sform's scales;
* a negative ``pixdim`` flips that axis; nibabel takes the absolute value;
* a sheared or singular sform falls back to the qform, or is an error when there is none.

These rules change between ITK releases, so rather than re-implementing them the geometry is asked of ITK
itself (``ImageFileReader.ReadImageInformation``: the header only, no voxels). The voxels are read with nibabel
because ITK's NIfTI reader turns NaN voxels into 0, which would hide bad input from the NaN check.
Both read the voxels in file order (i fastest) and apply ``scl_slope``/``scl_inter`` the same way.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from ..errors import InvalidVolumeError
from .volume import LPS_TO_RAS, Volume, check_geometry

logger = logging.getLogger(__name__)

#: largest IJK->RAS difference (mm) between ITK's and nibabel's reading that is not worth a warning
AGREEMENT_MM = 1e-3


def itk_affine(path: str | Path) -> np.ndarray:
    """IJK->RAS affine of a NIfTI file as ITK (and so 3D Slicer) reads it (header only).

    Raises:
        InvalidVolumeError: ITK refuses the header (e.g. a singular sform and no qform).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("NiftiImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        last = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown reason"
        if "orthonormal" in last:
            message = (f"{Path(path).name} has a degenerate orientation (a singular or sheared sform and no "
                       "qform); fix the NIfTI header (re-save it with a valid qform or sform) and try again")
        else:
            message = f"cannot read the header of {Path(path).name} ({last.strip()}); re-export the image"
        raise InvalidVolumeError(message) from err
    dim = reader.GetDimension()
    direction = np.array(reader.GetDirection()).reshape(dim, dim)[:3, :3]
    spacing = np.array(reader.GetSpacing())[:3]
    origin = np.array(reader.GetOrigin())[:3]
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def read_nifti(path: str | Path, name: str) -> Volume:
    """Read a 3D (or 4D channels-last) NIfTI file as a (C, I, J, K) float32 :class:`Volume` on ITK's grid.

    Raises:
        InvalidVolumeError: unreadable file, not 3D, zero voxel spacing or a degenerate orientation.
    """
    import nibabel as nib

    path = Path(path)
    _check_pixdim(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises several unrelated types for corrupt files
        message = f"cannot read {path.name} ({type(err).__name__}: {err}); give a valid .nii or .nii.gz file"
        raise InvalidVolumeError(message) from err
    if data.ndim == 2:
        message = f"{path.name} is a 2D image; a 3D volume is needed (load the whole series, not one slice)"
        raise InvalidVolumeError(message)
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector data is (I, J, K, 1, C)
        data = data[:, :, :, 0]
    if data.ndim == 4:
        data = np.moveaxis(data, 3, 0)
    elif data.ndim != 3:
        message = f"{path.name} has shape {data.shape}; a 3D volume (or 4D channels) is needed"
        raise InvalidVolumeError(message)
    affine = itk_affine(path)
    check_geometry(affine, path.name)
    _warn_if_readers_disagree(image, affine, path.name)
    return Volume(data, affine, name=name)


def _check_pixdim(path: Path) -> None:
    """Refuse zero or non-finite ``pixdim[1:4]`` as stored in the file, before nibabel "fixes" it to 1 mm.

    ITK (and so Slicer) also shows such an axis at 1 mm: a guess, not the scan's geometry.
    """
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as stream:
            raw = stream.read(540)
    except OSError:
        return  # unreadable: nib.load reports it
    if len(raw) < 348:
        return
    header_class = nib.Nifti2Header if int.from_bytes(raw[:4], "little") in (540, 0x1C020000) else nib.Nifti1Header
    try:
        pixdim = np.asarray(header_class.from_fileobj(io.BytesIO(raw), check=False)["pixdim"][1:4], np.float64)
    except Exception:  # noqa: BLE001 - not a NIfTI header at all: nib.load reports it
        return
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        message = (f"{path.name} has zero or non-finite voxel spacing in its NIfTI header (pixdim "
                   f"{', '.join(f'{p:g}' for p in pixdim)}); fix the header's pixdim (the voxel size in mm) "
                   "and try again")
        raise InvalidVolumeError(message)


def _warn_if_readers_disagree(image, affine: np.ndarray, name: str) -> None:
    """Tell the user when the header is ambiguous (other tools may place this image elsewhere)."""
    try:
        other = np.asarray(image.affine, dtype=np.float64)
    except Exception:  # noqa: BLE001 - nibabel cannot even build an affine: nothing to compare
        return
    difference = float(np.abs(other - affine).max())
    if difference > AGREEMENT_MM:
        header = image.header
        logger.warning(
            "%s: ambiguous NIfTI geometry (qform code %d, sform code %d): using the grid 3D Slicer/ITK reads; "
            "tools that prefer the sform (nibabel, FSL) put voxels up to %.3g mm elsewhere",
            name, int(header["qform_code"]), int(header["sform_code"]), difference)
