"""``hybridseg review`` in a real browser: a real server on 127.0.0.1 and Debian's Chromium driven by Playwright.

One server for the module (start-up costs seconds on a CPU): load the page, check that the views show the image,
the segmentation and the attention overlay (pixel colours of the streamed frames), switch the method, click to
correct and see the mask change, undo, save (and refuse to overwrite without consent), probe path traversal,
stop. Screenshots go to ``HYBRIDSEG_SCREENSHOT_DIR`` (default: the test's temporary folder).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser_pixels import CHROMIUM, FLAGS, VIEW_SELECTOR, VIEWPORT, hot_mask, shows_image_and_overlay
from browser_pixels import counts as _counts
from browser_pixels import pixels as _pixels
from review_case import write_review_case

#: generous on a loaded 2-core CPU; the measured time is printed (README: first render on the demo outputs)
FIRST_RENDER_LIMIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(predicate, timeout: float, what: str, step: float = 0.3, describe=None):
    """Poll ``predicate`` until it returns something true; on timeout fail naming its last value, or what
    ``describe()`` says the page showed instead."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what} "
                f"({describe() if describe is not None else f'last: {last!r}'})")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    facts = write_review_case(folder)
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = folder.parent / "server.log"
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as sink:  # a file, not a pipe: a chatty server can never block on a full pipe
        proc = subprocess.Popen([sys.executable, "-m", "HybridAttentionSegLib.cli", "review", str(folder),
                                 "--port", str(port), "--no-browser"], stdout=sink, stderr=subprocess.STDOUT,
                                text=True, env=env, start_new_session=True)
    yield {"url": f"http://127.0.0.1:{port}/", "port": port, "folder": folder, "facts": facts, "proc": proc,
           "started": started, "log": log}
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install chromium); ./run test installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page(viewport=VIEWPORT)

        def load():
            if server["proc"].poll() is not None:
                pytest.fail("the review server exited: " + server["log"].read_text()[-3000:])
            try:
                tab.goto(server["url"], timeout=5000)
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        _wait(load, 120, "the server to answer", step=0.5)
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("HYBRIDSEG_SCREENSHOT_DIR") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _views(page):
    images = page.locator(VIEW_SELECTOR)
    _wait(lambda: images.count() == 4, 60, "four streamed views")
    return [images.nth(i) for i in range(4)]  # DOM order: axial, 3D, coronal, sagittal


def _voxels(page, name: str) -> int:
    text = page.locator(".segment-voxels", has_text=f"{name}:").inner_text()
    return int(text.split(":")[1].split()[0])


def _waitVoxels(page, name: str, want: int, what: str, timeout: float = 45) -> None:
    """Wait until segment ``name`` counts ``want`` voxels; on timeout say what the page showed instead.

    The history buttons answer through the server, which shares two cores with the rest of the suite: the
    wait is generous, and a failure names the count, both buttons and the status line so a lost click and a
    slow server can be told apart.
    """
    def shown():
        return (f"{name}={_voxels(page, name)} (want {want}), "
                f"undo enabled={page.locator('#undo-button').is_enabled()}, "
                f"redo enabled={page.locator('#redo-button').is_enabled()}, "
                f"status={page.locator('#status-message').inner_text()!r}")
    _wait(lambda: _voxels(page, name) == want, timeout, what, describe=shown)


def test_views_render_image_segmentation_and_overlay(page, server, shots):
    axial, threeD, coronal, sagittal = _views(page)

    def rendered():
        counts = _counts(_pixels(axial))
        return counts if shows_image_and_overlay(counts) and counts["green"] > 200 else None

    counts = _wait(rendered, FIRST_RENDER_LIMIT_S, "the axial view to show image, overlay and segmentation")
    seconds = time.monotonic() - server["started"]
    report = f"first render with overlay {seconds:.1f} s after the command started; axial pixels {counts}"
    logging.getLogger(__name__).warning(report)
    (shots / "first-render.txt").write_text(report + "\n")
    assert counts["blue"] > 50  # Core fill/outline
    for view in (coronal, sagittal):
        assert _counts(_pixels(view))["hot"] > 100
    _wait(lambda: _counts(_pixels(threeD))["lit"] > 2000, 60, "the 3D surface")
    text = page.locator("#case-list").inner_text()
    assert "phantom" in text and "not inside the served folder" in text  # the orphan case says why
    assert "faithful: deletion auc 0.850" in page.locator("#faithfulness").first.inner_text()
    page.screenshot(path=str(shots / "review-app.png"))


def test_method_switch_moves_the_overlay(page, shots):
    axial = _views(page)[0]
    before = _pixels(axial)
    hot_before = np.argwhere(hot_mask(before))
    page.locator("#method-grad-cam").click()
    _wait(lambda: "not faithful" in page.locator("#faithfulness", has_text="not faithful").first.inner_text(),
          20, "grad-cam's faithfulness flag")

    def moved():
        hot = np.argwhere(hot_mask(_pixels(axial)))
        return len(hot) > 100 and abs(hot[:, 1].mean() - hot_before[:, 1].mean()) > 10

    _wait(moved, 30, "the overlay to move to grad-cam's blob (patient left = screen right)")
    page.locator("#method-toggle").screenshot(path=str(shots / "review-methods.png"))


def test_click_corrects_the_mask_then_undo_and_redo(page, server, shots):
    facts = server["facts"]
    axial = _views(page)[0]
    before = _voxels(page, "Core")
    assert before == facts["core_voxels"]
    blue_before = _counts(_pixels(axial))["blue"]
    page.get_by_label("Click to correct").check()
    page.get_by_label("A click means").click(force=True)
    page.locator(".v-overlay-container .v-list-item", has_text="Core").click()
    box = axial.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # the volume centre: the hole
    after = _wait(lambda: (n := _voxels(page, "Core")) > before and n, 30, "the Core segment to grow")
    assert after - before >= 0.8 * facts["hole_voxels"]
    assert "voxels changed" in page.locator("#status-message").inner_text()
    page.locator("#undo-button").click()
    _waitVoxels(page, "Core", before, "undo")
    page.locator("#redo-button").click()
    _waitVoxels(page, "Core", after, "redo")
    # on screen too: the Core fill covers the hole again (a stale frame would show the undone state)
    _wait(lambda: _counts(_pixels(axial))["blue"] > blue_before + 300, 20, "the corrected fill in the view")
    page.screenshot(path=str(shots / "review-click.png"))
    page.get_by_label("Click to correct").uncheck()


def test_review_queue_and_save_never_overwrite_without_consent(page, server, shots):
    from HybridAttentionSegLib.core.inference.io import read_segmentation_nrrd

    folder = server["folder"]
    page.locator("#next-region").click()
    _wait(lambda: page.locator("#region-list .v-list-item").count() > 0, 30, "the uncertainty review queue")
    target = folder / "phantom.reviewed.seg.nrrd"
    page.locator("#save-button").click()
    _wait(target.exists, 20, "the reviewed file")
    labelmap, _, segments = read_segmentation_nrrd(target)
    core = next(s["value"] for s in segments if s["name"] == "Core")
    assert int((labelmap == core).sum()) == _voxels(page, "Core") > server["facts"]["core_voxels"]
    stamp = target.stat().st_mtime_ns
    page.locator("#save-button").click()
    _wait(lambda: page.locator("#overwrite-cancel").is_visible(), 20, "the overwrite question")
    page.screenshot(path=str(shots / "review-overwrite.png"))
    page.locator("#overwrite-cancel").click()
    time.sleep(1.0)
    assert target.stat().st_mtime_ns == stamp  # refused: not written
    page.locator("#save-button").click()
    page.locator("#overwrite-confirm").click()
    _wait(lambda: target.stat().st_mtime_ns != stamp, 20, "the confirmed overwrite")
    assert (folder / "phantom.seg.nrrd").is_file()  # the model's own result is never replaced


def test_no_file_outside_the_served_folder_over_http(server, tmp_path):
    secret = server["folder"].parent / "secret.txt"
    secret.write_text("TOP-SECRET-REVIEW")
    base = f"http://127.0.0.1:{server['port']}"
    probes = ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%2e%2e/%2e%2e/etc/passwd",
              "/static/../../etc/passwd", f"/{server['folder'].name}/phantom.nrrd", "/phantom.nrrd",
              "/phantom.json", "//etc/passwd"]
    for path in probes:
        with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as raw:  # no URL normalising
            raw.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := raw.recv(65536):
                answer += chunk
        assert b"TOP-SECRET" not in answer and b"root:x:0" not in answer and b"NRRD" not in answer, path
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(base + "/phantom.json", timeout=10)  # served data never leaves through HTTP


def test_server_stops_cleanly(server):
    proc = server["proc"]
    assert proc.poll() is None, "the server died during the test"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) is not None
