"""The architecture registry: one declaration, duplicate warning, helpful unknown-name errors, CLI listing."""

import dataclasses
import json

import pytest
from HybridAttentionSegLib.cli import main
from HybridAttentionSegLib.core.errors import UnknownNameError
from HybridAttentionSegLib.core.models import registry
from HybridAttentionSegLib.core.models.registry import (
    ATTENTION_METHODS,
    get_architecture,
    list_architectures,
    register_architecture,
)

REQUIRED = {"unetr", "swin_unetr", "attention_unet", "transunet", "cnn_self_attention", "segresnet"}


def test_required_architectures_are_registered_with_valid_methods():
    names = {spec.name for spec in list_architectures()}
    assert REQUIRED <= names
    for spec in list_architectures():
        assert spec.attention_methods and set(spec.attention_methods) <= set(ATTENTION_METHODS)
        assert "grad-cam" in spec.attention_methods and "uncertainty" in spec.attention_methods


def test_unknown_name_lists_the_closest_valid_names():
    with pytest.raises(UnknownNameError, match="did you mean 'swin_unetr'"):
        get_architecture("swin-unetr")


def test_registering_a_name_twice_warns_and_the_later_wins():
    original = get_architecture("segresnet")
    replacement = dataclasses.replace(original, description="replacement")
    try:
        with pytest.warns(UserWarning, match="registered twice"):
            register_architecture(replacement)
        assert get_architecture("segresnet").description == "replacement"
    finally:
        registry._REGISTRY["segresnet"] = original


def test_unknown_attention_method_in_a_declaration_is_refused():
    with pytest.raises(ValueError, match="unknown attention methods"):
        register_architecture(dataclasses.replace(get_architecture("segresnet"), name="bad",
                                                  attention_methods=("saliency",)))


def test_cli_lists_architectures_and_models_as_json(capsys):
    assert main(["architectures", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert {item["name"] for item in items} >= REQUIRED
    for item in items:
        assert {"name", "attention_methods", "constraints"} <= set(item)
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert cards
    for card in cards:
        assert {"id", "architecture", "attention_methods", "bundled", "labels"} <= set(card)
    assert {c["id"] for c in cards if c["bundled"]} >= {"mni-tissue-attention-unet", "mni-tissue-transunet"}
