"""The review's grid: which networks are compared, at which size, and the training settings of a run.

Experiments 1-3 of the review (arXiv 2307.12775) on one family, ``cnn_self_attention`` (a 3D U-Net CNN with N
attention layers at the stride-16 bottleneck, :mod:`..models.networks.cnn_self_attention`):

* ``cnn``: N = 0, the CNN baseline every other variant is compared with (same encoder, decoder and training);
* ``self-1``, ``self-2``, ``self-4``: N self-attention layers (experiments 1 and 3);
* ``cross-1``, ``cross-2``: N cross-attention layers, bottleneck queries attending to the deepest encoder level
  (experiment 2: self- vs cross-attention in the same hybrid);
* ``segresnet``: MONAI's SegResNet, an external CNN baseline.

Two sizes: the full run (channels 16-128, SegResNet 16 initial filters) and ``--quick`` (channels 8-64,
SegResNet 8 filters) for the 2-core CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

BASELINE = "cnn"


@dataclass(frozen=True)
class Variant:
    """One network of the grid."""

    name: str
    architecture: str
    kwargs: dict
    attention: str  # "none", "self" or "cross"
    layers: int  # attention layers (0 for the CNNs)


@dataclass(frozen=True)
class Settings:
    """Training and evaluation settings shared by every trial of a run (part of each trial's fingerprint)."""

    quick: bool
    steps: int
    patch: tuple[int, int, int]
    batch_size: int = 2
    lr: float = 2e-3
    overlap: float = 0.5
    threads: int = 1
    channels: tuple[int, ...] = (16, 32, 64, 128)
    segresnet_filters: int = 16
    num_heads: int = 4
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-ready form (threads excluded: they change speed, not results)."""
        data = asdict(self)
        data.pop("threads")
        data["patch"] = list(self.patch)
        data["channels"] = list(self.channels)
        return data


def grid(settings: Settings) -> list[Variant]:
    """Every variant of the review's grid, baseline first."""
    base = {"channels": list(settings.channels), "num_heads": settings.num_heads}
    variants = [Variant(BASELINE, "cnn_self_attention", {**base, "num_attention_layers": 0}, "none", 0)]
    for layers in (1, 2, 4):
        variants.append(Variant(f"self-{layers}", "cnn_self_attention",
                                {**base, "num_attention_layers": layers, "attention_type": "self"}, "self", layers))
    for layers in (1, 2):
        variants.append(Variant(f"cross-{layers}", "cnn_self_attention",
                                {**base, "num_attention_layers": layers, "attention_type": "cross"}, "cross", layers))
    variants.append(Variant("segresnet", "segresnet", {"init_filters": settings.segresnet_filters}, "none", 0))
    return variants


def select(variants: list[Variant], names: str | None) -> list[Variant]:
    """The variants named in a comma-separated list (all when None); unknown names raise ValueError."""
    if not names:
        return variants
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {v.name: v for v in variants}
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown variant(s) {unknown or names!r}; choose from {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(wanted)]


def default_settings(quick: bool, steps: int | None = None, patch=None, threads: int = 1) -> Settings:
    """The full run's or ``--quick``'s settings; ``steps``/``patch`` override the defaults."""
    if quick:
        return Settings(quick=True, steps=steps or 120, patch=tuple(patch or (32, 32, 32)), overlap=0.25,
                        threads=threads, channels=(8, 16, 32, 64), segresnet_filters=8)
    return Settings(quick=False, steps=steps or 1000, patch=tuple(patch or (64, 64, 48)), overlap=0.5,
                    threads=threads)
