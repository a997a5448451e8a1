"""``hybridseg`` as a real subprocess: its environment, waiting until it is mid-inference, what it left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PROGRESS = re.compile(r"segmenting \([^)]*\):\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def cli_env(cache: Path, **extra) -> dict:
    """Environment of a child ``hybridseg``: the source tree importable, its own cache, one thread."""
    env = dict(os.environ)
    env.pop("HYBRIDSEG_CATALOG", None)
    env.update(HYBRIDSEG_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "HybridAttentionSeg"),
                                                        env.get("PYTHONPATH")])))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def hybridseg(*args) -> list[str]:
    """The command line of ``hybridseg ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "HybridAttentionSegLib.cli", *map(str, args)]


def run(args, env, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(hybridseg(*args), env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


class Running:
    """A ``hybridseg`` child whose stderr is collected by a thread (tqdm writes ``\\r`` lines)."""

    def __init__(self, args, env, cwd=None):
        self.proc = subprocess.Popen(hybridseg(*args), env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := self.proc.stderr.read(1):
            self.stderr += chunk

    def wait_mid_inference(self, timeout: float = 240.0) -> tuple[int, int]:
        """Block until the progress bar shows 0 < done < total windows; return (done, total)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for done, total in _PROGRESS.findall(self.stderr):
                if 0 < int(done) < int(total):
                    return int(done), int(total)
            if self.proc.poll() is not None:
                raise AssertionError(f"hybridseg ended (rc {self.proc.returncode}) before mid-inference: "
                                     f"{self.stderr[-2000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no inference progress within {timeout} s: {self.stderr[-2000:]}")

    def finish(self, timeout: float = 120.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self.proc.stdout.close()
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()


def everything_in(folder: Path) -> list[str]:
    """Every entry below ``folder``, hidden ones included (relative paths), or [] if it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error_line(stderr: str) -> str:
    """The last stderr line, checked to be a one-line ``hybridseg: error:``."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and lines[-1].startswith("hybridseg: error:"), stderr[-2000:]
    return lines[-1]
