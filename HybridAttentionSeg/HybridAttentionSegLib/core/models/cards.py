"""Model cards (JSON data) and the catalog.

A model card is a JSON object validated against ``Resources/Models/model-card.schema.json``
(documented in ``Resources/docs/model-cards.md``). The catalog is the union of

1. the built-in cards in ``HybridAttentionSeg/Resources/Models/*.json``,
2. the user catalog (models added with ``hybridseg import-model``) in ``<cache>/catalog/*.json``,
3. extra files named by ``--catalog FILE`` or ``HYBRIDSEG_CATALOG`` (``os.pathsep``-separated),

later sources overriding earlier ones by ``id``. A catalog file holds one card or a list of cards, in the
same schema that ``hybridseg models --json`` prints (derived fields such as ``bundled`` are recomputed).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import UserInputError
from ..names import unknown_name_error
from ..paths import MODELS_DIR, SCHEMA_PATH, cache_dir, catalog_files, user_catalog_dir  # noqa: F401 (re-export)
from .registry import get_architecture

logger = logging.getLogger(__name__)

DERIVED_FIELDS = ("attention_methods", "bundled", "downloaded", "card_path")


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate_card_dict(data: dict, source: str = "card") -> None:
    """Validate a card dict against the JSON schema and the registry; raise UserInputError if invalid."""
    import jsonschema

    try:
        jsonschema.validate(data, _schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        message = (f"invalid model card {source}: {where}: {err.message}; "
                   "fix the card (schema: Resources/docs/model-cards.md)")
        raise UserInputError(message) from err
    get_architecture(data["architecture"]["name"])
    values = [label["value"] for label in data["labels"]]
    if len(set(values)) != len(values):
        message = f"invalid model card {source}: duplicate label values {values}"
        raise UserInputError(message)


@dataclass
class ModelCard:
    """A validated model card with typed accessors. ``data`` is the JSON object; ``path`` its file."""

    data: dict
    path: Path | None = None

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> ModelCard:
        data = {k: v for k, v in copy.deepcopy(data).items() if k not in DERIVED_FIELDS}
        validate_card_dict(data, str(path) if path else data.get("id", "card"))
        return cls(data, path)

    # identity -------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def title(self) -> str:
        return self.data["title"]

    @property
    def architecture(self) -> str:
        return self.data["architecture"]["name"]

    @property
    def architecture_kwargs(self) -> dict:
        return dict(self.data["architecture"].get("kwargs", {}))

    @property
    def spec(self):
        return get_architecture(self.architecture)

    @property
    def attention_methods(self) -> tuple[str, ...]:
        return self.spec.attention_methods

    # input / labels -------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return int(self.data["input"]["channels"])

    @property
    def labels(self) -> list[dict]:
        return sorted(self.data["labels"], key=lambda label: label["value"])

    @property
    def out_channels(self) -> int:
        """Network output channels: ``output.channels`` if given, else background + highest label value."""
        output = self.data.get("output") or {}
        if output.get("channels"):
            return int(output["channels"])
        return max(label["value"] for label in self.labels) + 1

    @property
    def activation(self) -> str:
        """``softmax`` (default: channel 0 = background, argmax gives the label) or ``sigmoid``."""
        return (self.data.get("output") or {}).get("activation", "softmax")

    @property
    def output_regions(self) -> list[dict]:
        """Sigmoid models: ``[{"channel", "label"}]`` painted in order (later wins) where p > threshold."""
        return list((self.data.get("output") or {}).get("regions", []))

    @property
    def output_threshold(self) -> float:
        """Sigmoid models: probability threshold of a region."""
        return float((self.data.get("output") or {}).get("threshold", 0.5))

    def label_index(self, name_or_value) -> int:
        """Label value for a segment name (case-insensitive) or a numeric string/int."""
        if isinstance(name_or_value, int) or str(name_or_value).isdigit():
            value = int(name_or_value)
            if value in {label["value"] for label in self.labels}:
                return value
        for label in self.labels:
            if label["name"].lower() == str(name_or_value).lower():
                return int(label["value"])
        raise unknown_name_error(f"class of model {self.id!r}", str(name_or_value),
                                 [label["name"] for label in self.labels])

    def label_name(self, value: int) -> str:
        for label in self.labels:
            if label["value"] == value:
                return label["name"]
        return f"Label {value}"

    # preprocessing / inference ----------------------------------------------------------------
    @property
    def orientation(self) -> str | None:
        return self.data["preprocessing"].get("orientation")

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        spacing = self.data["preprocessing"].get("spacing")
        return tuple(float(s) for s in spacing) if spacing else None

    @property
    def intensity(self) -> dict:
        return dict(self.data["preprocessing"].get("intensity", {"method": "none"}))

    @property
    def preprocessing_order(self) -> str:
        """``resample-first`` (MONAI pipelines: Orientation, Spacing, then intensity) or ``intensity-first``."""
        return str(self.data["preprocessing"].get("order", "intensity-first"))

    @property
    def crop_foreground(self) -> bool:
        """Crop the model grid to voxels > 0 after normalisation before the windows (MONAI CropForegroundd)."""
        return bool(self.data["preprocessing"].get("crop_foreground", False))

    @property
    def blend(self) -> str:
        """How overlapping sliding windows are blended: ``constant`` or ``gaussian`` (default)."""
        return str(self.data["inference"].get("blend", "gaussian"))

    @property
    def roi_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data["inference"]["roi_size"])

    @property
    def overlap(self) -> float:
        return float(self.data["inference"].get("overlap", 0.5))

    @property
    def sw_batch_size(self) -> int:
        return int(self.data["inference"].get("sw_batch_size", 1))

    # weights ----------------------------------------------------------------------------------
    @property
    def weights(self) -> dict:
        return dict(self.data["weights"])

    def local_weights_path(self) -> Path | None:
        """Path of weights shipped next to the card (``weights.file``), else None."""
        file = self.weights.get("file")
        if not file:
            return None
        path = Path(file)
        if not path.is_absolute() and self.path is not None:
            path = self.path.parent / path
        return path

    def cached_weights_path(self) -> Path:
        """Where downloaded weights live in the cache."""
        archive = self.weights.get("archive")
        if archive:  # the extracted member is kept, the downloaded archive is not
            name = archive["member"].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            return cache_dir() / "weights" / self.id / name
        url = self.weights.get("url") or (self.weights.get("urls") or [""])[0]
        name = url.rsplit("/", 1)[-1].split("?")[0] or "weights.bin"
        return cache_dir() / "weights" / self.id / name

    @property
    def bundled(self) -> bool:
        path = self.local_weights_path()
        return bool(path and path.is_file())

    @property
    def downloaded(self) -> bool:
        return self.bundled or self.cached_weights_path().is_file()

    def to_json(self) -> dict:
        """Catalog listing form: the card plus derived fields."""
        out = copy.deepcopy(self.data)
        out["attention_methods"] = list(self.attention_methods)
        out["bundled"] = self.bundled
        out["downloaded"] = self.downloaded
        if self.path:
            out["card_path"] = str(self.path)
            local = self.local_weights_path()
            if local is not None:
                out["weights"]["file"] = str(local)
        return out


def load_card_file(path: Path) -> list[ModelCard]:
    """Load one catalog file (a card or a list of cards)."""
    path = Path(path)
    if path.is_dir():
        message = f"catalog path {path} is a folder; give a JSON card file (--catalog / HYBRIDSEG_CATALOG)"
        raise UserInputError(message)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        message = f"catalog file not found: {path}; check the --catalog / HYBRIDSEG_CATALOG path"
        raise UserInputError(message) from err
    except UnicodeDecodeError as err:
        message = f"catalog file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 JSON"
        raise UserInputError(message) from err
    except json.JSONDecodeError as err:
        message = f"catalog file {path} is not valid JSON ({err.msg} at line {err.lineno}); fix the file"
        raise UserInputError(message) from err
    except OSError as err:
        message = f"cannot read catalog file {path} ({err.strerror or err}); check the path and its permissions"
        raise UserInputError(message) from err
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict):
            message = (f"catalog file {path} must hold a model card (JSON object) or a list of cards, found "
                       f"{type(item).__name__} {json.dumps(item)[:40]}; see `hybridseg models --json`")
            raise UserInputError(message)
    return [ModelCard.from_dict(item, path) for item in items]


def load_catalog(extra: list[str] | None = None) -> dict[str, ModelCard]:
    """The catalog: id -> card, built-ins first, then the user catalog, then extra files."""
    catalog: dict[str, ModelCard] = {}
    for path in catalog_files(extra):
        for card in load_card_file(path):
            catalog[card.id] = card
    return catalog


def get_card(model_id: str, extra: list[str] | None = None) -> ModelCard:
    """Look up a model card by id; unknown ids raise with the closest valid ids."""
    catalog = load_catalog(extra)
    try:
        return catalog[model_id]
    except KeyError:
        raise unknown_name_error("model", model_id, catalog) from None
