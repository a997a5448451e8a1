"""``hybridseg import-model``: bring your own weights, safely, into the user catalog.

Accepted inputs (detected from content, not the file name):

* a safetensors file plus ``--card CARD.json``;
* a PyTorch state-dict file (``.pt``/``.pth``) plus ``--card``, read only with
  ``torch.load(weights_only=True)`` on torch >= 2.10 (see :mod:`.weights`);
* a MONAI bundle folder, zip or tar (``--card`` optional: its fields override what the bundle says), read
  as data by :mod:`.bundle`.

Refused with a clear message: TorchScript, ``torch.package``, ``.pt2``, pickles that reference code,
archives with absolute / ``..`` / symlink members or an oversized unpacked total.

The network is built from the card in our own code and the weights are loaded into it *strictly* (after the
card's key-layout mapping); only then are they written as ``<cache>/models/<id>/model.safetensors`` (temp
name, then rename) and the card, pointing at that file with its SHA-256, as ``<cache>/catalog/<id>.json``.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import re
import tempfile
from pathlib import Path

from ..errors import UnsafeModelError, UserInputError, WeightsError
from ..models.cards import MODELS_DIR, SCHEMA_PATH, ModelCard, cache_dir, user_catalog_dir, validate_card_dict
from . import download as dl
from . import layouts, load

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def models_dir() -> Path:
    """Where imported weights live: ``<cache>/models``."""
    return cache_dir() / "models"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "imported-model"


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_card_file(path: Path | None) -> dict:
    if path is None:
        return {}
    if Path(path).is_dir():
        raise UserInputError(f"--card {path} is a folder; give the model card's JSON file (--card CARD.json)")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise UserInputError(f"card file not found: {path}; check the --card path") from err
    except UnicodeDecodeError as err:
        raise UserInputError(f"card file {path} is not UTF-8 text; save it as UTF-8 JSON") from err
    except OSError as err:
        raise UserInputError(f"cannot read card file {path} ({err.strerror or err}); check --card") from err
    except json.JSONDecodeError as err:
        raise UserInputError(f"card file {path} is not valid JSON ({err.msg} at line {err.lineno})") from err
    if isinstance(data, list):
        if len(data) != 1:
            raise UserInputError(f"card file {path} holds {len(data)} cards; pass a file with exactly one")
        data = data[0]
    if not isinstance(data, dict):
        raise UserInputError(f"card file {path} must hold a JSON object (a model card)")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".import-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_source(path: Path, card_override: dict) -> tuple[dict, object, str]:
    """(draft card, checkpoint object, description of the source) for ``path``."""
    if path.is_dir():
        kind = "bundle-dir"
    else:
        kind = load.sniff_format(path)
    load.refuse_code_format(kind, path)
    if kind in ("bundle-dir", "bundle-zip", "tar", "zip"):
        from .bundle import read_bundle

        if kind == "zip":  # a zip that is neither a torch checkpoint nor a bundle at the top: maybe nested
            try:
                bundle = read_bundle(path)
            except UserInputError as err:
                message = f"{path.name} is a zip archive but neither a MONAI bundle nor a weights file; {err}"
                raise UserInputError(message) from err
        else:
            bundle = read_bundle(path)
        for note in bundle.notes:
            logger.info("bundle: %s", note)
        inner = load.sniff_bytes(bundle.weights_bytes)
        checkpoint = load.parse_weights(bundle.weights_bytes, inner, f"{path.name}:{bundle.weights_name}")
        return bundle.draft, checkpoint, f"MONAI bundle {path.name} ({bundle.weights_name})"
    if kind in ("safetensors", "torch-zip", "torch-legacy"):
        if not card_override:
            message = (
                f"{path.name} holds only weights; pass --card CARD.json describing the model (architecture, "
                f"labels, preprocessing, ROI): copy one from `hybridseg models --json` and edit it"
            )
            raise UserInputError(message)
        checkpoint = load.parse_weights(path.read_bytes(), kind, path.name)
        return (
            {},
            checkpoint,
            f"{'safetensors' if kind == 'safetensors' else 'PyTorch state dict'} {path.name}",
        )
    message = (
        f"{path.name} is not a format import-model accepts (detected: {kind}); use safetensors, a PyTorch "
        f"state dict (.pt/.pth) or a MONAI bundle"
    )
    raise UserInputError(message)


def check_labels_match_outputs(card: ModelCard) -> None:
    """Every output channel the network predicts must map to a declared label, and every label to a channel.

    Softmax: channel ``c`` is label value ``c`` (channel 0 the background), so the values must be exactly
    ``1 .. channels-1``. Sigmoid: every region reads an existing channel and paints a declared label, and every
    label is painted by some region. Otherwise voxels would carry a value with no segment (or a segment could
    never appear).

    Raises:
        UserInputError: the card's labels and output channels disagree.
    """
    channels = card.out_channels
    values = sorted(label["value"] for label in card.labels)
    if card.activation == "sigmoid":
        regions = card.output_regions
        bad_channels = sorted({r["channel"] for r in regions if r["channel"] >= channels})
        painted = {int(r["label"]) for r in regions}
        problems = []
        if not regions:
            problems.append("no output.regions")
        if bad_channels:
            problems.append(f"regions read channels {bad_channels} of {channels}")
        if painted - set(values):
            problems.append(f"regions paint undeclared label values {sorted(painted - set(values))}")
        if set(values) - painted:
            problems.append(f"labels {sorted(set(values) - painted)} are painted by no region")
        if problems:
            message = (f"model card {card.id!r}: {'; '.join(problems)}; make output.regions and labels agree "
                       f"(see Resources/docs/model-cards.md)")
            raise UserInputError(message)
        return
    expected = list(range(1, channels))
    if values != expected:
        missing = sorted(set(expected) - set(values))
        extra = sorted(set(values) - set(expected))
        detail = "; ".join(filter(None, [f"no label for channel(s) {missing}" if missing else "",
                                         f"label value(s) {extra} beyond the last channel" if extra else ""]))
        message = (f"model card {card.id!r}: the network has {channels} output channels (background + "
                   f"{channels - 1} classes) but the labels have values {values} ({detail}); give one label per "
                   f"class channel, values 1..{channels - 1} (see Resources/docs/model-cards.md)")
        raise UserInputError(message)


def _choose_id(model_id: str | None, card: dict, path: Path) -> str:
    chosen = model_id or card.get("id") or _slug(card.get("title") or path.stem)
    if not _ID.match(chosen):
        message = f"model id {chosen!r} is invalid: use lower-case letters, digits, '.', '_' and '-' (--id)"
        raise UserInputError(message)
    return chosen


def _check_collision(model_id: str, force: bool) -> None:
    builtin = {json.loads(p.read_text()).get("id") for p in MODELS_DIR.glob("*.json") if p != SCHEMA_PATH}
    if model_id in builtin:
        raise UserInputError(f"model id {model_id!r} is a built-in model; choose another with --id")
    existing = user_catalog_dir() / f"{model_id}.json"
    if existing.exists() and not force:
        message = (
            f"model {model_id!r} was already imported ({existing}); pass --force to replace it or use --id"
        )
        raise UserInputError(message)


def import_model(
    path: str | Path, card_path: str | Path | None = None, model_id: str | None = None, force: bool = False
) -> ModelCard:
    """Import a model into the user catalog and return its card (see the module docstring).

    Raises:
        UnsafeModelError: code-bearing formats, unsafe archives or bundle configs.
        WeightsError: weights that do not fit the described network (missing/unexpected keys, shapes).
        UserInputError: anything else the user must fix (missing card, bad id, invalid card...).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserInputError(f"{path} does not exist; pass a weights file or a MONAI bundle folder/zip")
    override = _read_card_file(Path(card_path) if card_path else None)
    draft, checkpoint, described = _load_source(path, override)
    card = _deep_merge(draft, {k: v for k, v in override.items() if k not in ("weights",) + _DERIVED})
    card["id"] = _choose_id(model_id, card, path)
    _check_collision(card["id"], force)
    mapping = override.get("weights") or {}
    layout, key = mapping.get("key_layout", "monai"), mapping.get("state_dict_key")
    card["weights"] = {"file": "pending", "sha256": None}
    validate_card_dict(card, f"for {path.name} (merge of the bundle and --card)")
    spec_card = ModelCard(card)
    check_labels_match_outputs(spec_card)
    model = spec_card.spec.build(
        spec_card.in_channels, spec_card.out_channels, spec_card.roi_size, **spec_card.architecture_kwargs
    )
    layouts.load_weights_into(model, checkpoint, layout, state_dict_key=key, source=f"weights in {described}")
    return _write_model(card, model, described)


_DERIVED = ("attention_methods", "bundled", "downloaded", "card_path")


def _write_model(card: dict, model, described: str) -> ModelCard:
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"source": described[:200], "hybridseg_model_id": card["id"]})
    target = models_dir() / card["id"] / "model.safetensors"
    _write_atomic(target, data)
    digest = dl.file_digest(target)
    today = datetime.date.today().isoformat()
    card["weights"] = {
        "file": str(target),
        "sha256": digest,
        "size_bytes": len(data),
        "format": "safetensors",
        "key_layout": "hybridseg",
        "hash_source": f"computed by hybridseg import-model on {today} from {described}",
    }
    card.setdefault("provenance", {})["imported_from"] = described
    validate_card_dict(card, f"imported card {card['id']!r}")
    card_file = user_catalog_dir() / f"{card['id']}.json"
    _write_atomic(card_file, (json.dumps(card, indent=2) + "\n").encode())
    logger.info("imported %s as model %r (%s)", described, card["id"], card_file)
    return ModelCard.from_dict(card, card_file)


def remove_imported(model_id: str) -> None:
    """Delete an imported model's card and weights (no-op for unknown ids)."""
    (user_catalog_dir() / f"{model_id}.json").unlink(missing_ok=True)
    folder = models_dir() / model_id
    if folder.is_dir():
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()


__all__ = ["import_model", "models_dir", "remove_imported", "UnsafeModelError", "WeightsError"]
