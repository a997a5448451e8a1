"""The review web app (``hybridseg review``): case list, its safety rules, the session on a real MRML scene, the CLI
edge cases, and (through the review environment) the real-browser test in ``Testing/review``.

The session tests run the same :class:`ReviewSession` the web app uses, on slicer-core 5.13 (this environment);
the browser test runs it on slicer-core 5.11 under trame-slicer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from review_case import write_review_case

ROOT = Path(__file__).resolve().parents[2]
REVIEW_PYTHON = ROOT / ".venv-review" / "bin" / "python"


@pytest.fixture
def served(tmp_path):
    facts = write_review_case(tmp_path / "served")
    return tmp_path / "served", facts


def test_case_list_finds_cases_by_naming_and_says_why_one_cannot_open(served):
    from HybridAttentionSegLib.web.cases import discover_cases

    folder, _ = served
    cases = {case.id: case for case in discover_cases(folder)}
    assert sorted(cases) == ["orphan", "phantom"]
    phantom = cases["phantom"]
    assert phantom.image == (folder / "phantom.nrrd").resolve()
    assert sorted(phantom.attention) == ["gates", "grad-cam", "uncertainty"]
    assert phantom.probabilities is not None and phantom.problem is None
    assert "not inside the served folder" in cases["orphan"].problem  # its JSON names /etc/hostname
    entry = phantom.describe()
    assert entry["methods"] == ["gates", "grad-cam", "uncertainty"] and "/" not in str(entry)


def test_no_file_outside_the_served_folder_is_reachable(served, tmp_path):
    from HybridAttentionSegLib.core.errors import UserInputError
    from HybridAttentionSegLib.web.cases import case_by_id, discover_cases, inside

    folder, _ = served
    outside = tmp_path / "secret.seg.nrrd"
    outside.write_bytes((folder / "phantom.seg.nrrd").read_bytes())
    (folder / "linked.seg.nrrd").symlink_to(outside)  # a link out of the folder is not a case
    cases = discover_cases(folder)
    assert "linked" not in [c.id for c in cases]
    for name in ("../secret.seg.nrrd", str(outside), "phantom.nrrd/../../secret.seg.nrrd", "linked.seg.nrrd"):
        assert inside(folder, name) is None, name
    assert inside(folder, "phantom.nrrd") == (folder / "phantom.nrrd").resolve()
    for bad in ("../served/phantom", "/etc/passwd", "phantom/../orphan", ""):
        with pytest.raises(UserInputError):
            case_by_id(cases, bad)


def test_faithfulness_shows_scores_flags_and_not_measured(served):
    from HybridAttentionSegLib.web.cases import discover_cases
    from HybridAttentionSegLib.web.faithfulness import NOT_MEASURED, faithfulness, label

    folder, _ = served
    phantom = next(c for c in discover_cases(folder) if c.id == "phantom")
    scores = faithfulness(phantom.summary, ["gates", "grad-cam", "uncertainty"])
    assert scores["gates"]["status"] == "faithful" and scores["gates"]["source"] == "result"
    assert scores["grad-cam"]["status"] == "not faithful on validation"
    assert label(scores["gates"]) == "faithful: deletion auc 0.850 (random 0.947)"
    assert scores["uncertainty"]["status"] == NOT_MEASURED and label(scores["uncertainty"]) == NOT_MEASURED
    as_list = {"model": "x", "explanations": [{"method": "gates", "faithful": False}]}
    assert faithfulness(as_list, ["gates"])["gates"]["faithful"] is False


def _foreground(scene):
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    return scene.GetNodeByID(composite.GetForegroundVolumeID() or "")


def test_session_opens_switches_corrects_undoes_and_saves_only_with_consent(headless_app, served):
    from HybridAttentionSegLib.core.inference.io import read_segmentation_nrrd
    from HybridAttentionSegLib.mrml import outputs, rendering
    from HybridAttentionSegLib.web.session import ReviewSession, SaveRefused

    folder, facts = served
    view = rendering.OffscreenSliceView(headless_app.scene, headless_app.appLogic, orientation="Axial", size=(96, 96))
    session = ReviewSession(headless_app, folder)
    session.loadCase("phantom")
    assert session.methods == ["gates", "grad-cam", "uncertainty"]  # the model's own method first
    shown = _foreground(headless_app.scene)
    assert shown.GetAttribute(outputs.ROLE_PREFIX + "AttentionMethod") == "gates"
    assert shown.GetDisplayNode().GetColorNode().GetName() == "Inferno"
    session.setMethod("grad-cam")
    session.updateDisplay(threshold=0.4, opacity=0.7)
    shown = _foreground(headless_app.scene)
    assert shown.GetAttribute(outputs.ROLE_PREFIX + "AttentionMethod") == "grad-cam"
    assert shown.GetDisplayNode().GetLowerThreshold() == pytest.approx(0.4)
    view.fitToBackground()
    assert view.capture().max() > 0
    session.setMethod(None)
    session.setSegmentDisplay(surface=True)  # as the app does once a case is on screen
    before, picture = session.voxelCounts(), view.capture()
    assert before["Core"] == facts["core_voxels"]
    changed = session.click([0.0, 0.0, 0.0], "Core")  # the centre of the hole
    after, corrected = session.voxelCounts(), view.capture()
    assert changed >= 0.8 * facts["hole_voxels"] and after["Core"] - before["Core"] == changed
    assert (corrected != picture).any(axis=-1).sum() > 50  # the fill grew into the hole on screen
    assert session.canUndo() and session.undo() and session.voxelCounts() == before
    assert np.array_equal(view.capture(), picture)  # the view follows undo (not a stale fill)
    assert session.canRedo() and session.redo() and session.voxelCounts() == after
    assert np.array_equal(view.capture(), corrected)
    assert session.findRegions()[0]["Segment"] in ("Core", "background")
    assert session.nextRegion() == 0
    saved = session.save()
    assert saved == folder / "phantom.reviewed.seg.nrrd"
    labelmap, _, segments = read_segmentation_nrrd(saved)
    core = next(s["value"] for s in segments if s["name"] == "Core")
    assert int((labelmap == core).sum()) == after["Core"]
    stamp = saved.stat().st_mtime_ns
    session.undo()
    with pytest.raises(SaveRefused):
        session.save()
    assert saved.stat().st_mtime_ns == stamp  # refused: untouched
    session.save(overwrite=True)
    labelmap, _, _ = read_segmentation_nrrd(saved)
    assert int((labelmap == core).sum()) == before["Core"]
    assert (folder / "phantom.seg.nrrd").is_file() and not list(folder.glob(".*tmp*"))
    view.close()


def test_session_refuses_unknown_cases_and_methods(headless_app, served):
    from HybridAttentionSegLib.core.errors import UserInputError
    from HybridAttentionSegLib.web.session import ReviewSession

    folder, _ = served
    session = ReviewSession(headless_app, folder)
    nodes = headless_app.scene.GetNumberOfNodes()
    with pytest.raises(UserInputError):
        session.loadCase("../../etc/passwd")
    with pytest.raises(ValueError, match="not inside"):
        session.loadCase("orphan")
    assert headless_app.scene.GetNumberOfNodes() == nodes
    session.loadCase("phantom")
    with pytest.raises(ValueError, match="not computed"):
        session.setMethod("rollout")
    session.loadCase("phantom")  # re-opening replaces, it does not pile up nodes
    assert headless_app.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1
    assert np.isfinite(session.voxelCounts()["Shell"])


def _cli(*args, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "HybridAttentionSeg"))
    return subprocess.run([sys.executable, "-m", "HybridAttentionSegLib.cli", "review", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_cli_port_taken_is_one_line_and_exit_2(served):
    folder, _ = served
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _cli(str(folder), "--port", str(port), "--no-browser")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0], proc.stderr


def test_cli_warns_when_listening_beyond_this_machine_and_checks_the_folder(tmp_path):
    proc = _cli(str(tmp_path / "missing"), "--host", "0.0.0.0", "--port", "0", "--no-browser")
    assert proc.returncode == 2
    warning, error = proc.stderr.strip().splitlines()
    assert "warning: listening on 0.0.0.0" in warning and "not a folder" in error
    quiet = _cli(str(tmp_path / "missing"), "--port", "0")
    assert "warning" not in quiet.stderr and quiet.returncode == 2


def test_browser_review_in_the_review_environment():
    """Runs ``Testing/review`` (real server, real Chromium) with the review environment's Python.

    In CI a missing review environment or browser is a failure (``./run test`` installs both); locally it skips.
    """
    missing = [what for what, ok in (("the review environment (.venv-review: ./run review --help makes it)",
                                      REVIEW_PYTHON.exists()),
                                     ("chromium (apt-get install chromium)", Path("/usr/bin/chromium").exists()))
               if not ok]
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser test cannot run: missing " + " and ".join(missing))
        pytest.skip("missing " + " and ".join(missing))
    proc = subprocess.run([str(REVIEW_PYTHON), "-m", "pytest", "Testing/review", "-x", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_session_segments_an_input_on_request_into_a_new_case(headless_app, tiny_catalog, tmp_path):
    """``hybridseg review INPUT --model ID``: the Logic's worker writes a normal case into the served folder."""
    import shutil
    import time

    from HybridAttentionSegLib.web.session import ReviewSession

    facts_folder = tmp_path / "source"
    write_review_case(facts_folder)
    subject = tmp_path / "input" / "subject.nrrd"
    subject.parent.mkdir()
    shutil.copy(facts_folder / "phantom.nrrd", subject)
    served = tmp_path / "served"
    served.mkdir()
    session = ReviewSession(headless_app, served, catalog=[tiny_catalog["tiny-gates"]])
    done = {}
    try:
        request = session.segmentInput(subject, "tiny-gates", onDone=lambda data, error: done.update(d=data, e=error))
        assert request is not None
        deadline = time.monotonic() + 240
        while not done and time.monotonic() < deadline:
            session.logic.poll(0.1)
        assert done and done["e"] is None, done
        assert session.segmentInput(subject, "tiny-gates") is None  # the case exists: never recomputed/overwritten
    finally:
        session.logic.shutdown()
    assert [c["id"] for c in session.refreshCases()] == ["subject"]
    case = session.loadCase("subject")
    assert case.image == (served / "subject.nrrd").resolve()  # display copy written into the served folder
    assert session.methods == ["gates", "uncertainty"] and case.probabilities is not None
    assert session.findRegions(threshold=0.0, maxRegions=3) is not None
