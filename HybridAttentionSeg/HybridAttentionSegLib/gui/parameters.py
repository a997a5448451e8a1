"""The module's typed parameter node (``@parameterNodeWrapper``), and the binding of the panel to it.

Only importable inside Slicer (``slicer.parameterNodeWrapper`` needs Qt). Every field is bound to a widget of
``Resources/UI/HybridAttentionSeg.ui`` named by its ``SlicerParameterName`` property.

Model ids, devices, attention methods and classes come from the worker's catalog at run time, so they cannot
be a static ``Choice``. They are ``Annotated[str, CatalogChoice(...)]`` on a ``ctkComboBox`` whose item
*data* is the value and whose item *text* the label (data ``cuda:0``, text ``GPU 0: NVIDIA ..., 79.1 GiB``).
Slicer's own combo-box connector only handles static choices (and, in recent Slicer, raises for a ``str``
without ``Choice``), so :func:`connectGui` hands those fields explicit :class:`CatalogChoiceConnector`
instances (``connectParametersToGui`` accepts connector instances) and lets Slicer connect all the others;
no global connector registry is touched.
"""

import re
from types import SimpleNamespace
from typing import Annotated

import slicer
from slicer.parameterNodeWrapper import (
    Choice,
    GuiConnector,
    Validator,
    WithinRange,
    findFirstAnnotation,
    parameterNodeWrapper,
    splitAnnotations,
)

from ..mrml.outputs import COLOR_MAPS

PARAMETER_PROPERTY = "SlicerParameterName"


class CatalogChoice(Validator):
    """A string chosen from a list known only at run time; validated by pattern ("" means "default")."""

    def __init__(self, pattern: str = r"[^\r\n]+"):
        self.pattern = re.compile(pattern)

    def __repr__(self) -> str:
        return f"CatalogChoice({self.pattern.pattern!r})"

    def validate(self, value) -> None:
        if value != "" and not self.pattern.fullmatch(str(value)):
            message = f"invalid value {value!r}; pick one from the list"
            raise ValueError(message)


class CatalogChoiceConnector(GuiConnector):
    """Binds a ``CatalogChoice`` string to a combo box: the value is the current item's data (else text)."""

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        return isCatalogChoice(datatype) and hasattr(widget, "findData")

    @staticmethod
    def create(widget, datatype):
        if CatalogChoiceConnector.canRepresent(widget, datatype):
            return CatalogChoiceConnector(widget)
        return None

    def __init__(self, widget):
        super().__init__()
        self._widget = widget

    def _connect(self):
        self._widget.currentIndexChanged.connect(self.changed)

    def _disconnect(self):
        self._widget.currentIndexChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        index = self._widget.currentIndex
        if index < 0:
            return ""
        data = self._widget.itemData(index)
        return str(data) if data is not None else self._widget.itemText(index)

    def write(self, value: str) -> None:
        index = self._widget.findData(value)
        if index >= 0:
            self._widget.currentIndex = index
        # a value not (yet) in the list stays in the node; the widget re-selects it when the list is filled


def isCatalogChoice(datatype) -> bool:
    """Whether a (possibly annotated) field type carries a :class:`CatalogChoice`."""
    return findFirstAnnotation(splitAnnotations(datatype)[1], CatalogChoice) is not None


def connectGui(parameterNode, ui) -> list:
    """Bind every widget of ``ui`` with a ``SlicerParameterName``; returns tags for :func:`disconnectGui`."""
    catalog, others = {}, {}
    for attribute, widget in vars(ui).items():
        name = widget.property(PARAMETER_PROPERTY)
        if not name:
            continue
        if isCatalogChoice(parameterNode.dataType(name)):
            catalog[name] = CatalogChoiceConnector(widget)
        else:
            others[attribute] = widget
    return [parameterNode.connectGui(SimpleNamespace(**others)),
            parameterNode.connectParametersToGui(catalog)]


def fillCombo(combo, choices, parameterNode, parameterName: str) -> None:
    """Replace a ``CatalogChoice`` combo's items (``(text, data)`` pairs); keep the parameter's value if it is
    still offered, else set the parameter to the first item ("" for an empty list)."""
    value = parameterNode.getValue(parameterName) if parameterNode else ""
    wasBlocked = combo.blockSignals(True)
    combo.clear()
    for label, data in choices:
        combo.addItem(label, data)
    combo.setCurrentIndex(max(combo.findData(value), 0))
    combo.blockSignals(wasBlocked)
    current = combo.itemData(combo.currentIndex) if combo.count else ""
    if parameterNode and current != value:
        parameterNode.setValue(parameterName, current or "")


def disconnectGui(parameterNode, tags) -> None:
    """Undo :func:`connectGui`."""
    for tag in tags or []:
        parameterNode.disconnectGui(tag)


@parameterNodeWrapper
class HybridAttentionSegParameterNode:
    """What the module panel shows; the widget reads these, never the widgets, when Apply is clicked.

    inputVolume: volume to segment. outputSegmentation: segmentation to update (none: create a new one).
    modelId: catalog model. device: ``auto``, ``cpu`` or ``cuda:N``. attentionMethod: map to compute and show
    ("" = the model's natural method). targetClass: segment for class-dependent maps ("" = largest structure).
    attentionOpacity / attentionThreshold: foreground opacity; map values below the threshold are transparent.
    colorMap: perceptual colour table. showLegend: colour legend in the slice views. keepProbabilities: keep
    per-class probabilities (for correction).

    Correct and review: correctionSegmentation: the segmentation being corrected (set to each new result).
    correctionSegment: segment ID the threshold slider re-derives. segmentThreshold: its probability
    threshold. clickMarkups: point list whose control points are clicks; clickLabel: what a new point says
    (a segment name or "background"; becomes the point's label). autoApplyClicks: replay the clicks whenever
    a point is placed, moved or deleted.
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    modelId: Annotated[str, CatalogChoice(r"[a-z0-9][a-z0-9._-]*")] = ""
    device: Annotated[str, CatalogChoice(r"auto|cpu|cuda(:[0-9]+)?")] = "auto"
    attentionMethod: Annotated[str, CatalogChoice(r"[a-z][a-z-]*")] = ""
    targetClass: Annotated[str, CatalogChoice()] = ""
    attentionOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    attentionThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    colorMap: Annotated[str, Choice(list(COLOR_MAPS))] = "Inferno"
    showLegend: bool = True
    keepProbabilities: bool = True
    correctionSegmentation: slicer.vtkMRMLSegmentationNode
    correctionSegment: Annotated[str, CatalogChoice()] = ""
    segmentThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    clickMarkups: slicer.vtkMRMLMarkupsFiducialNode
    clickLabel: Annotated[str, CatalogChoice()] = ""
    autoApplyClicks: bool = True
