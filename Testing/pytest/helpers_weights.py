"""Helpers for the weights / download / import tests: a real HTTP server on 127.0.0.1 and tiny model cards.

Not a test module (no ``test_`` prefix). The server runs in a thread (``http.server``) and serves:

* ``/files/NAME``      the bytes registered under NAME (Content-Length set);
* ``/truncated/NAME``  announces the full Content-Length, sends half of the bytes, then closes;
* ``/status/CODE``     replies with that HTTP status.

``server.hits`` counts requests per path.
"""

from __future__ import annotations

import collections
import hashlib
import json
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from HybridAttentionSegLib.core.models.registry import get_architecture


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802  (http.server API)
        server = self.server
        server.hits[self.path] += 1
        kind, _, name = self.path.lstrip("/").partition("/")
        if kind == "status":
            self.send_error(int(name))
            return
        data = server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if kind == "truncated":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


@contextmanager
def http_server(files: dict[str, bytes] | None = None):
    """A threaded HTTP server on 127.0.0.1 (random port); yields it with ``.url(path)`` and ``.files``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.files = dict(files or {})
    server.hits = collections.Counter()
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}/{path.lstrip('/')}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url(path: str = "files/x.pt") -> str:
    """A URL on 127.0.0.1 whose port has nothing listening (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_card(arch: str = "segresnet", model_id: str = "tiny-test", n_labels: int = 2, **weights) -> dict:
    """A valid card for the tiny variant of ``arch`` (registry ``tiny_kwargs`` / ``tiny_roi``)."""
    spec = get_architecture(arch)
    return {
        "id": model_id,
        "title": f"tiny {arch} for tests",
        "architecture": {"name": arch, "kwargs": dict(spec.tiny_kwargs)},
        "input": {"channels": 1, "modalities": ["CT"]},
        "labels": [
            {"value": v, "name": f"Structure {v}", "color": [0.5, 0.2, (v % 10) / 10]}
            for v in range(1, n_labels + 1)
        ],
        "preprocessing": {"orientation": "RAS", "spacing": [2.0, 2.0, 2.0], "intensity": {"method": "none"}},
        "inference": {"roi_size": list(spec.tiny_roi), "overlap": 0.25, "sw_batch_size": 1},
        "weights": weights,
        "license": "test",
        "intended_use": "tests",
    }


def build(card_dict: dict, **override_kwargs) -> torch.nn.Module:
    """Build the network a card describes (random weights)."""
    spec = get_architecture(card_dict["architecture"]["name"])
    kwargs = {**card_dict["architecture"].get("kwargs", {}), **override_kwargs}
    n_out = (card_dict.get("output") or {}).get("channels") or max(
        lab["value"] for lab in card_dict["labels"]
    ) + 1
    return spec.build(card_dict["input"]["channels"], n_out, card_dict["inference"]["roi_size"], **kwargs)


def write_card(path: Path, card: dict) -> Path:
    path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return path


def torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class MarkerPayload:
    """Unpickling this calls ``open(marker, 'w')``: the file appearing proves code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True, name="cache")
def isolated_cache(tmp_path, monkeypatch):
    """Fixture ``cache``: a private model cache, no user catalog, one torch thread (autouse where imported)."""
    monkeypatch.setenv("HYBRIDSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYBRIDSEG_CATALOG", raising=False)
    torch.set_num_threads(1)
    return tmp_path / "cache"


def nothing_imported() -> bool:
    """True when no model was imported into the cache (no user card, no models folder)."""
    from HybridAttentionSegLib.core.models.cards import user_catalog_dir
    from HybridAttentionSegLib.core.weights.importer import models_dir

    return not any(user_catalog_dir().glob("*.json")) and not models_dir().exists()


def same_state(a: dict, b: dict) -> bool:
    """Same keys and bit-identical tensors."""
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
