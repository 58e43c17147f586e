"""Synthesis up to the drag's feature block, on a window of it (a speed trick of the drag step).

The drag step needs the output of one synthesis block, and without a mask term only the part of
it around the handles. `FeatureSynthesis` computes exactly that: it stops after the feature
block (no ToRGB, no later block), and given a window of the feature map every layer computes
only the part of its output the window depends on. The generator's tensors are read through
detached copies, so no parameter gradient exists; layers fed by the fixed part of w+ use weights
modulated once, the optimised ones scale activations instead of weights (no weight gradient).

Layouts: activations ``[1, C, h, w]``; w ``[1, N, w_dim]``; windows ``(x0, x1, y0, y1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gimp_draggan.draggan.networks import LRELU_GAIN, Generator, SynthesisLayer, upfirdn2d

Window = tuple[int, int, int, int]  # (x0, x1, y0, y1), half-open, in one layer's pixels.


def crop_pad(x: torch.Tensor, x0: int, x1: int, y0: int, y1: int) -> torch.Tensor:
    """``x[..., y0:y1, x0:x1]`` where indices outside ``x`` read as zeros."""
    h, w = x.shape[-2:]
    core = x[..., max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    pad = [max(-x0, 0), max(x1 - w, 0), max(-y0, 0), max(y1 - h, 0)]
    return F.pad(core, pad) if any(pad) else core


class WindowedLayer:
    """One SynthesisLayer read through detached tensors, computable on a window of its output.

    Same maths as ``SynthesisLayer.forward`` with constant noise: modulated (and demodulated)
    3x3 weight; either a padded conv, or a stride-2 transposed conv followed by the 4x4 FIR
    filter; + noise, + bias, leaky ReLU, clamp. On a window, every sum sees exactly the terms
    the full layer would (zeros only where the full layer pads), so the values are the same.
    """

    def __init__(self, layer: SynthesisLayer, w_index: int, fixed_w: torch.Tensor | None) -> None:
        self.w_index = w_index
        self.up = layer.up
        self.res = layer.resolution
        self.clamp = layer.conv_clamp
        self.filter = layer.resample_filter
        self.kernel = layer.weight.shape[-1]
        fw = self.filter.shape[-1]
        self.fir_taps = fw
        self.fir_pad0 = layer.padding + (fw + 1) // 2 - (self.kernel - 1)  # as modulated_conv2d
        self.bias = layer.bias.detach().reshape(1, -1, 1, 1)
        self.noise = None
        if layer.use_noise:
            self.noise = (layer.noise_const * layer.noise_strength).detach()
        aff = layer.affine
        self.affine_w = (aff.weight.detach() * aff.weight_gain).t()
        self.affine_b = aff.bias.detach()
        if aff.bias_gain != 1:
            self.affine_b = self.affine_b * aff.bias_gain
        self.weight = layer.weight.detach()
        self.weight_sq = self.weight.square().sum(dim=[2, 3])  # [O, I]
        self.fixed_weight = None
        if fixed_w is not None:
            with torch.no_grad():
                styles, dcoefs = self._styles(fixed_w)
                self.fixed_weight = self.weight * styles.reshape(1, -1, 1, 1) * dcoefs

    def _styles(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input scales ``[1, I]`` and demodulation ``[O, 1, 1, 1]`` for ``w [1, w_dim]``:
        sum_ik (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2, so no modulated weight is needed."""
        styles = torch.addmm(self.affine_b.unsqueeze(0), w, self.affine_w)
        dcoefs = (self.weight_sq @ styles.square().t() + 1e-8).rsqrt()
        return styles, dcoefs.reshape(-1, 1, 1, 1)

    def in_span(self, a: int, b: int) -> tuple[int, int]:
        """Input rows (or columns) ``[i0, i1)`` that output rows ``[a, b)`` depend on."""
        r_in = self.res // self.up
        if self.up == 1:
            pad = self.kernel // 2
            return max(a - pad, 0), min(b + pad, r_in)
        t0, t1 = a - self.fir_pad0, b + self.fir_taps - 1 - self.fir_pad0
        return max(-((self.kernel - 1 - t0) // 2), 0), min((t1 - 1) // 2 + 1, r_in)

    def __call__(
        self, x: torch.Tensor, w_opt: torch.Tensor, inp: Window, out: Window
    ) -> torch.Tensor:
        """``x`` is the input on window ``inp``; returns the output on window ``out``.

        Optimised layers scale the input by the styles and the output by the demodulation
        (StyleGAN2's non-fused form): the weight stays constant, so the backward pass needs no
        weight gradient."""
        weight = self.fixed_weight
        dcoefs = None
        if weight is None:
            styles, dcoefs = self._styles(w_opt[:, self.w_index])
            weight = self.weight
            x = x * styles.reshape(1, -1, 1, 1)
        ix0, _, iy0, _ = inp
        ox0, ox1, oy0, oy1 = out
        if self.up == 1:
            pad = self.kernel // 2
            x = crop_pad(x, ox0 - pad - ix0, ox1 + pad - ix0, oy0 - pad - iy0, oy1 + pad - iy0)
            x = F.conv2d(x, weight)
        else:
            t = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # rows from 2*iy0
            p0, extra = self.fir_pad0, self.fir_taps - 1
            t = crop_pad(
                t,
                ox0 - p0 - 2 * ix0,
                ox1 + extra - p0 - 2 * ix0,
                oy0 - p0 - 2 * iy0,
                oy1 + extra - p0 - 2 * iy0,
            )
            x = upfirdn2d(t, self.filter, gain=4.0)
        if dcoefs is not None:
            x = x * dcoefs.reshape(1, -1, 1, 1)
        if self.noise is not None:
            x = x + self.noise[oy0:oy1, ox0:ox1]
        x = F.leaky_relu(x + self.bias, 0.2) * LRELU_GAIN
        if self.clamp is not None:
            x = x.clamp(-self.clamp, self.clamp)
        return x


class FeatureSynthesis:
    """``w_opt [1, N, w_dim]`` -> output of block ``feature_res`` ``[1, C, r, r]``, same maths as
    ``G.synthesis.run(cat(w_opt, ws_fixed), feature_res=...)`` without ToRGB or later blocks.

    Given a window of the feature map, every layer computes only what that window depends on,
    and the result is that window ``[1, C, y1 - y0, x1 - x0]``.
    """

    def __init__(self, G: Generator, ws_fixed: torch.Tensor, feature_res: int) -> None:
        synth = G.synthesis
        n_opt = synth.num_ws - ws_fixed.shape[1]
        self.w_shape = (1, n_opt, synth.w_dim)
        self.feature_res = feature_res
        self.const = synth.block(4).const.detach().unsqueeze(0)
        self.layers: list[WindowedLayer] = []
        idx = 0
        for res in synth.block_resolutions:
            block = synth.block(res)
            convs = [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]
            for layer in convs:
                fixed = ws_fixed[:, idx - n_opt] if idx >= n_opt else None
                self.layers.append(WindowedLayer(layer, idx, fixed))
                idx += 1
            if res == feature_res:
                break

    def plan(self, window: Window | None) -> list[Window]:
        """The output window of every layer (last = ``window``), and first the const's."""
        r = self.feature_res
        out = window or (0, r, 0, r)
        plan = [out]
        for layer in reversed(self.layers):
            x0, x1 = layer.in_span(out[0], out[1])
            y0, y1 = layer.in_span(out[2], out[3])
            out = (x0, x1, y0, y1)
            plan.append(out)
        return plan[::-1]

    def __call__(self, w_opt: torch.Tensor, window: Window | None = None) -> torch.Tensor:
        assert tuple(w_opt.shape) == self.w_shape, f"w_opt {list(w_opt.shape)}, not {self.w_shape}"
        plan = self.plan(window)
        x0, x1, y0, y1 = plan[0]
        x = self.const[..., y0:y1, x0:x1]
        for layer, inp, out in zip(self.layers, plan[:-1], plan[1:], strict=True):
            x = layer(x, w_opt, inp, out)
        return x
