"""``summary.csv`` of a batch: one row per case (case, input, status, seconds, reason, volume per segment in mL).

Statuses: ``done`` (segmented by this run), ``skipped`` (its complete outputs were already there: volumes from
its ``STEM.json``), ``failed`` (``reason`` says why, on one line). Written atomically (a temporary file renamed
onto ``summary.csv``) when the batch ends; a later run rewrites it, but never a ``summary.csv`` that another
program wrote (its header is checked first).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..errors import UserInputError
from ..inference.io import atomic_path

SUMMARY_NAME = "summary.csv"
COLUMNS = ["case", "input", "status", "seconds", "reason"]
STATUSES = ("done", "skipped", "failed")


def volume_column(segment_name: str) -> str:
    """Column of one segment's volume."""
    return f"{segment_name} (mL)"


def check_replaceable(out_dir) -> None:
    """Refuse to run when ``out_dir/summary.csv`` exists and was not written by ``segment-batch``."""
    path = Path(out_dir) / SUMMARY_NAME
    if not path.exists():
        return
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        header = []
    if header[: len(COLUMNS)] != COLUMNS:
        message = (f"{path} exists and is not a segment-batch summary; move it away or choose another --out "
                   "(segment-batch writes its summary.csv there)")
        raise UserInputError(message)


def row(case, status: str, seconds: float | None = None, reason: str = "", segments=()) -> dict:
    """A summary row; ``segments`` as in ``STEM.json`` (``name``, ``volume_ml``)."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    out = {"case": case.stem, "input": case.input, "status": status,
           "seconds": "" if seconds is None else f"{seconds:.2f}", "reason": " ".join(str(reason).split())}
    out.update({volume_column(s["name"]): s["volume_ml"] for s in segments})
    return out


def write_summary(out_dir, rows: list[dict], segment_names: list[str]) -> Path:
    """Write ``summary.csv`` atomically, segment columns in the card's label order; returns its path."""
    path = Path(out_dir) / SUMMARY_NAME
    columns = COLUMNS + [volume_column(name) for name in segment_names]
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path
