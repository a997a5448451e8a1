"""A Qt-free Slicer "application" on slicer-core: a scene plus the module logics Slicer would wire up.

Inside the real Slicer application use ``slicer.mrmlScene`` and ``slicer.modules.*.logic()`` instead;
this class exists for the CLI demo renderer and for tests under plain ``slicer-core``.
"""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import slicer  # noqa: E402
import vtk  # noqa: E402

logger = logging.getLogger(__name__)


class HeadlessSlicer:
    """slicer-core scene with colours, volumes, segmentations and subject-hierarchy logics registered."""

    def __init__(self):
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)
        vtk.vtkObject.GlobalWarningDisplayOff()
        self.scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        self.appLogic = slicer.vtkSlicerApplicationLogic()
        self.appLogic.SetMRMLScene(self.scene)
        self.appLogic.GetColorLogic().SetMRMLScene(self.scene)
        self.appLogic.GetColorLogic().AddDefaultColorNodes()
        self.appLogic.SetSliceLogics(vtk.vtkCollection())
        self.appLogic.SetViewLogics(vtk.vtkCollection())
        slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance().SetMRMLApplicationLogic(self.appLogic)
        slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance().SetMRMLApplicationLogic(self.appLogic)
        # vtkMRMLColorLogic, not vtkSlicerColorLogic: the latter needs Slicer's share dir
        self.colorLogic = self._register(slicer.vtkMRMLColorLogic(), "Colors")
        self.volumesLogic = self._register(slicer.vtkSlicerVolumesLogic(), "Volumes")
        self.segmentationsLogic = self._register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
        self.subjectHierarchyLogic = self._register(slicer.vtkSlicerSubjectHierarchyModuleLogic(),
                                                    "SubjectHierarchy")
        self.markupsLogic = self._register(slicer.vtkSlicerMarkupsLogic(), "Markups")
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)
        # many slicer.util helpers read these globals
        slicer.mrmlScene = self.scene
        slicer.modules = SimpleNamespace(
            segmentations=SimpleNamespace(logic=lambda: self.segmentationsLogic),
            volumes=SimpleNamespace(logic=lambda: self.volumesLogic),
            colors=SimpleNamespace(logic=lambda: self.colorLogic),
            subjecthierarchy=SimpleNamespace(logic=lambda: self.subjectHierarchyLogic),
            markups=SimpleNamespace(logic=lambda: self.markupsLogic),
        )

    def _register(self, logic, name):
        logic.SetMRMLApplicationLogic(self.appLogic)  # app logic before the scene
        logic.SetMRMLScene(self.scene)
        self.appLogic.SetModuleLogic(name, logic)
        return logic

    def loadVolume(self, path, name: str | None = None):
        """Load a scalar volume file with Slicer's volumes logic."""
        node = self.volumesLogic.AddArchetypeVolume(str(path), name or os.path.basename(str(path)), 0)
        if node is None:
            message = f"Slicer could not load {path}; check the file format (NIfTI, NRRD, MHA)"
            raise ValueError(message)
        return node
