"""One evaluation run: every method of a model on one :class:`~.data.EvalCase` under one protocol.

Order of work (every model forward goes through the engine, torch fp32, no fast path, so the scores do not
depend on a machine's calibration):

1. segment the unperturbed case: the segments present in the region and their masks (what is scored);
2. random rankings: deletion/insertion curves per baseline and seed (shared by every method and class, since
   one forward gives every segment's score);
3. per method (class maps: per class), the map on the case, its curves, AUCs, localisation, and the
   cascading-randomisation curve; then the verdict (see :func:`verdict`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ...inference.engine import Segmenter, build_model
from ...inference.volume import Volume
from .. import WINDOW_EXPLAINERS
from .data import EvalCase, evaluation_card
from .localisation import localisation, mean_localisation
from .perturbation import Perturber, SegmentScorer, auc, baseline_image, order_by_map, random_map
from .protocol import MAX_RANDOMISED_CORRELATION, MIN_AUC_MARGIN, NOT_EXPLANATIONS, Protocol
from .sanity import cascade_groups, forward_order, randomised_state, spearman

logger = logging.getLogger(__name__)


def explanation_methods(card) -> list[str]:
    """The methods of a card's architecture that claim to explain a decision (``uncertainty`` does not)."""
    return [m for m in card.attention_methods if m not in NOT_EXPLANATIONS]


def _channel(card, value: int) -> int:
    if card.activation == "sigmoid":
        for region in card.output_regions:
            if int(region["label"]) == value:
                return int(region["channel"])
    return int(value)


def verdict(item: dict) -> tuple[bool, list[str]]:
    """Pass/fail of one evaluated map, with the reasons it failed.

    Passes when, averaged over the baselines, its deletion AUC is at least ``MIN_AUC_MARGIN`` below the random
    rankings' mean, its insertion AUC at least ``MIN_AUC_MARGIN`` above it, and its Spearman correlation with
    the map of the fully randomised model is below ``MAX_RANDOMISED_CORRELATION``.
    """
    reasons = []
    if item["margin"]["deletion"] < MIN_AUC_MARGIN:
        reasons.append(f"deletion AUC beats random by {item['margin']['deletion']:+.3f} (< {MIN_AUC_MARGIN})")
    if item["margin"]["insertion"] < MIN_AUC_MARGIN:
        reasons.append(f"insertion AUC beats random by {item['margin']['insertion']:+.3f} (< {MIN_AUC_MARGIN})")
    full = item["randomisation"]["full"]
    if full is None or full >= MAX_RANDOMISED_CORRELATION:
        reasons.append(f"rank correlation after full randomisation {full} (>= {MAX_RANDOMISED_CORRELATION})")
    return not reasons, reasons


class Evaluation:
    """Runs the protocol for one card and case. ``model``: trained weights already built (else loaded)."""

    def __init__(self, card, case: EvalCase, protocol: Protocol, model: torch.nn.Module | None = None):
        self.card = card
        self.case = case
        self.protocol = protocol
        self.eval_card = evaluation_card(card)
        self.segmenter = Segmenter(self.eval_card, device="cpu", model=model, fast_path="off")
        self.forwards = 0
        self.timings: dict[str, float] = {}

    # model calls --------------------------------------------------------------------------------------
    def predict(self, data: np.ndarray) -> np.ndarray:
        self.forwards += 1
        volume = Volume(data, self.case.volume.affine, name=self.case.volume.name)
        return self.segmenter.run(volume, keep_probabilities=True).probabilities

    def map_of(self, method: str, target: int | None, segmenter: Segmenter | None = None) -> np.ndarray:
        segmenter = segmenter or self.segmenter
        return segmenter.run(self.case.volume, attention=[method], target_class=target,
                             keep_probabilities=False).attention[method]

    # the run ----------------------------------------------------------------------------------------
    def run(self, methods: list[str], classes: list[int] | None = None, sanity: bool = True) -> dict:
        """Evaluate ``methods``; ``sanity=False`` skips the randomisation cascade (the staleness test)."""
        t0 = time.perf_counter()
        case, protocol = self.case, self.protocol
        labelmap = self.segmenter.run(case.volume, keep_probabilities=False).labelmap
        self.forwards += 1
        segments = [lab for lab in self.card.labels if ((labelmap == lab["value"]) & case.region).any()]
        if not segments:
            message = "the model segments nothing inside the evaluation region; nothing can be scored"
            raise ValueError(message)
        values = [int(lab["value"]) for lab in segments]
        masks = [(labelmap == v) & case.region for v in values]
        scorer = SegmentScorer([_channel(self.card, v) for v in values], masks)
        perturbers = {b: Perturber(self.predict, scorer, case.volume.data, case.region, protocol.fractions,
                                   baseline_image(case.volume.data, case.region, b, protocol.blur_sigma_vox))
                      for b in protocol.baselines}
        random_curves = self._random_curves(perturbers)
        self.timings["random_s"] = round(time.perf_counter() - t0, 1)
        classes = [c for c in (classes or values) if c in values]
        groups = self._groups() if sanity else []
        items = []
        for method in methods:
            t1 = time.perf_counter()
            targets = classes if WINDOW_EXPLAINERS[method].needs_class else [None]
            for target in targets:
                logger.info("evaluating %s%s", method, f" ({self.card.label_name(target)})" if target else "")
                items.append(self._method(method, target, values, masks, perturbers, random_curves, groups,
                                          labelmap))
            self.timings[f"{method}_s"] = round(time.perf_counter() - t1, 1)
        extra = {}
        if sanity and protocol.data_randomisation_steps:
            from .data_randomisation import data_randomisation

            t2 = time.perf_counter()
            extra["data_randomisation"] = data_randomisation(self, items, protocol.data_randomisation_steps)
            self.timings["data_randomisation_s"] = round(time.perf_counter() - t2, 1)
        self.timings["total_s"] = round(time.perf_counter() - t0, 1)
        return {
            **extra,
            "segments": [{"value": v, "name": self.card.label_name(v), "voxels": int(m.sum())}
                         for v, m in zip(values, masks, strict=True)],
            "random": {b: {kind: np.asarray(c).round(4).tolist() for kind, c in curves.items()}
                       for b, curves in random_curves.items()},
            "methods": items,
            "forwards": self.forwards,
            "timings": dict(self.timings),
        }

    def _random_curves(self, perturbers) -> dict:
        """{baseline: {"deletion": (seeds, fractions, segments), "insertion": ...}}."""
        out = {b: {"deletion": [], "insertion": []} for b in perturbers}
        for seed in self.protocol.random_seeds:
            order = order_by_map(random_map(self.case.volume.shape, seed, self.protocol.random_smoothing_vox),
                                 self.case.region, tiebreak_seed=seed)
            for b, perturber in perturbers.items():
                out[b]["deletion"].append(perturber.deletion(order))
                out[b]["insertion"].append(perturber.insertion(order))
        return {b: {k: np.stack(v) for k, v in curves.items()} for b, curves in out.items()}

    def _groups(self) -> list[list[str]]:
        model = self.segmenter.model
        example = torch.zeros((1, self.card.in_channels, *self.card.roi_size))
        return cascade_groups(forward_order(model, example), self.protocol.cascade_steps)

    def _method(self, method, target, values, masks, perturbers, random_curves, groups, labelmap) -> dict:
        fractions = self.protocol.fractions
        values_map = self.map_of(method, target)
        columns = [values.index(target)] if target is not None else list(range(len(values)))
        order = order_by_map(values_map, self.case.region)
        item = {"method": method, "class": self.card.label_name(target) if target is not None else None,
                "scored_on": (self.card.label_name(target) if target is not None
                              else "mean of every segment's score"),
                "deletion": {}, "insertion": {}}
        for kind in ("deletion", "insertion"):
            for b, perturber in perturbers.items():
                curve = (perturber.deletion(order) if kind == "deletion" else perturber.insertion(order))
                score = curve[:, columns].mean(axis=1)
                randoms = random_curves[b][kind][:, :, columns].mean(axis=2)  # (seeds, fractions)
                random_aucs = [auc(r, fractions) for r in randoms]
                item[kind][b] = {"auc": round(auc(score, fractions), 4),
                                 "random_mean": round(float(np.mean(random_aucs)), 4),
                                 "random_sd": round(float(np.std(random_aucs, ddof=1)) if len(random_aucs) > 1
                                                    else 0.0, 4),
                                 "curve": score.round(4).tolist(),
                                 "random_curve": randoms.mean(axis=0).round(4).tolist()}
        item["margin"] = {
            "deletion": round(float(np.mean([v["random_mean"] - v["auc"] for v in item["deletion"].values()])), 4),
            "insertion": round(float(np.mean([v["auc"] - v["random_mean"] for v in item["insertion"].values()])),
                               4)}
        reference = self.case.reference if self.case.reference is not None else labelmap
        targets = [target] if target is not None else values
        item["localisation"] = mean_localisation(
            [localisation(values_map, reference == t, self.case.region, self.protocol.dilation_vox) for t in targets])
        item["localisation"]["reference"] = "reference labels" if self.case.reference is not None else "prediction"
        item["randomisation"] = (self._cascade(method, target, values_map, groups) if groups
                                 else {"steps": [], "full": None})
        item["randomisation"]["data_randomisation"] = {"run": False, "reason": f"protocol {self.protocol.name}"}
        item["faithful"], item["reasons"] = verdict(item)
        item["verdict"] = "faithful on validation" if item["faithful"] else "not faithful on validation"
        return item

    def _cascade(self, method, target, trained_map, groups) -> dict:
        trained = self.segmenter.model
        torch.manual_seed(self.protocol.randomisation_seed)
        fresh = build_model(self.card).eval()
        region = self.case.region
        steps = []
        for step in range(1, len(groups) + 1):
            modules = [name for group in groups[:step] for name in group]
            model = build_model(self.card).eval()
            model.load_state_dict(randomised_state(trained, fresh, modules))
            segmenter = Segmenter(self.eval_card, device="cpu", model=model, fast_path="off")
            rho = spearman(trained_map[region], self.map_of(method, target, segmenter)[region])
            steps.append({"randomised_groups": step, "of": len(groups), "first_module": groups[step - 1][0],
                          "spearman": round(rho, 4)})
        return {"steps": steps, "full": steps[-1]["spearman"] if steps else None}
