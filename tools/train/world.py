"""Procedural cartoon heads with ground-truth keypoints: the embedded model's training data.

Every image is a pure function of its seed (its parameters come from
``numpy.random.default_rng(seed)``), so a seed names an image on any machine and in any batch.
Rendering is vectorised over the batch in torch with signed-distance shapes and soft (about
1 px) edges, which a small GAN learns faster than hard edges.

The geometry varies a lot on purpose — head position and size, head turn, eye openness, mouth
openness, width and smile — so that a generator trained on it has parts that move between latents,
which is what dragging needs. Colours, background texture and lighting vary too, but stay simple.

Layouts: images ``[N, 3, R, R]`` float in [-1, 1]; keypoints ``[N, K, 2]`` as (x, y) pixels with
pixel centres at integer + 0.5 (a point at x = 10.5 is the centre of column 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye",  # the eye on the image's left
    "right_eye",
    "nose",
    "mouth_left",
    "mouth_right",
    "mouth_top",
    "mouth_bottom",
    "chin",
)
FIVE_POINTS: tuple[int, ...] = (0, 1, 2, 3, 4)  # eyes, nose, mouth corners (the usual 5-point set)

# Number of uniform draws per image; fixed so that adding a factor at the end keeps old draws.
_NUM_DRAWS = 48
_BASE_RES = 64.0  # geometry is defined at 64 px and scaled for other resolutions


@dataclass(frozen=True)
class WorldBatch:
    images: torch.Tensor  # [N, 3, R, R] float32 in [-1, 1]
    keypoints: torch.Tensor  # [N, K, 2] float32, (x, y) pixels
    seeds: tuple[int, ...]


def _draws(seeds: list[int]) -> np.ndarray:
    """Uniform [0, 1) draws ``[N, _NUM_DRAWS]``, one independent stream per seed."""
    return np.stack([np.random.default_rng(int(s)).random(_NUM_DRAWS) for s in seeds])


def _lerp(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _cov(sdf: torch.Tensor, soft: float) -> torch.Tensor:
    """Coverage in [0, 1] from a signed distance (negative inside), edge about ``soft`` px wide."""
    return torch.sigmoid(-sdf / soft)


def _ellipse_sdf(
    x: torch.Tensor,
    y: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    rx: torch.Tensor,
    ry: torch.Tensor,
) -> torch.Tensor:
    """Approximate signed distance to an axis-aligned ellipse (first-order, exact on circles)."""
    dx = (x - cx) / rx
    dy = (y - cy) / ry
    f = torch.sqrt(dx * dx + dy * dy + 1e-9)
    grad = torch.sqrt((dx / rx) ** 2 + (dy / ry) ** 2 + 1e-9) / f
    return (f - 1.0) / grad


def _paint(canvas: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Blend ``colour [N, 3]`` into ``canvas [N, 3, H, W]`` in place, by ``alpha [N, H, W]``."""
    return canvas.lerp_(colour[:, :, None, None], alpha.unsqueeze(1))


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] -> RGB ``[N, 3]``."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v[:, None] * (1 - s[:, None] * f)


def render(seeds: list[int] | tuple[int, ...], resolution: int = 64) -> WorldBatch:
    """Render one image (and its keypoints) per seed."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("render: need at least one seed")
    if resolution < 32 or resolution & (resolution - 1):
        raise ValueError(f"render: resolution must be a power of two >= 32, got {resolution}")
    n = len(seeds)
    u = torch.from_numpy(_draws(seeds)).to(torch.float32)  # [N, D]
    k = resolution / _BASE_RES
    col = lambda i: u[:, i].reshape(n, 1, 1)  # noqa: E731 - short local accessor

    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / k  # 64-px units
    y = coords.reshape(1, resolution, 1)
    x = coords.reshape(1, 1, resolution)
    soft = 0.45

    # Background: two-colour gradient with a low-frequency sinusoidal texture.
    bg_h = u[:, 0]
    bg_a = _hsv(bg_h, _lerp(u[:, 1], 0.15, 0.55), _lerp(u[:, 2], 0.55, 0.95))
    bg_b = _hsv(
        (bg_h + _lerp(u[:, 3], -0.15, 0.15)) % 1,
        _lerp(u[:, 1], 0.1, 0.5),
        _lerp(u[:, 4], 0.35, 0.85),
    )
    ang = col(5) * 2 * np.pi
    t = ((x - 32) * torch.cos(ang) + (y - 32) * torch.sin(ang)) / 64 + 0.5
    tex_ang = col(6) * np.pi
    freq = _lerp(col(7), 0.15, 0.45)
    tex = torch.sin(((x * torch.cos(tex_ang) + y * torch.sin(tex_ang)) * freq) + col(8) * 6.28)
    tex = tex * torch.sin((x * torch.sin(tex_ang) - y * torch.cos(tex_ang)) * freq * 0.7)
    t = (t + 0.12 * tex).clamp(0, 1)
    canvas = bg_a[:, :, None, None] * (1 - t.unsqueeze(1)) + bg_b[:, :, None, None] * t.unsqueeze(1)

    # Head geometry (64-px units).
    cx = _lerp(col(9), 22, 42)
    cy = _lerp(col(10), 26, 38)
    rx = _lerp(col(11), 13, 19)
    ry = rx * _lerp(col(12), 0.95, 1.25)
    turn = _lerp(col(13), -1, 1)  # -1 = looks to image-left, +1 = image-right
    fx = cx + turn * 0.28 * rx  # face centre line moves with the turn
    skin = _hsv(_lerp(u[:, 14], 0.02, 0.14), _lerp(u[:, 15], 0.25, 0.7), _lerp(u[:, 16], 0.6, 0.98))
    dark = skin * _lerp(u[:, 17], 0.35, 0.6)[:, None]

    # Ears (animal) or hair, drawn behind / over the head.
    style = u[:, 18] < 0.5
    ear_r = rx * _lerp(col(19), 0.3, 0.45)
    ear_x = (cx - rx * 0.72 - turn * 0.1 * rx, cx + rx * 0.72 - turn * 0.1 * rx)
    ear_y = cy - ry * 0.78
    on = style.reshape(n, 1, 1)
    ears = torch.minimum(*(_ellipse_sdf(x, y, ex, ear_y, ear_r, ear_r) for ex in ear_x))
    canvas = _paint(canvas, _cov(ears, soft) * on, dark)
    inner_r = ear_r * 0.55
    inner = torch.minimum(*(_ellipse_sdf(x, y, ex, ear_y, inner_r, inner_r) for ex in ear_x))
    canvas = _paint(canvas, _cov(inner, soft) * on, torch.tensor([0.95, 0.65, 0.7]).expand(n, 3))

    head = _ellipse_sdf(x, y, cx, cy, rx, ry)
    canvas = _paint(canvas, _cov(head, soft), skin)

    hair_col = _hsv(
        _lerp(u[:, 20], 0.0, 0.12), _lerp(u[:, 21], 0.3, 0.8), _lerp(u[:, 22], 0.1, 0.5)
    )
    hair_line = cy - ry * _lerp(col(23), 0.35, 0.6) + 0.08 * ((x - fx) ** 2) / rx
    hair = torch.maximum(_ellipse_sdf(x, y, cx, cy - 1.0, rx + 1.5, ry + 1.5), y - hair_line)
    canvas = _paint(canvas, _cov(hair, soft) * (~style).reshape(n, 1, 1), hair_col)

    # Eyes: white ellipse, openness scales its height; the pupil is clipped by the eye.
    eye_y = cy - ry * _lerp(col(24), 0.05, 0.28)
    eye_sep = rx * _lerp(col(25), 0.34, 0.5)
    eye_rx = rx * _lerp(col(26), 0.2, 0.3)
    open_eye = _lerp(col(27), 0.12, 1.0)
    eye_ry = eye_rx * _lerp(col(28), 0.9, 1.3) * open_eye
    gaze_x = _lerp(col(29), -0.4, 0.4) + turn * 0.3
    gaze_y = _lerp(col(30), -0.3, 0.3)
    pupil_col = _hsv(u[:, 31], _lerp(u[:, 32], 0.3, 0.9), _lerp(u[:, 33], 0.05, 0.35))
    eye_pts = []
    for side in (-1.0, 1.0):
        scale = 1.0 + side * turn * 0.22  # the eye on the far side looks narrower
        ex = fx + side * eye_sep * (1.0 + side * turn * 0.12)
        erx = eye_rx * scale
        white = _ellipse_sdf(x, y, ex, eye_y, erx, eye_ry)
        canvas = _paint(canvas, _cov(white, soft), torch.ones(n, 3) * 0.97)
        pr = eye_rx * 0.55
        pupil = torch.maximum(
            _ellipse_sdf(x, y, ex + gaze_x * erx * 0.5, eye_y + gaze_y * eye_ry * 0.5, pr, pr),
            white,
        )
        canvas = _paint(canvas, _cov(pupil, soft), pupil_col)
        eye_pts.append(torch.cat([ex, eye_y], dim=2).reshape(n, 2))

    # Nose: a small dark ellipse on the face centre line.
    nose_x = fx + turn * 0.1 * rx
    nose_y = cy + ry * _lerp(col(34), 0.08, 0.22)
    nose_r = rx * _lerp(col(35), 0.08, 0.14)
    nose = _ellipse_sdf(x, y, nose_x, nose_y, nose_r * 1.2, nose_r)
    canvas = _paint(canvas, _cov(nose, soft), dark * 0.8)

    # Mouth: a band bent by the smile; height = openness; always at least a thin line.
    mx = fx + turn * 0.06 * rx
    my = cy + ry * _lerp(col(36), 0.42, 0.6)
    mw = rx * _lerp(col(37), 0.22, 0.5)
    mouth_open = col(38)
    mh = 0.6 + mouth_open * ry * 0.28
    smile = _lerp(col(39), -0.35, 0.35) * rx * 0.35  # corners' rise above the middle (+ = smile)
    um = ((x - mx) / mw).clamp(-1.2, 1.2)
    centre = my - smile * (um * um)
    half = mh * torch.sqrt((1 - um * um).clamp(min=0)) + 0.6
    mouth = torch.maximum((torch.abs(x - mx) - mw), torch.abs(y - centre) - half)
    mouth_col = torch.stack([_lerp(u[:, 40], 0.35, 0.6), u[:, 40] * 0.1, u[:, 41] * 0.12], dim=1)
    canvas = _paint(canvas, _cov(mouth, soft), mouth_col)
    tongue = torch.maximum(mouth, -(y - (centre + half * 0.2)))
    canvas = _paint(
        canvas,
        _cov(tongue, soft) * (mouth_open.reshape(n, 1, 1) > 0.35),
        torch.tensor([0.9, 0.45, 0.5]).expand(n, 3),
    )

    # Lighting: directional gain plus a global exposure and tint.
    l_ang = col(42) * 2 * np.pi
    l_str = _lerp(col(43), 0.0, 0.35)
    light = 1 + l_str * ((x - 32) * torch.cos(l_ang) + (y - 32) * torch.sin(l_ang)) / 32
    gain = _lerp(u[:, 44], 0.85, 1.1)[:, None] * torch.stack(
        [_lerp(u[:, 45], 0.93, 1.07), torch.ones(n), _lerp(u[:, 46], 0.93, 1.07)], dim=1
    )
    canvas = canvas * light.unsqueeze(1) * gain[:, :, None, None]
    images = canvas.clamp(0, 1) * 2 - 1

    def pt(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        return torch.stack([px.reshape(n), py.reshape(n)], dim=1)

    kps = (
        torch.stack(
            [
                eye_pts[0],
                eye_pts[1],
                pt(nose_x, nose_y),
                pt(mx - mw, my - smile),
                pt(mx + mw, my - smile),
                pt(mx, my - mh - 0.6),
                pt(mx, my + mh + 0.6),
                pt(cx + turn * 0.1 * rx, cy + ry),
            ],
            dim=1,
        )
        * k
    )
    return WorldBatch(images=images.contiguous(), keypoints=kps, seeds=tuple(seeds))


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] -> ``[N, H, W, 3]`` uint8 for saving."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [N, 3, H, W], got {list(images.shape)}")
    arr = ((images.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255)
    return arr.to(torch.uint8).numpy()


def grid(images: torch.Tensor, cols: int = 8) -> np.ndarray:
    """Tile ``[N, 3, H, W]`` images into one ``[rows*H, cols*W, 3]`` uint8 picture."""
    arr = to_uint8_hwc(images)
    n, h, w, _ = arr.shape
    rows = -(-n // cols)
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = arr[i]
    return out
