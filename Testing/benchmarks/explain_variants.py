"""Which explanation variant to ship: candidate layers and scores evaluated under explain-eval's protocol.

Run: ``PYTHONPATH=HybridAttentionSeg nice -n 10 .venv/bin/python Testing/benchmarks/explain_variants.py
--model mni-tissue-attention-unet --variants grad-cam@model.1 hirescam@model.1.submodule.1 oracle:probability
--class "Gray matter" [--quick] [--no-sanity]``.

A variant is

* ``METHOD`` (as shipped), or ``METHOD@LAYER``: ``grad-cam``/``hirescam`` on another module of the network;
* ``METHOD/logprob[@LAYER]``: Grad-CAM/HiResCAM scoring the class's **log-probability** (log-softmax) inside
  its predicted mask instead of its raw logit, so the gradient says what raises this class *against the
  others* (the deletion/insertion curves watch the probability, not the logit);
* ``relevance/mixing``: transformer relevance without its identity term (only what attention moved between
  tokens; with the identity, a structure's map contains its own predicted mask);
* ``oracle:probability``: the model's own probability of the class, ranked as if it were a map. Not an
  explanation (it is the output): it shows how far *any* ranking can beat chance on that target under the
  protocol (when even the output itself does not beat the random ranking by the margin, no map can be
  expected to). ``METHOD/abs[@LAYER]``: the absolute value of the weighted sum instead of its positive part
  (evidence against the class ranks as high as evidence for it). ``oracle:other``: one minus that probability
  (the class's context first).

Prints explain-eval's markdown table for the variants and writes the full report to ``--out``. A benchmark,
not a test: the full protocol takes about a minute per variant and class on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F


def _logprob_cam(cam_class):
    from HybridAttentionSegLib.core.explain.gradcam import MaskedScoreHooks

    class LogProbHooks(MaskedScoreHooks):
        def class_score(self, logits, class_idx):
            predicted = logits.detach().argmax(dim=1) == class_idx
            mask = predicted.float()
            mask[~predicted.flatten(1).any(dim=1)] = 1.0
            return (F.log_softmax(logits, dim=1)[:, class_idx] * mask).sum()

    return LogProbHooks


def _abs_cams():
    from monai.visualize import GradCAM

    class AbsGradCAM(GradCAM):
        def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
            _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
            acti, grad = acti[layer_idx], grad[layer_idx]
            weights = grad.view(*grad.shape[:2], -1).mean(2).view(*grad.shape[:2], *([1] * (grad.ndim - 2)))
            return (weights * acti).sum(1, keepdim=True).abs()

    class AbsHiResCAM(GradCAM):
        def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
            _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
            return (acti[layer_idx] * grad[layer_idx]).sum(1, keepdim=True).abs()

    return AbsGradCAM, AbsHiResCAM


def variant_explainers():
    """Register the ``/logprob``, ``/abs`` and ``relevance/mixing`` variants (benchmark only)."""
    from HybridAttentionSegLib.core.explain import WINDOW_EXPLAINERS, gradcam
    from HybridAttentionSegLib.core.explain.gradcam import GradCAMExplainer
    from HybridAttentionSegLib.core.explain.hirescam import HiResCAMExplainer

    for base, cam in zip((GradCAMExplainer, HiResCAMExplainer), _abs_cams(), strict=True):
        class Absolute(base):
            name = f"{base.name}/abs"
            cam_class = cam

        class LogProb(base):
            name = f"{base.name}/logprob"

            def window_map(self, x, logits):
                original = gradcam.MaskedScoreHooks
                gradcam.MaskedScoreHooks = _logprob_cam(self.cam_class)
                try:
                    return super().window_map(x, logits)
                finally:
                    gradcam.MaskedScoreHooks = original

        WINDOW_EXPLAINERS[Absolute.name] = Absolute
        WINDOW_EXPLAINERS[LogProb.name] = LogProb
    WINDOW_EXPLAINERS["relevance/mixing"] = _mixing_relevance()


def _mixing_relevance():
    from HybridAttentionSegLib.core.explain.relevance import RelevanceExplainer

    class MixingRelevance(RelevanceExplainer):
        """Relevance without the identity (a token's own share): only what attention moved between tokens."""

        name = "relevance/mixing"

        def _relevance(self, captured):
            relevance = super()._relevance(captured)
            eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
            return relevance - eye

    return MixingRelevance


class _Oracle:
    needs_class = True
    needs_grad = False


def evaluation_class():
    from HybridAttentionSegLib.core.explain.evaluation.runner import Evaluation

    class VariantEvaluation(Evaluation):
        """explain-eval's runner with variant names resolved to (method, layer) or an oracle."""

        def map_of(self, method, target, segmenter=None):
            segmenter = segmenter or self.segmenter
            if method.startswith("oracle:"):
                run = segmenter.run(self.case.volume, keep_probabilities=True)
                probability = run.probabilities[int(target)]
                return 1.0 - probability if method == "oracle:other" else probability
            base, _, layer = method.partition("@")
            spec = self.card.spec
            if layer:
                spec = dataclasses.replace(spec, gradcam_layer=layer, hirescam_layer=layer)
            if base not in spec.attention_methods:
                spec = dataclasses.replace(spec, attention_methods=(*spec.attention_methods, base))
            segmenter.spec = spec
            return segmenter.run(self.case.volume, attention=[base], target_class=target,
                                 keep_probabilities=False).attention[base]

    return VariantEvaluation


def main() -> None:
    from HybridAttentionSegLib.core.explain import WINDOW_EXPLAINERS
    from HybridAttentionSegLib.core.explain.evaluation import FULL, QUICK, heldout_case
    from HybridAttentionSegLib.core.explain.evaluation.report import markdown_table
    from HybridAttentionSegLib.core.models.cards import get_card

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--class", dest="classes", action="append", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-sanity", action="store_true", help="skip the randomisation cascade")
    parser.add_argument("--out", default="explain-variants")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    variant_explainers()
    card = get_card(args.model)
    for name in args.variants:
        base = name.partition("@")[0]
        WINDOW_EXPLAINERS.setdefault(name, _Oracle if base.startswith("oracle:") else WINDOW_EXPLAINERS[base])
    protocol = QUICK if args.quick else FULL
    case = heldout_case(card, single_window=protocol.single_window)
    classes = [card.label_index(c) for c in args.classes] if args.classes else None
    result = evaluation_class()(card, case, protocol).run(args.variants, classes, sanity=not args.no_sanity)
    report = {"model": card.id, "data": case.description, "protocol": {**protocol.as_dict()}, **result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{card.id}.variants.json").write_text(json.dumps(report, indent=1, default=float))
    print(markdown_table(report))  # noqa: T201
    print("margins (deletion, insertion), randomised rho:")  # noqa: T201
    for item in result["methods"]:
        print(f"  {item['method']:<45} {item['class'] or '-':<13} {item['margin']['deletion']:+.3f} "  # noqa: T201
              f"{item['margin']['insertion']:+.3f}  {item['randomisation']['full']}")
    print(f"{result['forwards']} forwards, timings {result['timings']}")  # noqa: T201


if __name__ == "__main__":
    main()
