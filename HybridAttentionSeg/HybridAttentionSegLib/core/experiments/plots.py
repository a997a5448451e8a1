"""The report's plots (matplotlib, Agg backend, PNG written under a temporary name, then renamed).

* ``dice_vs_gflops.png``: mean test Dice (error bars: the bootstrap 95 % CI over test cases) against GFLOPs per
  window, one point per variant;
* ``dice_vs_layers.png``: mean test Dice against the number of attention layers, self- and cross-attention
  lines both starting at the CNN baseline (0 layers), SegResNet as a dashed line;
* ``per_class_dice.png``: Dice per class and variant (bars; error bars: sd over seeds where there are several).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..inference.io import atomic_path
from .tables import slug

PLOTS = ("dice_vs_gflops.png", "dice_vs_layers.png", "per_class_dice.png")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def _errors(rows):
    low = [r["dice_mean"] - r["dice_ci_low"] for r in rows]
    high = [r["dice_ci_high"] - r["dice_mean"] for r in rows]
    return np.clip([low, high], 0, None)


def write_plots(out_dir, summary: list[dict], results: list[dict], classes, baseline: str) -> list[str]:
    """Write the three plots into ``out_dir``; return their file names."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar([r["gflops"] for r in summary], [r["dice_mean"] for r in summary], yerr=_errors(summary), fmt="o",
                capsize=3)
    for i, r in enumerate(summary):  # staggered: variants of nearly equal cost sit on top of each other
        ax.annotate(r["variant"], (r["gflops"], r["dice_mean"]), textcoords="offset points",
                    xytext=(8 + 30 * (i % 3), 6 - 14 * (i % 2)), fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    ax.set(xlabel="GFLOPs per window", ylabel="test Dice (mean; 95 % CI over cases)", title="Accuracy vs compute")
    ax.grid(alpha=0.3)
    _save(fig, out_dir / PLOTS[0])
    plt.close(fig)
    written.append(PLOTS[0])

    fig, ax = plt.subplots(figsize=(6, 4))
    by_name = {r["variant"]: r for r in summary}
    for kind, marker in (("self", "o-"), ("cross", "s-")):
        points = sorted((r["layers"], r) for r in summary if r["attention"] == kind)
        if baseline in by_name:
            points = [(0, by_name[baseline]), *points]
        if len(points) > (1 if baseline in by_name else 0):
            rows = [p[1] for p in points]
            ax.errorbar([p[0] for p in points], [r["dice_mean"] for r in rows], yerr=_errors(rows), fmt=marker,
                        capsize=3, label=f"{kind}-attention")
    if "segresnet" in by_name:
        ax.axhline(by_name["segresnet"]["dice_mean"], linestyle="--", color="grey", label="SegResNet")
    if baseline in by_name:
        ax.plot([0], [by_name[baseline]["dice_mean"]], "k*", markersize=10, label=f"CNN baseline ({baseline})")
    ax.set(xlabel="attention layers at the bottleneck", ylabel="test Dice (mean; 95 % CI over cases)",
           title="Accuracy vs number of attention layers", xticks=[0, 1, 2, 4])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_dir / PLOTS[1])
    plt.close(fig)
    written.append(PLOTS[1])

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(summary)), 4))
    width = 0.8 / max(1, len(classes))
    x = np.arange(len(summary))
    for i, (_, label) in enumerate(classes):
        means, sds = [], []
        for r in summary:
            values = [float(np.mean(np.asarray(t["test"]["dice"])[:, i])) for t in results
                      if t["variant"] == r["variant"]]
            means.append(r[f"dice_{slug(label)}"])
            sds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
        ax.bar(x + (i - (len(classes) - 1) / 2) * width, means, width, yerr=sds, capsize=2, label=label)
    ax.set_xticks(x, [r["variant"] for r in summary], rotation=30, ha="right")
    ax.set(ylabel="test Dice (mean over seeds; bars: sd)", title="Dice per class", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out_dir / PLOTS[2])
    plt.close(fig)
    written.append(PLOTS[2])
    return written
