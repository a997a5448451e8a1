"""The threaded gzip writer (core/inference/gzip_stream.py) makes one valid gzip member of exactly its input."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import zlib

import numpy as np
import pytest
from HybridAttentionSegLib.core.inference.gzip_stream import write_gzip


def _member(pieces, **kwargs) -> bytes:
    buffer = io.BytesIO()
    write_gzip(buffer, pieces, **kwargs)
    return buffer.getvalue()


def _data() -> list[bytes]:
    rng = np.random.default_rng(0)
    noise = rng.random(50_000).astype(np.float32).tobytes()
    repeated = (b"attention " * 9000)  # matches that reach back across piece boundaries (the primer)
    return [noise[:70_000], repeated, b"", noise[70_000:], repeated[:10], b"x", repeated]


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("strategy", [zlib.Z_DEFAULT_STRATEGY, zlib.Z_RLE])
def test_one_member_with_exactly_the_input(threads, strategy):
    pieces = _data()
    blob = _member(pieces, threads=threads, strategy=strategy)
    expected = b"".join(pieces)
    assert gzip.decompress(blob) == expected
    reader = zlib.decompressobj(zlib.MAX_WBITS | 16)  # how pynrrd reads a gzip NRRD: one decompressor
    assert reader.decompress(blob) == expected
    assert reader.eof and reader.unused_data == b""  # one member, nothing after it


def test_same_bytes_whatever_the_thread_count_and_primed_pieces_compress():
    pieces = _data()
    assert _member(pieces, threads=1) == _member(pieces, threads=4)
    noise = np.random.default_rng(1).bytes(16_000)  # incompressible alone
    repeated = [noise] * 6  # each piece repeats the previous one: only the primer lets deflate find it
    primed = len(_member(repeated, threads=2))
    unprimed = sum(len(zlib.compress(p, 1)) for p in repeated)
    assert unprimed > 6 * 15_000 and primed < 2 * 16_000


def test_numpy_pieces_and_empty_input():
    array = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    assert gzip.decompress(_member([array[0], array[1:]])) == array.tobytes()
    assert gzip.decompress(_member([])) == b""
    assert gzip.decompress(_member([b"", b""])) == b""


@pytest.mark.skipif(shutil.which("gzip") is None, reason="no gzip tool")
def test_the_gzip_tool_accepts_it(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(_member(_data(), threads=3))
    check = subprocess.run(["gzip", "-t", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    out = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout
    assert out == b"".join(_data())
