"""The demo's render child, seen from the parent: start it early, hand it each model as soon as it is written.

A process that has rendered with VTK's EGL (Mesa's LLVM) segfaults when it later imports ``triton``, which CUDA
builds of torch load for ``torch.compile`` and ``torch.export``. The demo segments with torch, so its slice and
3D views are drawn by a child (:mod:`.demo_pictures`) that reads the result files and never imports torch (it
checks). In Slicer the same split holds by design: inference runs in the worker process, rendering in Slicer's
own.

The child starts before the first model runs (its imports and scene set-up overlap the first segmentation) and
draws each model while the parent segments the next, so the pictures cost little more than the last model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: the whole demo's pictures take ~10-20 s; a child that hangs is stopped well after that
RENDER_TIMEOUT_S = 1800


class RenderChild:
    """The running render child. Use as a context manager; :meth:`submit` each run, then :meth:`finish`.

    Leaving the ``with`` block without :meth:`finish` (an error in the parent) kills the child.

    Args:
        input_path: the input volume (background of every picture).
        out_dir: where the PNGs go.
        size: view size in pixels.
    """

    def __init__(self, input_path, out_dir, size: int):
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding HybridAttentionSegLib
        env = dict(os.environ,
                   PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        # stderr to a file, not a pipe: nobody reads it while the child runs, and a full pipe would block it
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "HybridAttentionSegLib.mrml.demo_pictures", str(input_path), str(out_dir),
             str(int(size))], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, encoding="utf-8")
        self._replies: dict[str, dict] = {}
        # replies are read as they come, so the child never blocks on a full stdout pipe
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            if line.strip():
                reply = json.loads(line)
                self._replies[reply["id"]] = reply["pictures"]

    def _failure(self, what: str) -> RuntimeError:
        self._stderr.seek(0)
        tail = "\n".join(self._stderr.read().strip().splitlines()[-5:])
        return RuntimeError(f"rendering the demo pictures failed ({what}): {tail}")

    def submit(self, run) -> None:
        """Hand one written model result (``run.card.id``, ``run.methods``, ``run.files``) to the child."""
        line = json.dumps({"id": run.card.id, "methods": run.methods, "files": run.files})
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._proc.wait()
            raise self._failure(f"the render process ended early, exit code {self._proc.returncode}") from None

    def finish(self, runs) -> None:
        """No more runs: wait for the child and fill each ``run.pictures``.

        Raises:
            RuntimeError: the child failed or hung (its last error lines are in the message).
        """
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self._proc.wait(timeout=RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise self._failure(f"no answer after {RENDER_TIMEOUT_S} s") from None
        self._reader.join()
        if self._proc.returncode != 0:
            raise self._failure(f"exit code {self._proc.returncode}")
        missing = [run.card.id for run in runs if run.card.id not in self._replies]
        if missing:
            raise self._failure(f"no pictures for {', '.join(missing)}")
        for run in runs:
            run.pictures.update(self._replies[run.card.id])

    def __enter__(self) -> RenderChild:
        return self

    def __exit__(self, *exc) -> None:
        if self._proc.poll() is None:  # finish() was not reached: an error in the parent
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        self._stderr.close()
