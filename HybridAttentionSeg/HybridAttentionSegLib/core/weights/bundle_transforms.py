"""A MONAI bundle's preprocessing, inferer and post-processing read as data, honoured exactly or refused.

Every option of the transforms that change what the network sees is either carried into the card or the
bundle is refused with one line naming the transform and the option (``UserInputError``: the user can still
describe the model with ``--card``):

* ``Orientationd`` -> ``orientation``; ``Spacingd`` -> ``spacing`` (linear interpolation only);
* ``ScaleIntensityRanged`` -> ``window`` + ``range`` (``b_min``/``b_max``) + ``clip``;
* ``NormalizeIntensityd`` -> ``zscore`` with ``nonzero`` and ``channel_wise`` (MONAI's defaults: false);
  explicit ``subtrahend``/``divisor`` are refused;
* ``CropForegroundd`` with its defaults -> ``crop_foreground``;
* the position of the spatial transforms relative to the intensity transform -> ``order``;
* ``SlidingWindowInferer`` -> ``roi_size``, ``overlap``, ``sw_batch_size`` and ``mode`` -> ``blend``
  (MONAI's default is ``constant``);
* post-processing: ``Activationsd`` (softmax/sigmoid), ``AsDiscreted(threshold=...)``, and a ``Lambdad``
  label painting of the form ``torch.where(x[[c]] > t, v, torch.where(...))`` (as model-zoo
  ``brats_mri_segmentation``), which is *parsed* with :mod:`ast` (never evaluated) into painted regions.

Other intensity transforms are refused; transforms that only load or convert data are ignored.
"""

from __future__ import annotations

import ast

from ..errors import UserInputError

#: transforms that only load, add a channel or convert types: nothing to honour
HARMLESS = {"LoadImage", "EnsureChannelFirst", "AddChannel", "EnsureType", "ToTensor", "ToNumpy", "CastToType",
            "ToDevice", "Identity", "SqueezeDim", "DeleteItems", "SelectItems", "CopyItems", "SaveImage",
            "Invert", "AsChannelFirst", "AsChannelLast", "ConvertToMultiChannelBasedOnBratsClasses"}
SPATIAL = {"Orientation", "Spacing"}
INTENSITY = {"ScaleIntensityRange", "NormalizeIntensity"}


def _name(transform: dict) -> str:
    """``monai.transforms.Spacingd`` -> ``Spacing`` (dictionary and array forms alike)."""
    name = str(transform["_target_"]).rsplit(".", 1)[-1]
    return name[:-1] if name.endswith("d") and name[:-1] in HARMLESS | SPATIAL | INTENSITY | {
        "CropForeground", "Activations", "AsDiscrete", "Lambda"} else name


def transforms(config: dict, key: str) -> list[dict]:
    block = config.get(key)
    items = (
        block.get("transforms", []) if isinstance(block, dict) else (block if isinstance(block, list) else [])
    )
    return [t for t in items if isinstance(t, dict) and isinstance(t.get("_target_"), str)]


def plain(value):
    """The value if it is a literal (no ``$``/``@``/``%`` strings anywhere), else None. Never evaluated."""
    if isinstance(value, str):
        return None if value[:1] in ("$", "@", "%") else value
    if isinstance(value, list):
        items = [plain(v) for v in value]
        return None if any(i is None for i in items) else items
    return value if isinstance(value, (int, float, bool)) else None


def _refuse(transform: str, option: str, value, why: str) -> UserInputError:
    return UserInputError(
        f"bundle transform {transform} option {option}={value!r} cannot be honoured ({why}); refusing the "
        f"import. Describe the model with --card instead"
    )


def _option(t: dict, name: str, key: str, default, allowed=None):
    """A literal option (default when absent); expressions or values outside ``allowed`` refuse."""
    if key not in t:
        return default
    value = plain(t[key])
    if value is None and t[key] is not None:
        raise _refuse(name, key, t[key], "it is an expression and is never evaluated")
    if allowed is not None and value not in allowed:
        raise _refuse(name, key, value, f"supported: {', '.join(map(repr, allowed))}")
    return value


def _window(t: dict) -> dict:
    name = "ScaleIntensityRanged"
    lo, hi = _option(t, name, "a_min", None), _option(t, name, "a_max", None)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        raise _refuse(name, "a_min/a_max", (lo, hi), "both must be numbers")
    b_min, b_max = _option(t, name, "b_min", None), _option(t, name, "b_max", None)
    clip = bool(_option(t, name, "clip", False, (True, False)))
    if b_min is None and b_max is None:  # MONAI: no output scaling, and clip needs both bounds
        return {"method": "window", "window": [float(lo), float(hi)], "range": [0.0, 1.0], "clip": False}
    if not all(isinstance(v, (int, float)) for v in (b_min, b_max)):
        raise _refuse(name, "b_min/b_max", (b_min, b_max), "give both or neither")
    return {"method": "window", "window": [float(lo), float(hi)], "range": [float(b_min), float(b_max)],
            "clip": clip}


def _zscore(t: dict) -> dict:
    name = "NormalizeIntensityd"
    for key in ("subtrahend", "divisor"):
        if t.get(key) is not None:
            raise _refuse(name, key, t[key], "only statistics computed from the image are supported")
    return {"method": "zscore", "nonzero": bool(_option(t, name, "nonzero", False, (True, False))),
            "channel_wise": bool(_option(t, name, "channel_wise", False, (True, False)))}


def read_preprocessing(config: dict, notes: list[str]) -> dict:
    """The card's ``preprocessing`` from the bundle's preprocessing transforms (module docstring)."""
    pre: dict = {"intensity": {"method": "none"}}
    spatial_at, intensity_at = None, None
    for index, t in enumerate(transforms(config, "preprocessing")):
        name = _name(t)
        if name == "Orientation" and plain(t.get("axcodes")):
            pre["orientation"], spatial_at = plain(t["axcodes"]), spatial_at if spatial_at is not None else index
        elif name == "Spacing" and plain(t.get("pixdim")):
            pixdim = plain(t["pixdim"])
            pre["spacing"] = [float(pixdim)] * 3 if isinstance(pixdim, (int, float)) else [float(p) for p in pixdim]
            _option(t, "Spacingd", "mode", "bilinear", ("bilinear", ["bilinear"]))
            spatial_at = spatial_at if spatial_at is not None else index
        elif name in INTENSITY:
            if intensity_at is not None:
                raise _refuse(t["_target_"], "(second intensity transform)", name, "one intensity step only")
            pre["intensity"] = _window(t) if name == "ScaleIntensityRange" else _zscore(t)
            intensity_at = index
        elif name == "CropForeground":
            for key, default in (("margin", 0), ("k_divisible", 1), ("channel_indices", None)):
                _option(t, "CropForegroundd", key, default, (default,))
            if "select_fn" in t:
                raise _refuse("CropForegroundd", "select_fn", t["select_fn"], "only the default (x > 0)")
            pre["crop_foreground"] = True
        elif "Intensity" in name or "Histogram" in name or name.startswith(("Resize", "Zoom")):
            raise UserInputError(
                f"bundle preprocessing uses {t['_target_']}, which hybridseg cannot reproduce; refusing the "
                f"import. Describe the model's preprocessing with --card instead"
            )
        elif name not in HARMLESS:
            notes.append(f"preprocessing transform {t['_target_']} ignored")
    if spatial_at is not None and intensity_at is not None:
        pre["order"] = "resample-first" if spatial_at < intensity_at else "intensity-first"
    return pre


def read_inferer(config: dict, notes: list[str]) -> dict:
    """``inference`` from a literal ``SlidingWindowInferer`` (``mode`` -> ``blend``; MONAI default constant)."""
    inference: dict = {}
    inferer = config.get("inferer")
    if not (isinstance(inferer, dict) and str(inferer.get("_target_", "")).endswith("SlidingWindowInferer")):
        return inference
    for key in ("roi_size", "overlap", "sw_batch_size"):
        value = plain(inferer.get(key))
        if value is not None:
            inference[key] = value
        elif key in inferer:
            notes.append(f"inferer.{key} is an expression; not read")
    inference["blend"] = _option(inferer, "SlidingWindowInferer", "mode", "constant", ("constant", "gaussian"))
    _option(inferer, "SlidingWindowInferer", "sigma_scale", 0.125, (0.125,))
    return inference


def _painting(source: str) -> tuple[list[dict], set[float]]:
    """Regions (painting order: later wins) and the thresholds ``t`` of ``lambda x: torch.where(x[[c]] > t, v,
    ...)``, parsed with :mod:`ast` only."""
    node = ast.parse(source.lstrip("$"), mode="eval").body
    if not isinstance(node, ast.Lambda) or len(node.args.args) != 1:
        raise ValueError("not a one-argument lambda")
    arg, node, regions, thresholds = node.args.args[0].arg, node.body, [], set()
    while isinstance(node, ast.Call):
        func, args = node.func, node.args
        if not (isinstance(func, ast.Attribute) and func.attr == "where" and len(args) == 3):
            raise ValueError("not torch.where(...)")
        test, value, node = args
        ok = (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Gt)
              and isinstance(test.left, ast.Subscript) and isinstance(test.left.value, ast.Name)
              and test.left.value.id == arg and isinstance(test.left.slice, ast.List)
              and len(test.left.slice.elts) == 1 and isinstance(test.left.slice.elts[0], ast.Constant)
              and isinstance(test.comparators[0], ast.Constant) and isinstance(value, ast.Constant))
        if not ok:
            raise ValueError("a condition other than x[[c]] > t")
        thresholds.add(float(test.comparators[0].value))
        regions.append({"channel": int(test.left.slice.elts[0].value), "label": int(value.value)})
    if not (isinstance(node, ast.Constant) and node.value == 0):
        raise ValueError("the innermost value is not 0 (background)")
    return regions[::-1], thresholds  # torch.where's first condition wins: it is painted last


def read_postprocessing(config: dict, out_channels: int, notes: list[str]) -> dict:
    """``{"activation", "threshold", "regions"}``; sigmoid regions in the bundle's painting order."""
    activation, threshold, regions, binarised = "softmax", 0.5, None, False
    for t in transforms(config, "postprocessing"):
        name = _name(t)
        if name == "Activations":
            activation = "sigmoid" if plain(t.get("sigmoid")) is True else "softmax"
        elif name == "AsDiscrete" and "threshold" in t:
            threshold, binarised = float(_option(t, "AsDiscreted", "threshold", 0.5)), True
        elif name == "Lambda" and activation == "sigmoid":
            try:
                regions, cuts = _painting(str(t.get("func", "")))
                if len(cuts) != 1 or (binarised and not 0 <= min(cuts) < 1):
                    raise ValueError("thresholds other than one cut of the (binarised) probabilities")
                threshold = threshold if binarised else cuts.pop()
            except (SyntaxError, ValueError) as err:
                raise UserInputError(
                    f"bundle post-processing Lambdad func is not a label painting hybridseg can read ({err}); "
                    f"refusing the import (nothing was evaluated). Give output.regions with --card"
                ) from None
    if activation == "sigmoid" and regions is None:
        regions = [{"channel": c, "label": c + 1} for c in range(out_channels)]
        notes.append("the bundle's post-processing paints no labels: sigmoid channels are painted in channel "
                     "order (later channels win); give output.regions with --card to change that")
    return {"activation": activation, "threshold": threshold, "regions": regions}
