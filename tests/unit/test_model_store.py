"""The model store: names -> files -> generators loaded once per (file, device), bounded;
names -> aligners and drag step sizes; a daemon's store never opens a path it was not given."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gimp_draggan.edit.align import SquareFraming
from gimp_draggan.edit.align_embedded import KeypointAligner
from gimp_draggan.models.registry import RegistryError
from gimp_draggan.models.store import PAPER_LR, ModelStore


def _copy(tiny: Path, dest: Path) -> Path:
    shutil.copy(tiny, dest)
    shutil.copy(tiny.with_suffix(".json"), dest.with_suffix(".json"))
    return dest


def test_generators_are_loaded_once_per_file_and_bounded(tiny: Path, tmp_path: Path) -> None:
    other = _copy(tiny, tmp_path / "other.safetensors")
    store = ModelStore({"a": tiny, "b": other}, max_loaded=1)
    first = store.load("a", "cpu")
    assert first.path == tiny and store.load("a", "cpu").G is first.G
    assert not first.G.training and not any(p.requires_grad for p in first.G.parameters())
    assert store.load("b", "cpu").G is not first.G  # Evicts a's.
    assert store.load("a", "cpu").G is not first.G
    again = store.load("a", "cpu").G
    store.clear()
    assert store.load("a", "cpu").G is not again


def test_a_daemon_store_opens_only_the_files_it_was_given(tiny: Path) -> None:
    daemon = ModelStore({"tiny": tiny})
    assert daemon.file("tiny") == tiny and daemon.knows("tiny") and not daemon.knows(str(tiny))
    with pytest.raises(RegistryError, match="no model named"):
        daemon.file(str(tiny))
    cli = ModelStore(any_file=True)
    assert cli.file(str(tiny)) == tiny
    with pytest.raises(RegistryError, match="neither a file nor a known model"):
        cli.file(str(tiny) + ".missing")


def test_what_a_model_calls_for(tiny: Path) -> None:
    store = ModelStore({"tiny": tiny}, any_file=True)
    assert isinstance(store.aligner("embedded"), KeypointAligner)
    assert store.aligner("embedded") is store.aligner("embedded")  # It remembers framings.
    assert isinstance(store.aligner("stylegan2-afhqcat-512x512"), SquareFraming)
    assert isinstance(store.aligner("tiny"), SquareFraming)  # An operator's file.
    assert isinstance(store.aligner(str(tiny)), SquareFraming)  # A path.
    assert store.drag_lr("embedded") == 0.005
    assert store.drag_lr("stylegan2-ffhq-512x512") == store.drag_lr("tiny") == PAPER_LR
