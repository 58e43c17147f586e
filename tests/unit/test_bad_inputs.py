"""Every input a user can give (issue 17's table): a right result or one clear line before any
work.

Each row runs through the CLI in-process and, where the command has a daemon form, again with
``--daemon`` against a real daemon (real ZeroMQ on loopback, the shipped embedded model); the
daemon must still answer afterwards. Rows that must fail before any work run with tripwires on the
image reader, the pipeline and the client: touching any of them fails the test.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_helpers import embedded_daemon, single_torch_thread

from gimp_draggan.cli import main
from gimp_draggan.draggan import pti
from gimp_draggan.headless.imagefile import Png16, read_image
from gimp_draggan_plugin import protocol as P

pytestmark = pytest.mark.timeout(300)

SIDE = 96
PAIR = "48,50:48,56"  # The head's middle, 6 px down (image pixels).


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    """A daemon on a free loopback port running the real pipeline on the embedded model (its
    default), with few PTI steps (the inversion is not what these rows test)."""
    yield from embedded_daemon()


def head(side: int = SIDE) -> np.ndarray:
    """A cartoon head of the embedded model's world, RGB u8, ``side`` px."""
    from gimp_draggan_tools.train.world import render

    world = render([20_000_123])
    rgb = ((world.images[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).clip(0, 255)
    return np.asarray(Image.fromarray(rgb.astype(np.uint8)).resize((side, side)))


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> None:
    """A PNG whose header claims ``width`` x ``height`` (its data is one short row)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def make_inputs(folder: Path) -> dict[str, Path]:
    """The files the rows name, by key."""
    rgb = head()
    grey8 = np.asarray(Image.fromarray(rgb).convert("L"))
    alpha = np.full(grey8.shape, 255, np.uint8)
    alpha[:8] = 0
    files = {
        "grey16": Image.fromarray(grey8.astype(np.uint16) * 257),
        "grey8": Image.fromarray(grey8),
        "greyalpha": Image.fromarray(np.dstack([grey8, alpha])),
        "palette": Image.fromarray(rgb).quantize(64),
        "rgba": Image.fromarray(np.dstack([rgb, alpha])),
        "rgb16": Png16(rgb.astype(np.uint16) * 257 + 3),
        "mask_small": Image.fromarray(np.full((10, 10), 255, np.uint8)),
    }
    out: dict[str, Path] = {}
    for name, image in files.items():
        out[name] = folder / f"{name}.png"
        image.save(out[name], format="PNG")
    out["bomb"] = folder / "bomb.png"
    bomb_png(out["bomb"])
    out["pkl"] = folder / "corrupt.pkl"
    out["pkl"].write_bytes(b"<html>404 Not Found</html>")
    (folder / "corrupt.json").write_text("{}")  # A config beside it changes nothing.
    out["folder"] = folder
    return out


def check_mode(mode: str, bits: str) -> Callable[[Path, Path], None]:
    """The output exists, has ``mode`` ("RGB;16": `imagefile`'s name for 16-bit colour) and is
    close to the input (the edit moved a few pixels; an all-white or all-black output fails)."""

    def check(src: Path, out: Path) -> None:
        got, want = read_image(out), read_image(src)
        assert got.source_mode == mode and got.depth == bits, (got.source_mode, got.depth)
        assert got.rgba.shape == want.rgba.shape
        diff = np.abs(got.rgba.astype(np.float64) - want.rgba.astype(np.float64))
        scale = 65535.0 if bits == "u16" else 255.0
        assert diff.mean() < 0.05 * scale, diff.mean() / scale
        assert diff.max() > 0, "nothing was edited"
        if got.grey:
            assert np.array_equal(got.rgba[:, :, 0], got.rgba[:, :, 1])
        if bits == "u16":  # Full depth: values between the input's 8-bit steps exist.
            assert (got.rgba[:, :, :3] % 257 != want.rgba[0, 0, 0] % 257).any()

    return check


@dataclass(frozen=True)
class Row:
    """One input: argv ({key} = a file of `make_inputs`, {out} = the output), what must happen."""

    name: str
    argv: str
    code: int
    words: tuple[str, ...] = ()  # In stderr (code != 0) or stdout (code 0), any case.
    daemon: bool = True  # Also run with --daemon ADDR.
    before_work: bool = False  # Fails before reading pixels, loading or connecting.
    check: Callable[[Path, Path], None] | None = None  # (input, output) after a success.
    input_key: str = ""
    no_output: bool = field(default=True)


DRAG = "drag {%s} -p " + PAIR + " --steps 2 --device cpu -o {out}"
ROWS = [
    Row(
        "16-bit grey",
        DRAG % "grey16",
        0,
        ("wrote",),
        check=check_mode("I;16", "u16"),
        input_key="grey16",
        no_output=False,
    ),
    Row(
        "8-bit grey",
        DRAG % "grey8",
        0,
        ("wrote",),
        check=check_mode("L", "u8"),
        input_key="grey8",
        no_output=False,
    ),
    Row(
        "grey + alpha",
        DRAG % "greyalpha",
        0,
        ("wrote",),
        check=check_mode("LA", "u8"),
        input_key="greyalpha",
        no_output=False,
    ),
    Row(
        "palette -> RGB",
        DRAG % "palette",
        0,
        ("8-bit RGB",),
        check=check_mode("RGB", "u8"),
        input_key="palette",
        no_output=False,
    ),
    Row(
        "RGBA",
        DRAG % "rgba",
        0,
        ("wrote",),
        check=check_mode("RGBA", "u8"),
        input_key="rgba",
        no_output=False,
    ),
    Row(
        "16-bit RGB",
        DRAG % "rgb16",
        0,
        ("16-bit RGB",),
        check=check_mode("RGB;16", "u16"),
        input_key="rgb16",
        no_output=False,
    ),
    Row(
        "-o is the input",
        "drag {grey8} -p " + PAIR + " -o {grey8}",
        1,
        ("is the input", "never overwritten"),
        before_work=True,
    ),
    Row(
        "-o unwritable",
        "drag {grey8} -p " + PAIR + " -o /proc/x.png",
        1,
        ("cannot create a file in /proc",),
        before_work=True,
    ),
    Row(
        "-o a folder",
        "drag {grey8} -p " + PAIR + " -o {folder}",
        1,
        ("is a folder",),
        before_work=True,
    ),
    Row(
        "-o not png",
        "drag {grey8} -p " + PAIR + " -o {folder}/o.jpg",
        1,
        ("must be a .png",),
        before_work=True,
    ),
    Row(
        "30000x30000 header",
        "drag {bomb} -p " + PAIR + " -o {out}",
        1,
        ("30000x30000", str(P.MAX_SIDE)),
    ),
    Row(
        "30000x30000 mask",
        "drag {grey8} --mask {bomb} -p " + PAIR + " -o {out}",
        1,
        ("30000x30000", str(P.MAX_SIDE)),
    ),
    Row(
        "invert 30000x30000",
        "invert {bomb} --device cpu -o {out}",
        1,
        ("30000x30000", str(P.MAX_SIDE)),
        daemon=False,
    ),
    Row("invert -o is the input", "invert {grey8} -o {grey8}", 1, ("is the input",), daemon=False),
    Row(
        "render --seed -1",
        "models render embedded --seed -1 -o {out}",
        1,
        ("--seed", "2^32"),
        daemon=False,
    ),
    Row(
        "--lr -1",
        "drag {grey8} -p " + PAIR + " --lr -1 -o {out}",
        1,
        ("--lr must be in", "daemon's limit"),
        before_work=True,
    ),
    Row(
        "--lr nan",
        "drag {grey8} -p " + PAIR + " --lr nan -o {out}",
        1,
        ("--lr must be",),
        before_work=True,
    ),
    Row(
        "--steps 100000",
        "drag {grey8} -p " + PAIR + " --steps 100000 -o {out}",
        1,
        ("--steps must be in [0, 2000]",),
        before_work=True,
    ),
    Row(
        "--steps -1",
        "drag {grey8} -p " + PAIR + " --steps -1 -o {out}",
        1,
        ("--steps must be in",),
        before_work=True,
    ),
    Row(
        "--seed 2^32",
        "drag --seed 4294967296 -p 1,1:5,5 -o {out}",
        1,
        ("--seed must be",),
        before_work=True,
    ),
    Row(
        "--daemon nonsense",
        "drag {grey8} -p " + PAIR + " --daemon nonsense -o {out}",
        1,
        ("not a ZeroMQ address: 'nonsense'",),
        daemon=False,
        before_work=True,
    ),
    Row(
        "negative coordinate",
        "drag {grey8} -p -1,5:10,10 -o {out}",
        1,
        ("(-1, 5) is outside the 96x96 image",),
    ),
    Row("nan coordinate", "drag {grey8} -p nan,5:10,10 -o {out}", 1, ("finite",), before_work=True),
    Row(
        "17 pairs",
        "drag {grey8}" + " -p 1,1:2,2" * 17 + " -o {out}",
        1,
        ("the limit is 16",),
        before_work=True,
    ),
    Row(
        "missing input",
        "drag {folder}/nope.png -p " + PAIR + " -o {out}",
        1,
        ("no such file",),
        before_work=True,
    ),
    Row(
        "mask of another size",
        "drag {grey8} --mask {mask_small} -p " + PAIR + " -o {out}",
        1,
        ("is 10x10 but must be 96x96",),
    ),
    Row("not an image", "drag {pkl} -p " + PAIR + " -o {out}", 1, ("cannot read it as an image",)),
    Row(
        "corrupt .pkl",
        "drag --seed 1 --model {pkl} -p 1,1:5,5 -o {out}",
        1,
        ("damaged or truncated pickle",),
        daemon=False,
    ),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def tripwires(mp: pytest.MonkeyPatch) -> None:
    """Reading pixels, editing, loading a model or connecting now fails the test."""
    import gimp_draggan.edit.pipeline
    import gimp_draggan.headless.imagefile
    import gimp_draggan_plugin.client
    from gimp_draggan.draggan import checkpoint

    def tripped(*_a: object, **_k: object) -> None:
        raise AssertionError("work started before the arguments were refused")

    mp.setattr(gimp_draggan.headless.imagefile, "read_image", tripped)
    mp.setattr(gimp_draggan.edit.pipeline, "run_edit", tripped)
    mp.setattr(checkpoint, "load_generator", tripped)
    mp.setattr(gimp_draggan_plugin.client, "Client", tripped)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def alive(address: str) -> bool:
    from gimp_draggan_plugin.client import Client

    with Client(address, timeout_s=5.0) as client:
        return client.hello("test")["op"] == "hello"


CASES = [(row, via) for row in ROWS for via in ("local", "daemon") if via == "local" or row.daemon]


@pytest.mark.parametrize(("row", "via"), CASES, ids=[f"{r.name}-{v}" for r, v in CASES])
def test_row(
    row: Row,
    via: str,
    inputs: dict[str, Path],
    daemon: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out.png"
    argv = row.argv.format(out=out, **{k: str(v) for k, v in inputs.items()}).split()
    if via == "daemon":
        argv += ["--daemon", daemon]
    before = {k: v.read_bytes() for k, v in inputs.items() if v.is_file()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(
            pti.PRESETS,
            "fast",
            pti.InvertParams(projection_steps=3, tuning_steps=2, w_avg_samples=64),
        )
        if row.before_work:
            tripwires(mp)
        for _ in single_torch_thread():
            code, stdout, stderr = run_cli(argv, capsys)
    text = stdout + stderr
    assert "Traceback" not in text
    assert code == row.code, text
    said = (stderr if code else stdout).lower()
    for word in row.words:
        assert word.lower() in said, (word, text)
    if code:
        assert len(stderr.strip().splitlines()) == 1, stderr  # one line
        assert stderr.startswith("error: ")
    if row.no_output:
        assert not out.exists()
    if row.check is not None:
        row.check(inputs[row.input_key], out)
    assert before == {k: v.read_bytes() for k, v in inputs.items() if v.is_file()}, "input changed"
    if via == "daemon":
        assert alive(daemon)


def test_help_names_the_mask_size_of_both_forms(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run_cli(["drag", "--help"], capsys)
    flat = " ".join(stdout.split())
    assert code == 0
    assert "photo form: the image's size" in flat and "seed form: the model's" in flat


def test_negative_pair_value_is_parsed_not_refused_by_argparse() -> None:
    from gimp_draggan.headless.argcheck import join_negative_values

    assert join_negative_values(
        ["drag", "-p", "-1,5:10,10", "--pair", "-.5,1:2,2", "-o", "x.png"]
    ) == ["drag", "-p=-1,5:10,10", "--pair=-.5,1:2,2", "-o", "x.png"]
    assert join_negative_values(["-p", "--json"]) == ["-p", "--json"]  # not a value: kept


def test_16bit_colour_png_round_trip(tmp_path: Path) -> None:
    """Pillow keeps only the high byte of 16-bit colour PNGs; `imagefile` keeps all 16 bits,
    through every PNG filter Pillow's decoder undoes (Png16 writes "Sub")."""
    rng = np.random.default_rng(0)
    for channels in (2, 3, 4):
        planes = rng.integers(0, 65536, (9, 7, channels)).astype(np.uint16)
        buf = io.BytesIO()
        Png16(planes).save(buf)
        (tmp_path / "x.png").write_bytes(buf.getvalue())
        image = read_image(tmp_path / "x.png")
        want = {2: np.dstack([planes[..., 0]] * 3 + [planes[..., 1]]), 3: planes, 4: planes}[
            channels
        ]
        assert np.array_equal(image.rgba[..., : want.shape[2]], want)
        encoded = io.BytesIO()
        image.encode(image.rgba.copy()).save(encoded, format="PNG")
        assert encoded.getvalue() == buf.getvalue()
