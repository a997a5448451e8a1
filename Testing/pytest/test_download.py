"""Verified downloads against a real HTTP server on 127.0.0.1 (no internet): success, wrong hash, truncated,
HTTP 404/500, unreachable host, mirrors, unpinned files, archives, and a cached file altered on disk."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
import torch
from helpers_weights import (
    build,
    closed_port_url,
    http_server,
    isolated_cache,  # noqa: F401 (the autouse fixture `cache`)
    sha256,
    tiny_card,
    torch_bytes,
    write_card,
)
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.errors import ChecksumError, DownloadError, WeightsError
from HybridAttentionSegLib.core.models.cards import ModelCard
from HybridAttentionSegLib.core.weights import (
    load_model_weights,
    load_state_dict_for_card,
    resolve_weights_file,
)


@pytest.fixture(scope="module")
def payload():
    """A real tiny SegResNet state dict, serialised with torch.save."""
    torch.manual_seed(0)
    card = tiny_card("segresnet", "dl-test", sha256="0" * 64, url="http://x/y")
    model = build(card)
    return model.state_dict(), torch_bytes(model.state_dict())


def _card(**weights) -> ModelCard:
    return ModelCard.from_dict(tiny_card("segresnet", "dl-test", **weights))


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_success_progress_and_load(payload, cache):
    state, data = payload
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("files/model.pt"), sha256=sha256(data), format="state_dict")
        seen = []
        path = resolve_weights_file(card, progress=lambda done, total: seen.append((done, total)))
        assert path == card.cached_weights_path() and path.read_bytes() == data
        assert _leftovers(path.parent) == ["model.pt"]  # no temporary file left
        assert seen and seen[-1] == (len(data), len(data))
        model = build(card.data)
        load_model_weights(card, model, download=False)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
        assert server.hits["/files/model.pt"] == 1


def test_cli_download_first_use_then_cached(payload, cache, tmp_path, capsys):
    _, data = payload
    with http_server({"model.pt": data}) as server:
        card = tiny_card("segresnet", "dl-cli", url=server.url("files/model.pt"), sha256=sha256(data))
        catalog = write_card(tmp_path / "card.json", card)
        assert main(["--catalog", str(catalog), "download", "dl-cli", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "dl-cli" in out and str(cache / "weights" / "dl-cli" / "model.pt") in out
        # second run: verified from the cache, not downloaded again
        assert main(["--catalog", str(catalog), "download", "dl-cli", "--no-progress"]) == 0
        assert server.hits["/files/model.pt"] == 1
        # the engine path: weights load without touching the network
        model = build(card)
        load_model_weights(ModelCard.from_dict(card), model)
        assert server.hits["/files/model.pt"] == 1


def test_wrong_hash_is_not_kept(payload, cache, tmp_path, capsys):
    _, data = payload
    wrong = sha256(b"something else")
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("files/model.pt"), sha256=wrong)
        with pytest.raises(ChecksumError) as err:
            resolve_weights_file(card)
        message = str(err.value)
        assert wrong in message and sha256(data) in message and "not kept" in message
        assert "\n" not in message
        assert _leftovers(card.cached_weights_path().parent) == []
        # the CLI: exit code 2, one line with expected vs actual
        catalog = write_card(tmp_path / "card.json", card.data)
        assert main(["--catalog", str(catalog), "download", "dl-test", "--no-progress"]) == 2
        stderr = capsys.readouterr().err
        assert "expected SHA256 " + wrong in stderr and sha256(data) in stderr


def test_truncated_transfer(payload, cache):
    _, data = payload
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("truncated/model.pt"), sha256=sha256(data))
        with pytest.raises(DownloadError) as err:
            resolve_weights_file(card)
        assert "truncated" in str(err.value)
        assert _leftovers(card.cached_weights_path().parent) == []


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors(cache, status):
    with http_server() as server:
        card = _card(url=server.url(f"status/{status}"), sha256="a" * 64)
        with pytest.raises(DownloadError) as err:
            resolve_weights_file(card)
        assert f"HTTP {status}" in str(err.value)
        assert str(card.cached_weights_path()) in str(err.value)  # remedy: where to put a manual download
        assert _leftovers(card.cached_weights_path().parent) == []


def test_unreachable_server(cache):
    card = _card(url=closed_port_url(), sha256="a" * 64)
    with pytest.raises(DownloadError) as err:
        resolve_weights_file(card)
    assert "cannot reach 127.0.0.1" in str(err.value) and "network" in str(err.value)


def test_no_download_when_disabled(cache):
    card = _card(url=closed_port_url(), sha256="a" * 64)
    with pytest.raises(WeightsError, match="hybridseg download dl-test"):
        resolve_weights_file(card, download=False)


def test_mirror_fallback(payload, cache):
    _, data = payload
    with http_server({"model.pt": data}) as server:
        card = _card(urls=[server.url("status/404"), server.url("files/model.pt")], sha256=sha256(data))
        assert resolve_weights_file(card).read_bytes() == data
        assert server.hits["/status/404"] == 1


def test_altered_cache_file_is_detected_and_force_repairs(payload, cache):
    state, data = payload
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("files/model.pt"), sha256=sha256(data))
        path = resolve_weights_file(card)
        load_state_dict_for_card(card)  # fine
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        with pytest.raises(ChecksumError) as err:
            load_state_dict_for_card(card)
        assert "modified or corrupted" in str(err.value) and "--force" in str(err.value)
        with pytest.raises(ChecksumError):
            resolve_weights_file(card, verify=True)
        resolve_weights_file(card, force=True)
        loaded = load_state_dict_for_card(card)
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
        assert server.hits["/files/model.pt"] == 2


def test_md5_only_card(payload, cache):
    """Upstream publishes only an MD5 (model zoo): it is checked on download and on every load."""
    _, data = payload
    md5 = hashlib.md5(data).hexdigest()
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("files/model.pt"), sha256=None, md5=md5, hash_source="published md5")
        path = resolve_weights_file(card)
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(ChecksumError, match="expected MD5 " + md5):
            load_state_dict_for_card(card)
        bad = _card(url=server.url("files/model.pt"), sha256=None, md5="0" * 32)
        bad.data["id"] = "dl-test-2"
        with pytest.raises(ChecksumError):
            resolve_weights_file(bad)


def test_unpinned_download_is_pinned_on_first_use(payload, cache):
    _, data = payload
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("files/model.pt"), sha256=None, hash_source="none published")
        path = resolve_weights_file(card)
        sidecar = path.with_name(path.name + ".sha256")
        assert sidecar.read_text().strip() == sha256(data)
        load_state_dict_for_card(card)
        path.write_bytes(data + b"x")
        with pytest.raises(ChecksumError):
            load_state_dict_for_card(card)
    # an unpinned plain-HTTP URL on a remote host is refused before any connection is made
    remote = _card(url="http://weights.example.invalid/model.pt", sha256=None)
    remote.data["id"] = "dl-remote"
    with pytest.raises(DownloadError, match="unpinned"):
        resolve_weights_file(remote)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_archive_member_download(payload, cache):
    """BraTS-style release asset: a zip holding folder/model.pt; only the member is kept."""
    state, data = payload
    archive = _zip({"fold0/model.pt": data, "fold0/README.txt": b"hi"})
    archive_spec = {"format": "zip", "member": "fold0/model.pt", "member_sha256": sha256(data)}
    with http_server({"fold0.zip": archive}) as server:
        card = _card(url=server.url("files/fold0.zip"), sha256=sha256(archive), archive=archive_spec)
        path = resolve_weights_file(card)
        assert path.name == "model.pt" and path.read_bytes() == data
        assert _leftovers(path.parent) == ["model.pt"]  # the archive itself is not kept
        loaded = load_state_dict_for_card(card)
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
        wrong = dict(archive_spec, member_sha256="b" * 64)
        bad = _card(url=server.url("files/fold0.zip"), sha256=sha256(archive), archive=wrong)
        bad.data["id"] = "dl-test-bad"
        with pytest.raises(ChecksumError):
            resolve_weights_file(bad)
        assert _leftovers(bad.cached_weights_path().parent) == []


def test_engine_downloads_on_first_use(payload, cache):
    """`Segmenter(card)` (what `hybridseg segment` builds) downloads missing weights once, then reuses."""
    from HybridAttentionSegLib.core.inference.engine import Segmenter

    state, data = payload
    with http_server({"model.pt": data}) as server:
        card = _card(url=server.url("files/model.pt"), sha256=sha256(data))
        seen = []
        first = Segmenter(card, device="cpu", download_progress=lambda d, t: seen.append((d, t)))
        assert seen and seen[-1] == (len(data), len(data))
        assert all(torch.equal(first.model.state_dict()[k], v) for k, v in state.items())
        Segmenter(card, device="cpu")
        assert server.hits["/files/model.pt"] == 1


@pytest.mark.parametrize("failure", ["wrong-hash", "truncated", "http-404", "unreachable"])
def test_failed_download_leaves_no_empty_cache_folders(payload, cache, failure):
    """Issue 10: a failed first download must not leave ``<cache>/weights/<id>/`` (or the cache) behind empty."""
    _, data = payload
    assert not cache.exists()
    with http_server({"model.pt": data}) as server:
        url, digest = {
            "wrong-hash": (server.url("files/model.pt"), sha256(b"other")),
            "truncated": (server.url("truncated/model.pt"), sha256(data)),
            "http-404": (server.url("status/404"), sha256(data)),
            "unreachable": (closed_port_url(), sha256(data)),
        }[failure]
        card = _card(url=url, sha256=digest)
        with pytest.raises((ChecksumError, DownloadError)):
            resolve_weights_file(card)
    assert not cache.exists(), sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))
    # a cache that already held other models keeps them; only the new, empty model folder goes
    (cache / "weights" / "other").mkdir(parents=True)
    (cache / "weights" / "other" / "model.pt").write_bytes(b"x")
    with pytest.raises((ChecksumError, DownloadError)):
        resolve_weights_file(_card(url=closed_port_url(), sha256=digest))
    assert sorted(p.name for p in (cache / "weights").iterdir()) == ["other"]
