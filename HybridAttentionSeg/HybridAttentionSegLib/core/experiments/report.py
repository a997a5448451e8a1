"""The run's outputs: ``results.csv``, ``summary.csv``, ``report.md`` (tables, plots, machine) and the plots.

Every file is written under a temporary name in ``DIR`` and renamed into place. ``report.md`` keeps its main
table between ``<!-- summary-table -->`` markers, so the README's copy can be regenerated from it.
"""

from __future__ import annotations

import csv
import io
import os
import platform
from pathlib import Path

from ..inference.io import atomic_path
from .plots import write_plots
from .tables import RESULT_COLUMNS, columns, fmt, result_rows, slug, summary_rows

SUMMARY_MARK = "<!-- summary-table -->"


def machine() -> dict:
    """This machine (the driver's): CPU model, cores, memory, GPU, versions."""
    import monai
    import torch

    from ..inference.fastpath import cpu_name

    cpu = cpu_name()
    memory = ""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = f"{total / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": memory, "gpu": gpu, "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "ray": ray_version, "host": platform.node()}


def _csv_text(rows: list[dict], first: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows, first), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _ci(row: dict, prefix: str, digits: int) -> str:
    sd = row.get(f"{prefix}_sd")
    spread = f" ± {fmt(sd, digits)}" if sd not in ("", None) else ""
    return (f"{fmt(row[f'{prefix}_mean'], digits)}{spread} "
            f"[{fmt(row[f'{prefix}_ci_low'], digits)}, {fmt(row[f'{prefix}_ci_high'], digits)}]")


def _delta(row: dict, prefix: str, digits: int) -> str:
    if f"d_{prefix}" not in row:
        return "–"
    return (f"{row[f'd_{prefix}']:+.{digits}f} [{row[f'd_{prefix}_ci_low']:+.{digits}f}, "
            f"{row[f'd_{prefix}_ci_high']:+.{digits}f}], p {fmt(row[f'p_{prefix}'], 3)}")


def summary_table(summary: list[dict], baseline: str) -> str:
    """The main Markdown table: accuracy with CIs, the paired difference with the baseline, compute."""
    lines = [f"| variant | attention layers | test Dice mean ± sd [95 % CI] | Δ Dice vs `{baseline}` [95 % CI], p | "
             "HD95 mm mean ± sd [95 % CI] | params (M) | GFLOPs / window | train s | latency s / volume | "
             "peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        layers = "0" if r["attention"] == "none" else f"{r['layers']} {r['attention']}"
        memory = fmt(r["peak_mem_mb"], 0) + (f" (GPU {fmt(r['peak_gpu_mb'], 0)})" if r.get("peak_gpu_mb") else "")
        lines.append(f"| `{r['variant']}` | {layers} | {_ci(r, 'dice', 3)} | {_delta(r, 'dice', 3)} | "
                     f"{_ci(r, 'hd95', 2)} | {r['params'] / 1e6:.2f} | {fmt(r['gflops'], 2)} | "
                     f"{fmt(r['train_s'], 0)} | {fmt(r['latency_s'], 2)} | {memory} |")
    return "\n".join(lines)


def _class_table(summary: list[dict], classes) -> str:
    head = " | ".join(f"Dice {name} | HD95 {name} mm" for _, name in classes)
    lines = [f"| variant | {head} |", "|---|" + "---|" * (2 * len(classes))]
    for r in summary:
        cells = " | ".join(f"{fmt(r[f'dice_{slug(n)}'], 3)} | {fmt(r[f'hd95_{slug(n)}'], 2)}" for _, n in classes)
        lines.append(f"| `{r['variant']}` | {cells} |")
    return "\n".join(lines)


def _comparison_lines(summary: list[dict], baseline: str) -> list[str]:
    """The three experiments read off the table (numbers only; no verdict beyond the CIs)."""
    rows = {r["variant"]: r for r in summary}
    out = []

    def say(name: str) -> str:
        return f"`{name}` {_delta(rows[name], 'dice', 3)}" if name in rows else ""

    selfs = [n for n in ("self-1", "self-2", "self-4") if n in rows]
    if baseline in rows and selfs:
        out.append("* Experiment 1, **CNN vs CNN + self-attention** (Δ Dice vs the CNN baseline): "
                   + "; ".join(map(say, selfs)))
    pairs = [(f"self-{k}", f"cross-{k}") for k in (1, 2) if f"self-{k}" in rows and f"cross-{k}" in rows]
    if pairs:
        text = "; ".join(f"{k + 1} layer(s): self {rows[s]['dice_mean']:.3f}, cross {rows[c]['dice_mean']:.3f}"
                         for k, (s, c) in enumerate(pairs))
        out.append(f"* Experiment 2, **self- vs cross-attention** (mean test Dice): {text}")
    layered = [r for r in summary if r["attention"] != "none" or r["variant"] == baseline]
    if len(layered) > 1:
        text = "; ".join(f"`{r['variant']}` {r['dice_mean']:.3f} at {r['gflops']:.2f} GFLOPs, {r['train_s']:.0f} s "
                         f"training, {r['latency_s']:.2f} s/volume" for r in layered)
        out.append(f"* Experiment 3, **number of attention layers vs accuracy and compute**: {text}")
    return out


def write_outputs(out_dir, results: list[dict], info: dict) -> list[str]:
    """Write every output of a run into ``out_dir``; return the file names.

    ``info``: ``classes``, ``order`` (variant names), ``baseline``, ``data`` (description), ``test_data``
    (description or None), ``settings`` (dict), ``quick_note``, ``command``, ``machine``, ``wall_s``,
    ``missing`` (trial names without a result).
    """
    out_dir = Path(out_dir)
    classes, baseline = info["classes"], info["baseline"]
    order = {name: i for i, name in enumerate(info["order"])}
    results = sorted(results, key=lambda r: (order.get(r["variant"], len(order)), r["seed"]))
    rows = result_rows(results, classes)
    summary = summary_rows(results, classes, info["order"], baseline)
    _write_text(out_dir / "results.csv", _csv_text(rows, RESULT_COLUMNS))
    _write_text(out_dir / "summary.csv", _csv_text(summary, ["variant", "seeds", "dice_mean", "dice_sd"]))
    plots = write_plots(out_dir, summary, results, classes, baseline) if summary else []
    m = info["machine"]
    lines = [
        "# The review's experiments: CNN vs self- vs cross-attention (hybridseg experiment review)", "",
        f"Command: `{info['command']}`", "",
        f"Machine (driver): {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, GPU: {m['gpu']}; {m['os']}; "
        f"Python {m['python']}, torch {m['torch']}, MONAI {m['monai']}, Ray {m['ray']}. Trials ran on: "
        f"{', '.join(sorted({r.get('device', '?') for r in results})) or '–'}.", "",
        f"Data: {info['data']}.", "",
        f"Settings: {info['settings']}.", "",
    ]
    if info.get("quick_note"):
        lines += [f"**Quick run**: {info['quick_note']}", ""]
    if info.get("wall_s") is not None:
        lines += [f"Wall time of this invocation: {info['wall_s']:.0f} s.", ""]
    if info.get("missing"):
        lines += [f"**Missing trials** (failed or not run; rerun the command to retry): {', '.join(info['missing'])}",
                  ""]
    seeds = ", ".join(f"{r['variant']} {r['seeds']}" for r in summary)
    lines += [
        "## Summary", "",
        f"Test cases: {len(results[0]['test']['cases']) if results else 0}; seeds per variant: {seeds}. "
        "Dice and HD95 are MONAI's (per class, then averaged over classes); ± is the sd over seeds; [95 % CI] is "
        "a percentile bootstrap over test cases (per-case values averaged over seeds); Δ is the paired difference "
        "with the baseline on the same test cases (bootstrap 95 % CI, two-sided Wilcoxon signed-rank p). GFLOPs: "
        "one forward pass of one window (torch.utils.flop_counter, multiply-add = 2 FLOPs). Latency: "
        "sliding-window inference of one test volume. "
        "Peak RSS: the trial's own worker process.", "",
        SUMMARY_MARK, summary_table(summary, baseline), SUMMARY_MARK, "",
        "## The three experiments", "", *_comparison_lines(summary, baseline), "",
        "## Per class", "", _class_table(summary, classes), "",
    ]
    if any("test2_dice_mean" in r for r in summary):
        lines += ["## Generalisation: second test dataset", "", f"Data: {info['test_data']}.", "",
                  f"| variant | Dice mean ± sd [95 % CI] | Δ Dice vs `{baseline}` [95 % CI], p |", "|---|---|---|"]
        lines += [f"| `{r['variant']}` | {_ci(r, 'test2_dice', 3)} | {_delta(r, 'test2_dice', 3)} |"
                  for r in summary if "test2_dice_mean" in r]
        lines.append("")
    if plots:
        lines += ["## Plots", "", *[f"![{name[:-4]}]({name})" for name in plots], ""]
    lines += ["## Trials", "", "Every trial: `results.csv`; per-case numbers: `trials/*.json`.", ""]
    _write_text(out_dir / "report.md", "\n".join(lines))
    return ["results.csv", "summary.csv", "report.md", *plots]
