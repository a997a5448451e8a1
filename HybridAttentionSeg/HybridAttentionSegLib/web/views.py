"""The review app's views: trame-slicer's Slicer slice and 3D views, streamed to the browser, on our scene.

trame-slicer supplies the views (Slicer's slice logic, interactor style and displayable managers, the same
classes as desktop Slicer), the remote-controlled-area streaming and the layout grid. The scene and the module
logics are ours (:class:`..mrml.headless.HeadlessSlicer`), so the Slicer module's Logic code drives them.

Two things are added here:

* **draw order**: trame-slicer adds the slice image actor to the renderer after the displayable managers'
  actors, so the 2D segmentation fill *replaces* the image instead of blending over it (``env_probe.md``,
  section 3; our :mod:`..mrml.rendering` avoids it with two layers). :func:`imageFirst` moves the image actor to
  the front of the renderer's prop list once it exists;
* **clicks**: in correction mode a left click on a slice view is turned into RAS through the slice node's
  XY->RAS matrix (the view's pixel frame, origin bottom-left, as Slicer does) and handed to ``onClick``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..mrml import rendering

logger = logging.getLogger(__name__)

LAYOUT_ID = "Review"
#: view singleton tags (trame-slicer's defaults)
SLICE_TAGS = ("Red", "Yellow", "Green")


def imageFirst(sliceView) -> bool:
    """Put the slice image actor first in its renderer (drawn before the segmentation); True if it moved."""
    renderer = sliceView.first_renderer()
    imageActor = sliceView._render_manager.image_actor  # noqa: SLF001 - trame-slicer keeps no public handle
    props = renderer.GetViewProps()
    items = [props.GetItemAsObject(i) for i in range(props.GetNumberOfItems())]
    if imageActor not in items or items[0] is imageActor:
        return False
    renderer.RemoveAllViewProps()
    renderer.AddViewProp(imageActor)
    for prop in items:
        if prop is not imageActor:
            renderer.AddViewProp(prop)
    return True


def eventRas(sliceView, x: float, y: float) -> list[float]:
    """RAS of view pixel (``x``, ``y``) (origin bottom-left) on the slice plane of ``sliceView``."""
    xyToRas = sliceView.get_view_node().GetXYToRAS()
    point = xyToRas.MultiplyPoint([float(x), float(y), 0.0, 1.0])
    return [float(point[0]), float(point[1]), float(point[2])]


def _registerFactories(viewManager, server) -> None:
    """trame-slicer's remote view factories, with views that do not render while they are being built.

    A new view renders directly on every MRML event until the streaming scheduler takes over (about 60 renders
    per view, seconds in all on a CPU); built with ``NoScheduleRendering`` it renders once, when streamed.
    """
    from functools import partial

    from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui
    from trame_slicer.rca_view.rca_view_factory import RemoteViewFactory
    from trame_slicer.views import NoScheduleRendering, SliceView, ThreeDView, ViewType

    for viewClass, viewType, gutter in ((SliceView, ViewType.SLICE_VIEW, create_vertical_slice_view_gutter_ui),
                                        (ThreeDView, ViewType.THREE_D_VIEW, create_vertical_view_gutter_ui)):
        quiet = partial(viewClass, scheduled_render_strategy=NoScheduleRendering())
        viewManager.register_factory(RemoteViewFactory(server, quiet, viewType, populate_view_ui_f=gutter,
                                                       target_fps=20.0, blur_fps=5.0))


class ReviewViews:
    """Three slice views and a 3D view in a quad layout, streamed by trame-slicer.

    Args:
        server: the trame server.
        app: the :class:`..mrml.headless.HeadlessSlicer` whose scene the views show.
        onClick: ``onClick(ras, sliceView)`` for a left click on a slice view while :attr:`clickMode` is on.
    """

    def __init__(self, server, app, onClick: Callable | None = None):
        from trame_slicer.core import LayoutManager, ViewManager
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        self.server = server
        self.onClick = onClick
        self.clickMode = False
        self.viewManager = ViewManager(app.scene, app.appLogic)
        _registerFactories(self.viewManager, server)
        self.layoutManager = LayoutManager(app.scene, self.viewManager, server)
        axial, coronal = ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.coronal_view()
        sagittal, threeD = ViewLayoutDefinition.sagittal_view(), ViewLayoutDefinition.threed_view()
        quad = Layout(LayoutDirection.Horizontal, [
            Layout(LayoutDirection.Vertical, [axial, threeD]),
            Layout(LayoutDirection.Vertical, [coronal, sagittal]),
        ])
        self.layoutManager.register_layout_dict({LAYOUT_ID: quad})
        self.layoutManager.set_layout(LAYOUT_ID)
        #: True once a browser has laid out a slice view (it reported the view's size): frames are on their way
        self.browserSized = False
        for view in self.sliceViews():
            view.interactor().AddObserver("LeftButtonPressEvent", self._onPress, 10.0)
            view.interactor().AddObserver("LeftButtonReleaseEvent", self._onRelease, 10.0)
            view.interactor().AddObserver("WindowResizeEvent", self._onBrowserSize)
        self._pressed = None

    def sliceViews(self) -> list:
        return self.viewManager.get_slice_views()

    def threeDViews(self) -> list:
        return self.viewManager.get_threed_views()

    def initializeLayout(self, layout) -> None:
        """Place the view grid in ``layout`` (call inside the UI's content container)."""
        self.layoutManager.initialize_layout_grid(layout)

    def fitAll(self) -> None:
        """Fit the slice views to the background volume and the 3D view to the segmentation."""
        for view in self.sliceViews():
            view.fit_view_to_content()
            imageFirst(view)
        for view in self.threeDViews():
            view.reset_view()
        self.refreshLegends()
        self.renderAll()

    def refreshLegends(self) -> None:
        """Let the colour legends follow the attention layer (after a case or method change)."""
        for view in self.sliceViews():
            rendering.refreshColorLegends(view._logic.GetSliceCompositeNode())  # noqa: SLF001 - no public handle

    def renderAll(self) -> None:
        for view in self.sliceViews():
            imageFirst(view)
        for view in self.viewManager.get_views():
            view.schedule_render()

    def _onBrowserSize(self, _interactor, _event) -> None:
        # trame-slicer's RCA window invokes this when the browser reports the size of a view
        self.browserSized = True

    # ------------------------------------------------------------------------------------------ clicks
    def _viewOf(self, interactor):
        return next((v for v in self.sliceViews() if v.interactor() is interactor), None)

    def _onPress(self, interactor, _event) -> None:
        self._pressed = tuple(interactor.GetEventPosition()) if self.clickMode else None

    def _onRelease(self, interactor, _event) -> None:
        pressed, self._pressed = self._pressed, None
        if not self.clickMode or pressed is None or self.onClick is None:
            return
        x, y = interactor.GetEventPosition()
        if abs(x - pressed[0]) > 3 or abs(y - pressed[1]) > 3:
            return  # a drag (window/level, pan) is not a click
        view = self._viewOf(interactor)
        if view is not None:
            self.onClick(eventRas(view, x, y), view)
