"""A public sample volume per model, registered with Slicer's Sample Data module from the model cards.

A card may name one (``Resources/docs/model-cards.md``)::

    "sample_data": {"name": "CTA abdomen (Panoramix)", "url": "https://...", "sha256": "<64 hex digits>",
                    "file_name": "Panoramix-cropped.nrrd", "thumbnail": "panoramix.png"}

Cards whose ``sample_data`` has an ``https`` URL and a SHA-256 are offered in the Sample Data module (category
"HybridAttentionSeg"); Slicer downloads the file when it is clicked, checks the SHA-256 and loads it. Cards
whose ``sample_data`` names a local ``file`` or a ``loader`` (the bundled demo models) are loaded by the worker
instead (:meth:`~.logic.HybridAttentionSegLogic.loadSampleData`).

:func:`registerSampleData` runs inside Slicer, once its startup has completed; registering only records names
and URLs, nothing is downloaded. The card files are read here as plain JSON, not through
:mod:`.core.cards`: that module imports the architecture registry and with it torch, which never enters
Slicer's process. So the three catalog locations are repeated here (a test checks they agree).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from urllib.parse import urlparse

from ..core.paths import catalog_files

logger = logging.getLogger(__name__)

CATEGORY = "HybridAttentionSeg"
MODULE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_THUMBNAIL = MODULE_DIR / "Resources" / "Icons" / "HybridAttentionSeg.png"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def readCards(files) -> list[tuple[dict, Path]]:
    """``(card dict, file)`` for every card in ``files``; unreadable files are logged and skipped."""
    cards = []
    for path in files:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("HybridAttentionSeg: skipping model card file %s for sample data (%s)", path, err)
            continue
        cards += [(card, Path(path)) for card in (data if isinstance(data, list) else [data])
                  if isinstance(card, dict)]
    return cards


def sampleDataSources(cards: list[tuple[dict, Path]]) -> list[dict]:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for each public sample.

    Only ``https`` URLs with a SHA-256 qualify (Slicer verifies the download against it); a sample shared by
    several models is registered once. Invalid blocks are logged and skipped.
    """
    sources, seen = [], set()
    for card, path in cards:
        block = card.get("sample_data")
        if not isinstance(block, dict) or not (block.get("url") or block.get("urls")):
            continue
        urls = [block["url"]] if block.get("url") else list(block.get("urls") or [])
        sha256 = str(block.get("sha256") or "")
        if not _SHA256.match(sha256) or any(urlparse(u).scheme != "https" for u in urls):
            logger.warning("HybridAttentionSeg: sample data of model %r needs https URLs and a SHA-256; "
                           "not registered (fix sample_data in %s)", card.get("id"), path)
            continue
        if sha256.lower() in seen:
            continue
        seen.add(sha256.lower())
        fileName = block.get("file_name") or urlparse(urls[0]).path.rsplit("/", 1)[-1] or f"{card['id']}.nrrd"
        name = str(block.get("name") or f"{card.get('title', card.get('id'))} sample")
        thumbnail = path.parent / block["thumbnail"] if block.get("thumbnail") else DEFAULT_THUMBNAIL
        sources.append({
            "category": CATEGORY, "sampleName": name, "uris": urls[0], "fileNames": fileName,
            "nodeNames": block.get("node_name") or Path(fileName).name.split(".")[0],
            "checksums": f"SHA256:{sha256.lower()}", "loadFileTypes": "VolumeFile",
            "thumbnailFileName": str(thumbnail) if thumbnail.is_file() else None,
        })
    return sources


def registerSampleData(extra: list[str] | None = None, register=None) -> list[str]:
    """Register every card's public sample with Slicer's Sample Data module; returns the sample names.

    Inside Slicer only (``register`` defaults to ``SampleData.SampleDataLogic.registerCustomSampleDataSource``,
    which ignores a source registered before). Never raises: a broken card must not break Slicer's startup.
    """
    try:
        if register is None:
            import SampleData  # Slicer's scripted module: exists only inside the application

            register = SampleData.SampleDataLogic.registerCustomSampleDataSource
        sources = sampleDataSources(readCards(catalog_files(extra)))
        for source in sources:
            register(**source)
    except Exception:  # noqa: BLE001 - logged; the module works without its sample data
        logger.exception("HybridAttentionSeg: registering sample data failed")
        return []
    return [source["sampleName"] for source in sources]
