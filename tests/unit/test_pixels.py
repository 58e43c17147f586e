"""Layer bytes <-> arrays at every depth GIMP hands out."""

import numpy as np
import pytest

from gimp_draggan.edit.pixels import from_float, mask_view, rgba_view, to_bytes, to_float


def _layer(depth: str, w: int = 5, h: int = 3) -> np.ndarray:
    rng = np.random.default_rng(1)
    if depth == "u8":
        return rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    if depth == "u16":
        return rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
    return rng.uniform(-0.5, 4.0, (h, w, 4)).astype(np.float32)  # HDR values, as GIMP allows


@pytest.mark.parametrize("depth", ["u8", "u16", "f32"])
def test_round_trip_is_exact_at_every_depth(depth: str) -> None:
    arr = _layer(depth)
    view = rgba_view(to_bytes(arr), 5, 3, depth)
    assert view.dtype == arr.dtype and view.shape == (3, 5, 4)
    back = from_float(to_float(view, depth), depth)
    assert back.dtype == arr.dtype
    assert to_bytes(back) == to_bytes(arr)


def test_float_scale_is_one_for_full_intensity() -> None:
    assert to_float(np.array([255], np.uint8), "u8")[0] == 1.0
    assert to_float(np.array([65535], np.uint16), "u16")[0] == 1.0
    assert from_float(np.array([1.2, -0.1, 0.5], np.float32), "u8").tolist() == [255, 0, 128]
    assert from_float(np.array([1.5], np.float32), "f32")[0] == 1.5  # not clipped


def test_view_does_not_copy() -> None:
    data = bytearray(to_bytes(_layer("u8")))
    view = rgba_view(bytes(data), 5, 3, "u8")
    assert not view.flags.writeable
    assert not view.flags.owndata


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="expected 60 bytes"):
        rgba_view(b"\0" * 59, 5, 3, "u8")
    with pytest.raises(ValueError, match="depth must be one of"):
        rgba_view(b"\0" * 60, 5, 3, "u10")
    with pytest.raises(ValueError, match="positive"):
        rgba_view(b"", 0, 3, "u8")
    with pytest.raises(ValueError, match="mask: expected 15 bytes"):
        mask_view(b"\0" * 14, 5, 3)
    with pytest.raises(ValueError, match="does not match depth"):
        to_float(np.zeros((1, 1, 4), np.uint8), "u16")
