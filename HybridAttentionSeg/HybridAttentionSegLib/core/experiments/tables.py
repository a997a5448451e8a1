"""The grid's numbers as rows: one per trial (``results.csv``) and one per variant (``summary.csv``).

Per trial, ``dice_mean`` and ``hd95_mean`` average the test cases and classes. Per variant:

* ``dice_mean`` / ``dice_sd``: mean and sample standard deviation of the trials' ``dice_mean`` over seeds;
* ``dice_ci_low`` / ``dice_ci_high``: percentile bootstrap 95 % CI over test cases of each case's Dice
  (classes and seeds averaged);
* ``d_dice`` / ``d_dice_ci_*`` / ``p_dice``: the paired comparison with the baseline on the same test cases
  (per-case difference of those averages; bootstrap CI and Wilcoxon p); the same for HD95 and, with a second
  test dataset, for its Dice (``test2_*``).
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import mean_ci, mean_sd, paired_comparison

RESULT_COLUMNS = ["variant", "seed", "dice_mean", "hd95_mean", "params", "gflops", "train_s", "latency_s",
                  "peak_mem_mb"]


def slug(name: str) -> str:
    """A class name as a column suffix (``Gray matter`` -> ``gray_matter``)."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _case_means(block: dict) -> dict[str, tuple[float, float]]:
    """case name -> (Dice, HD95) averaged over classes."""
    return {case: (float(np.mean(d)), float(np.mean(h)))
            for case, d, h in zip(block["cases"], block["dice"], block["hd95"], strict=True)}


def result_rows(results: list[dict], classes) -> list[dict]:
    """One row per trial, in the given order."""
    rows = []
    for r in results:
        dice, hd95 = np.asarray(r["test"]["dice"]), np.asarray(r["test"]["hd95"])
        row = {"variant": r["variant"], "seed": r["seed"], "dice_mean": round(float(dice.mean()), 4),
               "hd95_mean": round(float(hd95.mean()), 3), "params": r["params"], "gflops": r["gflops"],
               "train_s": r["train_s"], "latency_s": r["latency_s"], "peak_mem_mb": r["peak_mem_mb"],
               "peak_gpu_mb": r.get("peak_gpu_mb", ""), "attention": r["attention"], "layers": r["layers"]}
        for i, (_, name) in enumerate(classes):
            row[f"dice_{slug(name)}"] = round(float(dice[:, i].mean()), 4)
            row[f"hd95_{slug(name)}"] = round(float(hd95[:, i].mean()), 3)
        if r.get("validation"):
            row["val_dice_mean"] = round(float(np.mean(r["validation"]["dice"])), 4)
        if r.get("test2"):
            row["test2_dice_mean"] = round(float(np.mean(r["test2"]["dice"])), 4)
            row["test2_hd95_mean"] = round(float(np.mean(r["test2"]["hd95"])), 3)
        row.update(final_loss=r.get("final_loss", ""), device=r.get("device", ""), host=r.get("host", ""),
                   threads=r.get("threads", ""))
        rows.append(row)
    return rows


def _per_case(trials: list[dict], block: str, metric: int) -> dict[str, float]:
    """case -> the metric (0 Dice, 1 HD95) averaged over classes and over the trials (seeds)."""
    values: dict[str, list[float]] = {}
    for trial in trials:
        for case, pair in _case_means(trial[block]).items():
            values.setdefault(case, []).append(pair[metric])
    return {case: float(np.mean(v)) for case, v in values.items()}


def _paired(variant: list[dict], baseline: list[dict], block: str, metric: int) -> dict | None:
    a, b = _per_case(variant, block, metric), _per_case(baseline, block, metric)
    cases = sorted(set(a) & set(b))
    if not cases:
        return None
    return paired_comparison([a[c] for c in cases], [b[c] for c in cases])


def _put_stats(row: dict, prefix: str, trials: list[dict], block: str, metric: int, digits: int) -> None:
    per_trial = [float(np.mean(t[block]["dice" if metric == 0 else "hd95"])) for t in trials]
    mean, sd = mean_sd(per_trial)
    _, ci = mean_ci(list(_per_case(trials, block, metric).values()))
    row[f"{prefix}_mean"] = round(mean, digits)
    row[f"{prefix}_sd"] = "" if sd is None else round(sd, digits)
    row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = round(ci[0], digits), round(ci[1], digits)


def _put_paired(row: dict, prefix: str, comparison: dict | None, digits: int) -> None:
    if comparison is None:
        return
    row[f"d_{prefix}"] = round(comparison["difference"], digits)
    row[f"d_{prefix}_ci_low"] = round(comparison["ci"][0], digits)
    row[f"d_{prefix}_ci_high"] = round(comparison["ci"][1], digits)
    row[f"p_{prefix}"] = comparison["p_wilcoxon"]


def summary_rows(results: list[dict], classes, order: list[str], baseline: str) -> list[dict]:
    """One row per variant (in ``order``) with seed statistics, case CIs and the paired comparison."""
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    base = by_variant.get(baseline)
    rows = []
    for name in [n for n in order if n in by_variant]:
        trials = by_variant[name]
        first = trials[0]
        row = {"variant": name, "architecture": first["architecture"], "attention": first["attention"],
               "layers": first["layers"], "seeds": len(trials)}
        _put_stats(row, "dice", trials, "test", 0, 4)
        _put_stats(row, "hd95", trials, "test", 1, 3)
        for i, (_, label) in enumerate(classes):
            row[f"dice_{slug(label)}"] = round(float(np.mean([np.mean(np.asarray(t["test"]["dice"])[:, i])
                                                               for t in trials])), 4)
            row[f"hd95_{slug(label)}"] = round(float(np.mean([np.mean(np.asarray(t["test"]["hd95"])[:, i])
                                                               for t in trials])), 3)
        row.update(params=first["params"], gflops=first["gflops"],
                   train_s=round(float(np.mean([t["train_s"] for t in trials])), 1),
                   latency_s=round(float(np.mean([t["latency_s"] for t in trials])), 3),
                   peak_mem_mb=round(max(t["peak_mem_mb"] for t in trials), 1))
        gpu = [t["peak_gpu_mb"] for t in trials if t.get("peak_gpu_mb") is not None]
        row["peak_gpu_mb"] = round(max(gpu), 1) if gpu else ""
        if base is not None and name != baseline:
            _put_paired(row, "dice", _paired(trials, base, "test", 0), 4)
            _put_paired(row, "hd95", _paired(trials, base, "test", 1), 3)
        if all(t.get("test2") for t in trials):
            _put_stats(row, "test2_dice", trials, "test2", 0, 4)
            if base is not None and name != baseline and all(t.get("test2") for t in base):
                _put_paired(row, "test2_dice", _paired(trials, base, "test2", 0), 4)
        rows.append(row)
    return rows


def columns(rows: list[dict], first: list[str] | None = None) -> list[str]:
    """Every key of ``rows``, ``first`` leading, then in order of appearance."""
    names = list(first or [])
    for row in rows:
        names += [k for k in row if k not in names]
    return names


def fmt(value, digits: int = 3) -> str:
    """A number for a Markdown table ('–' when missing)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
