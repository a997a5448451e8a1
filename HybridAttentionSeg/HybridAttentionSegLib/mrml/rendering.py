"""Offscreen Slicer views: slice and 3D views drawn by Slicer's own MRML displayable managers, to PNG.

Works under plain ``slicer-core`` (with :class:`~HybridAttentionSegLib.headless.HeadlessSlicer`) and inside the
Slicer application (pass ``slicer.mrmlScene`` and ``slicer.app.applicationLogic()``). MRML/VTK only, no Qt.

A slice view is two renderers in one offscreen render window (recipe: ``env_probe.md`` section 3):

* layer 0: the slice logic's blended RGBA image (background, foreground heat map, label layer) as a 2D actor,
  exactly what Slicer's Qt slice view shows (CTK's light-box renderer manager does the same);
* layer 1: the displayable managers (segmentation fill and outline, colour legend).

The image must be in a renderer below the displayable managers: added to the same renderer after the
displayable-manager actors, the segmentation fill replaces the image instead of blending over it.

Helpers set up what Slicer's GUI would: a perceptual (matplotlib) colour table node, a heat-map volume as a
thresholded foreground layer, and a colour legend (Slicer's ``vtkMRMLColorLegendDisplayNode``, drawn by
``vtkMRMLColorLegendDisplayableManager``).
"""

from __future__ import annotations

import logging

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

logger = logging.getLogger(__name__)

#: slice-view displayable managers: segmentation fill/outline and the colour legend
SLICE_DISPLAYABLE_MANAGERS = (
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLColorLegendDisplayableManager",
)
#: 3D-view displayable managers: camera, view (background, box), segmentation surfaces
THREED_DISPLAYABLE_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
)
#: default layout names of the offscreen views: distinct from the application's Red/Yellow/Green/1 views, so
#: that inside Slicer an offscreen view never shares (and changes) the slice composite node of a real view
SLICE_VIEW_NAMES = {"Axial": "OffscreenAxial", "Sagittal": "OffscreenSagittal", "Coronal": "OffscreenCoronal"}
THREED_VIEW_NAME = "Offscreen3D"


def _registerDisplayableManagers(factory, appLogic, names) -> None:
    factory.SetMRMLApplicationLogic(appLogic)
    for name in names:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)


def _nodeIDs(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _removeNodes(scene, nodeIDs) -> None:
    for nodeID in nodeIDs:
        node = scene.GetNodeByID(nodeID)
        if node is not None:
            scene.RemoveNode(node)


def _offscreenWindow(size, layers: int) -> vtk.vtkRenderWindow:
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.ShowWindowOff()
    window.SetSize(int(size[0]), int(size[1]))
    window.SetNumberOfLayers(layers)
    return window


def _grabber(window: vtk.vtkRenderWindow) -> vtk.vtkWindowToImageFilter:
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.ReadFrontBufferOff()
    grabber.SetInputBufferTypeToRGB()
    grabber.ShouldRerenderOff()  # the views render explicitly just before
    grabber.Update()
    return grabber


def captureWindow(window: vtk.vtkRenderWindow) -> np.ndarray:
    """The last rendered frame of ``window`` as an (H, W, 3) uint8 array, top row first."""
    image = _grabber(window).GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)
    return np.ascontiguousarray(pixels[::-1, :, :3])


def writeWindowPNG(window: vtk.vtkRenderWindow, path) -> str:
    """Write the last rendered frame of ``window`` to a PNG file; returns the path."""
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetCompressionLevel(4)
    writer.SetInputData(_grabber(window).GetOutput())
    writer.Write()
    return str(path)


def refreshColorLegends(compositeNode) -> None:
    """Make the colour-legend displayable manager of a slice view pick up legend nodes added before its layers.

    ``vtkMRMLColorLegendDisplayableManager`` creates its legend actors when a legend node is *added* to the
    scene, or when the slice composite node reports a layer change by interaction flags (as the Qt slice
    controller does); a view whose layers were set after the legend node needs the latter, emulated here.
    """
    flags = compositeNode.ForegroundVolumeFlag | compositeNode.BackgroundVolumeFlag | compositeNode.LabelVolumeFlag
    compositeNode.SetInteractionFlags(flags)
    compositeNode.Modified()
    compositeNode.SetInteractionFlags(0)


class _OffscreenView:
    """What every offscreen view shares: subclasses set ``self.window`` and implement :meth:`render`."""

    window: vtk.vtkRenderWindow

    def render(self) -> None:
        raise NotImplementedError

    def capture(self) -> np.ndarray:
        """Render and return the view as an (H, W, 3) uint8 array."""
        self.render()
        return captureWindow(self.window)

    def writePNG(self, path) -> str:
        """Render and write the view to ``path`` (PNG)."""
        self.render()
        return writeWindowPNG(self.window, path)


class OffscreenSliceView(_OffscreenView):
    """A Slicer slice view rendered offscreen (slice logic + slice displayable managers).

    Args:
        scene: the MRML scene.
        appLogic: the MRML application logic (``HeadlessSlicer.appLogic`` or ``slicer.app.applicationLogic()``).
        name: slice node layout name (default ``SLICE_VIEW_NAMES[orientation]``); inside Slicer, never the
            name of a real view ("Red"...), whose composite node it would share.
        orientation: "Axial", "Sagittal" or "Coronal".
        size: (width, height) in pixels.
    """

    def __init__(self, scene, appLogic, name: str | None = None, orientation: str = "Axial", size=(384, 384)):
        name = name or SLICE_VIEW_NAMES.get(orientation, f"Offscreen{orientation}")
        existing = _nodeIDs(scene)
        self.scene = scene
        self.appLogic = appLogic
        self.imageRenderer = vtk.vtkRenderer()
        self.imageRenderer.SetLayer(0)
        self.imageRenderer.InteractiveOff()
        self.renderer = vtk.vtkRenderer()
        self.renderer.SetLayer(1)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window = _offscreenWindow(size, 2)
        self.window.AddRenderer(self.imageRenderer)
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)

        # the slice logic first: displayable managers (colour legend) look it up from the slice node
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(appLogic)
        appLogic.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(scene)
        self.sliceNode = self.logic.AddSliceNode(name)
        self.sliceNode.SetOrientation(orientation)
        self.compositeNode = self.logic.GetSliceCompositeNode()

        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        _registerDisplayableManagers(factory, appLogic, SLICE_DISPLAYABLE_MANAGERS)
        self.displayableManagers = slicer.vtkMRMLDisplayableManagerGroup()
        self.displayableManagers.Initialize(factory, self.renderer)
        self.displayableManagers.SetMRMLDisplayableNode(self.sliceNode)

        # the blended slice image as a background 2D actor (what qMRMLSliceView shows)
        self.imageMapper = vtk.vtkImageMapper()
        self.imageMapper.SetColorWindow(255)
        self.imageMapper.SetColorLevel(127.5)
        self.imageActor = vtk.vtkActor2D()
        self.imageActor.SetMapper(self.imageMapper)
        self.imageActor.GetProperty().SetDisplayLocationToBackground()
        self.imageRenderer.AddViewProp(self.imageActor)
        self.resize(size)
        #: nodes this view added (slice, composite, slice model/display/transform): removed by close()
        self.ownNodeIDs = _nodeIDs(scene) - existing

    # -------------------------------------------------------------------------------------------
    def setLayers(self, background=None, foreground=None, foregroundOpacity: float = 0.5, label=None) -> None:
        """Set the background/foreground/label volume nodes (None hides a layer)."""
        composite = self.compositeNode
        wasModifying = composite.StartModify()
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(foregroundOpacity))
        composite.SetLabelVolumeID(label.GetID() if label is not None else None)
        composite.EndModify(wasModifying)
        self.refreshColorLegends()

    def refreshColorLegends(self) -> None:
        """Make the colour-legend displayable manager pick up legend nodes that existed before this view."""
        refreshColorLegends(self.compositeNode)

    def resize(self, size) -> None:
        """Resize the window and the slice node's view dimensions."""
        self.window.SetSize(int(size[0]), int(size[1]))
        self.logic.ResizeSliceNode(int(size[0]), int(size[1]))

    def fitToBackground(self) -> None:
        """Fit the field of view to the background volume and snap the slice to its voxel planes."""
        width, height = self.window.GetSize()
        self.logic.ResizeSliceNode(width, height)
        self.logic.FitSliceToBackground()
        self.logic.SnapSliceOffsetToIJK()

    def jumpToRAS(self, ras) -> None:
        """Move the slice plane through RAS point ``ras`` (sign-safe for every orientation)."""
        self.sliceNode.JumpSliceByOffsetting(float(ras[0]), float(ras[1]), float(ras[2]))
        self.logic.SnapSliceOffsetToIJK()

    def render(self) -> None:
        """Render the current scene state."""
        self.imageMapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.displayableManagers.RequestRender()
        self.window.Render()

    def close(self) -> None:
        """Release the OpenGL context, unregister the slice logic and remove the nodes this view added."""
        self.displayableManagers.SetMRMLDisplayableNode(None)
        self.imageMapper.SetInputConnection(None)
        self.appLogic.GetSliceLogics().RemoveItem(self.logic)
        self.logic.SetMRMLScene(None)
        _removeNodes(self.scene, self.ownNodeIDs)
        self.window.Finalize()


class OffscreenThreeDView(_OffscreenView):
    """A Slicer 3D view rendered offscreen (view node + 3D displayable managers: segmentation surfaces).

    Args:
        scene: the MRML scene.
        appLogic: the MRML application logic.
        name: view node layout name (inside Slicer, never the name of a real view such as "1").
        size: (width, height) in pixels.
    """

    def __init__(self, scene, appLogic, name: str = THREED_VIEW_NAME, size=(384, 384)):
        existing = _nodeIDs(scene)
        self.scene = scene
        self.renderer = vtk.vtkRenderer()
        self.window = _offscreenWindow(size, 2)
        self.window.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
        _registerDisplayableManagers(factory, appLogic, THREED_DISPLAYABLE_MANAGERS)
        self.displayableManagers = slicer.vtkMRMLDisplayableManagerGroup()
        self.displayableManagers.Initialize(factory, self.renderer)
        self.viewNode = scene.AddNewNodeByClass("vtkMRMLViewNode", name)
        self.viewNode.SetLayoutName(name)
        self.viewNode.SetBoxVisible(False)
        self.viewNode.SetAxisLabelsVisible(False)
        self.viewNode.SetBackgroundColor(0.0, 0.0, 0.0)
        self.viewNode.SetBackgroundColor2(0.0, 0.0, 0.0)
        self.displayableManagers.SetMRMLDisplayableNode(self.viewNode)
        #: nodes this view added (view node, camera): removed by close()
        self.ownNodeIDs = _nodeIDs(scene) - existing

    def resetCamera(self, direction=(-1.0, 1.0, 0.6), viewUp=(0.0, 0.0, 1.0), zoom: float = 1.2,
                    bounds=None) -> None:
        """Look from ``direction`` (RAS, focal point to camera) at ``bounds`` or at all visible props.

        Args:
            direction: view direction, from the focal point towards the camera (RAS).
            viewUp: screen-up direction (RAS).
            zoom: > 1 fills more of the view than VTK's reset (which fits the bounding sphere).
            bounds: (xmin, xmax, ymin, ymax, zmin, zmax) in RAS mm to frame (default: visible props), e.g.
                the same box for several segmentations so that their pictures compare.
        """
        self.render()  # the displayable managers create their actors on render
        camera = self.renderer.GetActiveCamera()
        direction = np.asarray(direction, dtype=float)
        direction /= np.linalg.norm(direction)
        camera.SetFocalPoint(0.0, 0.0, 0.0)
        camera.SetPosition(*direction)
        camera.SetViewUp(*viewUp)
        if bounds is not None:
            self.renderer.ResetCamera(*[float(b) for b in bounds])
        else:
            self.renderer.ResetCamera()
        camera.Zoom(float(zoom))
        self.renderer.ResetCameraClippingRange()

    def render(self) -> None:
        """Render the current scene state."""
        self.displayableManagers.RequestRender()
        self.window.Render()

    def close(self) -> None:
        """Release the OpenGL context and remove the nodes this view added."""
        self.displayableManagers.SetMRMLDisplayableNode(None)
        _removeNodes(self.scene, self.ownNodeIDs)
        self.window.Finalize()


# -----------------------------------------------------------------------------------------------
def addPerceptualColorTable(scene, name: str = "Inferno", colormap: str | None = None):
    """Add (or return the existing) colour table node ``name`` sampled from a matplotlib colour map.

    Slicer ships Viridis/Inferno/... tables as files in its share folder, which plain ``slicer-core`` lacks;
    matplotlib's maps are the same perceptually uniform maps, so they are sampled here (256 colours).

    Args:
        scene: the MRML scene.
        name: node name (also the default matplotlib map name, lower-cased).
        colormap: matplotlib colour-map name (default: ``name.lower()``).
    """
    from matplotlib import colormaps

    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    cmap = colormaps[colormap or name.lower()]
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for i in range(256):
        r, g, b, _ = cmap(i / 255.0)
        node.SetColor(i, f"{name.lower()}{i}", r, g, b, 1.0)
    node.SetAttribute("Category", "Continuous")
    return node


def showHeatMap(volumeNode, colorNode, lowerThreshold: float = 0.15, valueRange=(0.0, 1.0)):
    """Display ``volumeNode`` as a heat map: colour table, fixed window ``valueRange``, low values transparent.

    Values below ``lowerThreshold`` are not drawn (``ApplyThreshold``), so only where the map is high shows
    over the background. Returns the scalar volume display node.
    """
    if volumeNode.GetDisplayNode() is None:
        volumeNode.CreateDefaultDisplayNodes()
    display = volumeNode.GetDisplayNode()
    wasModifying = display.StartModify()
    display.SetAndObserveColorNodeID(colorNode.GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(float(valueRange[0]), float(valueRange[1]))
    display.AutoThresholdOff()
    display.SetLowerThreshold(float(lowerThreshold))
    display.SetUpperThreshold(max(float(valueRange[1]), 1e30))
    display.ApplyThresholdOn()
    display.SetInterpolate(True)
    display.EndModify(wasModifying)
    return display


def addColorLegend(volumeNode, title: str | None = None, size=(0.08, 0.45), position=(0.97, 0.5)):
    """Show a colour legend for ``volumeNode`` in every view where it is displayed (Slicer colour legend node).

    Uses ``vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode`` (as the Colors module does); the legend is
    drawn by ``vtkMRMLColorLegendDisplayableManager`` in slice views that show the volume as a layer.
    Returns the ``vtkMRMLColorLegendDisplayNode``.
    """
    scene = volumeNode.GetScene()
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        # registered by vtkSlicerColorLogic::RegisterNodes in the application; not by vtkMRMLColorLogic
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volumeNode)
    if legend is None:
        message = f"could not add a colour legend to {volumeNode.GetName()}: the volume has no display node"
        raise RuntimeError(message)
    wasModifying = legend.StartModify()
    legend.SetTitleText(title if title is not None else volumeNode.GetName())
    legend.SetOrientation(legend.Vertical)
    legend.SetSize(*size)
    legend.SetPosition(position[0], position[1])
    legend.SetNumberOfLabels(3)
    legend.SetLabelFormat("%.1f")
    legend.EndModify(wasModifying)
    return legend


def showSegmentation(segmentationNode, fillOpacity: float = 0.3, outline: bool = True, surface: bool = False):
    """2D fill (``fillOpacity``) plus outline in slice views; optionally a closed surface in 3D views."""
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    display = segmentationNode.GetDisplayNode()
    wasModifying = display.StartModify()
    display.SetVisibility(True)
    display.SetVisibility2DFill(fillOpacity > 0)
    display.SetOpacity2DFill(float(fillOpacity))
    display.SetVisibility2DOutline(bool(outline))
    display.SetOpacity2DOutline(1.0)
    display.SetVisibility3D(bool(surface))
    display.EndModify(wasModifying)
    if surface:
        segmentationNode.CreateClosedSurfaceRepresentation()
    return display
