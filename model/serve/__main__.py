"""`python -m model.serve`: start (or join) a Ray cluster, deploy the model service, print its URL.

    python -m model.serve [--config config.yaml] [--replicas N] [--why-replicas M]
                          [--host 127.0.0.1] [--port 8000] [--address RAY_ADDRESS] [--gpus-per-replica G]

Then point the bot at it: `service.url: http://HOST:PORT` in config.yaml, or the
`TALEWEAVER_MODEL_URL` environment variable.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve Taleweaver's model on Ray Serve.")
    parser.add_argument("--config", default=os.environ.get("TALEWEAVER_CONFIG", "config.yaml"))
    parser.add_argument("--replicas", type=int, default=1, help="story replicas (default: %(default)s)")
    parser.add_argument("--why-replicas", type=int, default=1, help="/why replicas (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (ray start --head); none: a local one")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs Ray reserves for each replica")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs for each replica (1: one each)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    from core.config import ConfigError, load_config
    from model.serve.app import deploy

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
    serve.start(http_options={"host": args.host, "port": args.port})
    options = {"num_cpus": args.cpus_per_replica, "num_gpus": args.gpus_per_replica}
    deploy(config, replicas=args.replicas, why_replicas=args.why_replicas, actor_options=options)
    print(f"Taleweaver's model service is up: http://{args.host}:{args.port}", flush=True)
    print(f"  set service.url (or TALEWEAVER_MODEL_URL) to http://{args.host}:{args.port}; Ctrl-C stops it", flush=True)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
