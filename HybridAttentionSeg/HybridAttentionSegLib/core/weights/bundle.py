"""MONAI bundles read as *data*: a folder or zip/tar archive -> a draft model card plus its weights bytes.

MONAI's own loader (``monai.bundle.ConfigParser``) resolves ``_target_`` to any importable callable and
``eval()``\\ s ``"$..."`` strings (GHSA-873f-pvrv-4x83); ``configs/logging.conf`` is applied with
``fileConfig``,
which evaluates too (GHSA-wvpx-5qmp-46g3). None of that is used here. We only ``json.loads`` three files
(``configs/metadata.json``, ``configs/inference.json``, ``LICENSE``) and read a few literal values:

* ``network_def``: its ``_target_`` must be in :data:`ALLOWED_NETWORKS` (MONAI classes we build ourselves),
  every value must be a JSON literal or an ``@name`` reference to a literal; any ``$`` expression, ``%``
  macro, nested ``_target_`` or other ``_`` directive refuses the bundle;
* preprocessing, inferer and post-processing (:mod:`.bundle_transforms`): every option that changes what the
  network sees is honoured or the bundle is refused with one line; a ``Lambdad`` label painting is parsed
  with :mod:`ast`, never evaluated; ``metadata.json``'s ``monai_version`` < 1.5 selects SwinUNETR's pre-1.5
  patch merging (with a notice);
* ``models/model.safetensors`` or ``models/model.pt`` (a state dict; ``models/model.ts`` is never read).

Everything else in the configs (including ``$`` expressions elsewhere) is ignored and never evaluated.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import UnsafeModelError, UserInputError, WeightsError
from . import archive as arc
from .bundle_terms import KNOWN_TERMS, PALETTE
from .bundle_transforms import read_inferer, read_postprocessing, read_preprocessing

logger = logging.getLogger(__name__)

_NETS = {
    "SwinUNETR": ("swin_unetr", "swin_unetr"),
    "UNETR": ("unetr", "unetr"),
    "AttentionUnet": ("attention_unet", "attentionunet"),
    "SegResNet": ("segresnet", "segresnet"),
}
#: ``_target_`` spelling -> our registry name. Only these classes are accepted; we build them in code.
ALLOWED_NETWORKS: dict[str, str] = {}
for _cls, (_name, _module) in _NETS.items():
    ALLOWED_NETWORKS.update(
        {_cls: _name, f"monai.networks.nets.{_cls}": _name, f"monai.networks.nets.{_module}.{_cls}": _name}
    )

#: per architecture: constructor arguments passed on, renamed (old MONAI names) or dropped
ARG_RULES = {
    "swin_unetr": {
        "keep": {
            "feature_size",
            "depths",
            "num_heads",
            "window_size",
            "qkv_bias",
            "mlp_ratio",
            "norm_name",
            "drop_rate",
            "attn_drop_rate",
            "dropout_path_rate",
            "normalize",
            "patch_norm",
            "downsample",
            "use_v2",
            "patch_size",
        },
        "drop": {"img_size", "use_checkpoint"},
        "rename": {},
    },
    "unetr": {
        "keep": {
            "feature_size",
            "hidden_size",
            "mlp_dim",
            "num_heads",
            "proj_type",
            "norm_name",
            "conv_block",
            "res_block",
            "dropout_rate",
            "qkv_bias",
        },
        "drop": {"img_size"},
        "rename": {"pos_embed": "proj_type"},
    },
    "attention_unet": {
        "keep": {"channels", "strides", "kernel_size", "up_kernel_size", "dropout"},
        "drop": set(),
        "rename": {},
    },
    "segresnet": {
        "keep": {
            "init_filters",
            "blocks_down",
            "blocks_up",
            "dropout_prob",
            "norm",
            "norm_name",
            "num_groups",
            "use_conv_final",
            "upsample_mode",
            "act",
        },
        "drop": set(),
        "rename": {},
    },
}

@dataclass
class Bundle:
    """What was read from a bundle: a draft card (no ``weights`` yet) and the weights file bytes."""

    draft: dict
    weights_name: str
    weights_bytes: bytes
    notes: list[str] = field(default_factory=list)


class _Source:
    """Read-only access to bundle files in a folder or a screened archive, confined to the bundle root."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.members = None
            roots = sorted(self.path.glob("**/configs/metadata.json"), key=lambda p: len(p.parts))
            self.root = roots[0].parent.parent.relative_to(self.path).as_posix() if roots else None
        else:
            self.members = {m.name: m for m in arc.list_members(self.path)}
            found = sorted(
                (
                    n
                    for n in self.members
                    if n == "configs/metadata.json" or n.endswith("/configs/metadata.json")
                ),
                key=len,
            )
            self.root = str(PurePosixPath(found[0]).parent.parent) if found else None
        if self.root is None:
            message = (f"{self.path.name} is not a MONAI bundle (no configs/metadata.json); pass a bundle "
                       f"folder or zip")
            raise UserInputError(message)

    def read(self, rel: str) -> bytes | None:
        name = str(PurePosixPath(self.root) / rel) if self.root not in ("", ".") else rel
        if self.members is None:
            file = self.path / name
            if not file.is_file():
                return None
            if file.is_symlink() or self.path.resolve() not in file.resolve().parents:
                raise UnsafeModelError(f"bundle file {rel} is a symlink or lies outside the bundle; refusing")
            return file.read_bytes()
        member = self.members.get(name)
        if member is None or member.is_dir:
            return None
        with arc._open_member(self.path, name) as stream:
            return stream.read(member.size + 1)[: member.size]


def _json(source: _Source, rel: str) -> dict | None:
    data = source.read(rel)
    if data is None:
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as err:
        raise UserInputError(f"bundle file {rel} is not valid JSON ({err.msg}); fix the bundle") from err


def _literal(value, config: dict, where: str, depth: int = 0):
    """A JSON literal with ``@refs`` resolved to literals; raise on ``$``, ``%`` and nested components."""
    if isinstance(value, str):
        if value.startswith("$"):
            message = (
                f"bundle network_def has a Python expression at {where} ({value[:60]!r}); refusing the "
                f"bundle, nothing was evaluated. Replace it with a literal value or pass --card"
            )
            raise UnsafeModelError(message)
        if value.startswith("%"):
            raise UnsafeModelError(f"bundle network_def uses a macro at {where} ({value[:60]!r}); refusing")
        if value.startswith("@"):
            if depth > 5:
                raise UnsafeModelError(f"bundle reference chain at {where} is too deep; refusing")
            target = config
            for part in re.split(r"#|::", value[1:]):
                if not isinstance(target, dict) or part not in target:
                    raise UserInputError(
                        f"bundle reference {value!r} at {where} does not exist; fix the bundle"
                    )
                target = target[part]
            return _literal(target, config, value, depth + 1)
        return value
    if isinstance(value, list):
        return [_literal(v, config, f"{where}[{i}]", depth) for i, v in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if str(key).startswith("_"):
                message = (
                    f"bundle network_def has a nested component or directive {key!r} at {where}; refusing "
                    f"(only plain constructor arguments are read)"
                )
                raise UnsafeModelError(message)
        return {k: _literal(v, config, f"{where}.{k}", depth) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise UnsafeModelError(f"bundle network_def has an unsupported value at {where}; refusing")


def parse_network_def(config: dict) -> tuple[str, int, int, dict, list | None]:
    """(architecture, in_channels, out_channels, kwargs, roi hint) from ``config["network_def"]``."""
    net = config.get("network_def")
    if isinstance(net, str):
        _literal(net, config, "network_def")  # "$..." refuses; "@x" resolves to a literal (not a dict)
    if not isinstance(net, dict):
        raise UserInputError("bundle inference config has no network_def object; pass --card")
    target = net.get("_target_")
    if isinstance(target, str) and target.startswith("$"):
        _literal(target, config, "network_def._target_")
    if target not in ALLOWED_NETWORKS:
        message = (
            f"bundle network_def._target_ {target!r} is not an allowed network; allowed: "
            f"{', '.join(sorted(_NETS))} (MONAI classes); refusing, nothing was imported or run"
        )
        raise UnsafeModelError(message)
    arch = ALLOWED_NETWORKS[target]
    rules = ARG_RULES[arch]
    args = {}
    for key, value in net.items():
        if key == "_target_":
            continue
        if key.startswith("_"):
            raise UnsafeModelError(f"bundle network_def has directive {key!r}; refusing")
        args[key] = _literal(value, config, f"network_def.{key}")
    if int(args.pop("spatial_dims", 3)) != 3:
        raise UserInputError("bundle network is not 3D (spatial_dims != 3); only 3D models are supported")
    try:
        in_channels, out_channels = int(args.pop("in_channels")), int(args.pop("out_channels"))
    except KeyError as err:
        raise UserInputError(f"bundle network_def lacks {err.args[0]}; pass --card") from None
    roi = args.get("img_size")
    kwargs, ignored = {}, []
    for key, value in args.items():
        key = rules["rename"].get(key, key)
        if key in rules["keep"]:
            kwargs[key] = value
        elif key not in rules["drop"]:
            ignored.append(key)
    if ignored:
        message = (
            f"bundle network_def arguments {ignored} are not supported for {arch}; remove them or describe "
            f"the model with --card"
        )
        raise UserInputError(message)
    roi = [int(roi)] * 3 if isinstance(roi, (int, float)) else roi
    return arch, in_channels, out_channels, kwargs, roi


def _labels(metadata: dict, out_channels: int, activation: str, regions: list[dict] | None = None) -> list[dict]:
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    pred = next(iter(outputs.values()), {}) if outputs else {}
    channel_def = {int(k): str(v) for k, v in (pred.get("channel_def") or {}).items() if str(k).isdigit()}
    first = 0 if activation == "sigmoid" else 1
    values = {r["channel"]: r["label"] for r in regions or []}
    labels = []
    for channel in sorted(values) if values else range(first, out_channels):
        value = values.get(channel, channel + 1 - first)
        name = channel_def.get(channel, f"Label {value}")
        label = {"value": value, "name": name, "color": list(PALETTE[(value - 1) % len(PALETTE)])}
        if name.strip().lower() in KNOWN_TERMS:
            label["terminology"] = KNOWN_TERMS[name.strip().lower()]
        labels.append(label)
    return labels


def read_bundle(path: Path) -> Bundle:
    """Read a MONAI bundle folder/zip/tar as data; :class:`UnsafeModelError` for code-bearing configs."""
    source = _Source(path)
    metadata = _json(source, "configs/metadata.json") or {}
    config = _json(source, "configs/inference.json")
    if config is None:
        if source.read("configs/inference.yaml") is not None:
            raise UserInputError(
                "bundle has only configs/inference.yaml; convert it to inference.json or pass --card"
            )
        raise UserInputError("bundle has no configs/inference.json; pass --card with the model description")
    notes: list[str] = []
    arch, in_channels, out_channels, kwargs, roi_hint = parse_network_def(config)
    pre, inference = read_preprocessing(config, notes), read_inferer(config, notes)
    post = read_postprocessing(config, out_channels, notes)
    activation = post["activation"]
    if arch == "swin_unetr":
        kwargs = legacy_merging(kwargs, metadata, notes)
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    image = next(iter(inputs.values()), {}) if inputs else {}
    inference.setdefault("roi_size", roi_hint or image.get("spatial_shape"))
    if not inference.get("roi_size"):
        raise UserInputError("bundle does not state an ROI (inferer roi_size / spatial_shape); pass --card")
    draft = {
        "title": str(metadata.get("name") or metadata.get("task") or Path(path).stem),
        "version": str(metadata.get("version", "")),
        "description": str(metadata.get("description", "")),
        "architecture": {"name": arch, "kwargs": kwargs},
        "input": {
            "channels": in_channels,
            "modalities": [str(image["modality"])] if image.get("modality") else [],
        },
        "labels": _labels(metadata, out_channels, activation, post["regions"]),
        "preprocessing": pre,
        "inference": inference,
        "license": _license(source, metadata),
        "intended_use": str(metadata.get("intended_use", "see the bundle documentation")),
        "metrics": [
            {"name": str(k), "value": float(v), "source": "bundle configs/metadata.json eval_metrics"}
            for k, v in (metadata.get("eval_metrics") or {}).items()
            if isinstance(v, (int, float))
        ],
        "references": [str(r) for r in metadata.get("references", [])],
    }
    if activation == "sigmoid":
        draft["output"] = {
            "activation": "sigmoid",
            "channels": out_channels,
            "threshold": post["threshold"],
            "regions": post["regions"],
        }
    for name in ("models/model.safetensors", "models/model.pt"):
        data = source.read(name)
        if data is not None:
            if source.read("models/model.ts") is not None:
                notes.append("models/model.ts (TorchScript) ignored")
            return Bundle(draft, name, data, notes)
    message = (
        "bundle has no models/model.safetensors or models/model.pt (TorchScript model.ts is never loaded); "
        "fetch its large files first (python -m monai.bundle download) or import the weights file with --card"
    )
    raise WeightsError(message)


def _version(text) -> tuple[int, ...] | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def legacy_merging(kwargs: dict, metadata: dict, notes: list[str]) -> dict:
    """SwinUNETR of a bundle written by MONAI < 1.5: its ``"merging"`` was the pre-1.5 slicing (PR #8285)."""
    version = _version(metadata.get("monai_version"))
    if kwargs.get("downsample", "merging") != "merging":
        return kwargs
    if version is not None and version < (1, 5):
        notes.append(f"metadata.json says monai_version {metadata['monai_version']} (< 1.5): SwinUNETR uses the "
                     f"pre-1.5 PatchMerging slicing it was trained with (downsample 'merging-legacy')")
        return {**kwargs, "downsample": "merging-legacy"}
    if version is None:
        notes.append("metadata.json states no monai_version: SwinUNETR uses MONAI >= 1.5 PatchMerging; if the "
                     "bundle was trained with MONAI <= 1.4 set architecture.kwargs.downsample to "
                     "'merging-legacy' with --card")
    return kwargs


def _license(source: _Source, metadata: dict) -> str:
    text = source.read("LICENSE")
    if text:
        first = next(
            (line.strip() for line in text.decode("utf-8", "replace").splitlines() if line.strip()), ""
        )
        return f"bundle LICENSE: {first[:120]}"
    return str(metadata.get("copyright", "unknown (no LICENSE in the bundle)"))
