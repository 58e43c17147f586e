"""`gimp-draggan models ...`: list, download, verify, convert, info, render.

Every subcommand that reads a checkpoint goes through ``checkpoint.load_generator``, which refuses
pickles that ask for code; such a refusal exits non-zero and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="model cache folder (default: $GIMP_DRAGGAN_CACHE or the platform's user cache dir)",
    )
    parser = subparsers.add_parser(
        "models",
        help="list, download, verify, convert and try generator models",
        description="Manage the model cache and inspect generator checkpoints.",
    )
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    p = sub.add_parser("list", parents=[common], help="known models, sizes, hashes, cached or not")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=run_list)

    p = sub.add_parser("download", parents=[common], help="download a model (resumable, verified)")
    p.add_argument("name", help="model name from `gimp-draggan models list`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_download)

    p = sub.add_parser("verify", parents=[common], help="check cached files' size and SHA-256")
    p.add_argument("name", nargs="?", help="one model (default: every cached model)")
    p.set_defaults(func=run_verify)

    p = sub.add_parser(
        "convert",
        parents=[common],
        help="NVIDIA .pkl -> the project's .safetensors + .json (never runs code from the pickle)",
    )
    p.add_argument("src", metavar="IN.pkl", help="StyleGAN2 network pickle (or a model name)")
    p.add_argument("dst", metavar="OUT.safetensors", help="output weights; OUT.json is written too")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("info", parents=[common], help="print a generator's config as JSON")
    p.add_argument("model", metavar="FILE_OR_NAME")
    p.set_defaults(func=run_info)

    p = sub.add_parser(
        "render",
        parents=[common],
        help="render one image from a seed, as NVIDIA's gen_images.py does",
    )
    p.add_argument("model", metavar="FILE_OR_NAME")
    p.add_argument("--seed", type=int, required=True, help="z = RandomState(seed).randn(1, z_dim)")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi (default 1.0)")
    p.add_argument("--noise-mode", choices=("const", "random", "none"), default="const")
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: auto)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png")
    p.set_defaults(func=run_render)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _errors() -> tuple[type[Exception], ...]:
    from gimp_draggan.draggan.checkpoint import CheckpointError
    from gimp_draggan.models.download import DownloadError
    from gimp_draggan.models.registry import RegistryError

    return CheckpointError, RegistryError, DownloadError


def _guard(func: Any) -> Any:
    """Turn the module errors into one clear line on stderr and exit code 1 (no traceback)."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except _errors() as e:
            return _fail(str(e))
        except OSError as e:  # unreadable input, unwritable output, ...
            return _fail(f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))

    wrapper.__doc__ = func.__doc__
    return wrapper


def _size_text(entry: Any, path: Path | None) -> str:
    from gimp_draggan.models.download import format_bytes

    if entry.size_bytes is not None:
        return format_bytes(entry.size_bytes)
    if path is not None and path.is_file():
        return format_bytes(path.stat().st_size)
    return entry.approx_size or "unknown"


def _embedded_resolution(path: Path) -> int | None:
    """The packaged model's resolution from its .json (the table leaves it to the file)."""
    from gimp_draggan.draggan.checkpoint import CheckpointError, read_config

    if not path.is_file():
        return None
    try:
        return read_config(path)[0].img_resolution
    except CheckpointError:
        return None


def _rows(cache: str | None) -> list[dict[str, Any]]:
    from gimp_draggan.models import registry

    rows = []
    for entry in registry.load_table().values():
        path = registry.model_path(entry, cache)
        damaged = registry.damage(entry, cache)
        cached = path.is_file() and damaged is None
        resolution = entry.resolution
        if resolution is None and entry.package_path:
            resolution = _embedded_resolution(path)
        rows.append(
            {
                "name": entry.name,
                "kind": entry.kind,
                "domain": entry.domain,
                "resolution": resolution,
                "num_ws": entry.num_ws,
                "size_bytes": entry.size_bytes,
                "size": _size_text(entry, path),
                "cached": cached,
                "damaged": damaged,
                "shipped": bool(entry.package_path),
                "path": str(path),
                "sha256": entry.sha256,
                "sha256_source": entry.sha256_source,
                "licence": entry.licence,
                "licence_short": entry.licence_short,
                "description": entry.description,
                "downloadable": entry.downloadable,
                "download_bytes": entry.expected_bytes,
                "urls": list(entry.urls),
            }
        )
    return rows


@_guard
def run_list(args: argparse.Namespace) -> int:
    from gimp_draggan.models import registry

    rows = _rows(args.cache_dir)
    if args.json:
        print(
            json.dumps(
                {"cache_dir": str(registry.cache_dir(args.cache_dir)), "models": rows}, indent=2
            )
        )
        return 0
    print(f"cache: {registry.cache_dir(args.cache_dir) / 'models'}")
    header = f"{'NAME':<26} {'RES':>5} {'SIZE':>12}  {'CACHED':<8} SHA-256"
    print(header)
    for r in rows:
        state = "shipped" if r["shipped"] and r["cached"] else ("yes" if r["cached"] else "no")
        state = "DAMAGED" if r["damaged"] else state
        res = str(r["resolution"]) if r["resolution"] else "-"
        sha = r["sha256"] or "(none pinned)"
        print(f"{r['name']:<26} {res:>5} {r['size']:>12}  {state:<8} {sha}")
    for r in rows:
        if r["damaged"]:
            print(r["damaged"])
    return 0


@_guard
def run_download(args: argparse.Namespace) -> int:
    from gimp_draggan.models import registry
    from gimp_draggan.models.download import fetch_model, sha256_file

    entry = registry.get_entry(args.name)
    path = registry.model_path(entry, args.cache_dir)
    if entry.package_path:
        print(f"{entry.name} ships inside the package ({path}); nothing to download")
        return 0
    if registry.is_cached(entry.name, args.cache_dir):
        print(f"{entry.name} is already cached: {path}")
        return 0
    if not entry.downloadable:
        return _fail(
            f"{entry.name} has no direct download link: fetch it by hand from "
            f"{entry.manual_url} and save it as {path}, then run "
            f"`gimp-draggan models verify {entry.name}`"
        )
    got = fetch_model(entry.name, args.cache_dir, show_progress=not args.quiet)
    if entry.sha256:
        check = "sha256 verified"
    else:
        check = f"sha256 {sha256_file(got)}: no pinned hash to compare, record this one"
    print(f"{entry.name}: {got} ({got.stat().st_size} bytes, {check})")
    return 0


@_guard
def run_verify(args: argparse.Namespace) -> int:
    from gimp_draggan.models import registry
    from gimp_draggan.models.download import verify_model

    names = [registry.get_entry(args.name).name] if args.name else list(registry.load_table())
    bad = checked = 0
    for name in names:
        v = verify_model(name, args.cache_dir)
        if v is None:
            if args.name:
                path = registry.model_path(registry.get_entry(name), args.cache_dir)
                return _fail(
                    f"{name} is not cached ({path}); run `gimp-draggan models download {name}`"
                )
            continue
        checked += 1
        if v.problems:
            bad += 1
            print(f"BAD  {name}: {'; '.join(v.problems)}; delete {v.path} and download it again")
        elif not v.pinned:
            print(f"ok?  {name}: {v.size} bytes, sha256 {v.sha256} (no pinned hash to compare)")
        else:
            print(f"ok   {name}: {v.size} bytes, sha256 matches")
    if not checked:
        print("no cached models to verify")
    return 1 if bad else 0


def _resolve(model: str, cache: str | None) -> Path:
    from gimp_draggan.models import registry

    return registry.resolve(model, cache)


@_guard
def run_convert(args: argparse.Namespace) -> int:
    from gimp_draggan.draggan.checkpoint import load_generator, save_generator
    from gimp_draggan.models.download import sha256_file

    src = _resolve(args.src, args.cache_dir)
    dst = Path(args.dst)
    if dst.suffix != ".safetensors":
        return _fail(f"{dst}: the output name must end in .safetensors")
    G = load_generator(src)
    provenance = {"converted_from": src.name, "source_sha256": sha256_file(src)}
    save_generator(G, dst, provenance=provenance)
    print(f"wrote {dst} and {dst.with_suffix('.json')} ({G.img_resolution} px, num_ws {G.num_ws})")
    return 0


def _info(G: Any) -> dict[str, Any]:
    c = G.config
    return {
        "resolution": c.img_resolution,
        "z_dim": c.z_dim,
        "w_dim": c.w_dim,
        "num_ws": G.num_ws,
        "channel_base": c.channel_base,
        "channel_max": c.channel_max,
        "mapping_layers": c.mapping_layers,
        "img_channels": c.img_channels,
        "conv_clamp": c.conv_clamp,
        "mapping_lr_multiplier": c.mapping_lr_multiplier,
    }


@_guard
def run_info(args: argparse.Namespace) -> int:
    from gimp_draggan.draggan.checkpoint import load_generator

    G = load_generator(_resolve(args.model, args.cache_dir))
    print(json.dumps(_info(G), indent=2))
    return 0


@_guard
def run_render(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from gimp_draggan.atomic import save_image
    from gimp_draggan.device import pick_device
    from gimp_draggan.draggan.checkpoint import load_generator
    from gimp_draggan.draggan.networks import seed_to_z, to_uint8
    from gimp_draggan.headless.argcheck import check_output, check_seed

    out = Path(args.output)
    try:
        check_seed(args.seed)
        check_output(args.output, [args.model])
        device = pick_device(args.device)
    except ValueError as e:
        return _fail(str(e))
    G = load_generator(_resolve(args.model, args.cache_dir)).to(device)
    z = seed_to_z(args.seed, G.z_dim).to(device)
    with torch.no_grad():
        img = G(z, truncation_psi=args.trunc, noise_mode=args.noise_mode)
    pixels = to_uint8(img)[0].cpu().numpy()
    if pixels.shape[2] not in (1, 3, 4):
        return _fail(f"cannot save a {pixels.shape[2]}-channel image as PNG")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), out)
    print(
        f"wrote {out} ({G.img_resolution}x{G.img_resolution}, seed {args.seed}, "
        f"psi {args.trunc}, noise {args.noise_mode}, {device})"
    )
    return 0
