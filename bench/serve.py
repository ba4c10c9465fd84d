"""Benchmark: the model service on Ray Serve against the in-process one, on loopback.

- The remote hop's cost: the same greedy story, in process and through `RemoteModelService` →
  Serve's HTTP proxy → a replica, interleaved; per request (1 new token: admission, routing, the
  stream's first and last lines) and per token (the NDJSON line each piece of text becomes).
- Throughput: many users at once on 1 and 2 story replicas. On this 2-core machine two
  replicas share the same two cores with the proxy and the client, so they cannot be faster;
  the table says what was measured, and the last one how it scales on paper to N GPU machines.

    python -m bench.serve [--quick] [--model shipped|gpt2-small]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

from bench.common import (
    NOISE_NOTE,
    PROMPTS,
    ROOT,
    config,
    fmt,
    gpt2_small_dir,
    median,
    print_table,
    service_config,
    shipped_model_dir,
    write_json,
)
from core.config import Config as ConfigModel
from core.remote import RemoteModelService
from core.service import StoryRequest
from core.settings import DecodingSettings

GREEDY = DecodingSettings(strategy="greedy", repetition_penalty=1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(config: ConfigModel, replicas: int) -> str:
    """A local Ray cluster on 127.0.0.1 with the model service deployed; its URL."""
    import ray
    from ray import serve

    from model.serve.app import deploy

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(config, replicas=replicas, why_replicas=1, actor_options={"num_cpus": 0})
    return f"http://127.0.0.1:{port}"


async def one_story(service: Any, user: int, prompt: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to first text, seconds to the result, tokens written) of one greedy story."""
    started = time.perf_counter()
    stream = await service.story(StoryRequest(user, prompt, GREEDY.replace(max_new_tokens=tokens), seed=0))
    first = None
    async for _ in stream:
        if first is None:
            first = time.perf_counter() - started
    result = await stream.result()
    total = time.perf_counter() - started
    return (first if first is not None else total), total, result.new_tokens


async def hop_cost(local: Any, remote: Any, reps: int, tokens: int) -> dict[str, Any]:
    """Medians of interleaved runs: 1 token (per request) and `tokens` tokens (per token)."""
    samples: dict[str, list[float]] = {"local_1": [], "remote_1": [], "local_n": [], "remote_n": []}
    firsts: dict[str, list[float]] = {"local": [], "remote": []}
    for rep in range(reps):
        for name, service in (("local", local), ("remote", remote)):
            samples[f"{name}_1"].append((await one_story(service, rep, PROMPTS[0], 1))[1])
            first, total, written = await one_story(service, rep, PROMPTS[0], tokens)
            samples[f"{name}_n"].append(total / max(1, written))
            firsts[name].append(first)
    result = {key: median(values) for key, values in samples.items()}
    result |= {f"first_{key}": median(values) for key, values in firsts.items()}
    return result


async def throughput(service: Any, users: int, tokens: int) -> dict[str, float]:
    """All users at once, one story each: tokens per second over the whole run, median first text."""
    started = time.perf_counter()
    runs = await asyncio.gather(
        *(one_story(service, 1000 + i, PROMPTS[i % len(PROMPTS)], tokens) for i in range(users))
    )
    elapsed = time.perf_counter() - started
    return {
        "tokens_per_s": sum(written for _, _, written in runs) / elapsed,
        "first_text_s": median([first for first, _, _ in runs]),
        "elapsed_s": elapsed,
    }


async def run(model_dir: Path, quick: bool) -> dict[str, Any]:
    from model.loading import load_model
    from model.serve.app import deploy
    from model.service import ModelService

    base = service_config(queue_size=64)
    config = base.model_copy(update={"model": base.model.model_copy(update={"source": str(model_dir)})})
    reps, tokens, users = (2, 16, 8) if quick else (7, 64, 16)
    url = start_serve(config, replicas=1)
    local = ModelService(load_model(str(model_dir), config.model.device, config.model.dtype), config)
    await local.start()
    remote = RemoteModelService(url, config)
    await remote.start()
    try:
        await one_story(local, 1, PROMPTS[0], 4)  # warm both up
        await one_story(remote, 1, PROMPTS[0], 4)
        hop = await hop_cost(local, remote, reps, tokens)
        loads = {"in-process": await throughput(local, users, tokens)}
        await local.close()
        loads["Serve, 1 replica"] = await throughput(remote, users, tokens)
        deploy(config, replicas=2, why_replicas=1, actor_options={"num_cpus": 0})
        await one_story(remote, 1, PROMPTS[0], 4)
        loads["Serve, 2 replicas"] = await throughput(remote, users, tokens)
    finally:
        await remote.close()
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return {"hop": hop, "loads": loads, "tokens": tokens, "users": users, "reps": reps}


def report(name: str, numbers: dict[str, Any]) -> None:
    hop, tokens = numbers["hop"], numbers["tokens"]
    print_table(
        f"The remote hop on {name} (greedy, medians of {numbers['reps']} interleaved runs)",
        ["", "in process", "Ray Serve (loopback)", "hop's cost"],
        [
            [
                "one request, 1 token (ms)",
                fmt(hop["local_1"] * 1000),
                fmt(hop["remote_1"] * 1000),
                fmt((hop["remote_1"] - hop["local_1"]) * 1000),
            ],
            [
                f"first text of a {tokens}-token story (ms)",
                fmt(hop["first_local"] * 1000),
                fmt(hop["first_remote"] * 1000),
                fmt((hop["first_remote"] - hop["first_local"]) * 1000),
            ],
            [
                f"per token, {tokens}-token story (ms)",
                fmt(hop["local_n"] * 1000, 2),
                fmt(hop["remote_n"] * 1000, 2),
                fmt((hop["remote_n"] - hop["local_n"]) * 1000, 2),
            ],
        ],
    )
    loads = numbers["loads"]
    reference = loads["in-process"]["tokens_per_s"]
    print_table(
        f"Throughput on {name}: {numbers['users']} users at once, {tokens} tokens each",
        ["where", "tokens/s", "vs in process", "median first text (s)"],
        [
            [where, fmt(load["tokens_per_s"]), f"{load['tokens_per_s'] / reference:.2f}×", fmt(load["first_text_s"], 2)]
            for where, load in loads.items()
        ],
    )
    one = loads["Serve, 1 replica"]["tokens_per_s"]
    print_table(
        "On paper: N machines, one replica each (same model and load per replica)",
        ["machines", "tokens/s if each is this machine"],
        [[n, fmt(one * n)] for n in (1, 2, 4, 8, 16)],
    )
    print(
        "Linear because replicas share nothing: each batches its own stories, and Serve's proxy (one per "
        "node) only forwards lines. It holds while the proxies and the bot keep up: the hop's per-request "
        "and per-token cost above is what each story costs them. Put a GPU replica's own tokens/s in "
        "place of this machine's figure; a replica per GPU adds that much again."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", choices=("shipped", "gpt2-small"), default="shipped")
    args = parser.parse_args(argv)
    shipped = shipped_model_dir()
    if args.model == "shipped" and shipped is not None:
        name, path = f"the shipped model ({config().model.source})", shipped
    else:
        name, path = "gpt2-small (random)", gpt2_small_dir()
    print(NOISE_NOTE)
    numbers = asyncio.run(run(path, args.quick))
    report(name, numbers)
    write_json("serve", {"model": name, **numbers})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
