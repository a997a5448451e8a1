"""One disk-fault scenario against a real ``hybridseg segment``, run inside a private mount namespace.

``test_full_disk.py`` starts this script under ``unshare --user --map-root-user --mount``, so it may mount a
size-limited or read-only tmpfs on MOUNT without touching the host. Prints one JSON object: the child's exit
code, its last stderr line and everything left on the mount.

Usage: ``python full_disk_scenario.py MOUNT SCENARIO CATALOG MODEL INPUT`` with SCENARIO one of

* ``small``: a 1 MiB tmpfs; the run must be refused before inference (not enough free space);
* ``fill``: a 64 MiB tmpfs that this script fills to the last byte while the run is mid-inference; writing
  the results then fails with ENOSPC and nothing partial may be left;
* ``readonly``: a read-only tmpfs; refused before inference (not writable).
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

from cli_process import Running, cli_env, everything_in

OPTIONS = {"small": "size=1m", "fill": "size=64m", "readonly": "ro,size=1m"}


def fill(folder: Path) -> int:
    """Write zeros into ``folder/filler`` until the file system is full; return the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as handle:
        for chunk in (2**20, 2**12, 1):
            block = bytes(chunk)
            while True:
                try:
                    written += handle.write(block)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    return written


def main(mount: str, scenario: str, catalog: str, model: str, image: str) -> None:
    mount_point = Path(mount)
    subprocess.run(["mount", "-t", "tmpfs", "-o", OPTIONS[scenario], "tmpfs", str(mount_point)], check=True)
    out = mount_point / "out"
    run = Running(["--catalog", catalog, "segment", image, "--model", model, "--out", out],
                  cli_env(Path(catalog).parent / "cache"))
    filled = 0
    try:
        if scenario == "fill":
            run.wait_mid_inference()
            filled = fill(mount_point)
        rc = run.finish(timeout=600)
    finally:
        run.kill()
    lines = [line for line in run.stderr.replace("\r", "\n").splitlines() if line.strip()]
    left = [name for name in everything_in(mount_point) if name != "filler"]
    sys.stdout.write(json.dumps({"rc": rc, "last": lines[-1] if lines else "", "left": left, "filled": filled,
                                 "progress_seen": "segmenting" in run.stderr}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
