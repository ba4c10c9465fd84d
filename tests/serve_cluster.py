"""One local Ray cluster for a test session: on 127.0.0.1, two logical CPUs, no dashboard.

Starting Ray costs 10–40 s on a small machine, so the tests that need Serve share one cluster
(`ray_serve` in tests/conftest.py) and each deploys its own applications on it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from core.config import Config

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServeCluster:
    """The running cluster: its HTTP proxy's URL, and `deploy` to (re)deploy the model service."""

    url: str

    def deploy(self, config: Config, *, replicas: int = 2, why_replicas: int = 1) -> None:
        from model.serve.app import deploy

        # Replicas reserve no CPU: the tests' cluster has two, and the tiny model needs little.
        deploy(config, replicas=replicas, why_replicas=why_replicas, actor_options={"num_cpus": 0})

    def undeploy(self) -> None:
        """Take the model service away (the proxy then answers 404), as if it were down."""
        from ray import serve

        serve.delete("stories")
        serve.delete("explanations")


def start_cluster() -> ServeCluster:
    import ray
    from ray import serve

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return ServeCluster(f"http://127.0.0.1:{port}")


def stop_cluster() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
