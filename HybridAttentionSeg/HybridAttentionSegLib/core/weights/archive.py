"""Safe reading of zip and tar archives (downloaded weights, MONAI bundles).

The standard library extracts whatever an archive names: absolute paths, ``../`` members, symlinks, device
files, and it trusts declared sizes. ``tarfile``'s ``filter="data"`` fixes part of that for tar only, and
``zipfile`` has no equivalent, so every member is screened here *before* anything is written:

* no absolute paths (``/x``, ``C:\\x``, ``\\\\server``), no ``..`` component, no NUL in names;
* only regular files and folders (no symlinks, hard links, devices, FIFOs);
* at most :data:`MAX_MEMBERS` members and :data:`MAX_TOTAL_BYTES` uncompressed bytes in total (zip bombs),
  enforced again while streaming, since a zip header can lie about sizes.

One unsafe member refuses the whole archive: nothing is extracted. A member is streamed to a temporary name
next to its destination and renamed into place, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import UnsafeModelError, WeightsError

logger = logging.getLogger(__name__)

#: uncompressed size limit of one archive (bytes); the largest hybrid checkpoints are < 1.5 GB
MAX_TOTAL_BYTES = 8 * 1024**3
#: member count limit
MAX_MEMBERS = 10_000
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    """A screened archive member: normalised relative POSIX ``name``, ``size`` in bytes, ``is_dir``."""

    name: str
    size: int
    is_dir: bool


def archive_kind(path: Path) -> str | None:
    """``"zip"``, ``"tar"`` or None, from the file's content (never its name)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        head = handle.read(4)
    # the local-header magic, not zipfile.is_zipfile: that searches from the end and also "finds" a zip
    # stored inside a tar (a bundle's model.pt is itself a zip)
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip" if zipfile.is_zipfile(path) else None
    try:
        return "tar" if tarfile.is_tarfile(path) else None
    except OSError:
        return None


def _safe_name(raw: str, archive: Path) -> str:
    """Normalised relative name, or raise :class:`UnsafeModelError` for absolute / traversal names."""
    name = raw.replace("\\", "/")
    bad = (
        not name
        or "\x00" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")  # Windows drive
        or any(part == ".." for part in name.split("/"))
    )
    if bad:
        message = (
            f"archive {archive.name} has an unsafe member {raw!r} (absolute path or '..'); refusing the "
            f"whole archive, nothing was extracted; re-pack it with relative paths only"
        )
        raise UnsafeModelError(message)
    return (
        str(PurePosixPath(*[p for p in name.split("/") if p not in ("", ".")])) if name.strip("/.") else "."
    )


def _refuse_type(raw: str, kind: str, archive: Path) -> UnsafeModelError:
    message = (
        f"archive {archive.name} has a {kind} member {raw!r}; only regular files and folders are allowed; "
        f"refusing the whole archive, nothing was extracted"
    )
    return UnsafeModelError(message)


def _check_totals(members: list[Member], archive: Path, max_total: int) -> None:
    total = sum(m.size for m in members)
    if len(members) > MAX_MEMBERS or total > max_total:
        message = (
            f"archive {archive.name} is too large when unpacked ({len(members)} members, {total} bytes; "
            f"limit {MAX_MEMBERS} members, {max_total} bytes); refusing it (possible zip bomb)"
        )
        raise UnsafeModelError(message)


def list_members(path: Path, max_total: int | None = None) -> list[Member]:
    """Screen every member of a zip/tar archive; raise :class:`UnsafeModelError` if any is unsafe."""
    path = Path(path)
    max_total = MAX_TOTAL_BYTES if max_total is None else max_total
    kind = archive_kind(path)
    members: list[Member] = []
    if kind == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (stat.S_IFREG, stat.S_IFDIR):
                    raise _refuse_type(info.filename, "symlink or special-file", path)
                name = _safe_name(info.filename, path)
                members.append(Member(name, int(info.file_size), info.is_dir()))
    elif kind == "tar":
        with tarfile.open(path) as tf:
            for info in tf.getmembers():
                if not (info.isreg() or info.isdir()):
                    raise _refuse_type(info.name, "link or special-file", path)
                name = _safe_name(info.name, path)
                members.append(Member(name, int(info.size), info.isdir()))
    else:
        message = f"{path.name} is not a zip or tar archive; pass a .zip, .tar or .tar.gz file"
        raise WeightsError(message)
    _check_totals(members, path, max_total)
    return members


@contextmanager
def _open_member(path: Path, name: str) -> Iterator:
    """Binary stream of the member whose normalised name is ``name``."""
    if archive_kind(path) == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if _safe_name(info.filename, path) == name and not info.is_dir():
                    with zf.open(info) as stream:
                        yield stream
                    return
    else:
        with tarfile.open(path) as tf:
            for info in tf.getmembers():
                if _safe_name(info.name, path) == name and info.isreg():
                    stream = tf.extractfile(info)
                    try:
                        yield stream
                    finally:
                        stream.close()
                    return
    raise WeightsError(f"archive {path.name} has no member {name!r}")


def _copy_limited(stream, out, limit: int, archive: Path) -> int:
    written = 0
    while chunk := stream.read(_CHUNK):
        written += len(chunk)
        if written > limit:
            message = (
                f"archive {archive.name} unpacks to more bytes than it declares (limit {limit}); "
                f"refusing it (possible zip bomb)"
            )
            raise UnsafeModelError(message)
        out.write(chunk)
    return written


def find_member(members: list[Member], wanted: str) -> Member:
    """The member named ``wanted``, or the only file whose path ends with ``/wanted``."""
    files = [m for m in members if not m.is_dir]
    exact = [m for m in files if m.name == wanted.strip("/")]
    if exact:
        return exact[0]
    suffix = [m for m in files if m.name.endswith("/" + wanted.strip("/")) and "__MACOSX" not in m.name]
    if len(suffix) == 1:
        return suffix[0]
    names = ", ".join(m.name for m in files[:10])
    message = (
        f"archive has no single member {wanted!r} (files: {names}); fix weights.archive.member in the card"
    )
    raise WeightsError(message)


def extract_member(path: Path, member: Member, dest: Path, max_total: int | None = None) -> Path:
    """Stream one screened member to ``dest`` (temp name in the same folder, then atomic rename)."""
    dest = Path(dest)
    max_total = MAX_TOTAL_BYTES if max_total is None else max_total
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".extract-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, _open_member(Path(path), member.name) as stream:
            _copy_limited(stream, out, min(member.size, max_total), Path(path))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
