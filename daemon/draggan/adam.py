"""Adam, as torch.optim.Adam computes it for CPU tensors (the single-tensor path).

Why not torch.optim: constructing any torch optimizer imports torch._dynamo (its
`add_param_group` is wrapped to keep the compiler out), which costs ~1.1 s on the first edit of
every process: a third of a face edit on the CLI. The maths and the order of operations are
PyTorch's (decoupled weight decay and amsgrad are not needed here), so results match to the bit
on the CPU (tests/unit/test_adam.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam:
    """Adam over ``params`` (each updated where it has a gradient); ``lr`` may change between
    steps (schedules set it directly)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = [0] * len(self.params)
        self.exp_avg = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sq = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            self.steps[i] += 1
            step = float(self.steps[i])
            m, v = self.exp_avg[i], self.exp_avg_sq[i]
            m.lerp_(grad, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            step_size = self.lr / (1 - self.beta1**step)
            denom = (v.sqrt() / (1 - self.beta2**step) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-step_size)
