"""MONAI's reference pipeline for ``hybridseg bench``: the card's own preprocessing, written with MONAI transforms.

A benchmark only measures something when both sides compute the same function, so the reference follows the
card (``preprocessing``: orientation, spacing, intensity, order, crop; ``inference``: ROI, overlap, blending)
with MONAI's dictionary transforms, ``SlidingWindowInferer`` and ``Invertd``, and none of our preprocessing,
resampling or inverse code:

* ``window`` -> ``ScaleIntensityRanged``; ``percentile`` -> ``ScaleIntensityRangePercentilesd`` (per channel,
  clipped to [0, 1]); ``zscore`` -> ``NormalizeIntensityd`` with the card's ``nonzero`` / ``channel_wise``;
* the z-score's ``nonzero`` foreground is defined robustly by the card format (``intensity.py``: ``|x|`` above
  ``max(2**-23 * p99.9(|x|), 5 * noise sigma)``), which MONAI has no transform for (its ``nonzero`` is
  ``x != 0``). The reference computes that threshold here, the documented way, sets the voxels below it to 0
  (``Lambdad``) and then runs ``NormalizeIntensityd(nonzero=True)``: the same function, with the statistics
  and the normalisation still MONAI's. The noise term is 0 because the bench's synthetic volume has a clean,
  noise-free background (:func:`.bench.synthetic_volume` adds none), so our noise estimator is checked (it
  must find none) rather than re-used;
* ``Orientationd`` -> ``Spacingd`` (bilinear) in the card's order; ``CropForegroundd`` (voxels > 0) when the card
  crops; the probabilities are mapped back with ``Invertd`` (bilinear) before the argmax.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from ..models.cards import ModelCard

#: the documented foreground floor of ``intensity.py`` (float32's resolution relative to the image's scale)
_REL_FLOOR = 2.0**-23


def _robust_foreground(data: np.ndarray, channel_wise: bool) -> np.ndarray:
    """The card format's ``nonzero`` foreground of a noise-free (C, I, J, K) volume, computed independently.

    Hand-written: MONAI's ``nonzero`` is ``x != 0`` and has no relative floor.

    ``|x| > 2**-23 * scale`` with ``scale`` the 99.9th percentile of ``|x|`` (its maximum when that is 0), per
    channel or over all channels together; the noise term of the definition is 0 on a noise-free background.
    """
    def mask(x: np.ndarray) -> np.ndarray:
        a = np.abs(x.astype(np.float64))
        scale = float(np.percentile(a, 99.9)) or float(a.max())
        return a > _REL_FLOOR * scale

    if channel_wise:
        return np.stack([mask(channel) for channel in data])
    return mask(data)


def _zero_background(channel_wise: bool):
    """``Lambdad`` function: the image with the robust background set to 0 (on whatever grid it is on)."""
    def zero(image):
        return image * torch.as_tensor(_robust_foreground(np.asarray(image), channel_wise), dtype=image.dtype)

    return zero


def _intensity_steps(intensity: dict) -> list:
    """MONAI transforms for the card's intensity normalisation."""
    from monai.transforms import Lambdad, NormalizeIntensityd, ScaleIntensityRanged, ScaleIntensityRangePercentilesd

    method = intensity.get("method", "none")
    if method == "window":
        (a_min, a_max), (b_min, b_max) = intensity["window"], intensity.get("range", (0.0, 1.0))
        return [ScaleIntensityRanged(keys="image", a_min=a_min, a_max=a_max, b_min=b_min, b_max=b_max,
                                     clip=bool(intensity.get("clip", True)))]
    if method == "percentile":
        lower, upper = intensity.get("percentiles", (0.5, 99.5))
        return [ScaleIntensityRangePercentilesd(keys="image", lower=lower, upper=upper, b_min=0.0, b_max=1.0,
                                                clip=True, channel_wise=True)]
    if method == "zscore":
        nonzero, channel_wise = bool(intensity.get("nonzero", False)), bool(intensity.get("channel_wise", True))
        steps = [Lambdad(keys="image", func=_zero_background(channel_wise))] if nonzero else []
        return [*steps, NormalizeIntensityd(keys="image", nonzero=nonzero, channel_wise=channel_wise)]
    return []


def reference_labels(card: ModelCard, model, volume, device: torch.device, amp: bool) -> np.ndarray:
    """Labels of ``volume`` on its own grid from MONAI's transforms + ``SlidingWindowInferer`` + ``Invertd``."""
    from monai.data import MetaTensor
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import Compose, CropForegroundd, Invertd, Orientationd, Spacingd

    intensity = _intensity_steps(card.intensity)
    spatial = [Orientationd(keys="image", axcodes=card.orientation or "RAS")]
    if card.spacing:
        spatial.append(Spacingd(keys="image", pixdim=card.spacing, mode="bilinear"))
    steps = spatial + intensity if card.preprocessing_order == "resample-first" else intensity + spatial
    if card.crop_foreground:
        steps.append(CropForegroundd(keys="image", source_key="image", allow_smaller=True))
    pre = Compose(steps)
    image = MetaTensor(torch.from_numpy(np.asarray(volume.data, np.float32)), affine=torch.from_numpy(volume.affine))
    data = pre({"image": image})
    inferer = SlidingWindowInferer(card.roi_size, sw_batch_size=4, overlap=card.overlap, mode=card.blend)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()
    with torch.inference_mode(), autocast:
        logits = inferer(data["image"][None].to(device), model)
    activation = torch.sigmoid if card.activation == "sigmoid" else (lambda t: torch.softmax(t, 0))
    data["pred"] = MetaTensor(activation(logits[0].float()).cpu(), meta=data["image"].meta,
                              applied_operations=data["image"].applied_operations)
    probabilities = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    probabilities = torch.as_tensor(probabilities)
    if card.activation != "sigmoid":
        return probabilities.argmax(0).numpy().astype(np.uint8)
    labels = np.zeros(probabilities.shape[1:], np.uint8)  # regions painted in card order, later ones win
    for region in card.output_regions:
        labels[probabilities[region["channel"]].numpy() > card.output_threshold] = int(region["label"])
    return labels
