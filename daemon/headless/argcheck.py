"""Command-line arguments checked before any work, by the rules the daemon applies on the wire.

The numeric ranges are `gimp_draggan_plugin.protocol.PARAMS` (one table for the CLI, the daemon and
the plug-in), the seed range and the address syntax are the protocol's, and the output file is
proved writable (and not one of the inputs) before an image is read or a model is loaded, so a
typo costs a second, not a whole inversion, and nothing the user gave is ever overwritten.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gimp_draggan_plugin import protocol as P

NEGATIVE_VALUE_OPTIONS = ("-p", "--pair")  # Values that may start with '-' (-p -1,5:10,10).


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``-p -1,5:10,10`` -> ``-p=-1,5:10,10``: argparse takes a value starting with '-' for an
    option unless it is joined with '='; a coordinate may be negative (then it is refused as
    outside the image, with the image's size)."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in NEGATIVE_VALUE_OPTIONS:
            value = next(it, None)
            if (
                value is not None
                and len(value) > 1
                and value[0] == "-"
                and (value[1].isdigit() or value[1] == ".")
            ):
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def check_params(**values: Any) -> None:
    """``steps=…, lr=…`` against the protocol's ranges; ValueError naming the option."""
    try:
        P.check_params(values)
    except P.ProtocolError as exc:
        raise ValueError(f"--{exc.message} (the daemon's limit too)") from None


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2^32 - 1], got {seed}")


def check_pairs(pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> None:
    """Finite numbers, at most the protocol's number of pairs (the image bounds come later)."""
    if len(pairs) > P.MAX_POINTS:
        raise ValueError(f"{len(pairs)} pairs given; the limit is {P.MAX_POINTS}")
    for i, (h, t) in enumerate(pairs):
        if not all(math.isfinite(v) for v in (*h, *t)):
            raise ValueError(f"pair {i}: coordinates must be finite numbers, got {h} -> {t}")


def check_daemon(address: str | None) -> None:
    """``--daemon ADDR`` (None: not given; "": the default address)."""
    if address:
        P.parse_address(address)


def check_output(output: str, inputs: Sequence[str | None]) -> None:
    """``-o``: a .png that is none of ``inputs`` and whose folder can be written (or created)."""
    out = Path(output).expanduser()
    for given in inputs:
        if given and _same_file(out, Path(given).expanduser()):
            raise ValueError(
                f"-o {output} is the input {given}; write the result to another file "
                "(the input is never overwritten)"
            )
    if out.is_dir():
        raise ValueError(f"-o {output} is a folder; give a file name such as {out / 'out.png'}")
    if out.suffix.lower() != ".png":
        raise ValueError(f"{output}: the output must be a .png file")
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"-o {output}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".gimp-draggan-probe-", dir=folder)
    except OSError as exc:
        raise ValueError(
            f"-o {output}: cannot create a file in {folder} ({exc.strerror}); choose another folder"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()
