"""StyleGAN2 residual discriminator in plain PyTorch, for training the embedded model.

Written from the StyleGAN2 paper (residual D, equalised learning rate, blurred down-sampling,
minibatch standard deviation); only the generator is ever shipped, so names here are our own.
Input images ``[N, C, R, R]`` in [-1, 1]; output logits ``[N, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gimp_draggan.draggan.networks import make_resample_filter, upfirdn2d

LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class DiscriminatorConfig:
    img_resolution: int
    img_channels: int = 3
    channel_base: int = 2048  # Channels at resolution R: min(channel_base // R, channel_max).
    channel_max: int = 128
    mbstd_group: int = 4  # Minibatch-stddev group size (clipped to the batch).

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate, optional 2x blurred down-sampling and leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation = activation
        self.down = down
        self.kernel_size = kernel_size
        self.register_buffer("resample_filter", make_resample_filter())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.gain
        if self.down:
            # Blur first (anti-aliasing), then a stride-2 conv; padding keeps R -> R / 2.
            p = (self.kernel_size + 1) // 2
            x = upfirdn2d(x, self.resample_filter, pad=(p, p, p, p))
            x = F.conv2d(x, w, self.bias, stride=2)
        else:
            x = F.conv2d(x, w, self.bias, padding=self.kernel_size // 2)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, activation: str = "linear") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.gain = 1 / math.sqrt(in_features)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.gain, self.bias)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs (the second down-samples) plus a 1x1 down-sampled skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return (x + y) * math.sqrt(0.5)


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        res = config.img_resolution
        log2 = int(math.log2(res))
        if res != 2**log2 or res < 8:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {res}")

        def ch(r: int) -> int:
            return min(config.channel_base // r, config.channel_max)

        self.from_rgb = EqualConv2d(config.img_channels, ch(res), 1, activation="lrelu")
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch(2**i), ch(2 ** (i - 1))) for i in range(log2, 2, -1)
        )
        c4 = ch(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualLinear(c4, 1)

    def _mbstd(self, x: torch.Tensor) -> torch.Tensor:
        """Append one channel: the std over groups of samples, averaged (see StyleGAN2 §B)."""
        n, c, h, w = x.shape
        g = min(self.config.mbstd_group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, n // g, c, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[1, 2, 3]).reshape(n // g, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.config.img_resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (self.config.img_channels, r, r):
            raise ValueError(
                f"discriminator input: expected [N, {self.config.img_channels}, {r}, {r}], "
                f"got {list(img.shape)}"
            )
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(self._mbstd(x))
        return self.out(self.fc(x.flatten(1)))
