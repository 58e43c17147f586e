"""StyleGAN2 generator in plain PyTorch (no custom CUDA/C++ ops).

Parameter and buffer names, initialisation constants and numerics follow NVIDIA's
StyleGAN2-ADA / StyleGAN3 ``networks_stylegan2`` generator (skip architecture, fused
modulated convolution, ``conv_clamp``, ``noise_const``), so an official ``G_ema`` state dict
loads one-to-one and renders the same image. Written from the paper and the published
state-dict layout; no NVIDIA code is copied.

Layouts: images and features are ``[N, C, H, W]``; latents are ``z [N, z_dim]``,
``w [N, w_dim]`` and ``ws`` (w+) ``[N, num_ws, w_dim]``.

For the drag engine the synthesis network can return the output of any block and stop right
after it (``SynthesisNetwork.run``), so an optimisation step never pays for the blocks above
the feature map.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NOISE_MODES = ("const", "random", "none")
LRELU_GAIN = math.sqrt(2.0)


def _check_shape(t: torch.Tensor, shape: list[int | None], name: str) -> None:
    """Raise ValueError unless ``t`` has ``shape`` (None = any size)."""
    ok = t.ndim == len(shape) and all(
        s is None or s == d for s, d in zip(shape, t.shape, strict=False)
    )
    if not ok:
        raise ValueError(f"{name}: expected shape {shape}, got {list(t.shape)}")


# ----------------------------------------------------------------------------------------------
# Resampling (FIR filter, as upfirdn2d's reference path).


def make_resample_filter(taps: tuple[int, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """2-D low-pass filter: outer product of ``taps``, normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    pad: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Zero-insert upsample by ``up``, pad (x0, x1, y0, y1), then depthwise-convolve with ``f``.

    ``f`` is 2-D and ``gain`` multiplies it (4 for 2x upsampling keeps the signal level).
    Filters used here are symmetric, so convolution and correlation coincide.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(pad[0], 0), max(pad[1], 0), max(pad[2], 0), max(pad[3], 0)])
    x = x[
        :,
        :,
        max(-pad[2], 0) : x.shape[2] - max(-pad[3], 0),
        max(-pad[0], 0) : x.shape[3] - max(-pad[1], 0),
    ]
    f = (f * gain).to(x.dtype).flip([0, 1])
    weight = f[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, weight, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the FIR filter ``f`` (4x4), output ``[N, C, 2H, 2W]``."""
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0)


# ----------------------------------------------------------------------------------------------
# Layers.


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate and optional leaky ReLU."""

    def __init__(
        self,
        in_features: int,  # Input width.
        out_features: int,  # Output width.
        activation: str = "linear",  # "linear" or "lrelu".
        lr_multiplier: float = 1.0,  # Learning-rate multiplier (equalised lr).
        bias_init: float = 0.0,  # Initial bias value.
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t()) + b
        return F.leaky_relu(x, 0.2) * LRELU_GAIN

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


def modulated_conv2d(
    x: torch.Tensor,  # Input [N, I, H, W].
    weight: torch.Tensor,  # Weight [O, I, k, k].
    styles: torch.Tensor,  # Per-sample input scales [N, I].
    noise: torch.Tensor | None = None,  # Added after the conv, [N, 1, H, W] or broadcastable.
    up: int = 1,  # 1 or 2 (transposed conv + FIR filter).
    padding: int = 0,  # Padding of the (non-upsampling) convolution.
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,  # Normalise output channels (StyleGAN2 weight demodulation).
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, computed as one grouped conv over the batch ("fused")."""
    n = x.shape[0]
    out_c, in_c, kh, kw = weight.shape
    _check_shape(styles, [n, in_c], "styles")
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_c, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
        w = w * dcoefs.reshape(n, out_c, 1, 1, 1)
    x = x.reshape(1, n * in_c, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(n * out_c, in_c, kh, kw), padding=padding, groups=n)
    else:
        assert resample_filter is not None and up == 2 and kh == kw
        # Transposed conv (stride 2) with the weight's in/out swapped per group, then FIR blur.
        wt = w.transpose(1, 2).reshape(n * in_c, out_c, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=2, groups=n)
        fw = resample_filter.shape[-1]
        p0 = padding + (fw + 1) // 2 - (kw - 1)
        p1 = padding + (fw - 2) // 2 - (kw - 2)
        x = upfirdn2d(x, resample_filter, pad=(p0, p1, p0, p1), gain=4.0)
    x = x.reshape(n, out_c, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + noise + bias + leaky ReLU (+ clamp)."""

    resample_filter: torch.Tensor
    noise_const: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,  # Output resolution.
        up: int = 1,  # 2 = upsample.
        use_noise: bool = True,
        conv_clamp: float | None = None,  # Clamp activations to +-conv_clamp, None = off.
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", make_resample_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        )
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            noise = torch.randn(shape, device=x.device, dtype=x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
        )
        x = F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), 0.2) * LRELU_GAIN
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def extra_repr(self) -> str:
        return (
            f"in={self.in_channels}, out={self.out_channels}, res={self.resolution}, up={self.up}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        x = x + self.bias.reshape(1, -1, 1, 1)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | up-conv) -> conv -> ToRGB added to img."""

    resample_filter: torch.Tensor

    def __init__(
        self,
        in_channels: int,  # 0 = first block (learned constant input).
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", make_resample_filter())
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp
        )
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward_features(
        self, x: torch.Tensor | None, ws: torch.Tensor, noise_mode: str
    ) -> torch.Tensor:
        """The block's feature output ``[N, C, R, R]`` from ``ws [N, num_conv, w_dim]``."""
        if x is None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            return self.conv1(x, ws[:, 0], noise_mode)
        x = self.conv0(x, ws[:, 0], noise_mode)
        return self.conv1(x, ws[:, 1], noise_mode)

    def forward_rgb(
        self, x: torch.Tensor, img: torch.Tensor | None, w: torch.Tensor
    ) -> torch.Tensor:
        """Upsample the running image and add this block's ToRGB of ``x``."""
        y = self.torgb(x, w).to(torch.float32)
        if img is None:
            return y
        return upsample2d(img, self.resample_filter) + y


@dataclass(frozen=True)
class SynthesisOutput:
    img: torch.Tensor | None  # [N, img_channels, R, R], about [-1, 1]; None if not rendered.
    feature: torch.Tensor | None  # [N, C, r, r] output of the requested block, or None.


class SynthesisNetwork(nn.Module):
    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,  # Channels at res R: min(channel_base // R, channel_max).
        channel_max: int = 512,
        conv_clamp: float | None = 256,
    ) -> None:
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution != 2**log2 or img_resolution < 4:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            in_c = self.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(
                in_c, self.channels[res], w_dim, res, img_channels, conv_clamp=conv_clamp
            )
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's ToRGB

    def block(self, res: int) -> SynthesisBlock:
        return getattr(self, f"b{res}")

    def run(
        self,
        ws: torch.Tensor,
        noise_mode: str = "const",
        feature_res: int | None = None,  # Return this block's feature output.
        render: bool = True,  # False: stop right after the feature block.
    ) -> SynthesisOutput:
        """Synthesise from ws ``[N, num_ws, w_dim]``, optionally returning one block's features."""
        _check_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if feature_res is not None and feature_res not in self.block_resolutions:
            raise ValueError(f"feature_res {feature_res} not in {self.block_resolutions}")
        if not render and feature_res is None:
            raise ValueError("render=False needs a feature_res to stop at")
        ws = ws.to(torch.float32)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        feature: torch.Tensor | None = None
        idx = 0
        for res in self.block_resolutions:
            block = self.block(res)
            x = block.forward_features(x, ws[:, idx : idx + block.num_conv], noise_mode)
            idx += block.num_conv
            if res == feature_res:
                feature = x
                if not render:
                    break
            img = block.forward_rgb(x, img, ws[:, idx])
        return SynthesisOutput(img=img if render else None, feature=feature)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        img = self.run(ws, noise_mode=noise_mode).img
        assert img is not None
        return img


class MappingNetwork(nn.Module):
    """z -> w through an MLP; tracks w_avg; broadcasts to num_ws; truncation."""

    w_avg: torch.Tensor

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,  # EMA decay of w_avg during training.
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            layer = FullyConnectedLayer(
                features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """z ``[N, z_dim]`` -> ws ``[N, num_ws, w_dim]``."""
        _check_shape(z, [None, self.z_dim], "z")
        x = z.to(torch.float32)
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cut] = self.w_avg.lerp(x[:, :cut], truncation_psi)
        return x


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to rebuild a generator; stored as JSON beside the weights."""

    img_resolution: int
    z_dim: int = 512
    w_dim: int = 512
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    conv_clamp: float | None = 256
    extra: dict[str, Any] = field(default_factory=dict)  # free-form (e.g. provenance)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known - {"num_ws"}
        if unknown:
            raise ValueError(f"unknown generator config keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})


class Generator(nn.Module):
    """StyleGAN2 generator (unconditional). ``G(z)`` -> image ``[N, C, R, R]``."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=config.w_dim,
            img_resolution=config.img_resolution,
            img_channels=config.img_channels,
            channel_base=config.channel_base,
            channel_max=config.channel_max,
            conv_clamp=config.conv_clamp,
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=config.z_dim,
            w_dim=config.w_dim,
            num_ws=self.num_ws,
            num_layers=config.mapping_layers,
            lr_multiplier=config.mapping_lr_multiplier,
        )

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    def extra_repr(self) -> str:
        return (
            f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
            f"img_resolution={self.img_resolution}, img_channels={self.img_channels}"
        )


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """z as NVIDIA's generate scripts draw it: ``RandomState(seed).randn(1, z_dim)``."""
    import numpy as np

    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


SEED_PSI = 0.7  # Truncation of DragGAN's GUI for the seed form's random starts.


def seed_ws(G: Generator, seed: int, device: str | torch.device) -> torch.Tensor:
    """The seed form's start, as DragGAN's GUI makes it: w = mapping(z of `seed`, psi
    `SEED_PSI`), ``[1, num_ws, w_dim]`` on `device`, outside autograd (the drag optimises it)."""
    with torch.no_grad():
        return G.mapping(seed_to_z(seed, G.z_dim).to(device), truncation_psi=SEED_PSI)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` in [-1, 1] -> ``[N, H, W, C]`` uint8, as NVIDIA's scripts round."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
