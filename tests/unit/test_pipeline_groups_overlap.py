"""A later group's crop that overlaps an earlier group's patch must see that edit.

The groups are planned with fresh crops, but a group's session may come from the request's hint
or the cache, with a bigger box than planned; its patch then covers pixels an earlier group
changed, and must not paste the layer's old pixels back over them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch

from gimp_draggan.draggan.checkpoint import save_generator
from gimp_draggan.draggan.networks import Generator, GeneratorConfig
from gimp_draggan.edit.pipeline import run_edit, run_invert
from gimp_draggan.edit.sessions import SessionCache
from gimp_draggan.models.store import ModelStore
from gimp_draggan_plugin.protocol import JobRequest, JobResult, Params

pytestmark = pytest.mark.timeout(300)
MODELS = ModelStore(any_file=True)  # Names or files, as the command line takes them.

TINY = GeneratorConfig(
    img_resolution=32, z_dim=32, w_dim=32, channel_base=256, channel_max=32, mapping_layers=2
)


def _paste(rgba: np.ndarray, r: JobResult) -> np.ndarray:
    out = rgba.copy()
    out[r.y : r.y + r.height, r.x : r.x + r.width] = np.frombuffer(r.patch, np.uint8).reshape(
        r.height, r.width, 4
    )
    return out


def test_a_hinted_crop_over_an_earlier_groups_patch_keeps_that_edit(
    small: list[int], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = str(save_generator(Generator(TINY), tmp_path / "tiny.safetensors"))
    rgba = np.dstack([skimage.data.astronaut(), np.full((512, 512), 255, np.uint8)])
    a = ((100.0, 100.0), (110.0, 100.0))  # planned crop x 97..114
    b = ((150.0, 100.0), (160.0, 100.0))  # planned crop x 147..164: two groups
    params = Params(steps=3, lr=0.1)
    sessions = SessionCache()
    # An earlier inversion whose crop (x 110..172) holds b's points and overlaps a's crop.
    wide = run_invert(
        JobRequest.photo(
            rgba.tobytes(),
            512,
            512,
            [((120.0, 100.0), b[1])],
            depth="u8",
            model=model,
            params=params,
        ),
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
    )
    wide_box = sessions.get(wide.session).box
    assert wide_box.rect.x0 <= 112 and wide_box.holds(list(b))
    only_a = run_edit(
        JobRequest.photo(rgba.tobytes(), 512, 512, [a], depth="u8", model=model, params=params),
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
    )
    edited_a = _paste(rgba, only_a)
    overlap = np.zeros((512, 512), bool)
    overlap[wide_box.rect.y0 : wide_box.rect.y1, wide_box.rect.x0 : only_a.x + only_a.width] = True
    moved = overlap & np.any(edited_a != rgba, axis=2)
    assert moved.any()  # a's edit reaches into the wide crop
    both = run_edit(
        JobRequest.photo(
            rgba.tobytes(),
            512,
            512,
            [a, b],
            depth="u8",
            model=model,
            params=params,
            session=wide.session,
        ),
        device="cpu",
        sessions=sessions,
        models=MODELS,
        on_progress=lambda e: None,
        should_stop=lambda: False,
    )
    out = _paste(rgba, both)
    # b's crop no longer holds the photo as it was there: a's edit stays as a alone made it.
    assert np.array_equal(out[moved], edited_a[moved])
