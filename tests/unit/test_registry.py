"""The model table and cache locations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gimp_draggan.models import registry
from gimp_draggan.models.registry import RegistryError

# The facts table of issue 3: these hashes must be pinned exactly; the sizes that no source
# states exactly must stay unknown.
PINNED = {
    "stylegan2-ffhq-512x512": "d2b1c92f41ce8a64c55f7a75ef06c4c0eef9e17b1eb29aae8c10fb37b3e60478",
    "stylegan2-afhqcat-512x512": "17a83abee464242f8bb40dc6363d33c2fb087066b68fc0147677fdbf21f7a7a9",
    "stylegan2-lions-512": "0a01ff8344521171b1a2eff1e9a51c1acbc48221bdc2594919187f66a3942bcc",
    "stylegan2-dogs-1024": "c9e93090d02916165a602c728c0e37458fc0c58fbc58e4d75bcd096bb81c7e8c",
    "stylegan2-horses-256": "f100dc32e2731a293f3b31a9038416f72aa5cc30555b3315a82e19c065f81b0c",
    "stylegan2-elephants-512": "56504894f6d7121959af78a74148cf1e9d858e3710312efb11c41dbf27684363",
    "stylegan2-cat-config-f": "08940fd616cfaf6bc7b0286b5d1a0b3f70febb26e136d64716c8d3f5e9bd3883",
    "lpips-vgg16": "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    "lpips-alexnet": "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
}


def test_table_pins_the_published_facts() -> None:
    table = registry.load_table()
    for name, sha in PINNED.items():
        assert table[name].sha256 == sha, name
    assert table["stylegan2-ada-ffhq-1024"].sha256 is None  # public copies disagree
    assert table["lpips-vgg16"].size_bytes == 553_433_881
    assert table["lpips-alexnet"].size_bytes == 244_408_911
    for e in table.values():
        if e.kind == "generator" and e.name != "embedded":
            assert e.size_bytes is None, f"{e.name}: no source states an exact size"
        if e.resolution:
            assert e.num_ws in (None, 2 * e.resolution.bit_length() - 4), e.name
    assert table["stylegan2-ffhq-512x512"].num_ws == 16
    assert table["embedded"].package_path == "assets/embedded.safetensors"
    assert not table["embedded"].urls


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(registry.CACHE_ENV, raising=False)
    monkeypatch.setattr(registry.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "gimp-draggan"
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "env"))
    assert registry.cache_dir() == tmp_path / "env"
    assert registry.cache_dir(tmp_path / "flag") == tmp_path / "flag"


@pytest.mark.parametrize(
    ("platform", "env", "expect"),
    [
        ("darwin", {}, "HOME/Library/Caches/gimp-draggan"),
        ("win32", {"LOCALAPPDATA": "LAD"}, "LAD/gimp-draggan"),
        ("linux", {}, "HOME/.cache/gimp-draggan"),
    ],
)
def test_platform_cache_dirs(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    platform: str,
    env: dict[str, str],
    expect: str,
) -> None:
    monkeypatch.setattr(registry.sys, "platform", platform)
    monkeypatch.setattr(registry.Path, "home", staticmethod(lambda: tmp_path / "HOME"))
    for var in ("XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, str(tmp_path / v))
    assert registry.default_cache_dir() == tmp_path / expect


def test_resolve_and_is_cached(tmp_path: Path) -> None:
    name = "stylegan2-ffhq-512x512"
    with pytest.raises(RegistryError, match=f"gimp-draggan models download {name}"):
        registry.resolve(name, tmp_path)
    assert not registry.is_cached(name, tmp_path)
    path = tmp_path / "models" / "stylegan2-ffhq-512x512.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")  # Garbage is not "cached" (issue 21), and resolve says why.
    assert not registry.is_cached(name, tmp_path)
    with pytest.raises(RegistryError, match=f"damaged .*delete {path} and download it again"):
        registry.resolve(name, tmp_path)
    path.write_bytes(b"\x80\x04N.")  # Looks like a whole pickle (loading is the loader's job).
    assert registry.is_cached(name, tmp_path)
    assert registry.resolve(name, tmp_path) == path
    # Pinned size: a file of the wrong size is not "cached".
    (tmp_path / "models" / "vgg16-397923af.pth").write_bytes(b"short")
    assert not registry.is_cached("lpips-vgg16", tmp_path)


def test_resolve_paths_and_unknown_names(tmp_path: Path) -> None:
    f = tmp_path / "my.pkl"
    f.write_bytes(b"x")
    assert registry.resolve(str(f)) == f
    with pytest.raises(RegistryError, match="neither a file nor a known model"):
        registry.resolve(str(tmp_path / "nope.pkl"))
    with pytest.raises(RegistryError, match="unknown model"):
        registry.get_entry("stylegan9")
    with pytest.raises(RegistryError, match="by hand"):
        registry.resolve("stylegan-human-v2-512", tmp_path)


def test_broken_tables_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    row = {"name": "a", "kind": "generator", "filename": "a.pkl", "licence": "x", "sha256": "ABC"}
    bad.write_text(json.dumps({"format": "gimp-draggan-models", "models": [row]}))
    with pytest.raises(RegistryError, match="64 lowercase hex"):
        registry.load_table(bad)
    row["sha256"] = None
    bad.write_text(json.dumps({"format": "gimp-draggan-models", "models": [row, row]}))
    with pytest.raises(RegistryError, match="duplicate"):
        registry.load_table(bad)
    bad.write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read"):
        registry.load_table(bad)
