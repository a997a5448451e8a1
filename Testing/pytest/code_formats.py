"""Model files that carry code (TorchScript, torch.export ``.pt2``, torch.package), made in a child process.

``torch.export`` (and ``torch.compile``) import ``triton`` on CUDA builds of torch, and a process that has
rendered with VTK's EGL (Mesa's LLVM) segfaults at that import. The test process renders (demo, Logic,
rendering tests), so these files are written by a fresh interpreter that never renders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_MAKE = """
import sys, warnings
from pathlib import Path
import torch
from torch.package import PackageExporter

folder = Path(sys.argv[1])
linear = torch.nn.Linear(2, 2)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.jit.save(torch.jit.script(linear), str(folder / "scripted.pt"))
    torch.export.save(torch.export.export(linear, (torch.zeros(1, 2),)), str(folder / "exported.pt2"))
with PackageExporter(str(folder / "package.pt")) as exporter:
    exporter.save_pickle("weights", "sd.pkl", {"a": 1})
"""


def write_code_format_files(folder: Path) -> dict[str, Path]:
    """``{"torchscript", "pt2", "package"}`` -> files in ``folder``, written by a child process."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _MAKE, str(folder)], check=True, timeout=300, capture_output=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1"))
    return {"torchscript": folder / "scripted.pt", "pt2": folder / "exported.pt2", "package": folder / "package.pt"}
