"""Python dependencies of the module inside Slicer: check without importing, install only after asking.

* ``torch`` comes from the PyTorch extension (``PyTorchUtils``), which picks the wheel matching the GPU
  driver; an unpinned pip install would pull the wrong (or a multi-GB CUDA) build.
* Everything else in ``Resources/requirements.txt`` goes through ``slicer.packaging.pip_ensure`` (Slicer
  >= 5.11: it asks the user, shows progress and offers a restart), else ``slicer.util.pip_install`` after
  ``confirm``.
* Nothing is installed at import time or in the module constructor: the widget calls :meth:`ensure` from
  Apply.

The checks use package metadata only (``importlib.metadata``), so they never import torch into Slicer's
process; the worker process is the one that imports it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIREMENTS_PATH = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
REQUESTER = "HybridAttentionSeg"


class InstallError(RuntimeError):
    """Dependencies could not be installed (or the user declined)."""


def readRequirements(path: Path = REQUIREMENTS_PATH) -> list[str]:
    """Requirement strings of a requirements file (comments, blanks and pip options skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def requirementName(requirement: str) -> str:
    """The distribution name of a requirement string (``monai[einops]>=1.6`` -> ``monai``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        message = f"invalid requirement {requirement!r}; fix Resources/requirements.txt"
        raise ValueError(message)
    return match.group(1)


def isSatisfied(requirement: str) -> bool:
    """Whether ``requirement`` is installed at an acceptable version (metadata only, nothing is imported)."""
    try:
        installed = importlib.metadata.version(requirementName(requirement))
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging ships with pip and Slicer; without it, presence is all we can check
        return True
    return Requirement(requirement).specifier.contains(installed, prereleases=True)


def missingRequirements(requirements: list[str] | None = None) -> list[str]:
    """The requirements (default: the module's requirements file) that are not satisfied."""
    requirements = readRequirements() if requirements is None else requirements
    return [r for r in requirements if not isSatisfied(r)]


class DependencyInstaller:
    """Checks and installs the module's dependencies inside Slicer (injected into the widget).

    Args:
        confirm: ``confirm(text) -> bool`` asked before a plain pip install (the widget passes a dialog).
        requirements: requirement strings (default: ``Resources/requirements.txt``).
    """

    def __init__(self, confirm: Callable[[str], bool] | None = None, requirements: list[str] | None = None):
        self.confirm = confirm
        self.requirements = readRequirements() if requirements is None else list(requirements)

    def missing(self) -> list[str]:
        """Unsatisfied requirements."""
        return missingRequirements(self.requirements)

    def ensure(self) -> None:
        """Install what is missing, asking first; raise :class:`InstallError` if declined or still missing."""
        missing = self.missing()
        if not missing:
            return
        logger.info("missing Python packages: %s", ", ".join(missing))
        torch = [r for r in missing if requirementName(r).lower() == "torch"]
        if torch:  # first: monai's own torch requirement must not make pip pick a torch build
            self._installTorch(torch[0])
        others = [r for r in missing if r not in torch]
        if others:
            self._installPackages(others)
        still = self.missing()
        if still:
            message = (f"these Python packages are still missing: {', '.join(still)}; "
                       "restart Slicer and click Apply again, or install them from the Python console")
            raise InstallError(message)

    @staticmethod
    def _installTorch(requirement: str) -> None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError as err:
            message = ("HybridAttentionSeg needs the PyTorch extension to install torch: install 'PyTorch' "
                       "from the Extensions Manager, restart Slicer, then click Apply again")
            raise InstallError(message) from err
        specifier = requirement[len(requirementName(requirement)):].strip() or None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                               torchVersionRequirement=specifier)
        if torch is None:
            message = "PyTorch was not installed (cancelled); it is needed to run the models"
            raise InstallError(message)

    def _installPackages(self, requirements: list[str]) -> None:
        import slicer

        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            try:
                # asks the user, shows progress, offers a restart
                packaging.pip_ensure(requirements, requester=REQUESTER)
            except RuntimeError as err:  # the user declined
                message = f"Python packages were not installed ({err}); they are needed to run the models"
                raise InstallError(message) from err
            return
        text = (f"{REQUESTER} needs these Python packages, which will be downloaded and installed into "
                f"Slicer's Python:\n\n{chr(10).join(requirements)}\n\nInstall them now?")
        if self.confirm is None or not self.confirm(text):
            message = "Python packages were not installed (cancelled); they are needed to run the models"
            raise InstallError(message)
        slicer.util.pip_install(list(requirements))  # a list: no shell quoting of ">=" or "[extra]" needed
