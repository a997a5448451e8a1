"""Reading volumes and writing results, on the input's own voxel grid.

Reading goes through SimpleITK (ITK, the library Slicer itself reads with), so NIfTI qform/sform, NRRD space
directions, MetaImage and DICOM series give the same IJK->RAS geometry as in Slicer. Writing uses pynrrd with
Slicer's segmentation header keys. Every write goes to a temporary name in the target folder, then is renamed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InvalidVolumeError
from .volume import LPS_TO_RAS, Volume, check_geometry

logger = logging.getLogger(__name__)

#: gzip level of written NRRDs. pynrrd defaults to 9: a 512x512x300 labelmap took 196 s at 9 and 5 s at 1
#: (files about 1.5x larger) on the project's 2-core CPU; float maps 18 s -> 14 s (bench_ct.py, issue 14)
GZIP_LEVEL = 1

SUPPORTED = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd or a DICOM series folder"


#: extensions :func:`stem_of` removes (longest first); any other dot is part of the stem
MEDICAL_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".hdr.gz", ".img.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd",
                      ".dcm", ".hdr", ".img", ".mgz", ".mgh")


def stem_of(path: str | os.PathLike) -> str:
    """Name for a run's outputs: the file name minus one known medical-image extension.

    ``sub01.T1.nii.gz`` -> ``sub01.T1`` (so ``sub01.T2.nii.gz`` gets its own outputs), ``ct.seg.nrrd`` ->
    ``ct``; a DICOM folder keeps its name. Leading dots are dropped (``.x.nii.gz`` -> ``x``: outputs are never
    hidden files); an empty result becomes ``volume``.
    """
    name = Path(path).name
    if not Path(path).is_dir():
        lower = name.lower()
        for extension in MEDICAL_EXTENSIONS:
            if lower.endswith(extension):
                name = name[: -len(extension)]
                break
    return name.lstrip(".").strip() or "volume"


def read_volume(path: str | os.PathLike, series: str | None = None) -> Volume:
    """Read a scalar or multi-channel 3D volume as a (C, I, J, K) float32 :class:`Volume`.

    ``series``: Series Instance UID to read from a DICOM folder holding several series (see :mod:`.dicom`).

    Raises:
        InvalidVolumeError: missing, empty or unreadable file, or not 3D data; a DICOM folder with several
            series and no ``series``.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        message = f"input not found: {path}; check the path"
        raise InvalidVolumeError(message)
    if path.is_file() and path.stat().st_size == 0:
        message = f"input file {path} is empty; re-export the image ({SUPPORTED})"
        raise InvalidVolumeError(message)
    try:
        if path.is_dir():
            from .dicom import series_files

            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(series_files(path, series))
            image = reader.Execute()
        elif path.name.lower().endswith((".nii", ".nii.gz")):
            return _read_nifti(path)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InvalidVolumeError(_itk_read_error(path, str(err))) from err
    return volume_from_sitk(image, name=stem_of(path))


def _itk_read_error(path: Path, text: str) -> str:
    """One line for an ITK read failure; degenerate geometry (ITK refuses it) gets a specific remedy."""
    if "Zero-valued spacing" in text:
        return f"{path.name} has zero voxel spacing in its header; fix the header's spacing (voxel size) and try again"
    if "Bad direction" in text:
        return (f"{path.name} has a singular direction matrix in its header (two voxel axes point the same way); "
                "fix the header's orientation and try again")
    first = text.strip().splitlines()[-1] if text.strip() else "unknown reason"
    return f"cannot read {path.name} ({first}); supported formats: {SUPPORTED}"


def _read_nifti(path: Path) -> Volume:
    """NIfTI: voxels through nibabel (ITK turns NaN into 0), geometry through ITK, as Slicer reads it."""
    from .nifti import read_nifti

    return read_nifti(path, name=stem_of(path))


def volume_from_sitk(image, name: str = "volume") -> Volume:
    """Convert a SimpleITK image (3D scalar/vector, or 4D as channels) to a :class:`Volume`."""
    import SimpleITK as sitk

    dim = image.GetDimension()
    if dim == 4:
        # a 4D image: the 4th axis becomes channels (checked against the model's channel count later)
        size = image.GetSize()
        frames = [sitk.Extract(image, (*size[:3], 0), (0, 0, 0, t)) for t in range(size[3])]
        channels = [sitk.GetArrayFromImage(f).transpose(2, 1, 0) for f in frames]
        data = np.stack(channels).astype(np.float32)
        geometry_image = frames[0]
    elif dim == 3:
        array = sitk.GetArrayFromImage(image)  # (K, J, I[, C])
        if image.GetNumberOfComponentsPerPixel() > 1:
            data = array.transpose(3, 2, 1, 0)
        else:
            data = array.transpose(2, 1, 0)[None]
        data = data.astype(np.float32)
        geometry_image = image
    elif dim == 2:
        message = f"{name} is a 2D image; a 3D volume is needed (load the whole series, not one slice)"
        raise InvalidVolumeError(message)
    else:
        message = f"{name} has {dim} dimensions; a 3D volume is needed"
        raise InvalidVolumeError(message)
    direction = np.array(geometry_image.GetDirection()).reshape(3, 3)
    spacing = np.array(geometry_image.GetSpacing())
    origin = np.array(geometry_image.GetOrigin())
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = origin
    check_geometry(LPS_TO_RAS @ lps, name)
    return Volume(data, LPS_TO_RAS @ lps, name=name)


def _nrrd_geometry(affine: np.ndarray) -> dict:
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    return {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T.copy(),  # one row per axis
        "space origin": lps[:3, 3].copy(),
    }


def affine_from_nrrd_header(header: dict) -> np.ndarray:
    """IJK->RAS affine from a NRRD header (LPS or RAS space)."""
    directions = np.asarray(header["space directions"], dtype=np.float64)
    directions = directions[~np.isnan(directions).any(axis=1)] if directions.ndim == 2 else directions
    directions = directions[-3:]
    lps = np.eye(4)
    lps[:3, :3] = directions.T
    lps[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    space = header.get("space", "left-posterior-superior")
    if space in ("right-anterior-superior", "RAS"):
        return lps
    return LPS_TO_RAS @ lps


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_scalar_nrrd(path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write an (I, J, K) float32 array (or (C, I, J, K)) as a gzip NRRD on the given grid."""
    import nrrd

    array = np.asarray(array)
    header = {"encoding": "gzip", **_nrrd_geometry(affine)}
    if array.ndim == 4:
        header["kinds"] = ["list", "domain", "domain", "domain"]
        header["space directions"] = np.vstack([np.full(3, np.nan), header["space directions"]])
    else:
        header["kinds"] = ["domain", "domain", "domain"]
    with atomic_path(path) as tmp:
        if array.ndim == 3 and array.dtype == np.dtype("<f4"):
            _write_float_nrrd_streamed(tmp, array, header)
        else:
            nrrd.write(str(tmp), np.ascontiguousarray(array), header, index_order="F", compression_level=GZIP_LEVEL)
    return Path(path)


#: voxels per compressed piece of a streamed NRRD (16 MiB of float32)
_STREAM_VOXELS = 1 << 22


def _write_float_nrrd_streamed(path: Path, array: np.ndarray, header: dict) -> None:
    """The gzip NRRD ``nrrd.write(..., index_order="F")`` writes for an (I, J, K) float32 map, streamed.

    pynrrd serialises the whole array (``tobytes``: a full copy, 0.3 GB for a CT-sized map) before
    compressing it; here the same bytes (Fortran order: I fastest, then J, then K) are compressed a few K
    slices at a time, on several threads, into one gzip member. The header fields and their formatting are
    pynrrd's own (``nrrd.format_*``), so readers (pynrrd, ITK/Slicer) see the file ``nrrd.write`` would make.
    """
    import zlib

    import nrrd

    from .gzip_stream import write_gzip

    lines = ["NRRD0005", "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html", "type: float", "dimension: 3",
             f"space: {header['space']}", f"sizes: {nrrd.format_number_list(np.array(array.shape))}",
             f"space directions: {nrrd.format_optional_matrix(header['space directions'])}",
             f"kinds: {' '.join(header['kinds'])}", "endian: little", "encoding: gzip",
             f"space origin: {nrrd.format_vector(header['space origin'])}"]
    slices = max(1, _STREAM_VOXELS // max(1, array.shape[0] * array.shape[1]))
    pieces = (np.ascontiguousarray(array[:, :, k:k + slices].transpose(2, 1, 0))
              for k in range(0, array.shape[2], slices))
    with open(path, "wb") as fh:
        fh.write(("\n".join(lines) + "\n\n").encode("ascii"))
        # one gzip member, deflated on all cores (gzip_stream.py), run-length matching only: on a CT's gate map
        # 2.3x faster than the default strategy at level 1 with a slightly better ratio (1.98 vs 1.94)
        write_gzip(fh, pieces, GZIP_LEVEL, strategy=zlib.Z_RLE)


def terminology_entry(label: dict) -> str:
    """Slicer ``TerminologyEntry`` tag string for a card label (SNOMED-CT category/type)."""

    def code(entry):
        return f"{entry['scheme']}^{entry['code']}^{entry['meaning']}" if entry else "^^"

    term = label.get("terminology") or {}
    return "~".join([
        "Segmentation category and type - DICOM master list",
        code(term.get("category")), code(term.get("type")), code(term.get("modifier")),
        "Anatomic codes - DICOM master list", code(term.get("region")), "^^",
    ])


def write_labelmap_nifti(path, labelmap: np.ndarray, affine: np.ndarray) -> Path:
    """Write an (I, J, K) uint8 labelmap as NIfTI (``.nii`` or ``.nii.gz``) on the given IJK->RAS grid.

    sform and qform both hold the affine (code 1, scanner), so ITK (Slicer) and nibabel read the same grid;
    a sheared affine, which a qform cannot hold, is written as sform only. NIfTI has no segment names or
    colours: ``.seg.nrrd`` keeps them.
    """
    import nibabel as nib

    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(np.asarray(labelmap, dtype=np.uint8), affine)
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    orthogonal = np.allclose(axes.T @ axes, np.eye(3), atol=1e-6)
    image.set_sform(affine, code=1)
    image.set_qform(affine if orthogonal else None, code=1 if orthogonal else 0)
    image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def write_segmentation_nrrd(path, labelmap: np.ndarray, affine: np.ndarray, labels: list[dict]) -> Path:
    """Write a Slicer ``.seg.nrrd``: uint8 labelmap on the input grid plus segment names/colours/values/tags.

    ``labels`` are card labels (``value``, ``name``, ``color``, optional ``terminology``) or segments read by
    :func:`read_segmentation_nrrd`, whose ``id`` and raw ``tags`` are then written back unchanged.
    """
    import nrrd

    labelmap = np.asarray(labelmap, dtype=np.uint8)
    extent = " ".join(f"0 {s - 1}" for s in labelmap.shape)
    header = {
        "encoding": "gzip",
        "kinds": ["domain", "domain", "domain"],
        **_nrrd_geometry(affine),
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
    }
    for i, label in enumerate(labels):
        prefix = f"Segment{i}_"
        header[prefix + "ID"] = label.get("id") or f"Segment_{label['value']}"
        header[prefix + "Name"] = label["name"]
        header[prefix + "NameAutoGenerated"] = "0"
        header[prefix + "Color"] = " ".join(f"{c:g}" for c in label["color"])
        header[prefix + "ColorAutoGenerated"] = "0"
        header[prefix + "LabelValue"] = str(label["value"])
        header[prefix + "Layer"] = "0"
        header[prefix + "Extent"] = extent
        header[prefix + "Tags"] = label.get("tags") or f"TerminologyEntry:{terminology_entry(label)}|"
    with atomic_path(path) as tmp:
        # pynrrd writes labelmap.tobytes(order="F"): a straight copy of a Fortran-ordered labelmap (inverse.py);
        # ascontiguousarray would first re-lay it out in C order, and pynrrd then back (1 s on a CT)
        nrrd.write(str(tmp), labelmap, header, index_order="F", compression_level=GZIP_LEVEL, custom_field_map={})
    return Path(path)


def read_segmentation_nrrd(path) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Read a ``.seg.nrrd`` (single layer) -> (labelmap (I, J, K) uint8, affine, segments).

    Each segment is ``{"id", "name", "value", "color"}``. Multi-layer files are merged in layer order.
    """
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="F")
    except (OSError, nrrd.NRRDError) as err:
        message = f"cannot read segmentation {path} ({err}); give a Slicer .seg.nrrd file"
        raise InvalidVolumeError(message) from err
    affine = affine_from_nrrd_header(header)
    segments = []
    i = 0
    while f"Segment{i}_Name" in header:
        prefix = f"Segment{i}_"
        segments.append({
            "id": header.get(prefix + "ID", f"Segment_{i}"),
            "name": header[prefix + "Name"],
            "value": int(header.get(prefix + "LabelValue", i + 1)),
            "layer": int(header.get(prefix + "Layer", 0)),
            "color": [float(c) for c in header.get(prefix + "Color", "0.5 0.5 0.5").split()],
            "tags": header.get(prefix + "Tags", ""),
        })
        i += 1
    if data.ndim == 4:  # layers first: merge (later layers win where they overlap)
        merged = np.zeros(data.shape[1:], dtype=np.uint8)
        for seg in segments:
            merged[data[seg["layer"]] == seg["value"]] = seg["value"]
        data = merged
    return np.asarray(data, dtype=np.uint8), affine, segments
