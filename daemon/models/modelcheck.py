"""Is a model file whole? A cheap look, so `hello`, `ping` and `models list` never call a
truncated or garbage file "cached" and never load a whole model to find out.

The look: the pinned size where the table has one (a download lands only once its size and
hash matched); else, for `.safetensors`, that the header parses
and the file is exactly as long as the header's tensors say (plus its `.json` config beside
it); for a pickle, that it starts like one and ends with the STOP opcode. Results are cached by
(path, size, mtime), so a file is read again only when it changes. A file that passes and then
fails to load is caught by the executor (`model_damaged`) and remembered there.
"""

from __future__ import annotations

import json
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import IO

MAX_HEADER = 100 * 2**20  # A safetensors header longer than this is garbage, not a model.


def damaged_sentence(path: Path, problem: str, name: str | None) -> str:
    """What went wrong and the fix, in one sentence."""
    fix = (
        f"download it again: gimp-draggan models download {name}"
        if name
        else "replace it with a good copy"
    )
    return f"model file {path} is damaged ({problem}): delete {path} and {fix}"


def problem(path: Path, pinned_size: int | None = None) -> str | None:
    """Why the file at `path` is not a usable model, or None when it looks whole. A missing
    file is not a problem here (it is simply not cached)."""
    try:
        st = path.stat()
    except OSError:
        return None
    if pinned_size is not None:  # Files land in the cache only once size and hash matched.
        return (
            None
            if st.st_size == pinned_size
            else f"{st.st_size} bytes, the registry pins {pinned_size}"
        )
    return _look(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _look(path: str, size: int, _mtime_ns: int) -> str | None:
    if size == 0:
        return "the file is empty"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                f.seek(-1, os.SEEK_END)
                return None if f.read(1) == b"." else "a truncated pickle (no STOP at its end)"
            if len(head) < 8:
                return "too short to be a model"
            return _safetensors(path, f, size, struct.unpack("<Q", head)[0])
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


def _safetensors(path: str, f: IO[bytes], size: int, header_len: int) -> str | None:
    if header_len > min(MAX_HEADER, size - 8):
        return "not a .pkl or .safetensors file, or truncated in its header"
    try:
        header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, ValueError):
        return "its safetensors header is not JSON"
    if not isinstance(header, dict):
        return "its safetensors header is not a JSON object"
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(v, int) for v in offsets)
        ):
            return f"tensor {name!r} has no data offsets"
        end = max(end, offsets[1])
    if size != 8 + header_len + end:
        return f"{size} bytes where its header needs {8 + header_len + end} (truncated?)"
    config = Path(path).with_suffix(".json")
    if not config.is_file():
        return f"its config {config.name} is missing beside it"
    return None
