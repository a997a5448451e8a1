"""``ReviewApp``: the trame server of ``hybridseg review``, wiring page state to a :class:`.session.ReviewSession`.

Every handler calls the session (which calls the Slicer module's Logic code) and then re-renders the views;
an error becomes the status message, never a crashed server. Listening defaults to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

from trame_server.utils import asynchronous

from ..mrml.headless import HeadlessSlicer
from ..mrml.outputs import COLOR_MAPS
from . import faithfulness
from .session import ReviewSession, SaveRefused
from .ui import buildUi
from .views import ReviewViews

logger = logging.getLogger(__name__)

#: the 3D surface (about 2 s of CPU for a brain) is built this long after a browser has laid out the views of an
#: opened case (never before): the first picture is not kept waiting for it, however slow the page is to load
SURFACE_DELAY_S = 3.0


def legendCss(colorMap: str, threshold: float) -> str:
    """CSS gradient of ``colorMap`` (matplotlib, as the views' colour table), transparent below ``threshold``."""
    from matplotlib import colormaps

    cmap = colormaps[colorMap.lower()]
    stops = [f"rgb({', '.join(str(int(c * 255)) for c in cmap(i / 10)[:3])}) {i * 10}%" for i in range(11)]
    cut = f"{max(0.0, min(1.0, threshold)) * 100:.0f}%"
    return f"linear-gradient(to right, #222 0%, #222 {cut}, transparent {cut}), linear-gradient(to right, " \
           + ", ".join(stops) + ")"


class ReviewApp:
    """The review web app on one served folder.

    Args:
        root: served folder (cases read from it, reviewed files written into it).
        server: a trame server (default: a new one).
        catalog: extra model-card files.
        inputPath, modelId: an input to segment on request (``hybridseg review INPUT --model ID``).
    """

    def __init__(self, root, server=None, catalog: list[str] | None = None, inputPath=None,
                 modelId: str | None = None):
        from trame.app import get_server

        self.server = server or get_server("hybridseg-review", client_type="vue3")
        self.state, self.ctrl = self.server.state, self.server.controller
        self.app = HeadlessSlicer()
        self.session = ReviewSession(self.app, root, catalog=catalog)
        self.inputPath, self.modelId = inputPath, modelId
        self.views = ReviewViews(self.server, self.app, onClick=self.onViewClick)
        self.firstFrameSeconds: float | None = None
        self._initState()
        for name in ("open_case", "segment_input", "undo", "redo", "find_regions", "next_region", "go_region",
                     "save"):
            setattr(self.ctrl, name, getattr(self, name))
        self.server.trigger("segment_visible")(self.segment_visible)
        self._watch()
        buildUi(self.server, self.views)

    # ------------------------------------------------------------------------------------------ state
    def _initState(self) -> None:
        state = self.state
        state.trame__title = "HybridAttentionSeg review"
        state.update({
            "cases": self.session.refreshCases(), "case_id": None, "methods": [], "method": None,
            "color_maps": list(COLOR_MAPS), "color_map": "Inferno", "threshold": 0.2, "opacity": 0.5,
            "show_legend": True, "legend_css": legendCss("Inferno", 0.2), "fill_opacity": 0.3, "outline": True,
            "segments": [], "click_mode": False, "click_label": "background", "click_labels": ["background"],
            "can_undo": False, "can_redo": False, "regions": [], "region_row": -1, "message": "",
            "message_type": "info", "confirm_overwrite": False, "overwrite_name": "", "busy": False,
            "pending_input": Path(self.inputPath).name if self.inputPath else "",
        })

    def _watch(self) -> None:
        state = self.state

        @state.change("method")
        def _method(method, **_):
            self._guard(lambda: self.session.setMethod(method or None))
            self.views.refreshLegends()

        @state.change("color_map", "threshold", "opacity", "show_legend")
        def _display(color_map, threshold, opacity, show_legend, **_):
            state.legend_css = legendCss(color_map, float(threshold))
            self._guard(lambda: self.session.updateDisplay(colorMap=color_map, threshold=float(threshold),
                                                           opacity=float(opacity), showLegend=bool(show_legend)))
            self.views.refreshLegends()

        @state.change("fill_opacity", "outline")
        def _segmentation(fill_opacity, outline, **_):
            self._guard(lambda: self.session.setSegmentDisplay(float(fill_opacity), bool(outline)))

        @state.change("click_mode")
        def _clickMode(click_mode, **_):
            self.views.clickMode = bool(click_mode)

    def _guard(self, action, success: str | None = None):
        """Run ``action``; report an error in the status line; re-render."""
        try:
            result = action()
        except SaveRefused:
            raise
        except Exception as err:  # noqa: BLE001 - the edge of the app: report, keep serving
            logger.warning("review action failed: %s", err, exc_info=logger.isEnabledFor(logging.DEBUG))
            self.state.update({"message": str(err), "message_type": "error"})
            return None
        if success is not None:
            self.state.update({"message": success, "message_type": "info"})
        self.views.renderAll()
        return result

    def _refreshCaseState(self) -> None:
        session = self.session
        counts = session.voxelCounts() if session.segmentation is not None else {}
        segments = [dict(s, voxels=counts.get(s["name"], 0)) for s in session.segments()]
        self.state.update({
            "segments": segments, "can_undo": session.canUndo(), "can_redo": session.canRedo(),
            "click_labels": ["background"] + [s["name"] for s in segments],
        })

    # ------------------------------------------------------------------------------------------ actions
    def open_case(self, caseId: str) -> None:
        t0 = time.perf_counter()
        case = self._guard(lambda: self.session.loadCase(caseId))
        if case is None:
            return
        scores = faithfulness.faithfulness(case.summary, self.session.methods, self.session.catalog)
        methods = [{"id": m, "label": faithfulness.label(scores[m]), "faithful": scores[m]["faithful"]}
                   for m in self.session.methods]
        self.state.update({"case_id": case.id, "methods": methods, "method": self.session.method,
                           "regions": [], "region_row": -1, "message_type": "info",
                           "message": f"opened {case.id} in {time.perf_counter() - t0:.1f} s"})
        self.session.updateDisplay(colorMap=self.state.color_map, threshold=float(self.state.threshold),
                                   opacity=float(self.state.opacity), showLegend=bool(self.state.show_legend))
        self.session.setSegmentDisplay(float(self.state.fill_opacity), bool(self.state.outline))
        labels = [s["name"] for s in self.session.segments()]
        if self.state.click_label not in labels:
            self.state.click_label = labels[-1] if labels else "background"
        self._refreshCaseState()
        self.views.fitAll()
        asynchronous.create_task(self._showSurface(case.id))

    def _isOpen(self, caseId: str) -> bool:
        return self.session.case is not None and self.session.case.id == caseId

    async def _showSurface(self, caseId: str) -> None:
        while not self.views.browserSized and self._isOpen(caseId):  # no browser yet: nobody to show it to
            await asyncio.sleep(0.2)
        await asyncio.sleep(SURFACE_DELAY_S)  # let the first frames go out before the 3D surface is built
        if self._isOpen(caseId):
            t0 = time.perf_counter()
            with self.state:
                self._guard(lambda: self.session.setSegmentDisplay(surface=True))
                for view in self.views.threeDViews():
                    view.reset_view()
            logger.info("3D surface of %s built in %.2f s", caseId, time.perf_counter() - t0)

    def onViewClick(self, ras, _view) -> None:
        label = self.state.click_label or "background"
        with self.state:
            changed = self._guard(lambda: self.session.click(ras, label))
            if changed is not None:
                where = ", ".join(f"{x:.0f}" for x in ras)
                self.state.update({"message": f"click ({label}) at RAS {where}: {changed} voxels changed",
                                   "message_type": "info"})
                self._refreshCaseState()

    def undo(self) -> None:
        self._guard(self.session.undo, "undone")
        self._refreshCaseState()

    def redo(self) -> None:
        self._guard(self.session.redo, "redone")
        self._refreshCaseState()

    def segment_visible(self, segmentId: str, visible: bool) -> None:
        self._guard(lambda: self.session.setSegmentVisible(segmentId, bool(visible)))
        self._refreshCaseState()

    def find_regions(self) -> None:
        regions = self._guard(self.session.findRegions)
        if regions is not None:
            self.state.update({"regions": regions, "region_row": -1,
                               "message": f"{len(regions)} uncertain regions", "message_type": "info"})

    def next_region(self) -> None:
        row = self._guard(self.session.nextRegion)
        if not self.state.regions:
            self.state.regions = self.session.regionRows()
        if row is not None:
            self.state.region_row = row

    def go_region(self, row: int) -> None:
        if self._guard(lambda: self.session.correction.jumpToRegion(self.session.regionsTable, int(row))):
            self.state.region_row = int(row)

    def save(self, overwrite: bool = False) -> None:
        self.state.confirm_overwrite = False
        try:
            path = self._guard(lambda: self.session.save(overwrite=bool(overwrite)))
        except SaveRefused:
            self.state.update({"confirm_overwrite": True, "overwrite_name": self.session.reviewedPath().name})
            return
        if path is not None:
            self.state.update({"message": f"saved {path.name}", "message_type": "info",
                               "cases": self.session.refreshCases()})

    async def _pollWorker(self, requestId) -> None:
        while requestId in self.session.logic._pending:  # noqa: SLF001 - the Logic's own request table
            self.session.logic.poll(0.0)
            await asyncio.sleep(0.2)

    def segment_input(self) -> None:
        def done(data, error):
            with self.state:
                self.state.busy = False
                if error is not None:
                    self.state.update({"message": str(error), "message_type": "error"})
                    return
                self.state.cases = self.session.refreshCases()
                self.open_case(Path(data["files"]["segmentation"]).name[: -len(".seg.nrrd")])

        from ..core.inference.io import stem_of

        requestId = self._guard(lambda: self.session.segmentInput(self.inputPath, self.modelId, onDone=done))
        if requestId is None:
            self.state.cases = self.session.refreshCases()
            self.open_case(stem_of(self.inputPath))
            return
        self.state.update({"busy": True, "message": f"segmenting with {self.modelId}...", "message_type": "info"})
        asynchronous.create_task(self._pollWorker(requestId))

    # ------------------------------------------------------------------------------------------ run
    def openFirstCase(self) -> None:
        first = next((c for c in self.session.cases if not c.problem), None)
        if first is not None:
            self.open_case(first.id)

    def start(self, host: str = "127.0.0.1", port: int = 8080, openBrowser: bool = True) -> None:
        """Serve until interrupted (blocking); the first case opens as soon as the server listens."""
        self.ctrl.on_server_ready.add(lambda **_: self.openFirstCase())
        sys.argv = sys.argv[:1]  # trame parses sys.argv for its own options; ours are already applied
        self.server.start(host=host, port=port, open_browser=openBrowser, timeout=0, show_connection_info=True)
