"""Load and save generators without ever running code from a file.

Two formats:

* The project's own: ``X.safetensors`` (the full state dict, NVIDIA names, metadata
  ``format=gimp-draggan-generator``) plus ``X.json`` beside it (``GeneratorConfig`` and ``num_ws``).
  Neither can hold code.
* NVIDIA's ``.pkl`` (StyleGAN2-ADA-PyTorch, StyleGAN3's ``networks_stylegan2``, DragGAN's
  self-distilled files). Their classes are pickled with ``torch_utils.persistence``, whose
  reconstruction hook ``exec``s module source stored in the file. ``_SafeUnpickler`` resolves
  only an explicit allow-list of globals and maps that hook to ``_inert_persistent``, which keeps
  the class name, constructor kwargs and state and drops the source unread. The generator is then
  rebuilt from its ``init_kwargs`` as our own ``Generator`` and the tensors are copied in by name.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gimp_draggan.draggan.networks import Generator, GeneratorConfig

FORMAT = "gimp-draggan-generator"
FORMAT_VERSION = 1
NOT_TRUSTED = "this file is not a trusted StyleGAN checkpoint"
TF_HOWTO = (
    "it is an old TensorFlow StyleGAN2 pickle (dnnlib.tflib), which cannot be read without "
    "TensorFlow code. Convert it first with NVIDIA's stylegan2-ada-pytorch, in an environment you "
    "trust (that script runs the pickle's code): `python legacy.py --source=IN.pkl "
    "--dest=OUT_pytorch.pkl`, then `gimp-draggan models convert OUT_pytorch.pkl OUT.safetensors`"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file asks for a Python global outside the allow-list."""


@dataclass
class PersistentStub:
    """Inert stand-in for an object pickled by NVIDIA's ``torch_utils.persistence``."""

    class_name: str
    state: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Allow-listed reconstruction functions. Each checks its arguments, so a hostile file gets an
# error instead of a call with odd types.


def _inert_persistent(meta: Any) -> PersistentStub:
    """Replacement for ``torch_utils.persistence._reconstruct_persistent_obj``: never runs
    ``meta['module_src']``."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise CheckpointError(f"malformed persistent object record; {NOT_TRUSTED}")
    name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(name, str) or not isinstance(state, dict):
        raise CheckpointError(f"malformed persistent object record; {NOT_TRUSTED}")
    return PersistentStub(class_name=name, state=dict(state))


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes``: a nested torch.save stream, read weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"tensor storage record is not bytes; {NOT_TRUSTED}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    except Exception as e:  # torch raises assorted types for refused or broken streams
        if "weights only" in str(e).lower():
            raise UnsafeCheckpointError(
                f"a tensor storage record asks torch.load for more than plain weights; "
                f"{NOT_TRUSTED}"
            ) from None
        raise CheckpointError(
            f"damaged tensor storage record ({type(e).__name__}); download the file again"
        ) from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        kind = type(storage).__name__
        raise CheckpointError(f"tensor storage record holds a {kind}; {NOT_TRUSTED}")
    return storage


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, (tuple, list, torch.Size)) and all(isinstance(i, int) for i in x)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``; requires_grad, hooks and metadata are ignored."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError(f"tensor record without a storage; {NOT_TRUSTED}")
    if not (isinstance(offset, int) and _is_int_tuple(size) and _is_int_tuple(stride)):
        raise CheckpointError(f"malformed tensor record; {NOT_TRUSTED}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_rest: Any) -> torch.Tensor:
    """``torch._utils._rebuild_parameter[_with_state]``: keep the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter record without a tensor; {NOT_TRUSTED}")
    return data


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: only its items matter."""


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    import numpy as np

    def reconstruct(cls: Any, *args: Any) -> Any:
        if cls is not np.ndarray:
            raise CheckpointError(f"numpy array record of type {cls!r}; {NOT_TRUSTED}")
        return np.ndarray.__new__(np.ndarray, *args)

    def scalar(dtype: Any, *args: Any) -> Any:
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise CheckpointError(f"numpy scalar record of dtype {dtype!r}; {NOT_TRUSTED}")
        return np.frombuffer(args[0], dtype=dtype, count=1)[0] if args else dtype.type()

    def dtype(spec: Any, *args: Any) -> Any:
        if not isinstance(spec, str):
            raise CheckpointError(f"numpy dtype record {spec!r}; {NOT_TRUSTED}")
        return np.dtype(spec, *args)

    out: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = reconstruct
        out[(mod, "scalar")] = scalar
    return out


def _allowed_globals() -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _inert_persistent,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
    }
    out.update(_numpy_globals())
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler whose only callables are the allow-listed functions above."""

    def __init__(self, f: Any) -> None:
        super().__init__(f)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("dnnlib.tflib"):
            raise CheckpointError(f"cannot load this pickle: {TF_HOWTO}")
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refused to load: the pickle asks for the Python global '{module}.{name}', "
                f"which a StyleGAN checkpoint never needs; {NOT_TRUSTED}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"refused to load: persistent id {pid!r}; {NOT_TRUSTED}")


# ----------------------------------------------------------------------------------------------
# Reading files.


def _sniff(path: Path) -> str:
    """'pickle', 'safetensors', or raise CheckpointError naming what the file looks like."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    named_pickle = path.suffix.lower() == ".pkl"  # Never read as safetensors + a config.
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if not named_pickle and head[8:9] == b"{" and 8 + header_len <= path.stat().st_size:
        return "safetensors"
    if head[:2] == b"PK":
        raise CheckpointError(
            f"{path}: a zip archive (torch.save?), not a StyleGAN .pkl or a gimp-draggan "
            ".safetensors file"
        )
    if named_pickle:
        raise CheckpointError(
            f"{path}: damaged or truncated pickle, not a StyleGAN .pkl (starts with "
            f"{head[:8]!r}); download it again"
        )
    raise CheckpointError(
        f"{path}: not a StyleGAN .pkl or gimp-draggan .safetensors file (starts with {head[:8]!r})"
    )


def read_pickle(path: str | Path) -> dict[str, Any]:
    """Safely unpickle an NVIDIA network pickle; returns its top-level dict (G_ema, G, D, ...)."""
    path = Path(path)
    if _sniff(path) != "pickle":
        raise CheckpointError(f"{path}: not a pickle file")
    try:
        with path.open("rb") as f:
            data = _SafeUnpickler(f).load()
    except CheckpointError as e:
        raise type(e)(f"{path}: {e}") from None
    except (
        EOFError,
        pickle.UnpicklingError,
        RuntimeError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
    ) as e:
        raise CheckpointError(
            f"{path}: damaged or truncated pickle ({type(e).__name__}: {e}); download it again"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: the pickle holds a {type(data).__name__}, expected a dict with 'G_ema'"
        )
    return data


def _stub_tensors(stub: PersistentStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a stubbed nn.Module's parameters and buffers into state-dict names."""
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        entries = stub.state.get(group) or {}
        if not isinstance(entries, dict):
            raise CheckpointError(f"module {prefix or stub.class_name}: malformed {group}")
        for name, value in entries.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{prefix}{name}: expected a tensor, got {type(value)}")
            out[prefix + name] = value
    children = stub.state.get("_modules") or {}
    if not isinstance(children, dict):
        raise CheckpointError(f"module {prefix or stub.class_name}: malformed _modules")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, PersistentStub):
            raise CheckpointError(
                f"{prefix}{name}: sub-module is a {type(child).__name__}, not a persistent network"
            )
        out.update(_stub_tensors(child, f"{prefix}{name}."))
    return out


_G_ARG_ORDER = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
# Options that change only speed or training, not the image.
_IGNORED_SYNTHESIS = {
    "num_fp16_res",
    "fp16_channels_last",
    "channels_last",
    "fused_modconv_default",
}
_IGNORED_MAPPING = {"w_avg_beta", "embed_features"}


def _init_kwargs(stub: PersistentStub) -> dict[str, Any]:
    args = stub.state.get("_init_args") or ()
    kwargs = dict(stub.state.get("_init_kwargs") or {})
    for name, value in zip(_G_ARG_ORDER, args, strict=False):
        kwargs.setdefault(name, value)
    return kwargs


def _check_option(where: str, name: str, value: Any, allowed: Any) -> None:
    if value != allowed:
        raise CheckpointError(
            f"unsupported generator: {where} option {name}={value!r} "
            f"(only {allowed!r} is supported)"
        )


def config_from_stub(g: PersistentStub) -> GeneratorConfig:
    """Map NVIDIA's Generator ``init_kwargs`` to our ``GeneratorConfig``; refuse what we cannot
    render identically (conditional, non-skip, StyleGAN3, non-square)."""
    synth = (g.state.get("_modules") or {}).get("synthesis")
    if isinstance(synth, PersistentStub) and "input" in (synth.state.get("_modules") or {}):
        raise CheckpointError(
            "unsupported generator: StyleGAN3 (networks_stylegan3, alias-free); only StyleGAN2 "
            "generators (networks_stylegan2 / stylegan2-ada-pytorch) are supported"
        )
    kw = _init_kwargs(g)
    missing = [k for k in ("z_dim", "w_dim", "img_resolution") if k not in kw]
    if missing:
        raise CheckpointError(f"generator record lacks {missing}; is this a StyleGAN2 generator?")
    c_dim = kw.pop("c_dim", 0)
    if c_dim:
        raise CheckpointError(
            f"unsupported generator: conditional (class-label) model with c_dim={c_dim}; only "
            "unconditional generators (c_dim=0) are supported"
        )
    synthesis = dict(kw.pop("synthesis_kwargs", {}) or {})
    mapping = dict(kw.pop("mapping_kwargs", {}) or {})
    top_names = ("z_dim", "w_dim", "img_resolution", "img_channels")
    top: dict[str, Any] = {k: kw.pop(k) for k in top_names if k in kw}
    synthesis.update(kw)  # stylegan3's networks_stylegan2 passes synthesis options flat
    cfg: dict[str, Any] = dict(top)
    for name, value in synthesis.items():
        if name in ("channel_base", "channel_max"):
            cfg[name] = int(value)
        elif name == "conv_clamp":
            cfg[name] = None if value is None else float(value)
        elif name == "architecture":
            _check_option("synthesis", name, value, "skip")
        elif name == "resample_filter":
            _check_option("synthesis", name, list(value), [1, 3, 3, 1])
        elif name == "use_noise":
            _check_option("synthesis", name, value, True)
        elif name == "kernel_size":
            _check_option("synthesis", name, value, 3)
        elif name == "activation":
            _check_option("synthesis", name, value, "lrelu")
        elif name not in _IGNORED_SYNTHESIS:
            raise CheckpointError(f"unsupported generator option {name}={value!r}")
    for name, value in mapping.items():
        if name == "num_layers":
            cfg["mapping_layers"] = int(value)
        elif name == "lr_multiplier":
            cfg["mapping_lr_multiplier"] = float(value)
        elif name == "layer_features":
            if value not in (None, top.get("w_dim")):
                raise CheckpointError(
                    f"unsupported generator: mapping option layer_features={value!r} "
                    "(only None or w_dim is supported)"
                )
        elif name == "activation":
            _check_option("mapping", name, value, "lrelu")
        elif name == "num_ws":
            continue
        elif name not in _IGNORED_MAPPING:
            raise CheckpointError(f"unsupported mapping option {name}={value!r}")
    try:
        return GeneratorConfig(**cfg)
    except TypeError as e:
        raise CheckpointError(f"generator config not understood: {e}") from None


def _empty_generator(config: GeneratorConfig) -> Generator:
    """A generator whose tensors ``_copy_state`` then overwrites, built plainly on the CPU.

    Plain random init costs 0.03 s at 64 px and 0.4 s at 512 px; building on the "meta" device
    instead would run torch's Python meta kernels, whose first call imports torch._dynamo
    (1.2-2 s of every process's first load; docs/PERFORMANCE.md)."""
    return Generator(config).eval().requires_grad_(False)


def _copy_state(G: Generator, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``G``; every name must match one-to-one with the same shape."""
    own = G.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{source}: tensors do not match the generator built from its config "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(own[name].shape):
            hint = ""
            if name == "synthesis.b4.const" and t.ndim == 3 and t.shape[1] != t.shape[2]:
                hint = " (a non-square generator such as StyleGAN-Human's; not supported)"
            raise CheckpointError(
                f"{source}: {name} has shape {list(t.shape)}, "
                f"expected {list(own[name].shape)}{hint}"
            )
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(tensors[name].to(t.dtype))


def generator_from_pickle(path: str | Path) -> Generator:
    """Our ``Generator`` with the weights of the pickle's ``G_ema`` (never runs its code)."""
    data = read_pickle(path)
    g = data.get("G_ema")
    if not isinstance(g, PersistentStub):
        keys = sorted(str(k) for k in data)
        raise CheckpointError(f"{path}: no 'G_ema' network in the pickle (keys: {keys})")
    if g.class_name != "Generator":
        raise CheckpointError(f"{path}: G_ema is a {g.class_name!r}, expected 'Generator'")
    try:
        config = config_from_stub(g)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: malformed generator settings ({e})") from None
    config = GeneratorConfig(**{**config.to_json_dict(), "extra": {"source": Path(path).name}})
    try:
        G = _empty_generator(config)
    except ValueError as e:
        raise CheckpointError(f"{path}: unusable generator settings ({e})") from None
    _copy_state(G, _stub_tensors(g), str(path))
    return G


# ----------------------------------------------------------------------------------------------
# The project's own format.


def config_path(path: str | Path) -> Path:
    """The JSON config beside ``X.safetensors``: ``X.json``."""
    return Path(path).with_suffix(".json")


def save_generator(
    G: Generator, path: str | Path, provenance: dict[str, Any] | None = None
) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config; returns the weights path."""
    from safetensors.torch import save as to_safetensors_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the output name must end in .safetensors")
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    meta = {"format": FORMAT, "version": str(FORMAT_VERSION)}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": G.config.to_json_dict(),
        "num_ws": G.num_ws,
    }
    if provenance:
        doc["provenance"] = provenance
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = path.with_name(path.name + ".tmp"), config_path(path).with_suffix(".json.tmp")
    tmp_w.write_bytes(to_safetensors_bytes(state, metadata=meta))
    tmp_c.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp_w.replace(path)
    tmp_c.replace(config_path(path))
    return path


def read_config(path: str | Path) -> tuple[GeneratorConfig, dict[str, Any]]:
    """Config of a project-format file (from its .json) or of a .pkl (from ``init_kwargs``).

    Returns the config and the whole JSON document (for a pickle: one built the same way).
    """
    path = Path(path)
    if _sniff(path) == "pickle":
        G = generator_from_pickle(path)
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": G.config.to_json_dict(),
            "num_ws": G.num_ws,
        }
        return G.config, doc
    cpath = config_path(path)
    if not cpath.is_file():
        raise CheckpointError(f"{path}: its config {cpath.name} is missing beside it")
    try:
        doc = json.loads(cpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cpath}: unreadable config ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(
            f"{cpath}: not a {FORMAT} config (format={doc.get('format')!r})"
            if isinstance(doc, dict)
            else f"{cpath}: not a {FORMAT} config"
        )
    if doc.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{cpath}: config version {doc.get('version')!r}; this gimp-draggan reads version "
            f"{FORMAT_VERSION}"
        )
    raw = doc.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cpath}: no 'config' object in the config file")
    try:
        config = GeneratorConfig.from_json_dict(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cpath}: bad generator config ({e})") from None
    return config, doc


def _load_safetensors(path: Path) -> Generator:
    from safetensors import safe_open

    config, doc = read_config(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path}: safetensors file without format={FORMAT!r} metadata"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(
            f"{path}: damaged or truncated weights ({type(e).__name__}: {e})"
        ) from None
    try:
        G = _empty_generator(config)
    except ValueError as e:
        raise CheckpointError(f"{config_path(path)}: {e}") from None
    if doc.get("num_ws") not in (None, G.num_ws):
        raise CheckpointError(
            f"{config_path(path)}: num_ws {doc.get('num_ws')} disagrees with the config "
            f"({G.num_ws})"
        )
    _copy_state(G, tensors, str(path))
    return G


def load_generator(path: str | Path) -> Generator:
    """Load a generator from a project ``.safetensors`` or an NVIDIA ``.pkl``, in eval mode on CPU.

    Raises CheckpointError (UnsafeCheckpointError for refused pickles) with a readable message.
    """
    path = Path(path)
    if _sniff(path) == "pickle":
        return generator_from_pickle(path)
    return _load_safetensors(path)
