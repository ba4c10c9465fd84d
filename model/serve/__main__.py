"""`python -m model.serve`: start (or join) a Ray cluster, deploy the model service, print its URL.

    python -m model.serve [--config config.yaml] [--replicas N|MIN-MAX] [--why-replicas N|MIN-MAX]
                          [--target-ongoing-requests T] [--cpus-per-replica auto|C] [--gpus-per-replica G]
                          [--host 127.0.0.1] [--port 8000] [--address RAY_ADDRESS]

The replicas must fit the cluster: with `--cpus-per-replica auto` (the default) they share its
CPUs; an explicit share that cannot be placed is refused at once, naming the numbers. "up" is
printed only once both applications run. Then point the bot at it: `service.url: http://HOST:PORT`
in config.yaml, or the `TALEWEAVER_MODEL_URL` environment variable.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from model.serve.placement import PlacementError, Replicas, check_gpus, cpus_argument, plan_cpus

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve Taleweaver's model on Ray Serve.")
    parser.add_argument("--config", default=os.environ.get("TALEWEAVER_CONFIG", "config.yaml"))
    parser.add_argument(
        "--replicas",
        type=Replicas.parse,
        default=Replicas(1, 1),
        help="story replicas: N, or MIN-MAX for Serve's autoscaler to move between (default: %(default)s)",
    )
    parser.add_argument(
        "--why-replicas", type=Replicas.parse, default=Replicas(1, 1), help="/why replicas, likewise (default: 1)"
    )
    parser.add_argument(
        "--target-ongoing-requests",
        type=float,
        default=None,
        help="autoscaling: requests per story replica Serve aims for (default: service.max_batch_size, the "
        "stories one replica writes at once); /why replicas aim for 1",
    )
    parser.add_argument(
        "--cpus-per-replica",
        type=cpus_argument,
        default=None,
        help="CPUs Ray reserves for each replica, or auto: the cluster's CPUs shared by the most replicas "
        "that may run, 1 each at most (default: auto)",
    )
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs for each replica (1: one each)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (ray start --head); none: a local one")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import ray
    from ray import serve

    from core.config import ConfigError, load_config
    from model.serve.app import APPLICATIONS, DeployError, deploy

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Replicas import this project: on a local cluster the code is on this disk.
    runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}}
    if args.address:
        ray.init(address=args.address, runtime_env=runtime_env)
    else:
        ray.init(include_dashboard=False, runtime_env=runtime_env)
    groups = {"story": args.replicas, "/why": args.why_replicas}
    try:
        cluster = ray.cluster_resources()
        cpus = plan_cpus(args.cpus_per_replica, cluster, groups)
        check_gpus(args.gpus_per_replica, cluster, groups)
        print(
            f"deploying {args.replicas} story and {args.why_replicas} /why replicas, {cpus:g} CPU each "
            f"(the cluster has {cluster.get('CPU', 0):g})",
            flush=True,
        )
        serve.start(http_options={"host": args.host, "port": args.port})
        deploy(
            config,
            replicas=args.replicas,
            why_replicas=args.why_replicas,
            actor_options={"num_cpus": cpus, "num_gpus": args.gpus_per_replica},
            target_ongoing_requests=args.target_ongoing_requests,
        )
    except PlacementError as exc:  # nothing was deployed (a joined cluster keeps what it ran)
        print(f"cannot serve: {exc}", file=sys.stderr)
        ray.shutdown()
        return 1
    except DeployError as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        stop(ray, serve, joined=bool(args.address), names=APPLICATIONS)
        return 1
    print(f"Taleweaver's model service is up: http://{args.host}:{args.port}", flush=True)
    print(f"  set service.url (or TALEWEAVER_MODEL_URL) to http://{args.host}:{args.port}; Ctrl-C stops it", flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    stop(ray, serve, joined=bool(args.address), names=APPLICATIONS)
    return 0


def stop(ray, serve, *, joined: bool, names: tuple[str, ...]) -> None:
    """On a cluster of our own, Serve and Ray go; on one we joined, only our applications do."""
    if joined:
        for name in names:
            serve.delete(name)
    else:
        serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
