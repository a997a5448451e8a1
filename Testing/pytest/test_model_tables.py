"""The bundled models' tables in the README and the docs are what their cards say (``Testing/tools/model_tables.py``).

The cards hold the generated numbers (``hybridseg train``, ``validate --write-card``, ``explain-eval
--write-card``); the tables are written from them by the script, so a retrained model whose tables were not
regenerated fails here, and so does a hand edit inside a generated block.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "model_tables.py"


@pytest.fixture(scope="module")
def model_tables():
    spec = importlib.util.spec_from_file_location("model_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tables_are_up_to_date(model_tables, caplog):
    caplog.set_level("INFO")
    assert model_tables.main(["--check"]) == 0, caplog.text


def test_a_hand_edit_inside_a_block_is_caught(model_tables):
    readme = model_tables.README.read_text(encoding="utf-8")
    lines = model_tables.tables()["validation"]
    edited = lines[:2] + [lines[2].replace("mixed", "template", 1)] + lines[3:]
    tampered = model_tables.replace_block(readme, "validation", edited)
    assert tampered != readme
    assert model_tables.replace_block(tampered, "validation", lines) == readme


def test_every_bundled_model_has_a_row(model_tables):
    names = {card.id for card in model_tables.demo_cards()}
    for name, lines in model_tables.tables().items():
        if name == "commands":
            assert len(lines) == len(names) + 2 and all(f"--id {n}" in "".join(lines) for n in names)
            continue
        rows = {line.split("|")[1].strip(" `") for line in lines[2:]}
        assert rows == names, (name, sorted(rows))
