"""The evaluation protocol: every setting that determines an explanation score, in one place.

A score in a model card is only comparable with another score computed under the same protocol, so the
protocol is versioned (:data:`PROTOCOL_VERSION`; bump it whenever a setting or a formula changes) and its
settings are written next to every score.

Two presets:

* ``full``: what ``hybridseg explain-eval`` runs by default (minutes per model on a 2-core CPU): both
  baselines, six points per curve, three random seeds, a three-step randomisation cascade, and the short
  data (label) randomisation check (:mod:`.data_randomisation`: two copies trained for 100 steps);
* ``quick``: one baseline, three points, two random seeds, full randomisation only (seconds); what the
  test suite recomputes to check that a card's stored quick-mode scores are still true for its weights.

Both run on **one sliding window** of the whole-volume window grid (the one holding most of the evaluation
region; :func:`.data.crop_bounds`): the network computes there exactly what it computes in a whole-volume run
for that window, and every perturbed forward costs one window instead of the 18 that touch the MNI held-out
slab (``single_window=False`` evaluates those 18, with the whole-volume blending, for who has the time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...models.offers import NOT_EXPLANATIONS as _NOT_EXPLANATIONS

#: bump when any setting or formula below (or in perturbation/localisation/sanity) changes meaning
PROTOCOL_VERSION = "2"  # 2: data randomisation in the full protocol

#: a method passes when it beats the random ranking by at least this much, on deletion AND on insertion AUC
MIN_AUC_MARGIN = 0.03
#: ...and its Spearman rank correlation with the map of the fully randomised model is below this
MAX_RANDOMISED_CORRELATION = 0.5
#: the staleness test accepts a recomputed quick-mode AUC within this of the stored one (thread counts and
#: BLAS builds change float sums; a retrain or a changed explainer moves AUCs by far more)
QUICK_TOLERANCE = 0.02

#: attention maps that are not explanations of a decision and are therefore not scored (one list, in offers.py)
NOT_EXPLANATIONS = _NOT_EXPLANATIONS


@dataclass(frozen=True)
class Protocol:
    """Settings of one evaluation run.

    Attributes:
        name: ``full`` or ``quick``.
        fractions: shares of the region's voxels deleted (inserted), in ranking order; AUCs integrate the
            score over these points with the trapezoid rule, divided by the covered range (so an AUC is the
            mean score over the curve, in [0, 1]).
        baselines: how a removed voxel is replaced: ``blur`` (Gaussian-blurred copy of the image) and/or
            ``mean`` (the region's mean intensity).
        blur_sigma_vox: Gaussian sigma of the ``blur`` baseline, in voxels.
        random_seeds: seeds of the random rankings the maps are compared with.
        random_smoothing_vox: random rankings are Gaussian-smoothed white noise with this sigma (voxels), so
            they delete blobs as a smooth map does (0: independent voxels).
        cascade_steps: number of top-down groups in cascading parameter randomisation (1: full only).
        randomisation_seed: seed of the random weights used by the sanity check.
        single_window: crop the evaluation input to one sliding window of the whole-volume grid.
        dilation_vox: neighbourhood of the target for localisation (voxels).
        data_randomisation_steps: training steps of each copy in the data (label) randomisation check
            (0: not run).
    """

    name: str
    fractions: tuple[float, ...]
    baselines: tuple[str, ...]
    random_seeds: tuple[int, ...]
    blur_sigma_vox: float = 3.0
    random_smoothing_vox: float = 2.0
    cascade_steps: int = 3
    randomisation_seed: int = 1234
    single_window: bool = False
    dilation_vox: int = 2
    data_randomisation_steps: int = 0

    def as_dict(self) -> dict:
        """JSON-ready settings, with the protocol version and the pass thresholds."""
        out = asdict(self)
        out.update(version=PROTOCOL_VERSION, min_auc_margin=MIN_AUC_MARGIN,
                   max_randomised_correlation=MAX_RANDOMISED_CORRELATION)
        return out


FULL = Protocol(name="full", fractions=(0.0, 0.02, 0.05, 0.1, 0.2, 0.35), baselines=("blur", "mean"),
                random_seeds=(0, 1, 2), cascade_steps=3, single_window=True, data_randomisation_steps=100)
QUICK = Protocol(name="quick", fractions=(0.0, 0.05, 0.2), baselines=("blur",), random_seeds=(0, 1),
                 cascade_steps=1, single_window=True)
PRESETS = {"full": FULL, "quick": QUICK}
