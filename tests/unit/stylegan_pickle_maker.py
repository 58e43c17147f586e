"""Builds network pickles in the layout NVIDIA's ``torch_utils.persistence`` writes, for tests.

Every module becomes a record ``_reconstruct_persistent_obj({type, version, module_src,
class_name, state})`` whose ``state`` is the module's ``__dict__`` (``_parameters``, ``_buffers``,
``_modules``, ``_init_args``, ``_init_kwargs``, plain attributes). Tensors and parameters are
pickled by torch itself (``_rebuild_tensor_v2``, ``_rebuild_parameter``, storages as
``torch.storage._load_from_bytes``). ``module_src`` is code that leaves a marker file when executed,
so a test can prove that loading never runs it.

While pickling, stand-in modules ``torch_utils.persistence`` and ``dnnlib.util`` are put in
``sys.modules`` (pickle records globals by module and name); they are removed afterwards.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def marker_source(marker: Path) -> str:
    """Module source that writes ``marker`` the moment it is executed."""
    return f"open({str(marker)!r}, 'w').write('module_src was executed')\nclass Generator: pass\n"


class EasyDict(dict):
    """Same module/name as NVIDIA's ``dnnlib.util.EasyDict`` once pickled."""


EasyDict.__module__ = "dnnlib.util"


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Any:
    """What NVIDIA's hook does first: execute the stored module source."""
    exec(meta["module_src"], {})  # the marker appears if anything ever calls this
    raise RuntimeError("persistent object reconstructed by executing module_src")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


@contextlib.contextmanager
def nvidia_modules() -> Iterator[None]:
    """Temporarily provide the module names the pickle refers to."""
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    saved = {n: sys.modules.get(n) for n in names}
    tu, tup = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, dnu = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    tup._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    dnu.EasyDict = EasyDict  # type: ignore[attr-defined]
    tu.persistence, dn.util = tup, dnu  # type: ignore[attr-defined]
    sys.modules.update({n: m for n, m in zip(names, (tu, tup, dn, dnu), strict=True)})
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class Persistent:
    """Pickles as NVIDIA's persistent-class record."""

    def __init__(self, class_name: str, state: dict[str, Any], module_src: str) -> None:
        self.meta = dict(
            type="class", version=6, module_src=module_src, class_name=class_name, state=state
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reconstruct_persistent_obj, (self.meta,))


def persistent_module(
    module: nn.Module,
    module_src: str,
    init_kwargs: dict[str, Any] | None = None,
    init_args: tuple[Any, ...] = (),
) -> Persistent:
    """Record for ``module`` and, recursively, its children (NVIDIA's state layout)."""
    state: dict[str, Any] = {
        "training": False,
        "_parameters": OrderedDict(
            (k, nn.Parameter(v.detach().clone(), requires_grad=False))
            for k, v in module._parameters.items()
            if v is not None
        ),
        "_buffers": OrderedDict((k, v.clone()) for k, v in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(
            (k, persistent_module(v, module_src)) for k, v in module._modules.items()
        ),
        "_init_args": init_args,
        "_init_kwargs": EasyDict(init_kwargs or {}),
    }
    if hasattr(module, "weight_gain"):
        state["weight_gain"] = np.float64(module.weight_gain)  # NVIDIA stores numpy scalars
    return Persistent(type(module).__name__, state, module_src)


def stylegan3_kwargs(cfg: Any) -> dict[str, Any]:
    """Generator init_kwargs as StyleGAN3's networks_stylegan2 stores them (synthesis flat)."""
    return dict(
        z_dim=cfg.z_dim,
        c_dim=0,
        w_dim=cfg.w_dim,
        img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs=EasyDict(num_layers=cfg.mapping_layers),
        channel_base=cfg.channel_base,
        channel_max=cfg.channel_max,
        num_fp16_res=4,
        conv_clamp=cfg.conv_clamp,
        fused_modconv_default="inference_only",
    )


def ada_kwargs(cfg: Any) -> dict[str, Any]:
    """Generator init_kwargs as stylegan2-ada-pytorch stores them (nested synthesis_kwargs)."""
    return dict(
        z_dim=cfg.z_dim,
        c_dim=0,
        w_dim=cfg.w_dim,
        img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels,
        mapping_kwargs=EasyDict(
            num_layers=cfg.mapping_layers,
            lr_multiplier=0.01,
            w_avg_beta=0.995,
            layer_features=None,
            activation="lrelu",
        ),
        synthesis_kwargs=EasyDict(
            channel_base=cfg.channel_base,
            channel_max=cfg.channel_max,
            num_fp16_res=0,
            conv_clamp=cfg.conv_clamp,
            architecture="skip",
            resample_filter=[1, 3, 3, 1],
        ),
    )


def write_network_pickle(
    path: Path,
    G: nn.Module,
    init_kwargs: dict[str, Any],
    marker: Path,
    extra_modules: dict[str, nn.Module] | None = None,
) -> Path:
    """A training snapshot like NVIDIA's: G, D, G_ema, augment_pipe, training_set_kwargs."""
    src = marker_source(marker)
    with nvidia_modules():
        g = persistent_module(G, src, init_kwargs)
        d = persistent_module(nn.Sequential(nn.Linear(4, 2)), src, {"c_dim": 0})
        snapshot: dict[str, Any] = {
            "G": g,
            "D": d,
            "G_ema": g,
            "augment_pipe": persistent_module(nn.Module(), src, {"xflip": 1}),
            "training_set_kwargs": EasyDict(path="data.zip", resolution=G.img_resolution),
        }
        for k, m in (extra_modules or {}).items():
            snapshot[k] = persistent_module(m, src)
        path.write_bytes(pickle.dumps(snapshot, protocol=4))
    return path


def randomize_(G: nn.Module, seed: int = 0) -> nn.Module:
    """Give noise strengths, biases and w_avg non-zero values so every tensor shows in the image."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(G.named_parameters()) + list(G.named_buffers()):
            if name.endswith("noise_strength"):
                t.copy_(torch.randn([], generator=gen) * 0.5)
            elif name.endswith(".bias") and "mapping" not in name:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif name.endswith("w_avg"):
                t.copy_(torch.randn(t.shape, generator=gen))
    return G
