"""DICOM series folders: the series in a folder, and the files of the one to read.

A folder that holds several series (a T1 and a T2, a localizer and the volume, ...) is never read by
guessing: :func:`series_files` refuses it with the list of series (UID, description, number of slices) and
the user picks one with ``--series UID``. Listing goes through SimpleITK's GDCM series scanner, the same
grouping by Series Instance UID that reading uses.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import InvalidVolumeError

logger = logging.getLogger(__name__)

#: DICOM Series Description
_DESCRIPTION = "0008|103e"


def _description(file_name: str) -> str:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(_DESCRIPTION).strip() if reader.HasMetaDataKey(_DESCRIPTION) else ""


def list_series(folder: str | os.PathLike) -> list[dict]:
    """The DICOM series in ``folder``: ``[{"uid", "description", "slices", "files"}]`` (scanner order)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    found = []
    for uid in reader.GetGDCMSeriesIDs(str(folder)):
        files = list(reader.GetGDCMSeriesFileNames(str(folder), uid))
        if files:
            found.append({"uid": uid, "description": _description(files[0]), "slices": len(files),
                          "files": files})
    return found


def describe(series: list[dict]) -> str:
    """One line: ``UID ("description", N slices); ...``."""
    return "; ".join(f"{s['uid']} ({s['description'] or 'no description'!r}, {s['slices']} slices)"
                     for s in series)


def series_files(folder: str | os.PathLike, series: str | None = None) -> list[str]:
    """File names of the series to read from ``folder``.

    Args:
        folder: a folder of DICOM files.
        series: Series Instance UID to read (``--series``); needed when the folder holds several series.

    Raises:
        InvalidVolumeError: no series, several series and no choice, or an unknown UID.
    """
    folder = Path(folder)
    found = list_series(folder)
    if not found:
        message = f"no DICOM series found in folder {folder}; give a folder holding one DICOM series"
        raise InvalidVolumeError(message)
    if series:
        chosen = [s for s in found if s["uid"] == series.strip()]
        if not chosen:
            message = f"--series {series} is not in {folder}; it holds {describe(found)}"
            raise InvalidVolumeError(message)
        return chosen[0]["files"]
    if len(found) > 1:
        message = (f"{folder} holds {len(found)} DICOM series: {describe(found)}; choose one with "
                   "--series UID")
        raise InvalidVolumeError(message)
    return found[0]["files"]
