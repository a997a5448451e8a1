#!/usr/bin/env python3
"""Regenerate the golden files in ``Testing/golden/data/`` with the MONAI releases that wrote each upstream
checkpoint. Run by developers (not by CI): it installs old MONAI releases from PyPI into throw-away virtual
environments and takes several minutes on a CPU.

    python3.11 Testing/golden/make_golden.py [--work /tmp/hybridseg-golden] [--cards swin-unetr-btcv ...]

For each card it creates ``<work>/monai-<version>`` (torch 2.13.0, the CPU wheel, plus numpy<2, einops,
nibabel 5.2.1 and that MONAI release; nothing in MONAI is patched), runs ``upstream_run.py`` there and copies
the small outputs (JSON manifests, compressed golden arrays) into ``data/``. The checkpoints it writes stay in
``<work>`` (they are recreated bit-identically by the tests from the recorded recipe; their SHA-256 is in the
JSON). Which release and why: README.md beside this file.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: card -> MONAI release on PyPI (see README.md for how each was chosen)
RELEASES = {"swin-unetr-btcv": "1.4.0", "unetr-btcv": "0.7.0", "swin-unetr-brats21": "0.9.0"}
#: the same for every environment: torch 2.13.0 resolves to the CPU wheel; MONAI 1.4 needs numpy < 2
COMMON = ["torch==2.13.0", "numpy<2", "einops", "nibabel==5.2.1"]

log = logging.getLogger("make_golden")


def ensure_venv(work: Path, release: str) -> Path:
    """``<work>/monai-<release>/bin/python``, created and populated on first use."""
    venv = work / f"monai-{release}"
    python = venv / "bin" / "python"
    if not python.exists():
        log.info("creating %s", venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *COMMON, f"monai=={release}"], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/hybridseg-golden"))
    parser.add_argument("--cards", nargs="*", default=list(RELEASES), choices=list(RELEASES))
    parser.add_argument("--out", type=Path, default=HERE / "data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.version_info[:2] != (3, 11):  # MONAI 0.7-0.9 import distutils, which Python 3.12 removed
        log.error("run this with Python 3.11 (found %s): the old MONAI releases need it", sys.version.split()[0])
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    for card in args.cards:
        python = ensure_venv(args.work, RELEASES[card])
        run_dir = args.work / "runs" / card
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info("%s: running the upstream pipeline with MONAI %s", card, RELEASES[card])
        subprocess.run([str(python), str(HERE / "upstream_run.py"), card, str(run_dir)], check=True, env=env)
        for name in (f"manifest-{card}.json", f"golden-{card}.json", f"golden-{card}.npz"):
            shutil.copyfile(run_dir / name, args.out / name)
        log.info("%s: wrote %s", card, ", ".join(sorted(p.name for p in args.out.glob(f"*{card}*"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
