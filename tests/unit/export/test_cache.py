"""The model cache's keys and lookups (no export runs here: tests/test_serve_models.py serves through it)."""

from __future__ import annotations

import os

import pytest

from rtvi import __version__
from rtvi.export import cache
from rtvi.serving.errors import ModelLoadError


def test_keys_name_architecture_weights_and_rtvi_version(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_torchvision_release", lambda: "0.29.1")
    assert cache.entry_name("resnet18", "DEFAULT") == f"resnet18-default-tv0.29.1-rtvi{__version__}"
    assert cache.entry_name("resnet18", "none") == f"resnet18-random-rtvi{__version__}"
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"weights")
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    assert cache.entry_name("resnet18", str(checkpoint)).startswith("resnet18-sha256-")
    assert cache.entry_name("resnet18", str(checkpoint)) != cache.entry_name("resnet18", str(other))


def test_an_unreadable_checkpoint_is_one_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        cache.entry_name("resnet18", str(tmp_path / "missing.pt"))


def test_find_returns_only_an_existing_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_torchvision_release", lambda: "0.29.1")
    assert cache.find("resnet18", "DEFAULT", tmp_path) is None
    entry = tmp_path / f"resnet18-default-tv0.29.1-rtvi{__version__}"
    entry.mkdir()
    assert cache.find("resnet18", "DEFAULT", tmp_path) == entry
    assert cache.find("resnet18", "none", tmp_path) is None


def test_without_torchvision_default_weights_match_the_newest_baked_release(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_torchvision_release", lambda: None)
    old, new = (tmp_path / f"resnet18-default-tv{v}-rtvi{__version__}" for v in ("0.28.0", "0.29.1"))
    for age, entry in enumerate((new, old)):
        entry.mkdir()
        os.utime(entry, (1_000_000 - age, 1_000_000 - age))
    (tmp_path / "resnet18-default-tv0.30.0-rtvi0.0.1").mkdir()  # another rtvi's export: never used
    assert cache.find("resnet18", "DEFAULT", tmp_path) == new


def test_not_cached_and_no_torch_says_how_to_bake_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "_torchvision_release", lambda: None)
    with pytest.raises(ModelLoadError, match="not in the model cache .*`rtvi export --model resnet18 --to-cache"):
        cache.model_directory("resnet18", "DEFAULT", tmp_path)


def test_root_defaults_under_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.root("") == tmp_path / "rtvi" / "models"
    assert cache.root("/srv/models") == cache.Path("/srv/models")
