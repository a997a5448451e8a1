"""The JSON-lines inference worker in a real subprocess: protocol, resident models, errors, cancel, crashes.

Every test talks to ``python -m HybridAttentionSegLib.worker`` through :class:`WorkerClient` exactly as the
Logic does (real pipes, real process groups, real weight files); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from HybridAttentionSegLib.worker.client import STOP_TIMEOUT_S, WorkerClient


def _answer(client: WorkerClient, request_id: str, timeout: float = 300.0, seen: list | None = None) -> dict:
    """Events until the result/error of ``request_id`` (collected into ``seen``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = client.waitEvent(0.5)
        if event is None:
            continue
        if seen is not None:
            seen.append(event)
        if event["type"] == "exit":
            pytest.fail(f"worker exited early: {client.lastErrors()}")
        if event.get("id") == request_id and event["type"] in ("result", "error"):
            return event
    pytest.fail(f"no answer to {request_id} within {timeout} s; {client.lastErrors()}")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid`` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.fixture(scope="module")
def client():
    worker = WorkerClient(threads=1)
    yield worker
    worker.close()


def test_ready_then_ping(client):
    seen = []
    answer = _answer(client, client.send("ping"), seen=seen)
    assert seen[0]["type"] == "ready" and seen[0]["pid"] == client.pid and seen[0]["protocol"] == 1
    assert answer["type"] == "result" and answer["data"]["pong"] is True


def test_info_lists_the_catalog_and_devices(client, tiny_catalog):
    answer = _answer(client, client.send("info", catalog=list(tiny_catalog.values())))
    data = answer["data"]
    cards = {card["id"]: card for card in data["catalog"]}
    assert {"tiny-gates", "tiny-gates-fine"} <= set(cards)
    assert cards["tiny-gates"]["natural_method"] == "gates"
    assert cards["tiny-gates"]["bundled"] is True  # weights file next to the card, hash in the card
    assert data["devices"][0] == {"id": "cpu", "name": "CPU", "memory_gb": None}
    assert data["versions"]["torch"] != "not installed"


def test_segment_writes_results_on_the_input_grid_and_keeps_the_model_resident(client, tiny_catalog, mni_file,
                                                                              tmp_path):
    from HybridAttentionSegLib.core.inference.io import read_segmentation_nrrd, read_volume

    catalog = list(tiny_catalog.values())
    seen = []
    answer = _answer(client, client.send("segment", model="tiny-gates", input=str(mni_file),
                                         out_dir=str(tmp_path / "a"), stem="result", attention=None,
                                         catalog=catalog), seen=seen)
    assert answer["type"] == "result", answer
    summary = answer["data"]
    assert summary["attention_methods"] == ["gates"]  # None = the natural method
    assert summary["reused_model"] is False
    assert [label["name"] for label in summary["labels"]] == ["Gray matter", "White matter"]
    percents = [e["percent"] for e in seen if e["type"] == "progress" and e["stage"] == "inference"]
    assert percents and percents == sorted(percents) and percents[-1] == 100
    for path in summary["files"].values():
        assert Path(path).is_file() and Path(path).parent == tmp_path / "a"
    source = read_volume(mni_file)
    labelmap, affine, segments = read_segmentation_nrrd(summary["files"]["segmentation"])
    assert labelmap.shape == source.shape
    np.testing.assert_allclose(affine, source.affine, atol=1e-6)
    assert [s["name"] for s in segments] == ["Gray matter", "White matter"]

    second = _answer(client, client.send("segment", model="tiny-gates", input=str(mni_file),
                                         out_dir=str(tmp_path / "b"), attention=["gates", "uncertainty"],
                                         catalog=catalog))["data"]
    assert second["reused_model"] is True and second["worker_pid"] == summary["worker_pid"] == client.pid
    assert second["attention_methods"] == ["gates", "uncertainty"]

    ping = _answer(client, client.send("ping"))["data"]
    assert ping["gui_modules"] == [], "the worker must never import slicer, vtk or qt"
    assert "tiny-gates" in ping["resident"]


def test_errors_are_answered_and_the_worker_keeps_serving(client, tiny_catalog, mni_file, tmp_path):
    catalog = list(tiny_catalog.values())
    pid = client.pid
    unknown = _answer(client, client.send("segment", model="tiny-gatez", input=str(mni_file),
                                          out_dir=str(tmp_path), catalog=catalog))
    assert unknown["type"] == "error" and unknown["user_error"] is True
    assert "unknown model 'tiny-gatez'" in unknown["message"] and "tiny-gates" in unknown["message"]
    unsupported = _answer(client, client.send("segment", model="tiny-gates", input=str(mni_file),
                                              out_dir=str(tmp_path), attention=["rollout"], catalog=catalog))
    assert unsupported["kind"] == "UnsupportedMethodError" and "supports: gates" in unsupported["message"]
    missing = _answer(client, client.send("segment", model="tiny-gates", input=str(tmp_path / "none.nii.gz"),
                                          out_dir=str(tmp_path), catalog=catalog))
    assert missing["user_error"] is True and "input not found" in missing["message"]
    bogus = _answer(client, client.send("explode"))
    assert bogus["kind"] == "ProtocolError" and "unknown command" in bogus["message"]
    client.process.stdin.write("this is not json\n")
    client.process.stdin.flush()
    garbled = client.waitEvent(30)
    assert garbled["type"] == "error" and garbled["id"] is None
    assert "cannot parse request" in garbled["message"]
    assert _answer(client, client.send("ping"))["data"]["pid"] == pid


def test_sample_data_only_from_whitelisted_loaders(client, tiny_catalog, tmp_path):
    card = json.loads(Path(tiny_catalog["tiny-gates"]).read_text(encoding="utf-8"))
    card["id"] = "tiny-gates-sample"
    card["sample_data"] = {"name": "MNI152 2009 T1 template (nilearn)", "resolution_mm": 2,
                           "loader": "core.data.mni.load_template"}
    card["weights"]["file"] = str(Path(tiny_catalog["tiny-gates"]).parent / card["weights"]["file"])
    good = tmp_path / "sample.json"
    good.write_text(json.dumps(card))
    card["id"] = "tiny-gates-evil"
    card["sample_data"] = {"loader": "os.system"}
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(card))
    answer = _answer(client, client.send("sample", model="tiny-gates-sample", out_dir=str(tmp_path / "s"),
                                         catalog=[str(good)]))
    assert answer["type"] == "result", answer
    from HybridAttentionSegLib.core.inference.io import read_volume

    assert read_volume(answer["data"]["path"]).shape == (99, 117, 95)
    refused = _answer(client, client.send("sample", model="tiny-gates-evil", out_dir=str(tmp_path / "e"),
                                          catalog=[str(evil)]))
    assert refused["user_error"] is True and "names no sample data this worker can load" in refused["message"]


@pytest.mark.skipif(sys.platform != "linux", reason="process groups are inspected through /proc")
def test_stop_kills_the_whole_process_tree_within_two_seconds(tiny_catalog, mni_file, tmp_path):
    worker = WorkerClient(threads=1)
    try:
        request = worker.send("segment", model="tiny-gates-fine", input=str(mni_file), out_dir=str(tmp_path),
                              catalog=list(tiny_catalog.values()))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            event = worker.waitEvent(0.5)
            if event and event["type"] == "progress" and event["stage"] == "inference":
                break
            assert not (event and event.get("id") == request and event["type"] in ("result", "error")), event
        else:
            pytest.fail("no inference progress")
        pid = worker.pid
        assert _group_members(pid), "the worker must run in its own process group"
        start = time.monotonic()
        worker.stop()
        assert time.monotonic() - start < STOP_TIMEOUT_S
        assert _group_members(pid) == [], "every process of the worker's group must be gone"
        assert not list(tmp_path.glob("result*")), "a killed run writes no result files"
        answer = _answer(worker, worker.send("ping"))  # a new request starts a fresh worker
        assert answer["data"]["pid"] != pid and worker.pid != pid
    finally:
        worker.stop()


def test_worker_exits_when_its_input_closes():
    worker = WorkerClient()
    try:
        _answer(worker, worker.send("ping"))
        worker.process.stdin.close()
        event = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (event and event["type"] == "exit"):
            event = worker.waitEvent(0.5)
        assert event is not None and event["type"] == "exit" and event["returncode"] == 0
    finally:
        worker.stop()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_crashed_worker_is_reported_as_an_exit_event():
    worker = WorkerClient()
    try:
        _answer(worker, worker.send("ping"))
        os.kill(worker.pid, signal.SIGKILL)
        event = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (event and event["type"] == "exit"):
            event = worker.waitEvent(0.5)
        assert event is not None and event["returncode"] == -signal.SIGKILL
    finally:
        worker.stop()
