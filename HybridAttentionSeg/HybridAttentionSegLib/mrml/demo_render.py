"""Run the demo's pictures in a fresh process that never imports torch.

A process that has rendered with VTK's EGL (Mesa's LLVM) segfaults when it later imports ``triton``, which CUDA
builds of torch load for ``torch.compile`` and ``torch.export``. The demo segments with torch, so its slice and
3D views are drawn by a child (``python -m HybridAttentionSegLib.mrml.demo JOB``) that reads the result files
and never imports torch (it checks). In Slicer the same split holds by design: inference runs in the worker
process, rendering in Slicer's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: the whole demo's pictures take ~10 s; a child that hangs is stopped well after that
RENDER_TIMEOUT_S = 1800


def render_in_child(runs, input_path, out_dir, size: int) -> None:
    """Render every run's pictures into ``out_dir`` in a child process; fills each ``run.pictures``.

    Raises:
        RuntimeError: the child failed (its last error lines are in the message).
    """
    from ..core.inference.io import atomic_path

    job = Path(out_dir) / ".render-job.json"
    data = {"runs": [{"id": run.card.id, "methods": run.methods, "files": run.files} for run in runs],
            "input": str(input_path), "out": str(out_dir), "size": int(size)}
    with atomic_path(job) as tmp:
        tmp.write_text(json.dumps(data))
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding HybridAttentionSegLib
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, "-m", "HybridAttentionSegLib.mrml.demo", str(job)], env=env,
                              capture_output=True, text=True, timeout=RENDER_TIMEOUT_S)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            message = f"rendering the demo pictures failed (exit code {proc.returncode}): {tail}"
            raise RuntimeError(message)
        for run, pictures in zip(runs, json.loads(job.read_text())["pictures"], strict=True):
            run.pictures.update(pictures)
    finally:
        job.unlink(missing_ok=True)
