"""Which aligner a model's ``"alignment"`` (models.json) calls for.

Above both framings (`gimp_draggan.edit.align`: the square and the FFHQ face;
`gimp_draggan.edit.align_embedded`: the embedded model's head), so neither imports the other's
module back.
"""

from __future__ import annotations

from gimp_draggan.edit.align import EMBEDDED, FFHQ, Aligner, FaceAligner, FindFaces, SquareFraming
from gimp_draggan.edit.align_embedded import KeypointAligner
from gimp_draggan.faces import find_faces as detector


def aligner_for(alignment: str | None, find_faces: FindFaces | None = None) -> Aligner:
    """The aligner for ``alignment``: None -> `SquareFraming`, "ffhq" -> `FaceAligner` over
    ``find_faces`` (default: `gimp_draggan.faces.find_faces`), "embedded" -> the embedded
    model's `KeypointAligner`."""
    if alignment is None:
        return SquareFraming()
    if alignment == EMBEDDED:
        return KeypointAligner()
    if alignment == FFHQ:
        return FaceAligner(detector if find_faces is None else find_faces)
    raise ValueError(
        f"unknown face alignment {alignment!r} in the model table; known: {FFHQ!r}, {EMBEDDED!r} "
        "(or none); update gimp-draggan or fix models.json"
    )
