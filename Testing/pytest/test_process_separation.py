"""Rendering and torch never share a process (issue 10, item 11).

With PyPI's CUDA build of torch, ``torch.export``/``torch.compile`` import ``triton``, and a process that has
rendered with VTK's EGL (Mesa's LLVM) segfaults at that import. So the Slicer side (Logic, outputs,
rendering, the demo's render step) must never load torch, and the worker and engine must never load VTK.
Each check runs in a fresh interpreter, so what the test process itself imported does not matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(imports: list[str]) -> set[str]:
    code = ("import json, sys\n" + "".join(f"import {name}\n" for name in imports)
            + "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "HybridAttentionSeg"), OMP_NUM_THREADS="1"))
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_the_slicer_side_never_loads_torch():
    loaded = _modules_after(["HybridAttentionSegLib.mrml.logic", "HybridAttentionSegLib.mrml.transaction",
                             "HybridAttentionSegLib.mrml.rendering", "HybridAttentionSegLib.mrml.demo",
                             "HybridAttentionSegLib.mrml.demo_render", "HybridAttentionSegLib.mrml.demo_pictures",
                             "HybridAttentionSegLib.mrml.headless"])
    assert "vtkmodules" in loaded or "vtk" in loaded  # the check is meaningful: VTK is loaded here
    assert not loaded & {"torch", "triton", "monai"}, sorted(loaded & {"torch", "triton", "monai"})


def test_the_worker_and_engine_never_load_vtk():
    loaded = _modules_after(["HybridAttentionSegLib.worker.server", "HybridAttentionSegLib.core.inference.engine"])
    assert "torch" in loaded
    assert not loaded & {"vtk", "vtkmodules", "slicer", "slicer_core"}, sorted(loaded & {"vtk", "slicer"})
