"""The operations endpoint, served for real on 127.0.0.1, and the logging set-up."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import Config, LimitsConfig, ServiceConfig
from core.service import StoryRequest
from core.settings import DecodingSettings
from model.service import ModelService
from ops.logs import configure_logging
from ops.server import OpsServer

Check = Callable[[], Awaitable[bool]]


async def ok() -> bool:
    return True


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[dict[str, Check]], Awaitable[str]]]:
    servers: list[OpsServer] = []

    async def start(checks: dict[str, Check]) -> str:
        server = OpsServer(checks, "127.0.0.1", 0)
        await server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.stop()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text scrape (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


async def test_healthz_answers_while_the_process_does(serve) -> None:
    base = await serve({"model": ok})
    assert await get(f"{base}/healthz") == (200, '{"status": "ok"}')


async def test_readyz_is_ready_only_when_every_check_passes_and_names_those_that_fail(serve) -> None:
    async def unreachable() -> bool:
        raise aiohttp.ClientConnectionError("model service unreachable")

    async def hanging() -> bool:
        await asyncio.sleep(60)
        return True

    async def closed() -> bool:
        return False

    assert (await get(f"{await serve({'discord': ok, 'model': ok, 'database': ok})}/readyz"))[0] == 200
    status, body = await get(f"{await serve({'discord': ok, 'model': unreachable, 'database': hanging})}/readyz")
    assert status == 503
    assert json.loads(body) == {"ready": False, "checks": {"discord": True, "model": False, "database": False}}
    assert (await get(f"{await serve({'database': closed})}/readyz"))[0] == 503


async def test_readyz_fails_once_the_model_service_is_closed(serve, tiny_loaded) -> None:
    service = ModelService(tiny_loaded, Config())
    await service.start()
    base = await serve({"model": service.ready})
    assert (await get(f"{base}/readyz"))[0] == 200
    await service.close()
    status, body = await get(f"{base}/readyz")
    assert status == 503 and json.loads(body)["checks"]["model"] is False


async def test_a_scrape_after_a_story_shows_the_counters_moved(serve, tiny_loaded) -> None:
    config = Config(service=ServiceConfig(batch_window_ms=0.0), limits=LimitsConfig(max_prompt_tokens=64))
    service = ModelService(tiny_loaded, config)
    await service.start()
    base = await serve({"model": service.ready})
    try:
        before = (await get(f"{base}/metrics"))[1]
        stream = await service.story(StoryRequest(1, "Once upon a time", DecodingSettings(max_new_tokens=12), 3))
        result = await stream.result()
        with pytest.raises(Exception, match="it was empty"):
            await service.story(StoryRequest(2, "   ", DecodingSettings(), 3))
        after = (await get(f"{base}/metrics"))[1]
    finally:
        await service.close()
    moved = {
        name: sample(after, name, **labels) - sample(before, name, **labels)
        for name, labels in [
            ("taleweaver_tokens_written_total", {}),
            ("taleweaver_story_duration_seconds_count", {}),
            ("taleweaver_time_to_first_text_seconds_count", {}),
            ("taleweaver_rejections_total", {"reason": "prompt"}),
        ]
    }
    assert moved == {
        "taleweaver_tokens_written_total": result.new_tokens,
        "taleweaver_story_duration_seconds_count": 1,
        "taleweaver_time_to_first_text_seconds_count": 1,
        "taleweaver_rejections_total": 1,
    }
    steps = service.engine.stats.steps  # one observation of the batch size per decoding step
    assert sample(after, "taleweaver_batch_size_count") - sample(before, "taleweaver_batch_size_count") == steps > 0
    assert "taleweaver_queue_length" in after and "taleweaver_event_loop_lag_seconds" in after


def test_json_logs_are_one_object_a_line_with_secrets_redacted() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", "s3cret-token", stream=stream)
    try:
        logging.getLogger("taleweaver.test").info("connected with %s", "s3cret-token")
    finally:
        configure_logging("WARNING", "text", stream=io.StringIO())
    record = json.loads(stream.getvalue().strip())
    assert record["level"] == "INFO" and record["name"] == "taleweaver.test"
    assert record["message"] == "connected with [redacted]"


def test_text_logs_to_a_file_or_pipe_carry_no_colour_codes() -> None:
    stream = io.StringIO()  # not a terminal
    configure_logging("INFO", "text", stream=stream)
    try:
        logging.getLogger("discord.client").warning("something")
    finally:
        configure_logging("WARNING", "text", stream=io.StringIO())
    assert "\x1b[" not in stream.getvalue() and "WARNING  discord.client: something" in stream.getvalue()
