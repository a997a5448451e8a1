"""Time ``hybridseg review`` from the command to the first frame that shows the image and the attention overlay.

Run with the review environment (Playwright and trame-slicer live there)::

    ./run demo --out /tmp/demo16           # the demo outputs, once
    .venv-review/bin/python Testing/benchmarks/review_first_render.py /tmp/demo16 [--runs 3] [--profile out.prof]

Debian's Chromium is launched (headless, through Playwright) and has a blank page open *before* the clock starts.
Then ``hybridseg review DIR --no-browser --port N`` is started as a subprocess, the page is loaded as soon as the
port answers, and the streamed axial view is screenshotted until its pixels show the grey image and the overlay
(the same pixel rule as the browser test: ``Testing/review/browser_pixels.py``). Reported per run: wall seconds
to listening, page loaded, views present, first frame with image and overlay, and all four views drawn (the
overlay in the other two slice views, a lit 3D view: the browser test's rule, which the 3D background already
meets); the server's CPU seconds (user + system, from ``/proc``) at listening and at the first frame;
the load average (1 min) before and after. ``--profile`` runs the server of the first run under cProfile and stops
it right after the first frame, so the profile covers start-up and first render only.

Not a test: timings on a shared machine are too noisy to assert.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Testing" / "review"))

import browser_pixels as bp  # noqa: E402

logger = logging.getLogger("review_first_render")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of stat)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, proc, log: Path, step: float = 0.05):
    """Poll ``predicate`` until it returns something true; fail if the server exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            message = f"the review server exited while waiting for {what}:\n" + log.read_text(encoding="utf-8")[-3000:]
            raise RuntimeError(message)
        found = predicate()
        if found:
            return found
        time.sleep(step)
    message = f"timed out after {timeout:g} s waiting for {what}"
    raise TimeoutError(message)


def stop(proc) -> None:
    """SIGINT first (cProfile writes its file on the way out), then SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def one_run(browser, folder: Path, python: str, workdir: Path, profile: Path | None, timeout: float) -> dict:
    """Start the server, load the page, wait for the first frame with image and overlay; returns the timings."""
    tab = browser.new_page(viewport=bp.VIEWPORT)
    tab.goto("about:blank")
    port = free_port()
    log = workdir / f"server-{port}.log"
    command = [python, *(["-m", "cProfile", "-o", str(profile)] if profile else []),
               "-m", "HybridAttentionSegLib.cli", "review", str(folder), "--no-browser", "--port", str(port)]
    load_before = os.getloadavg()[0]
    with open(log, "w", encoding="utf-8") as sink:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    out = {"port": port, "load_before": load_before, "profile": str(profile) if profile else None}
    try:
        wait_for(lambda: listening(port), timeout, "the port to answer", proc, log)
        out.update(listen_s=time.monotonic() - started, cpu_listen_s=cpu_seconds(proc.pid))

        def load() -> bool:
            try:
                tab.goto(f"http://127.0.0.1:{port}/", timeout=10_000)
                return True
            except Exception:  # noqa: BLE001 - not serving the page yet
                return False

        wait_for(load, timeout, "the page", proc, log)
        out["page_s"] = time.monotonic() - started
        images = tab.locator(bp.VIEW_SELECTOR)
        wait_for(lambda: images.count() == 4, timeout, "four streamed views", proc, log)
        out["views_s"] = time.monotonic() - started
        axial, three_d, coronal, sagittal = (images.nth(i) for i in range(4))

        def first_frame():
            found = bp.counts(bp.pixels(axial))
            return found if bp.shows_image_and_overlay(found) else None

        out["axial_pixels"] = wait_for(first_frame, timeout, "image and overlay in the axial view", proc, log)
        out.update(first_frame_s=time.monotonic() - started, cpu_first_frame_s=cpu_seconds(proc.pid))
        if profile is None:
            def all_views() -> bool:
                return (all(bp.counts(bp.pixels(view))["hot"] > 100 for view in (coronal, sagittal))
                        and bp.counts(bp.pixels(three_d))["lit"] > 2000)

            wait_for(all_views, timeout, "all four views", proc, log, step=0.2)
            out.update(all_views_s=time.monotonic() - started, cpu_all_views_s=cpu_seconds(proc.pid))
    finally:
        stop(proc)
        tab.close()
    out["load_after"] = os.getloadavg()[0]
    out["server_log_tail"] = log.read_text(encoding="utf-8").splitlines()[-8:]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="served folder (e.g. the demo outputs)")
    parser.add_argument("--runs", type=int, default=1, help="runs, one after the other (default 1)")
    parser.add_argument("--python", default=sys.executable, help="Python of the review environment (default: this one)")
    parser.add_argument("--profile", type=Path, help="cProfile the first run's server into this file")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per step (default 180)")
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from playwright.sync_api import sync_playwright

    runs = []
    with tempfile.TemporaryDirectory() as workdir, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=bp.CHROMIUM, args=bp.FLAGS)
        for index in range(args.runs):
            result = one_run(browser, args.folder.resolve(), args.python, Path(workdir),
                             args.profile if index == 0 else None, args.timeout)
            runs.append(result)
            logger.info("run %d: listening %.1f s (server CPU %.1f s), page %.1f s, views %.1f s, first frame with "
                        "image and overlay %.1f s (server CPU %.1f s)%s; load average %.1f -> %.1f",
                        index + 1, result["listen_s"], result["cpu_listen_s"], result["page_s"], result["views_s"],
                        result["first_frame_s"], result["cpu_first_frame_s"],
                        f", all four views {result['all_views_s']:.1f} s (CPU {result['cpu_all_views_s']:.1f} s)"
                        if "all_views_s" in result else "", result["load_before"], result["load_after"])
        browser.close()
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
