"""Our Adam matches torch.optim.Adam (CPU, single-tensor path) to the bit, schedules included."""

from __future__ import annotations

import torch

from gimp_draggan.draggan.adam import Adam


def _run(make, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    a = torch.randn(4, 7, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    unused = torch.randn(2, requires_grad=True)  # never gets a gradient
    opt = make([a, b, unused])
    for step in range(steps):
        lr = 0.05 * (1.0 - step / steps)  # a schedule set between steps
        if isinstance(opt, Adam):
            opt.lr = lr
        else:
            for group in opt.param_groups:
                group["lr"] = lr
        loss = (a.sin() * 3).square().sum() + (b - 2).abs().sum() * (step + 1)
        if isinstance(opt, Adam):
            opt.zero_grad()
        else:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [a.detach(), b.detach(), unused.detach()]


def test_matches_torch_adam_bit_for_bit() -> None:
    ours = _run(lambda ps: Adam(ps, lr=0.05, betas=(0.9, 0.99)))
    theirs = _run(lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99), foreach=False))
    for x, y in zip(ours, theirs, strict=True):
        assert torch.equal(x, y)
    start = _run(lambda ps: Adam(ps, lr=0.0), steps=1)
    assert not torch.equal(ours[0], start[0])  # it did move
    assert torch.equal(ours[2], start[2])  # no gradient, no step
