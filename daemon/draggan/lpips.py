"""Perceptual distances for inversion: LPIPS v0.1 in plain PyTorch, and a download-free fallback.

LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"): both images go through a frozen ImageNet backbone (VGG16 or AlexNet); at five ReLU taps
the features are unit-normalised along channels, their squared difference is weighted per channel by
a learned non-negative linear head, averaged over space, and the five numbers are summed. PTI uses
it for both the W projection and the pivotal tuning.

Weights: the backbones are torchvision's published ImageNet files (``vgg16-397923af.pth``,
``alexnet-owt-7be5be79.pth``; keys ``features.N.weight``), read with
``torch.load(weights_only=True)`` from the model cache; the v0.1 linear heads ship in
``gimp_draggan/assets`` (see its README). Neither the ``lpips`` nor the ``torchvision`` package is
used.

Without a cached backbone, :class:`PyramidL1` stands in: an L1 distance over a Laplacian pyramid
(Bojanowski et al. 2018 used this "Lap1" loss to fit generator latents). It needs no weights, weighs
every octave of detail alike — unlike plain L2, which spends itself on coarse colour — and is
cheap. It is *not* LPIPS; its values are on another scale, so it carries its own early-stop
threshold and every report names the distance used.

Layout: images ``[N, 3, H, W]`` in [-1, 1]; distances ``[N]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HEADS_ASSET = Path(__file__).resolve().parent.parent / "assets" / "lpips_v0.1_heads.safetensors"

# LPIPS' input scaling: ImageNet mean/std re-expressed for inputs in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
UNIT_NORM_EPS = 1e-10  # as LPIPS: x / (||x||_2 + eps) over channels


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision ``features`` stack: its layers, the LPIPS taps, the registry entry."""

    name: str  # "vgg16" | "alexnet"
    # ("conv", out, kernel, stride, pad) | ("pool", 0, kernel, stride, 0) | ("relu", 0, 0, 0, 0)
    layers: tuple[tuple[str, int, int, int, int], ...]
    taps: tuple[int, ...]  # Slice ends into ``layers``: a tap after each ReLU.
    channels: tuple[int, ...]  # Channels at each tap (= head widths).
    registry_name: str  # Name in daemon/models.json.


def _vgg16_layers() -> tuple[tuple[str, int, int, int, int], ...]:
    plan: list[int | str] = [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
    ]
    layers: list[tuple[str, int, int, int, int]] = []
    for p in plan:
        if p == "M":
            layers.append(("pool", 0, 2, 2, 0))
        else:
            layers += [("conv", int(p), 3, 1, 1), ("relu", 0, 0, 0, 0)]
    return tuple(layers)


BACKBONES = {
    # torchvision vgg16.features[:30]: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
    "vgg16": BackboneSpec(
        "vgg16", _vgg16_layers(), (4, 9, 16, 23, 30), (64, 128, 256, 512, 512), "lpips-vgg16"
    ),
    # torchvision alexnet.features[:12]: relu1 .. relu5.
    "alexnet": BackboneSpec(
        "alexnet",
        (
            ("conv", 64, 11, 4, 2),
            ("relu", 0, 0, 0, 0),
            ("pool", 0, 3, 2, 0),
            ("conv", 192, 5, 1, 2),
            ("relu", 0, 0, 0, 0),
            ("pool", 0, 3, 2, 0),
            ("conv", 384, 3, 1, 1),
            ("relu", 0, 0, 0, 0),
            ("conv", 256, 3, 1, 1),
            ("relu", 0, 0, 0, 0),
            ("conv", 256, 3, 1, 1),
            ("relu", 0, 0, 0, 0),
        ),
        (2, 5, 8, 10, 12),
        (64, 192, 384, 256, 256),
        "lpips-alexnet",
    ),
}


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
        raise ValueError(
            f"perceptual distance needs two [N, 3, H, W] images of one shape, got "
            f"{list(x.shape)} and {list(y.shape)}"
        )


class PerceptualLoss(nn.Module):
    """A frozen image distance ``(x, y) -> [N]`` with a name and an early-stop threshold."""

    name: str = "perceptual"
    is_lpips: bool = False
    threshold: float = 0.0  # Distance at which pivotal tuning may stop (PTI: LPIPS 0.06).

    def freeze(self) -> PerceptualLoss:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def against(self, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> distance(x, y)`` for a fixed ``y`` (LPIPS computes y's features once)."""
        return lambda x: self(x, y)


class LPIPS(PerceptualLoss):
    """LPIPS v0.1 over any ``features`` stack; the taps are slice ends into it."""

    is_lpips = True
    threshold = 0.06
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self,
        features: nn.Sequential,  # Backbone layers, input = scaled image.
        taps: Sequence[int],  # Slice ends: features[a:b] between taps.
        heads: Sequence[torch.Tensor] | None,  # Per-tap channel weights [C]; None = all ones.
        name: str = "lpips",
    ) -> None:
        super().__init__()
        if not taps or list(taps) != sorted(set(taps)) or taps[-1] > len(features) or taps[0] < 1:
            raise ValueError(f"taps must be increasing slice ends within 1..{len(features)}")
        starts = [0, *taps[:-1]]
        self.slices = nn.ModuleList(
            nn.Sequential(*list(features)[a:b]) for a, b in zip(starts, taps, strict=True)
        )
        self.name = name
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).reshape(1, 3, 1, 1))
        if heads is not None and len(heads) != len(taps):
            raise ValueError(f"{len(taps)} taps need {len(taps)} heads, got {len(heads)}")
        for i in range(len(taps)):
            head = None if heads is None else torch.as_tensor(heads[i], dtype=torch.float32)
            self.register_buffer(f"head{i}", None if head is None else head.reshape(1, -1, 1, 1))
        self.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features at each tap for images in [-1, 1]."""
        h = (x - self.shift) / self.scale
        out = []
        for block in self.slices:
            h = block(h)
            norm = h.square().sum(dim=1, keepdim=True).sqrt()
            out.append(h / (norm + UNIT_NORM_EPS))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_images(x, y)
        return self._distance(self.features(x), self.features(y))

    def against(self, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            fy = self.features(y)

        def distance(x: torch.Tensor) -> torch.Tensor:
            _check_images(x, y)
            return self._distance(self.features(x), fy)

        return distance

    def _distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
        total = feats_x[0].new_zeros(feats_x[0].shape[0])
        for i, (fx, fy) in enumerate(zip(feats_x, feats_y, strict=True)):
            diff = (fx - fy).square()  # [N, C, h, w]
            head = getattr(self, f"head{i}")
            if head is None:
                weighted = diff.sum(dim=1)
            else:
                if head.shape[1] != diff.shape[1]:
                    raise ValueError(
                        f"LPIPS head {i} has {head.shape[1]} channels, the tap has {diff.shape[1]}"
                    )
                weighted = (diff * head).sum(dim=1)  # [N, h, w]
            total = total + weighted.mean(dim=(1, 2))
        return total


class PyramidL1(PerceptualLoss):
    """Laplacian-pyramid L1 ("Lap1"): sum over octaves of the mean |band(x) - band(y)|.

    Bands: ``x_j - up(x_{j+1})`` with 2x2 average pooling down and bilinear up, until the image is
    at most ``min_size`` pixels, then the remaining low-pass image itself.
    """

    name = "pyramid-l1"
    # The distance between a 256 px image and itself plus Gaussian noise at 30 dB PSNR
    # (sigma = 2 / 10**1.5 in [-1, 1] units); test_lpips checks the constant against the definition.
    threshold = 0.090

    def __init__(self, min_size: int = 8) -> None:
        super().__init__()
        self.min_size = min_size

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_images(x, y)
        d = x - y  # the pyramid is linear: bands of the difference = difference of bands
        total = d.new_zeros(d.shape[0])
        while min(d.shape[-2:]) > self.min_size:
            low = F.avg_pool2d(d, 2, ceil_mode=True)
            band = d - F.interpolate(low, size=d.shape[-2:], mode="bilinear", align_corners=False)
            total = total + band.abs().mean(dim=(1, 2, 3))
            d = low
        return total + d.abs().mean(dim=(1, 2, 3))


def build_backbone(spec: BackboneSpec) -> nn.Sequential:
    """The backbone's layers, randomly initialised (load weights with `load_backbone_weights`)."""
    mods: list[nn.Module] = []
    in_c = 3
    for kind, out_c, k, s, p in spec.layers:
        if kind == "conv":
            mods.append(nn.Conv2d(in_c, out_c, k, stride=s, padding=p))
            in_c = out_c
        elif kind == "relu":
            mods.append(nn.ReLU())
        else:
            mods.append(nn.MaxPool2d(k, stride=s))
    return nn.Sequential(*mods)


def load_backbone_weights(features: nn.Sequential, path: str | Path, spec: BackboneSpec) -> None:
    """Fill ``features`` from torchvision's ImageNet ``.pth`` (keys ``features.N.weight/bias``)."""
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: not a readable torchvision {spec.name} weights file ({e}); delete it and "
            f"run `gimp-draggan models download {spec.registry_name}`"
        ) from e
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    own = features.state_dict()
    missing = [k for k in own if f"features.{k}" not in sd]
    if missing:
        raise ValueError(
            f"{path}: not torchvision's {spec.name} ImageNet file (missing features.{missing[0]})"
        )
    for k, v in own.items():
        src = sd[f"features.{k}"]
        if not isinstance(src, torch.Tensor) or src.shape != v.shape:
            got = list(src.shape) if isinstance(src, torch.Tensor) else type(src).__name__
            raise ValueError(f"{path}: features.{k} should be {list(v.shape)}, got {got}")
        v.copy_(src.to(v.dtype))


def load_heads(backbone: str, path: str | Path = HEADS_ASSET) -> list[torch.Tensor]:
    """The LPIPS v0.1 linear heads for ``backbone`` ("vgg16" | "alexnet"), each ``[C]``."""
    from safetensors.torch import load_file

    spec = BACKBONES[backbone]
    tensors = load_file(str(path))
    heads = []
    for i, c in enumerate(spec.channels):
        head = tensors.get(f"{backbone}.{i}")
        if head is None or head.shape != (c,):
            raise ValueError(f"{path}: no LPIPS head {backbone}.{i} of {c} channels")
        heads.append(head)
    return heads


def lpips_from_file(backbone: str, weights: str | Path) -> LPIPS:
    """LPIPS with torchvision's ImageNet ``backbone`` from ``weights`` and the shipped heads."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {backbone!r}: use one of {sorted(BACKBONES)}")
    spec = BACKBONES[backbone]
    features = build_backbone(spec)
    load_backbone_weights(features, weights, spec)
    return LPIPS(features, spec.taps, load_heads(backbone), name=f"lpips-{backbone}")


def cached_backbone(backbone: str) -> Path | None:
    """The backbone's weights file if the model cache holds a verified copy, else None."""
    from gimp_draggan.models import registry

    name = BACKBONES[backbone].registry_name
    if not registry.is_cached(name):
        return None
    return registry.model_path(registry.get_entry(name))


@dataclass(frozen=True)
class LossChoice:
    loss: PerceptualLoss
    reason: str  # Why this loss: shown by the CLI beside its name.


def load_perceptual(backbone: str = "vgg16", weights: str | Path | None = None) -> LossChoice:
    """LPIPS over ``backbone`` if its weights are given or cached, else the `PyramidL1` fallback.

    Never downloads: a missing backbone degrades to the fallback with a reason that says how to
    get LPIPS (``gimp-draggan models download lpips-vgg16``).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {backbone!r}: use one of {sorted(BACKBONES)}")
    path = Path(weights) if weights is not None else cached_backbone(backbone)
    if path is None:
        reason = (
            f"no {backbone} backbone in the model cache; using the download-free pyramid-L1 "
            f"distance (run `gimp-draggan models download {BACKBONES[backbone].registry_name}` "
            "for LPIPS)"
        )
        return LossChoice(PyramidL1().freeze(), reason)
    return LossChoice(lpips_from_file(backbone, path), f"LPIPS v0.1 over {path.name}")


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image for images in [-1, 1] (peak-to-peak 2), ``[N]``."""
    _check_images(x, y)
    mse = (x - y).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)
