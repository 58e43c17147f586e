"""`gimp-draggan serve`: run the daemon (one GPU, one job at a time, a bounded queue)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from gimp_draggan_plugin import protocol as P


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="run the DragGAN daemon that GIMP and `drag --daemon` talk to",
        description=f"Run the daemon. Default address {P.DEFAULT_ADDRESS} "
        f"(or ${P.ADDRESS_ENV}); a non-loopback address needs CURVE keys (`gimp-draggan keys`).",
    )
    p.add_argument("--bind", metavar="ADDR", help=f"address to listen on (default: "
                   f"${P.ADDRESS_ENV} or {P.DEFAULT_ADDRESS})")
    p.add_argument("--broker", metavar="ADDR", help="instead of listening, serve the back end of "
                   "a `gimp-draggan broker` at ADDR")
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: auto)")
    p.add_argument("--model", action="append", default=[], metavar="NAME|FILE",
                   help="default model (registry name or a checkpoint file, which clients then "
                   "name by its stem); repeat to offer several files")
    p.add_argument("--max-queue", type=int, default=P.MAX_QUEUE_DEFAULT, metavar="N",
                   help=f"jobs that may wait behind the running one (default "
                   f"{P.MAX_QUEUE_DEFAULT})")
    p.add_argument("--keys", metavar="DIR", help="CURVE key dir from `gimp-draggan keys` "
                   "(default for a non-loopback address: the user's key dir)")
    p.add_argument("--cache-dir", metavar="DIR", help="model cache folder")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def key_dir_for(address: str, given: str | None, is_bind: bool) -> Path | None:
    """Keys to use: the given dir; for a non-loopback address the default dir if it holds keys."""
    from gimp_draggan.keys import default_key_dir

    if given:
        return Path(given).expanduser()
    if P.is_loopback(address):
        return None
    default = default_key_dir()
    marker = "server.key_secret" if is_bind else "client.key_secret"
    return default if (default / marker).is_file() else None


def run(args: argparse.Namespace) -> int:
    from gimp_draggan.device import pick_device
    from gimp_draggan.executor import PipelineExecutor, operator_models
    from gimp_draggan.jobs import JobError
    from gimp_draggan.keys import ensure_secret
    from gimp_draggan.logs import setup_logging
    from gimp_draggan.server import Server, ServerConfig, ServerError

    log_file = setup_logging("daemon", args.verbose)
    try:
        device = pick_device(args.device)
        files = operator_models(args.model)
        names = [m for m in args.model if not Path(m).expanduser().is_file()]
        if names:
            P.check_name(names[0])
        default = names[0] if names else next(iter(files), None)
        address = args.broker or args.bind or P.default_address()
        keys = key_dir_for(address, args.keys, is_bind=args.broker is None)
        executor = PipelineExecutor(device, default, files, args.cache_dir)
        if default is not None:
            executor.check_model(default)
        secret = None
        if args.broker is None and keys is None:  # Without CURVE, the owner's secret.
            secret, secret_file = ensure_secret()
            logging.getLogger("gimp_draggan.serve").info(
                "clients must send the secret in %s (only its owner can read it)", secret_file)
        config = ServerConfig(bind=args.bind or P.default_address(), connect=args.broker,
                              max_queue=args.max_queue, keys=keys, secret=secret)
        server = Server(config, executor)
    except (ValueError, OSError, ServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (JobError, P.ProtocolError) as exc:
        print(f"error: {P.error_sentence(exc.code, exc.message)}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: Any) -> None:
        server.stop(timeout_s=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("gimp_draggan.serve").info(
        "device %s, default model %s, log file %s", device, executor.default_model or "(none)",
        log_file or "(none)",
    )
    try:
        server.serve_forever()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
