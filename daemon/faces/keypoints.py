"""The embedded model's keypoint detector: a small CNN with soft-argmax heatmaps.

It finds the eyes, nose and mouth corners of the embedded model's cartoon heads, which the
embedded framing (`gimp_draggan.edit.align_embedded`) places as the training images placed them.
Heatmaps at 1/4 resolution with a soft-argmax give sub-pixel coordinates cheaply. Weights ship as
``daemon/assets/keypoints.safetensors`` (metadata: format, resolution, keypoint names); the trainer
is a developer tool (``python -m gimp_draggan_tools.train.keypoints --out FILE``).
Points are (x, y) pixels of the input resolution.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

DETECTOR_FORMAT = "gimp-draggan-keypoints"
ASSET = Path(__file__).resolve().parent.parent / "assets" / "keypoints.safetensors"


def _conv(i: int, o: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class KeypointNet(nn.Module):
    """Image ``[N, 3, R, R]`` in [-1, 1] -> keypoints ``[N, K, 2]`` (x, y) pixels."""

    def __init__(self, resolution: int, num_keypoints: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.num_keypoints = num_keypoints
        self.enc1 = nn.Sequential(_conv(5, 32), _conv(32, 32, 2))  # R/2
        self.enc2 = nn.Sequential(_conv(32, 64, 2), _conv(64, 64))  # R/4
        self.enc3 = nn.Sequential(_conv(64, 128, 2), _conv(128, 128))  # R/8
        self.lateral = nn.Conv2d(64, 128, 1)
        self.head = nn.Sequential(_conv(128, 128), nn.Conv2d(128, num_keypoints, 3, 1, 1))

    def heatmap_logits(self, img: torch.Tensor) -> torch.Tensor:
        n, _, h, w = img.shape
        ys = torch.linspace(-1, 1, h, device=img.device).reshape(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=img.device).reshape(1, 1, 1, w).expand(n, 1, h, w)
        x = self.enc1(torch.cat([img, xs, ys], dim=1))
        x2 = self.enc2(x)
        x3 = self.enc3(x2)
        x = F.interpolate(x3, scale_factor=2.0, mode="nearest") + self.lateral(x2)
        return self.head(x)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        if img.ndim != 4 or tuple(img.shape[1:]) != (3, r, r):
            raise ValueError(
                f"keypoint detector input: expected [N, 3, {r}, {r}], got {list(img.shape)}"
            )
        return self.soft_argmax(self.heatmap_logits(img))

    def soft_argmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Heatmap logits ``[N, K, h, w]`` -> keypoints ``[N, K, 2]`` (x, y) input pixels: the
        expected cell centre under each heatmap's softmax. Apart from `forward` so a caller that
        also needs the logits runs the network once."""
        n, k, h, w = logits.shape
        prob = logits.flatten(2).softmax(dim=2).reshape(n, k, h, w)
        cell = self.resolution / h
        centres = (torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5) * cell
        x = (prob.sum(dim=2) * centres).sum(dim=2)
        y = (prob.sum(dim=3) * centres).sum(dim=2)
        return torch.stack([x, y], dim=2)


def load_detector(path: str | Path = ASSET, device: str = "cpu") -> KeypointNet:
    """Load a trained detector (eval mode); clear error if the file is missing or foreign."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"keypoint detector weights not found at {path}; train them with "
            "`python -m gimp_draggan_tools.train.keypoints --out {path}`"
        )
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != DETECTOR_FORMAT:
        raise ValueError(f"{path}: not a gimp-draggan keypoint detector (metadata {meta})")
    net = KeypointNet(int(meta["resolution"]), len(json.loads(meta["keypoints"])))
    net.load_state_dict(load_file(str(path)))
    return net.to(device).eval()


def detect(net: KeypointNet, images: torch.Tensor) -> torch.Tensor:
    """Keypoints ``[N, K, 2]`` for ``images [N, 3, R, R]`` in [-1, 1], no gradients."""
    dev = next(net.parameters()).device
    with torch.no_grad():
        return net(images.to(dev, torch.float32)).cpu()
