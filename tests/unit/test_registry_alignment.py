"""models.json says which framing a model needs ("alignment")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gimp_draggan.models import registry
from gimp_draggan.models.registry import RegistryError


def test_ffhq_models_ask_for_ffhq_alignment_and_other_photo_models_for_none() -> None:
    table = registry.load_table()
    ffhq = {name for name, e in table.items() if e.alignment == "ffhq"}
    assert ffhq == {"stylegan2-ffhq-512x512", "stylegan2-ada-ffhq-1024"}
    for name in (
        "stylegan2-afhqcat-512x512",
        "stylegan2-lions-512",
        "stylegan2-dogs-1024",
        "lpips-vgg16",
    ):
        assert table[name].alignment is None, name
    assert all("alignment" not in e.extra for e in table.values())


def test_an_alignment_that_is_not_a_word_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    row = {
        "name": "a",
        "kind": "generator",
        "filename": "a.pkl",
        "licence": "x",
        "alignment": ["ffhq"],
    }
    bad.write_text(json.dumps({"format": "gimp-draggan-models", "models": [row]}))
    with pytest.raises(RegistryError, match="alignment must be a word"):
        registry.load_table(bad)
    row["alignment"] = "ffhq"
    bad.write_text(json.dumps({"format": "gimp-draggan-models", "models": [row]}))
    assert registry.load_table(bad)["a"].alignment == "ffhq"
