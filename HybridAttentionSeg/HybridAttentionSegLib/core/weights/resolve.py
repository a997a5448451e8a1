"""Card-level weight access: resolve (bundled/cache/download), re-check the hash, parse, map keys, load."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from ..errors import DownloadError, WeightsError
from . import download as dl
from .layouts import load_weights_into, map_state_dict
from .load import read_state_file

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ card-level API
def _weights(card) -> dict:
    return card.weights


def _archive(card) -> dict | None:
    return _weights(card).get("archive")


def _expected_hashes(card, path: Path) -> tuple[str | None, str | None]:
    """(sha256, md5) that the file at ``path`` must have."""
    weights, archive = _weights(card), _archive(card)
    if archive:
        return archive.get("member_sha256"), None
    return weights.get("sha256"), weights.get("md5")


def _urls(card) -> list[str]:
    weights = _weights(card)
    return ([weights["url"]] if weights.get("url") else []) + list(weights.get("urls") or [])


def resolve_weights_file(
    card,
    download: bool = True,
    progress: dl.ProgressFn | None = None,
    *,
    verify: bool = False,
    force: bool = False,
) -> Path:
    """Path of ``card``'s weights: the bundled file, the cached download, or a fresh download.

    Args:
        card: a :class:`~.cards.ModelCard`.
        download: download when not cached yet (first use). False raises if missing.
        progress: ``progress(done_bytes, total_bytes)`` during a download.
        verify: re-check the hash of an existing file too (loads always re-check).
        force: download again even if a cached copy exists.

    Raises:
        WeightsError, ChecksumError, DownloadError: one-line messages with a remedy.
    """
    what = f"weights of model {card.id!r}"
    local = card.local_weights_path()
    if local is not None and not _urls(card):
        if not local.is_file():
            message = f"{what}: bundled file {local} is missing; reinstall the extension or fix weights.file"
            raise WeightsError(message)
        if verify:
            sha256, md5 = _expected_hashes(card, local)
            dl.verify_file(local, sha256=sha256, md5=md5, what=what)
        return local
    if local is not None and local.is_file() and not force:
        return local
    cached = card.cached_weights_path()
    if force:
        for stale in (cached, dl.sidecar_path(cached)):
            stale.unlink(missing_ok=True)
    if cached.is_file():
        if verify:
            sha256, md5 = _expected_hashes(card, cached)
            dl.verify_file(cached, sha256=sha256, md5=md5, what=what, remedy=_redownload(card))
        return cached
    if not download:
        message = f"{what} are not downloaded yet; run `hybridseg download {card.id}` (needs internet)"
        raise WeightsError(message)
    urls = _urls(card)
    if not urls:
        raise DownloadError(f"{what}: the card has no weights.url; add one or import the model")
    weights = _weights(card)
    archive = _archive(card)
    with dl.new_folders_removed_on_failure(cached.parent):
        if archive is None:
            return dl.fetch(
                urls, cached, sha256=weights.get("sha256"), md5=weights.get("md5"), progress=progress, what=what
            )
        return _fetch_archive_member(card, urls, cached, progress, what)


def _fetch_archive_member(card, urls, cached: Path, progress, what: str) -> Path:
    from . import archive as arc

    weights, spec = _weights(card), _archive(card)
    name = urls[0].rsplit("/", 1)[-1].split("?")[0] or "weights-archive"
    archive_path = cached.parent / ("download-" + name)
    dl.fetch(
        urls, archive_path, sha256=weights.get("sha256"), md5=weights.get("md5"), progress=progress, what=what
    )
    try:
        member = arc.find_member(arc.list_members(archive_path), spec["member"])
        arc.extract_member(archive_path, member, cached)
        if spec.get("member_sha256"):
            try:
                dl.verify_file(cached, sha256=spec["member_sha256"], what=f"{what} ({member.name})")
            except Exception:
                cached.unlink(missing_ok=True)
                raise
        else:
            dl.sidecar_path(cached).write_text(dl.file_digest(cached) + "\n")
    finally:
        archive_path.unlink(missing_ok=True)
    return cached


def _redownload(card) -> str:
    if _urls(card):
        return f"Run `hybridseg download {card.id} --force` to fetch it again."
    return "Reinstall the extension or re-import the model."


def _load_checkpoint(card, download: bool, progress) -> object:
    path = resolve_weights_file(card, download=download, progress=progress)
    sha256, md5 = _expected_hashes(card, path)
    return read_state_file(
        path, sha256=sha256, md5=md5, what=f"weights of model {card.id!r}", remedy=_redownload(card)
    )


def load_state_dict_for_card(card, download: bool = True, progress: dl.ProgressFn | None = None) -> dict:
    """The card's weights as ``{key: tensor}`` (unwrapped, prefix-stripped), hash-checked on every call.

    Model-dependent fixes of the key layout (old ViT blocks) are applied by :func:`load_weights_into`.
    """
    weights = _weights(card)
    checkpoint = _load_checkpoint(card, download, progress)
    return map_state_dict(
        checkpoint,
        weights.get("key_layout", "monai"),
        None,
        weights.get("state_dict_key"),
        f"weights of model {card.id!r}",
    )


def load_model_weights(
    card, model: nn.Module, *, download: bool = True, progress: dl.ProgressFn | None = None
) -> None:
    """Resolve, hash-check, parse, key-map and strictly load ``card``'s weights into ``model``.

    Raises:
        WeightsError / ChecksumError / UnsafeModelError / DownloadError: one-line messages.
    """
    weights = _weights(card)
    checkpoint = _load_checkpoint(card, download, progress)
    load_weights_into(
        model,
        checkpoint,
        weights.get("key_layout", "monai"),
        state_dict_key=weights.get("state_dict_key"),
        source=f"weights of model {card.id!r}",
    )

