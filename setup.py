"""Build hook of the wheel: the bundled model data travel as package data.

Everything else is declared in pyproject.toml. The model cards, their safetensors weights, the card schema and
the sample volume live in ``HybridAttentionSeg/Resources/Models``: the Slicer module's own resource folder,
installed by CMake next to the module and found there by ``core/paths.py`` when the module runs from the source
tree or a Slicer install. That folder is not inside the ``HybridAttentionSegLib`` package, so setuptools'
``package-data`` cannot reach it, and moving it would change the module's layout. The wheel therefore gets a copy
at ``HybridAttentionSegLib/_resources/Models`` (a build step here, not a second copy in git);
``core/paths.py`` looks there first. MANIFEST.in puts the same files into the sdist, so a wheel built from the
sdist has them too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MODELS_SOURCE = Path("HybridAttentionSeg") / "Resources" / "Models"
#: where the copy goes inside the package (``core/paths.py`` reads the same name)
MODELS_TARGET = Path("HybridAttentionSegLib") / "_resources" / "Models"
#: what a model folder holds: cards and the schema (JSON), weights (safetensors), sample volumes (NRRD)
MODEL_PATTERNS = ("*.json", "*.safetensors", "*.nrrd")


class BuildPyWithModels(build_py):
    """``build_py`` plus a copy of the bundled model folder into the built package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the source tree's folder
            return
        source = ROOT / MODELS_SOURCE
        if not source.is_dir():
            raise SystemExit(f"{source} is missing: the wheel would ship without its models")
        target = Path(self.build_lib) / MODELS_TARGET
        target.mkdir(parents=True, exist_ok=True)
        for pattern in MODEL_PATTERNS:
            for path in sorted(source.glob(pattern)):
                shutil.copyfile(path, target / path.name)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        source = ROOT / MODELS_SOURCE
        copied = [Path(self.build_lib) / MODELS_TARGET / path.name
                  for pattern in MODEL_PATTERNS for path in source.glob(pattern)]
        return outputs + [str(path) for path in copied]


setup(cmdclass={"build_py": BuildPyWithModels})
