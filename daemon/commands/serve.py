"""`gimp-draggan serve`: run the daemon (one GPU, one job at a time, a bounded queue; with
`--cluster`, jobs run on Ray actors, one per GPU: docs/CLUSTER.md)."""

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
        "serve",
        help="run the DragGAN daemon that GIMP and `drag --daemon` talk to",
        description=f"Run the daemon. Default address {P.DEFAULT_ADDRESS} "
        f"(or ${P.ADDRESS_ENV}); a non-loopback address needs CURVE keys (`gimp-draggan keys`).",
    )
    p.add_argument(
        "--bind",
        metavar="ADDR",
        help=f"address to listen on (default: ${P.ADDRESS_ENV} or {P.DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "--device", help="cpu, cuda, cuda:N, mps (default: auto); with --cluster: cpu or cuda"
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run jobs on Ray actors: `local` starts "
        "a private Ray here, `auto` or ray://HOST:PORT joins a cluster (needs the "
        "[cluster] extra; docs/CLUSTER.md)",
    )
    p.add_argument(
        "--actors",
        type=int,
        metavar="N",
        help="with --cluster and no GPUs: how many CPU actors (default 1); with GPUs one per GPU",
    )
    p.add_argument(
        "--threads-per-actor",
        type=int,
        metavar="K",
        help="with --cluster: torch threads per actor (default: the cluster's CPUs / actors)",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="default model (registry name or a checkpoint file, which clients then "
        "name by its stem); repeat to offer several files",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=P.MAX_QUEUE_DEFAULT,
        metavar="N",
        help=f"jobs that may wait behind the running one (default {P.MAX_QUEUE_DEFAULT})",
    )
    p.add_argument(
        "--keys",
        metavar="DIR",
        help="CURVE key dir from `gimp-draggan keys` "
        "(default for a non-loopback address: the user's key dir)",
    )
    p.add_argument(
        "--threads",
        metavar="N",
        help="torch CPU threads per job (default: the "
        "cores free when each job starts; also $GIMP_DRAGGAN_THREADS)",
    )
    p.add_argument("--cache-dir", metavar="DIR", help="model cache folder")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def key_dir_for(address: str, given: str | None, is_bind: bool) -> Path | None:
    """Keys to use: the given dir; for a non-loopback address the default dir if it holds keys."""
    from gimp_draggan.service.keys import default_key_dir

    if given:
        return Path(given).expanduser()
    if P.is_loopback(address):
        return None
    default = default_key_dir()
    marker = "server.key_secret" if is_bind else "client.key_secret"
    return default if (default / marker).is_file() else None


def run(args: argparse.Namespace) -> int:
    from gimp_draggan.device import pick_device
    from gimp_draggan.service.executor import PipelineExecutor, operator_models
    from gimp_draggan.service.keys import ensure_secret
    from gimp_draggan.service.logs import setup_logging
    from gimp_draggan.service.server import Server, ServerConfig, ServerError
    from gimp_draggan.service.worker import Worker
    from gimp_draggan.threads import parse_threads

    log_file = setup_logging("daemon", args.verbose)
    if args.cluster is None and (args.actors or args.threads_per_actor):
        print("error: --actors and --threads-per-actor need --cluster", file=sys.stderr)
        return 2
    try:
        device = pick_device(args.device) if args.cluster is None else "cluster"
        files = operator_models(args.model)
        names = [m for m in args.model if not Path(m).expanduser().is_file()]
        if names:
            P.check_name(names[0])
        default = names[0] if names else next(iter(files), None)
        address = args.bind or P.default_address()
        keys = key_dir_for(address, args.keys, is_bind=True)
        executor = PipelineExecutor(
            device, default, files, args.cache_dir, threads=parse_threads(args.threads) or "auto"
        )
        if default is not None:
            executor.check_model(default)
        secret = None
        if keys is None:  # Without CURVE, the owner's secret.
            secret, secret_file = ensure_secret()
            logging.getLogger("gimp_draggan.serve").info(
                "clients must send the secret in %s (only its owner can read it)", secret_file
            )
        config = ServerConfig(bind=address, max_queue=args.max_queue, keys=keys, secret=secret)
        runner = Worker if args.cluster is None else cluster_runner(args, executor)
        server = Server(config, executor, runner=runner)
    except (ValueError, OSError, ServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except P.ProtocolError as exc:
        print(f"error: {exc.sentence}", file=sys.stderr)
        return 2

    def stop(_sig: int, _frame: Any) -> None:
        server.stop(timeout_s=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("gimp_draggan.serve").info(
        "device %s, default model %s, log file %s",
        executor.device,
        executor.default_model or "(none)",
        log_file or "(none)",
    )
    try:
        server.serve_forever()
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.cluster is not None:
            from gimp_draggan.service.cluster import leave

            leave()
    return 0


def cluster_runner(args: argparse.Namespace, executor: Any) -> Any:
    """Join the Ray cluster and start its actors; the dispatcher factory for the server. The
    local executor only lists and checks models; its device line names the cluster."""
    from gimp_draggan.service import cluster

    config = cluster.ClusterConfig(args.cluster, args.actors, args.threads_per_actor, args.device)
    try:
        cluster.join(config.address)
        pool = cluster.start_actors(
            config, executor.default_model, executor.store.files, args.cache_dir
        )
    except cluster.ClusterError as exc:
        cluster.leave()
        raise ValueError(str(exc)) from None
    executor.device = pool.description
    return pool.dispatcher
