"""One gzip member compressed on several threads (the way ``pigz`` does it), with the standard library's zlib.

A CT-sized float32 map is 0.3 GB; zlib at level 1 compresses about 60 MB/s on one core, so writing two maps took
10.7 s of a 54 s CT run (``Testing/benchmarks/bench_ct.py``, issue 14). Here the data is cut into pieces that are
deflated on a thread pool (zlib releases the GIL while it compresses) and concatenated into **one** gzip member:

* each piece is a raw deflate stream primed with the previous piece's last 32 KiB (``zdict``: matches may reach
  back across the cut, as in one stream) and ended with ``Z_SYNC_FLUSH`` (byte-aligned, not final), so the pieces
  join into one valid deflate stream; an empty final block (what zlib emits on ``flush()`` of no data) ends it;
* the gzip header is the minimal RFC 1952 one and the trailer holds the CRC-32 and size of all the data.

One member, not one per piece: pynrrd reads a gzip NRRD with a single ``zlib.decompressobj`` and would stop at the
end of the first member. Hand-written because the standard library has no threaded gzip writer and the PyPI ones
(``isal``, ``zlib-ng``) would be one more binary dependency for Slicer's Python; the output is checked against
``gzip`` and pynrrd in ``Testing/pytest/test_gzip_stream.py``.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

#: what deflate can refer back to; each piece is primed with this much of the previous one
_WINDOW = 32 * 1024
#: minimal gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (255)
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def _deflate(data: memoryview, primer: bytes, level: int, strategy: int) -> bytes:
    """Raw deflate of ``data`` primed with ``primer``, ended by a sync flush (joinable, not final)."""
    args = (level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, strategy)
    compressor = zlib.compressobj(*args, primer) if primer else zlib.compressobj(*args)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def default_threads() -> int:
    """Threads for compression: the CPUs this process may use (at most 8)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(8, usable))


def write_gzip(fh: BinaryIO, pieces: Iterable, level: int = 1, threads: int | None = None,
               strategy: int = zlib.Z_DEFAULT_STRATEGY) -> int:
    """Write the bytes of ``pieces`` (bytes-like objects, consumed in order) to ``fh`` as one gzip member.

    Args:
        fh: binary file open for writing, positioned where the member starts.
        pieces: bytes-like objects (e.g. contiguous numpy arrays); each is held until it is compressed.
        level: zlib compression level.
        threads: compression threads (default :func:`default_threads`).
        strategy: zlib strategy (``zlib.Z_RLE`` for float maps: see ``io.py``).

    Returns:
        The number of uncompressed bytes written.
    """
    threads = threads or default_threads()
    crc, size, primer = 0, 0, b""
    fh.write(_HEADER)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        for piece in pieces:
            view = memoryview(piece).cast("B")
            if not len(view):
                continue
            pending.append(pool.submit(_deflate, view, primer, level, strategy))
            crc = zlib.crc32(view, crc)  # while the pool compresses (crc32 also releases the GIL)
            size += len(view)
            primer = bytes(view[-_WINDOW:])
            while len(pending) > threads:  # bounded memory: at most threads + 1 pieces in flight
                fh.write(pending.popleft().result())
        while pending:
            fh.write(pending.popleft().result())
    fh.write(zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS).flush())  # empty final block
    fh.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return size
