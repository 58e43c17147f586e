"""The one place that chooses the torch device: --device, else $GIMP_DRAGGAN_DEVICE, else
CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import os

DEVICE_ENV = "GIMP_DRAGGAN_DEVICE"


def pick_device(requested: str | None = None) -> str:
    """Return a torch device string; raise ValueError naming the problem if unusable."""
    import torch

    choice = (requested or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = choice.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {choice!r} requested but CUDA is not available to this torch build "
            f"({torch.__version__}); use --device cpu or install a CUDA build of torch"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {choice!r} requested but Apple MPS is not available; use cpu")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {choice!r}: use auto, cpu, cuda, cuda:N or mps")
    return choice
