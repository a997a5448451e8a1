"""Verified downloads into the cache (pooch).

:func:`fetch` downloads one file with :func:`pooch.retrieve`, which streams to a temporary file in the
target folder and moves it to its final name only after the hash matches (a mismatch deletes it). We add:

* one-line errors (:class:`~.errors.DownloadError` / :class:`~.errors.ChecksumError`) with the expected
  and actual hash, the URL and a remedy; offline / unreachable hosts say so;
* mirrors (``urls``): each is tried in turn;
* a ``progress(done_bytes, total_bytes)`` callback instead of a console bar (CLI, Slicer GUI);
* "no published hash" files: accepted only over HTTPS, then their SHA-256 is pinned in a sidecar
  ``<file>.sha256`` (trust on first use) so every later load is still verified.

Hashes are written ``"sha256:<hex>"`` / ``"md5:<hex>"`` (pooch's notation).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ChecksumError, DownloadError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
#: (connect, read) timeouts in seconds for every HTTP request
TIMEOUT = (15, 60)
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_CHUNK = 1024 * 1024
_MISMATCH = re.compile(r"expected (?:\w+:)?([0-9a-fA-F]+) but got ([0-9a-fA-F]+)")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def new_folders_removed_on_failure(folder: Path):
    """If the block fails, remove the folders up to ``folder`` that did not exist before it and are empty.

    A failed download must not leave empty ``<cache>/weights/<id>/`` folders that look like a cached model.
    """
    folder = Path(folder)
    missing = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        yield
    except BaseException:
        for created in missing:  # deepest first; stops mattering at the first non-empty one
            with contextlib.suppress(OSError):
                created.rmdir()
        raise


def sidecar_path(path: Path) -> Path:
    """Where the trust-on-first-use SHA-256 of an unpinned download is recorded."""
    return Path(path).with_name(Path(path).name + ".sha256")


class _PoochProgress:
    """Adapter from pooch's progress-bar protocol (total/update/reset/close) to ``progress(done, total)``."""

    def __init__(self, callback: ProgressFn):
        self.callback = callback
        self.total = 0
        self.n = 0

    def update(self, count: int) -> None:
        self.n += int(count)
        total = int(self.total or 0)
        self.callback(min(self.n, total) if total else self.n, total)

    def reset(self) -> None:
        self.n = 0

    def close(self) -> None:
        pass


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def _describe_request_error(err: Exception, url: str) -> str:
    """Short cause of a requests exception."""
    import requests

    if isinstance(err, requests.exceptions.HTTPError) and err.response is not None:
        response = err.response
        return f"HTTP {response.status_code} {response.reason or ''}".strip() + f" from {url}"
    if isinstance(err, requests.exceptions.ConnectionError) and not isinstance(
        err, requests.exceptions.ChunkedEncodingError
    ):
        return f"cannot reach {_host(url)} (offline, blocked by a firewall/proxy, or the host is down)"
    if isinstance(err, requests.exceptions.Timeout):
        return f"timed out talking to {_host(url)}"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return f"the transfer from {_host(url)} was cut off before the end (truncated download)"
    return f"{type(err).__name__} from {url}: {err}"


def _retrieve(url: str, dest: Path, known_hash: str | None, progress: ProgressFn | None) -> None:
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)  # we log the download ourselves
    logger.info("downloading %s -> %s", url, dest)
    bar = _PoochProgress(progress) if progress else False
    downloader = pooch.HTTPDownloader(progressbar=bar, chunk_size=_CHUNK, timeout=TIMEOUT)
    pooch.retrieve(url, known_hash, fname=dest.name, path=dest.parent, downloader=downloader)


def fetch(
    urls: str | Sequence[str],
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: ProgressFn | None = None,
    what: str = "file",
) -> Path:
    """Download ``urls`` (mirrors, tried in order) to ``dest`` unless a verified copy is already there.

    Args:
        urls: one URL or a list of mirrors.
        dest: final path (its folder is created). A temporary name in the same folder is used until
            the hash matches.
        sha256: expected SHA-256 (hex). Preferred.
        md5: expected MD5 (hex), used when upstream publishes only that. With both, both are checked.
        progress: ``progress(done_bytes, total_bytes)``.
        what: what is being downloaded, for messages (e.g. ``"weights of model 'x'"``).

    Raises:
        ChecksumError: the downloaded file's hash differs (the file is not kept).
        DownloadError: HTTP error, unreachable host, truncated transfer, or an unpinned plain-HTTP URL.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    if not urls:
        raise DownloadError(f"no download URL for {what}; add weights.url to its model card")
    known = f"sha256:{sha256}" if sha256 else (f"md5:{md5}" if md5 else None)
    failures: list[str] = []
    for url in urls:
        scheme = urlparse(url).scheme
        if known is None and not (scheme == "https" or _host(url) in _LOCAL_HOSTS):
            failures.append(
                f"{url}: refusing an unpinned (no hash) download over {scheme or 'no scheme'}; "
                f"use an https URL or add weights.sha256 to the card"
            )
            continue
        try:
            _retrieve(url, dest, known, progress)
        except ValueError as err:  # pooch: hash mismatch (the temporary file is already deleted)
            match = _MISMATCH.search(str(err))
            expected, actual = (match.group(1), match.group(2)) if match else (known, "unknown")
            algorithm = (known or "sha256").split(":")[0].upper()
            message = (
                f"checksum mismatch for {what} downloaded from {url}: expected {algorithm} {expected}, "
                f"got {actual}; the file was not kept. The server sent a different or corrupted file: "
                f"retry later or report it (card hash source may be outdated)"
            )
            raise ChecksumError(message) from err
        except Exception as err:  # noqa: BLE001  (requests' exception tree, OSError: reported, next mirror)
            import requests

            if not isinstance(err, (requests.exceptions.RequestException, OSError)):
                raise
            failures.append(_describe_request_error(err, url))
            logger.info("download of %s failed: %s", url, failures[-1])
            continue
        _post_check(dest, sha256=sha256, md5=md5, url=url, what=what)
        return dest
    message = (
        f"could not download {what}: {'; '.join(failures)}. Check the network connection (or proxy "
        f"settings: HTTPS_PROXY), or download {urls[0]} by hand and place it at {dest}"
    )
    raise DownloadError(message)


def _post_check(dest: Path, *, sha256: str | None, md5: str | None, url: str, what: str) -> None:
    """After a download: check the second hash when both are given; pin unpinned files (sidecar)."""
    if sha256 and md5:
        actual = file_digest(dest, "md5")
        if actual != md5.lower():
            dest.unlink(missing_ok=True)
            message = (
                f"checksum mismatch for {what} downloaded from {url}: expected MD5 {md5}, got {actual}; "
                f"the file was not kept"
            )
            raise ChecksumError(message)
    if not sha256 and not md5:
        digest = file_digest(dest)
        sidecar = sidecar_path(dest)
        if not sidecar.is_file():
            sidecar.write_text(digest + "\n")
            logger.warning(
                "%s has no published hash; pinned SHA-256 %s on first download (trust on first use)",
                what,
                digest,
            )


def verify_file(
    path: Path, *, sha256: str | None = None, md5: str | None = None, what: str = "file", remedy: str = ""
) -> None:
    """Re-check a file's hash (every load). Unpinned files are checked against their sidecar.

    Raises:
        ChecksumError: the hash differs (``expected``/``got`` in the message).
    """
    path = Path(path)
    checks: list[tuple[str, str]] = []
    if sha256:
        checks.append(("sha256", sha256.lower()))
    if md5:
        checks.append(("md5", md5.lower()))
    if not checks:
        sidecar = sidecar_path(path)
        if sidecar.is_file():
            checks.append(("sha256", sidecar.read_text().strip().lower()))
        else:
            logger.warning("%s has no hash to check against (%s)", what, path)
            return
    for algorithm, expected in checks:
        actual = file_digest(path, algorithm)
        if actual != expected:
            message = (
                f"checksum mismatch for {what} at {path}: expected {algorithm.upper()} {expected}, got "
                f"{actual}; the file was modified or corrupted on disk. {remedy}".rstrip()
            )
            raise ChecksumError(message)


def verify_bytes(
    data: bytes,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    what: str = "file",
    where: str = "",
    remedy: str = "",
) -> None:
    """Hash check of bytes already in memory (load exactly what was verified, no re-read race)."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if not expected:
            continue
        actual = hashlib.new(algorithm, data).hexdigest()
        if actual != expected.lower():
            message = (
                f"checksum mismatch for {what}{' at ' + where if where else ''}: expected "
                f"{algorithm.upper()} {expected.lower()}, got {actual}; the file was modified or corrupted "
                f"on disk. {remedy}".rstrip()
            )
            raise ChecksumError(message)
