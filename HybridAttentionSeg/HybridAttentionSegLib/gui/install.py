"""Python dependencies of the module inside Slicer: check without importing, install only after asking.

* ``torch`` comes from the PyTorch extension (``PyTorchUtils``), which picks the wheel matching the GPU
  driver; an unpinned pip install would pull the wrong (or a multi-GB CUDA) build.
* Everything else in ``Resources/requirements.txt`` goes through ``slicer.packaging.pip_ensure`` (Slicer
  >= 5.11: it asks the user, shows progress and offers a restart), else ``slicer.util.pip_install`` after
  ``confirm``. ``slicer.packaging`` is a submodule that ``slicer/__init__.py`` does not import: it must be
  imported explicitly (as Slicer's extension template does), or it looks absent.
* Nothing is installed at import time, in the module constructor, or in Slicer's testing mode (the extension
  build machines run ``--testing``; ``pip_ensure`` skips installs there too): the panel calls :meth:`ensure`
  when the user clicks *Install dependencies*.
* Every failure (declined, pip's non-zero exit ``CalledProcessError``, an OS error) becomes an
  :class:`InstallError` whose message says what to do, so the panel shows it instead of a traceback.

The *check* (:meth:`DependencyInstaller.missing`) reads package metadata only (``importlib.metadata``) and
imports nothing. Installing torch does import it into Slicer's process: ``PyTorchUtils.installTorch`` imports
and returns the module right after installing it. Inference itself still runs in the worker process.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

REQUIREMENTS_PATH = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"
REQUESTER = "HybridAttentionSeg"


class InstallError(RuntimeError):
    """Dependencies could not be installed (or the user declined)."""


def readRequirements(path: Path = REQUIREMENTS_PATH) -> list[str]:
    """Requirement strings of a requirements file (comments, blanks and pip options skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
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
        pipInstall: ``pipInstall(requirements)`` that raises ``CalledProcessError`` on failure; given, it is
            used instead of Slicer's ``pip_ensure`` / ``slicer.util.pip_install`` (tests, other hosts).
    """

    def __init__(self, confirm: Callable[[str], bool] | None = None, requirements: list[str] | None = None,
                 pipInstall: Callable[[list[str]], object] | None = None):
        self.confirm = confirm
        self.requirements = readRequirements() if requirements is None else list(requirements)
        self.pipInstall = pipInstall

    def missing(self) -> list[str]:
        """Unsatisfied requirements."""
        return missingRequirements(self.requirements)

    def ensure(self) -> None:
        """Install what is missing, asking first; raise :class:`InstallError` (with the remedy) if that is
        declined, fails, or leaves something missing."""
        missing = self.missing()
        if not missing:
            return
        logger.info("missing Python packages: %s", ", ".join(missing))
        if _testingMode():
            message = (f"Slicer runs in testing mode, which installs nothing; install {', '.join(missing)} "
                       "before running the tests")
            raise InstallError(message)
        torch = [r for r in missing if requirementName(r).lower() == "torch"]
        others = [r for r in missing if r not in torch]
        try:
            if torch:  # first: monai's own torch requirement must not make pip pick a torch build
                self._installTorch(torch[0])
            if others:
                self._installPackages(others)
        except subprocess.CalledProcessError as err:  # pip (or light-the-torch) exited with an error
            message = (f"installing {', '.join(missing)} failed (pip exit code {err.returncode}); see the Python "
                       "console for pip's output, fix the cause (network, proxy, disk space) and click "
                       "Install dependencies again")
            raise InstallError(message) from err
        except OSError as err:
            message = (f"installing {', '.join(missing)} failed ({err}); fix the cause and click Install "
                       "dependencies again")
            raise InstallError(message) from err
        still = self.missing()
        if still:
            message = (f"these Python packages are still missing: {', '.join(still)}; restart Slicer and try "
                       "again, or install them from the Python console (slicer.util.pip_install)")
            raise InstallError(message)

    @staticmethod
    def _installTorch(requirement: str) -> None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError as err:
            message = ("HybridAttentionSeg needs the PyTorch extension to install torch: install 'PyTorch' "
                       "from the Extensions Manager, restart Slicer, then click Install dependencies again")
            raise InstallError(message) from err
        specifier = requirement[len(requirementName(requirement)):].strip() or None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                               torchVersionRequirement=specifier)
        if torch is None:
            message = "PyTorch was not installed (cancelled); it is needed to run the models"
            raise InstallError(message)

    def _installPackages(self, requirements: list[str]) -> None:
        pipEnsure = _pipEnsure() if self.pipInstall is None else None
        if pipEnsure is not None:
            try:
                # asks the user, shows progress, offers a restart; raises CalledProcessError if pip fails
                pipEnsure(requirements, requester=REQUESTER)
            except RuntimeError as err:  # the user declined
                message = f"Python packages were not installed ({err}); they are needed to run the models"
                raise InstallError(message) from err
            return
        text = (f"{REQUESTER} needs these Python packages, which will be downloaded and installed into "
                f"Slicer's Python:\n\n{chr(10).join(requirements)}\n\nInstall them now?")
        if self.confirm is None or not self.confirm(text):
            message = "Python packages were not installed (cancelled); they are needed to run the models"
            raise InstallError(message)
        if self.pipInstall is not None:
            self.pipInstall(list(requirements))
            return
        import slicer

        slicer.util.pip_install(list(requirements))  # a list: no shell quoting of ">=" or "[extra]" needed


def _pipEnsure() -> Callable | None:
    """``slicer.packaging.pip_ensure`` (Slicer >= 5.11), else None."""
    try:
        import slicer.packaging  # a submodule: ``import slicer`` alone does not load it
    except ImportError:
        return None
    return getattr(slicer.packaging, "pip_ensure", None)


def _testingMode() -> bool:
    """True when the Slicer application runs with ``--testing`` (False outside the application)."""
    app = getattr(sys.modules.get("slicer"), "app", None)
    return bool(app is not None and app.testingEnabled())
