"""The Logic's model-catalog requests through the real worker process: download (from a real HTTP server on
127.0.0.1, progress in bytes, hash verification, cancel) and import_model (a model added to the catalog).

Every test runs its own worker with its own cache folder (``HYBRIDSEG_CACHE``), so nothing touches the user's
cache; the Logic is the MRML-side Logic the Slicer module uses (no Qt), on a real slicer-core scene: catalog
requests leave the scene alone, and a downloaded model then segments a volume node without the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from helpers_weights import build, http_server, sha256, tiny_card, write_card
from HybridAttentionSegLib.core.errors import ChecksumError, UserInputError
from HybridAttentionSegLib.mrml.logic import HybridAttentionSegLogic, ProcessEvent
from HybridAttentionSegLib.worker.client import WorkerClient  # noqa: E402


@pytest.fixture(scope="module")
def payload():
    """Real tiny SegResNet weights as safetensors bytes."""
    from safetensors.torch import save

    torch.manual_seed(0)
    return save(build(tiny_card("segresnet", "dl")).state_dict())


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def make_logic(cache):
    """``make_logic(*card files)``: a Logic with its own worker and cache folder (shut down afterwards)."""
    made = []

    def make(*cards):
        env = {"HYBRIDSEG_CACHE": str(cache), "HYBRIDSEG_CATALOG": ""}
        logic = HybridAttentionSegLogic(WorkerClient(threads=1, env=env), catalogFiles=[str(c) for c in cards])
        made.append(logic)
        return logic

    yield make
    for logic in made:
        logic.shutdown()


def _remote_card(tmp_path, model_id, url, digest):
    card = tiny_card("segresnet", model_id, url=url, sha256=digest, format="safetensors",
                     size_bytes=1234)
    return write_card(tmp_path / f"{model_id}.json", card)


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _node_ids(scene) -> set[str]:
    nodes = scene.GetNodes()
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def _volume(scene):
    """A 40^3 1 mm scalar volume node with a bright cube (enough for one 32^3 window at 2 mm)."""
    import numpy as np
    import slicer

    array = np.zeros((40, 40, 40), np.float32)
    array[10:30, 12:28, 14:26] = 100.0
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "cube")
    slicer.util.updateVolumeFromArray(node, array)
    return node


def test_download_streams_byte_progress_verifies_and_then_uses_the_cache(headless_app, tmp_path, cache, payload,
                                                                         make_logic):
    scene = headless_app.scene
    nodes = _node_ids(scene)
    with http_server({"model.safetensors": payload}) as server:
        card = _remote_card(tmp_path, "dl-remote", server.url("files/model.safetensors"), sha256(payload))
        logic = make_logic(card)
        environment = logic.fetchEnvironment()
        listed = logic.card("dl-remote")
        assert listed["downloaded"] is False and listed["bundled"] is False
        assert environment["catalog"]

        events = []
        answer = logic.downloadModel("dl-remote", onEvent=lambda event, info: events.append((event, info)))
        target = cache / "weights" / "dl-remote" / "model.safetensors"
        assert answer["path"] == str(target) and answer["size_bytes"] == len(payload)
        assert answer["already_downloaded"] is False
        assert target.read_bytes() == payload and _files(cache) == ["model.safetensors"]  # nothing partial left
        kinds = [event for event, _ in events]
        assert kinds[0] == ProcessEvent.STARTED and kinds[-1] == ProcessEvent.FINISHED
        progress = [info for event, info in events if event == ProcessEvent.PROGRESS]
        assert progress and all(info["stage"] == "download" for info in progress)
        assert progress[-1]["done"] == progress[-1]["total"] == len(payload)  # bytes, not percent
        assert progress[-1]["percent"] == 100
        assert [info["done"] for info in progress] == sorted(info["done"] for info in progress)
        assert logic.card("dl-remote")["downloaded"] is True  # the Logic's catalog copy follows
        assert not logic.busy

        # again: present, re-verified from the cache, not fetched again; the worker's catalog agrees
        again = logic.downloadModel("dl-remote")
        assert again["already_downloaded"] is True and server.hits["/files/model.safetensors"] == 1
        logic.fetchEnvironment()
        assert logic.card("dl-remote")["downloaded"] is True

        assert _node_ids(scene) == nodes, "catalog requests never touch the scene"

        # the downloaded model segments a volume node from the cache: no second request to the server
        result = logic.process(_volume(scene), "dl-remote", attentionMethods=[], keepProbabilities=False)
        assert result.segmentationNode.GetSegmentation().GetNumberOfSegments() == 2
        assert server.hits["/files/model.safetensors"] == 1

        # a cached file altered on disk is caught by the re-check
        target.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))
        with pytest.raises(ChecksumError, match="checksum mismatch"):
            logic.downloadModel("dl-remote")


def test_a_download_with_the_wrong_hash_fails_and_keeps_nothing(tmp_path, cache, payload, make_logic):
    with http_server({"model.safetensors": payload}) as server:
        wrong = hashlib.sha256(b"not the payload").hexdigest()
        card = _remote_card(tmp_path, "dl-wrong", server.url("files/model.safetensors"), wrong)
        logic = make_logic(card)
        events = []
        requestId = logic.downloadModel("dl-wrong", onEvent=lambda event, info: events.append((event, info)),
                                        waitForCompletion=False)
        assert isinstance(requestId, str) and logic.busy
        deadline = time.monotonic() + 120
        while logic.busy:
            assert time.monotonic() < deadline, "no answer to the download within 120 s"
            logic.poll(0.1)
        event, info = events[-1]
        assert event == ProcessEvent.FAILED and isinstance(info["error"], ChecksumError)
        assert wrong in info["message"] and sha256(payload) in info["message"]  # expected and actual hash
        assert server.hits["/files/model.safetensors"] == 1
        assert _files(cache) == [], "a file failing its hash must not be kept, not even under a temp name"
        assert logic.card("dl-wrong") is None or not logic.card("dl-wrong").get("downloaded")


def test_download_errors_say_what_to_do(tmp_path, make_logic):
    logic = make_logic()
    with pytest.raises(UserInputError, match="unknown model 'no-such-model'"):
        logic.downloadModel("no-such-model")
    with pytest.raises(UserInputError, match="no model selected"):
        logic.downloadModel("")


class _StallingHandler(BaseHTTPRequestHandler):
    """Sends the first part of the file, then waits (until the test releases it) before sending the rest."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802  (http.server API)
        data, release = self.server.data, self.server.release
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        first = len(data) // 2
        self.wfile.write(data[:first])
        self.wfile.flush()
        release.wait(60)
        try:
            self.wfile.write(data[first:])
        except OSError:
            pass


@pytest.mark.skipif(os.name == "nt", reason="process groups")
def test_cancel_stops_a_download_and_keeps_no_file(tmp_path, cache, make_logic):
    data = os.urandom(3 * 1024 * 1024)  # more than one 1 MiB chunk arrives before the stall
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    server.daemon_threads = True
    server.data, server.release = data, threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/big.safetensors"
        logic = make_logic(_remote_card(tmp_path, "dl-big", url, sha256(data)))
        events = []
        logic.downloadModel("dl-big", onEvent=lambda event, info: events.append((event, info)),
                            waitForCompletion=False)
        deadline = time.monotonic() + 120
        while not any(e == ProcessEvent.PROGRESS and i["done"] > 0 for e, i in events):
            assert time.monotonic() < deadline, f"no download progress within 120 s: {events}"
            assert logic.busy, events
            logic.poll(0.1)
        partial = [i for e, i in events if e == ProcessEvent.PROGRESS][-1]
        assert 0 < partial["done"] < partial["total"] == len(data)
        pid = logic.worker.pid
        assert logic.cancel() is True
        assert events[-1][0] == ProcessEvent.CANCELLED and not logic.busy
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # the worker's whole process group is gone
        assert not (cache / "weights" / "dl-big" / "big.safetensors").exists()
        assert logic.cancel() is False  # nothing left to cancel
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_import_model_adds_it_to_the_catalog_and_it_downloads_as_present(headless_app, tmp_path, cache,
                                                                         make_logic):
    from safetensors.torch import save

    nodes = _node_ids(headless_app.scene)

    card = tiny_card("segresnet", "byo-card-id")
    torch.manual_seed(1)
    (tmp_path / "mine.safetensors").write_bytes(save(build(card).state_dict()))
    card_file = write_card(tmp_path / "mine.json", card)
    logic = make_logic()
    logic.fetchEnvironment()
    assert logic.card("byo-slicer") is None

    answer = logic.importModel(tmp_path / "mine.safetensors", card_file, modelId="byo-slicer")
    assert answer["id"] == "byo-slicer" and answer["card"]["bundled"] is True
    assert logic.card("byo-slicer")["labels"] == card["labels"]  # the Logic's catalog copy has it at once
    stored = json.loads((cache / "catalog" / "byo-slicer.json").read_text())
    assert stored["weights"]["file"] == str(cache / "models" / "byo-slicer" / "model.safetensors")
    environment = logic.fetchEnvironment()  # and the worker lists it from the user catalog
    listed = {c["id"]: c for c in environment["catalog"]}
    assert listed["byo-slicer"]["natural_method"] == "grad-cam" and listed["byo-slicer"]["downloaded"] is True
    assert logic.downloadModel("byo-slicer")["already_downloaded"] is True  # local weights, hash re-checked

    with pytest.raises(UserInputError, match="already imported"):
        logic.importModel(tmp_path / "mine.safetensors", card_file, modelId="byo-slicer")
    replaced = logic.importModel(tmp_path / "mine.safetensors", card_file, modelId="byo-slicer", force=True)
    assert replaced["id"] == "byo-slicer"
    assert [c["id"] for c in logic.environment["catalog"]].count("byo-slicer") == 1
    assert _node_ids(headless_app.scene) == nodes


def test_import_model_refuses_bad_input_without_adding_anything(tmp_path, cache, make_logic):
    card = tiny_card("segresnet", "other")
    other = tiny_card("segresnet", "bigger", n_labels=4)  # different output channels: weights do not fit
    from safetensors.torch import save

    (tmp_path / "w.safetensors").write_bytes(save(build(other).state_dict()))
    logic = make_logic()
    done = []
    logic.importModel(tmp_path / "w.safetensors", write_card(tmp_path / "c.json", card),
                      onDone=lambda data, error: done.append((data, error)), waitForCompletion=False)
    deadline = time.monotonic() + 120
    while not done:
        assert time.monotonic() < deadline
        logic.poll(0.1)
    data, error = done[0]
    assert data is None and isinstance(error, UserInputError) and "shape" in str(error).lower()
    with pytest.raises(UserInputError, match="holds only weights; pass --card"):
        logic.importModel(tmp_path / "w.safetensors")
    with pytest.raises(UserInputError, match="no model file selected"):
        logic.importModel("")
    assert _files(cache / "catalog") == [] and _files(cache / "models") == []
