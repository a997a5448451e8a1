"""Reports of an evaluation: JSON (everything), a markdown table, and plots (curves and randomisation).

Plots need matplotlib (the ``demo`` extra); without it the JSON and markdown are still written and the
report says the plots were skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def _label(item: dict) -> str:
    return item["method"] + (f" ({item['class']})" if item["class"] else "")


def markdown_table(report: dict) -> str:
    """One row per evaluated map: deletion/insertion AUC per baseline vs random (mean ± sd), randomisation."""
    baselines = report["protocol"]["baselines"]
    head = ["method", "scored on"]
    for kind in ("deletion", "insertion"):
        head += [f"{kind} AUC ({b}) / random" for b in baselines]
    head += ["randomised ρ", "data-randomised ρ", "energy in target / uniform", "pointing / chance", "verdict"]
    lines = [f"**{report['model']}**, {report['data']}; protocol `{report['protocol']['name']}` "
             f"v{report['protocol']['version']} (lower deletion / higher insertion AUC = more faithful).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for item in report["methods"]:
        row = [f"`{item['method']}`", item["scored_on"]]
        for kind in ("deletion", "insertion"):
            for b in baselines:
                v = item[kind][b]
                row.append(f"{v['auc']:.3f} / {v['random_mean']:.3f} ± {v['random_sd']:.3f}")
        loc = item["localisation"]
        rho = item["randomisation"]["full"]
        data = item["randomisation"].get("data_randomisation") or {}
        row += ["not run" if rho is None else f"{rho:.2f}",
                f"{data['spearman']:.2f}" if "spearman" in data else "not run",
                f"{loc['energy_in_target']:.2f} / {loc['energy_in_target_uniform']:.2f}",
                f"{loc['pointing_game']:.2f} / {loc['pointing_game_chance']:.2f}",
                ("✅ " if item["faithful"] else "⚠️ ") + item["verdict"]]
        lines.append("| " + " | ".join(row) + " |")
    data = report.get("data_randomisation") or {}
    if data.get("run"):
        lines += ["", f"Data randomisation: two copies trained {data['steps']} steps from seed {data['seed']}, true vs "
                      f"{data['labels']} labels; held-out Dice {data['heldout_dice_true']} vs "
                      f"{data['heldout_dice_permuted']} (reported, not part of the verdict)."]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, path: Path) -> Path | None:
    """Deletion and insertion curves (one panel per kind and baseline) plus the randomisation cascade."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (demo extra): plots skipped")
        return None
    baselines = report["protocol"]["baselines"]
    fractions = [100 * f for f in report["protocol"]["fractions"]]
    panels = [(kind, b) for kind in ("deletion", "insertion") for b in baselines]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.1 * (len(panels) + 1), 2.9), dpi=110)
    colours = plt.get_cmap("tab10")
    for ax, (kind, b) in zip(axes, panels, strict=False):
        for index, item in enumerate(report["methods"]):
            v = item[kind][b]
            ax.plot(fractions, v["curve"], "-o", ms=2.5, lw=1.2, color=colours(index % 10),
                    label=f"{_label(item)} {v['auc']:.3f}")
            ax.plot(fractions, v["random_curve"], ":", lw=0.9, color=colours(index % 10))
        ax.set_title(f"{kind}, {b} baseline (dotted: random)", fontsize=7.5)
        ax.set_xlabel("% of region voxels, by map rank", fontsize=7)
        ax.set_ylabel("score (own-mask probability)", fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.legend(fontsize=5.5, frameon=False)
    ax = axes[-1]
    for index, item in enumerate(report["methods"]):
        steps = item["randomisation"]["steps"]
        ax.plot([0] + [s["randomised_groups"] for s in steps], [1.0] + [s["spearman"] for s in steps], "-o",
                ms=2.5, lw=1.2, color=colours(index % 10), label=_label(item))
    ax.axhline(report["protocol"]["max_randomised_correlation"], color="grey", lw=0.8, ls="--")
    ax.set_title("cascading randomisation (top-down)", fontsize=7.5)
    ax.set_xlabel("layer groups randomised", fontsize=7)
    ax.set_ylabel("Spearman ρ with trained map", fontsize=7)
    ax.tick_params(labelsize=6.5)
    ax.legend(fontsize=5.5, frameon=False)
    fig.suptitle(f"{report['model']}: faithfulness and sanity ({report['protocol']['name']} protocol)", fontsize=8.5)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir) -> dict[str, str]:
    """Write ``MODEL.explain-eval.json``, ``.md`` and ``.png`` into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['model']}.explain-eval"
    files = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    files["json"].write_text(json.dumps(report, indent=2) + "\n")
    files["markdown"].write_text(markdown_table(report))
    plot = plot_curves(report, out / f"{stem}.png")
    if plot is not None:
        files["plot"] = plot
    return {k: str(v) for k, v in files.items()}
