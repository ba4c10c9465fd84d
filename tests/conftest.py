"""Shared fixtures: the tiny GPT-2 (built once per session) and offline Hugging Face."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from tests.tiny_model import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny GPT-2 directory (random weights, fixed seed)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path):
    """The tiny model loaded through the bot's own loading code, on the CPU."""
    from core.config import WhyConfig
    from model.explain.importance import prepare
    from model.loading import load_model

    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    # Once, before any test patches the model's forward pass (as the service does at its start).
    prepare(loaded, WhyConfig())
    return loaded


@pytest.fixture(scope="session")
def ray_serve():
    """A local Ray cluster with Serve's proxy on loopback, shared by the session (see tests/serve_cluster.py)."""
    pytest.importorskip("ray")
    from tests.serve_cluster import start_cluster, stop_cluster

    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole session, on loopback (see tests/pg_server.py); without
    fsync, as nothing here crashes it (tests/store/test_postgres.py crashes a durable one of its own)."""
    from tests.pg_server import start_server, stop_server

    server = start_server(durable=False)
    try:
        yield server
    finally:
        stop_server(server)
