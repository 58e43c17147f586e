"""Safe loading of NVIDIA-style network pickles and the project's safetensors format."""

from __future__ import annotations

import builtins
import os
import pickle
import random
import subprocess
from pathlib import Path

import pytest
import torch
from stylegan_pickle_maker import (
    ada_kwargs,
    nvidia_modules,
    randomize_,
    stylegan3_kwargs,
    write_network_pickle,
)

from gimp_draggan.draggan.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_generator,
    read_config,
    read_pickle,
    save_generator,
)
from gimp_draggan.draggan.networks import Generator, GeneratorConfig, seed_to_z

CFG = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


@pytest.fixture(scope="module")
def source_G() -> Generator:
    torch.manual_seed(0)
    return randomize_(Generator(CFG).eval().requires_grad_(False))


def _renders(G: Generator) -> list[torch.Tensor]:
    """Images covering const/none/random noise and truncation."""
    with torch.no_grad():
        z0, z5 = seed_to_z(0, G.z_dim), seed_to_z(5, G.z_dim)
        out = [G(z0, noise_mode="const"), G(z5, truncation_psi=0.7, noise_mode="none")]
        torch.manual_seed(7)
        out.append(G(z0, truncation_psi=0.7, noise_mode="random"))
    return out


@pytest.fixture(scope="module")
def source_renders(source_G: Generator) -> list[torch.Tensor]:
    return _renders(source_G)


@pytest.mark.parametrize("style", ["stylegan3", "stylegan2-ada", "positional-args"])
def test_pickle_loads_renders_like_source_and_never_runs_module_src(
    tmp_path: Path, source_G: Generator, source_renders: list[torch.Tensor], style: str
) -> None:
    marker = tmp_path / "EXECUTED"
    if style == "stylegan3":
        kwargs, args = stylegan3_kwargs(CFG), ()
    elif style == "stylegan2-ada":
        kwargs, args = ada_kwargs(CFG), ()
    else:
        kw = ada_kwargs(CFG)
        args = tuple(
            kw.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
        )
        kwargs = kw
    path = tmp_path / "net.pkl"
    with nvidia_modules():
        from stylegan_pickle_maker import persistent_module

        snapshot = {"G_ema": persistent_module(source_G, "raise SystemExit", kwargs, args)}
        path.write_bytes(pickle.dumps(snapshot))
    paths = [path]
    if style == "stylegan3":  # a whole training snapshot: G, D, G_ema, augment_pipe, ...
        paths.append(write_network_pickle(tmp_path / "full.pkl", source_G, kwargs, marker))

    for p in paths:
        G = load_generator(p)
        assert G.config.img_resolution == 32 and G.num_ws == source_G.num_ws
        for got, want in zip(_renders(G), source_renders, strict=True):
            assert torch.equal(got, want)
    assert not marker.exists()


def test_control_plain_pickle_would_execute_module_src(tmp_path: Path, source_G: Generator) -> None:
    """The marker mechanism works: an ordinary unpickler runs module_src and leaves the marker."""
    marker = tmp_path / "EXECUTED"
    path = write_network_pickle(tmp_path / "net.pkl", source_G, stylegan3_kwargs(CFG), marker)
    with nvidia_modules(), pytest.raises(RuntimeError):
        pickle.loads(path.read_bytes())
    assert marker.exists()


def test_pickle_reads_all_snapshot_keys_inertly(tmp_path: Path, source_G: Generator) -> None:
    marker = tmp_path / "EXECUTED"
    path = write_network_pickle(tmp_path / "net.pkl", source_G, stylegan3_kwargs(CFG), marker)
    data = read_pickle(path)
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert data["training_set_kwargs"]["resolution"] == 32
    assert data["D"].class_name == "Sequential"
    assert not marker.exists()


class _Reduce:
    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, ...]:
        return (self.func, self.args)


def _text(s: str) -> bytes:
    """Pickle BINUNICODE opcode for ``s``."""
    raw = s.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def _evil_pickles(marker: Path) -> dict[str, bytes]:
    touch = f"touch {marker}"
    py_touch = f"open({str(marker)!r}, 'w')"
    return {
        "os.system": pickle.dumps({"G_ema": _Reduce(os.system, (touch,))}),
        "builtins.eval": pickle.dumps({"G_ema": _Reduce(builtins.eval, (py_touch,))}),
        "builtins.exec": pickle.dumps(_Reduce(builtins.exec, (py_touch,))),
        "subprocess.Popen": pickle.dumps(_Reduce(subprocess.Popen, (["touch", str(marker)],))),
        "subprocess.check_call": pickle.dumps(
            _Reduce(subprocess.check_call, (["touch", str(marker)],))
        ),
        # getattr(__import__('os'), 'system')(...) assembled from harmless-looking reduces.
        "builtins.getattr": (
            b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\n"
            + _text("os")
            + b"\x85R"
            + _text("system")
            + b"\x86R"
            + _text(touch)
            + b"\x85R."
        ),
        # A nested plain torch stream would be unpickled by torch.load: it must be weights-only.
        "torch.load": pickle.dumps(_Reduce(torch.load, (str(marker),))),
        # Other names from the persistence module (its real exec helper) are refused too.
        "persistence._src_to_module": (
            b"\x80\x02ctorch_utils.persistence\n_src_to_module\nX\x05\x00\x00\x00printq\x00\x85R."
        ),
    }


@pytest.mark.parametrize("kind", list(_evil_pickles(Path("/x"))))
def test_hostile_pickles_refused_with_clear_error(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_evil_pickles(marker)[kind])
    with pytest.raises(UnsafeCheckpointError) as info:
        load_generator(path)
    msg = str(info.value)
    assert "not a trusted StyleGAN checkpoint" in msg
    assert str(path) in msg
    assert not marker.exists()


def test_os_system_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(_evil_pickles(tmp_path / "m")["os.system"])
    with pytest.raises(UnsafeCheckpointError, match=r"'(posix|nt|os)\.system'"):
        load_generator(path)


def test_storage_bytes_must_be_weights_only(tmp_path: Path) -> None:
    """``_load_from_bytes`` is allowed, but its payload may not smuggle code to torch.load."""
    marker = tmp_path / "PWNED"
    inner = pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=2)
    outer = b"\x80\x02ctorch.storage\n_load_from_bytes\nC" + bytes([len(inner)]) + inner + b"\x85R."
    path = tmp_path / "evil.pkl"
    path.write_bytes(outer)
    with pytest.raises(UnsafeCheckpointError, match="not a trusted StyleGAN checkpoint"):
        load_generator(path)
    assert not marker.exists()


def test_numpy_reconstruct_with_foreign_class_refused(tmp_path: Path) -> None:
    data = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncbuiltins\nset\nK\x00\x85C\x01b\x87R."
    path = tmp_path / "np.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="numpy array record"):
        read_pickle(path)


def test_tensorflow_pickle_refused_with_conversion_howto(tmp_path: Path) -> None:
    path = tmp_path / "stylegan2-cat-config-f.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81}b.")
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    msg = str(info.value)
    assert "TensorFlow" in msg and "legacy.py" in msg and "models convert" in msg


@pytest.mark.parametrize("what", ["empty", "truncated", "text", "zip", "png"])
def test_damaged_or_foreign_files_give_clear_errors(
    tmp_path: Path, source_G: Generator, what: str
) -> None:
    good = write_network_pickle(
        tmp_path / "good.pkl", source_G, stylegan3_kwargs(CFG), tmp_path / "m"
    ).read_bytes()
    content = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "text": b"<html>404 Not Found</html>",
        "zip": b"PK\x03\x04" + b"\x00" * 40,
        "png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    }[what]
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    expect = {
        "empty": "empty",
        "truncated": "truncated",
        "text": "not a StyleGAN",
        "zip": "zip archive",
        "png": "not a StyleGAN",
    }[what]
    assert expect in str(info.value)


def _pickle_with(tmp_path: Path, G: Generator, kwargs: dict[str, object]) -> Path:
    return write_network_pickle(tmp_path / "net.pkl", G, kwargs, tmp_path / "m")


def test_conditional_and_non_skip_generators_refused(tmp_path: Path, source_G: Generator) -> None:
    kw = stylegan3_kwargs(CFG)
    with pytest.raises(CheckpointError, match="c_dim=10"):
        load_generator(_pickle_with(tmp_path, source_G, {**kw, "c_dim": 10}))
    with pytest.raises(CheckpointError, match="architecture='resnet'"):
        load_generator(_pickle_with(tmp_path, source_G, {**kw, "architecture": "resnet"}))
    with pytest.raises(CheckpointError, match="square"):
        load_generator(_pickle_with(tmp_path, source_G, {**kw, "square": False}))


def test_stylegan3_generator_refused(tmp_path: Path, source_G: Generator) -> None:
    G = Generator(CFG)
    G.synthesis.add_module("input", torch.nn.Linear(2, 2))  # SG3's SynthesisInput sits here
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_generator(_pickle_with(tmp_path, G, stylegan3_kwargs(CFG)))


def test_missing_tensor_is_reported(tmp_path: Path) -> None:
    G = Generator(CFG)
    del G.synthesis.b8.conv0.noise_strength
    with pytest.raises(CheckpointError, match="noise_strength"):
        load_generator(_pickle_with(tmp_path, G, stylegan3_kwargs(CFG)))


def test_safetensors_round_trip(
    tmp_path: Path, source_G: Generator, source_renders: list[torch.Tensor]
) -> None:
    path = save_generator(source_G, tmp_path / "g.safetensors", provenance={"by": "test"})
    assert path.with_suffix(".json").is_file()
    config, doc = read_config(path)
    assert config == source_G.config
    assert doc["num_ws"] == source_G.num_ws and doc["provenance"] == {"by": "test"}
    G = load_generator(path)
    for got, want in zip(_renders(G), source_renders, strict=True):
        assert torch.equal(got, want)


def test_safetensors_errors(tmp_path: Path, source_G: Generator) -> None:
    path = save_generator(source_G, tmp_path / "g.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_generator(path)
    save_generator(source_G, path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match=r"g\.json is missing"):
        load_generator(path)
    save_generator(source_G, path)
    cfg = path.with_suffix(".json")
    cfg.write_text(cfg.read_text().replace('"channel_max": 32', '"channel_max": 16'))
    with pytest.raises(CheckpointError, match="shape"):
        load_generator(path)


def test_corrupted_bytes_never_escape_as_other_errors(tmp_path: Path, source_G: Generator) -> None:
    """Flip bytes all over a valid pickle: every outcome is a load or a CheckpointError."""
    marker = tmp_path / "EXECUTED"
    good = write_network_pickle(
        tmp_path / "good.pkl", source_G, stylegan3_kwargs(CFG), marker
    ).read_bytes()
    rng = random.Random(0)
    mutants = []
    for _ in range(40):
        data = bytearray(good)
        for pos in rng.sample(range(2, len(data)), 3):
            data[pos] = rng.randrange(256)
        mutants.append(bytes(data))
    mutants += [good[:cut] for cut in range(2, len(good), len(good) // 40)]
    refused = 0
    path = tmp_path / "mutant.pkl"
    for data in mutants:
        path.write_bytes(data)
        try:
            load_generator(path)
        except CheckpointError:
            refused += 1
    assert refused >= 40  # every truncation at least
    assert not marker.exists()
