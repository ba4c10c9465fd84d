"""Issue 18, item 4: one failing request in a batch fails alone; the stories batched with it finish.

Both paths: the static batch of beam searches (`generate`, retried row by row when it fails) and
the continuous batch of greedy and sampling stories (a prefill is per row; a shared step that
fails is run again for each row alone).

The fault is injected into the real tiny model: any `generate` call whose prompts hold the poison
token raises a few decoding steps in (after every row has streamed some text), as a bug or an
out-of-memory error on one row's input would. Before the fix, every unfinished row of the batch
ended with "Something went wrong".
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.config import Config, LimitsConfig, ServiceConfig
from core.errors import GenerationFailedError
from core.service import StoryRequest
from core.settings import DecodingSettings
from model.service import ModelService

SETTINGS = DecodingSettings(strategy="beam", num_beams=2, max_new_tokens=24)
"""Beam searches share a static `generate` batch: the path where a failure hits the whole batch."""
SAMPLING = DecodingSettings(strategy="sampling", max_new_tokens=24, temperature=1.0, top_k=0)
POISON = "Holmes looked at the letter"
GOOD = [
    "Once upon a time there lived a king",
    "The little mermaid swam up",
    "A fox and a crow met",
    "The youngest was so beautiful",
    "Once upon a time",
    "The little mermaid",
    "A fox said to the crow",
]


@pytest.fixture
def poisoned_model(tiny_loaded, monkeypatch):
    """Every generate call whose prompts contain POISON's first token fails on its third decoding step."""
    poison_id = tiny_loaded.tokenizer(POISON)["input_ids"][0]
    for prompt in GOOD:
        assert poison_id not in tiny_loaded.tokenizer(prompt)["input_ids"]
    forward = tiny_loaded.model.forward
    local = threading.local()

    def faulty(*args, **kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is not None and input_ids.shape[1] > 1:  # the prefill starts a generate call
            local.poisoned, local.steps = bool((input_ids == poison_id).any()), 0
        local.steps = getattr(local, "steps", 0) + 1
        if getattr(local, "poisoned", False) and local.steps > 3:
            raise RuntimeError("injected fault")
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", faulty)
    return tiny_loaded


async def run_one(service: ModelService, request: StoryRequest):
    stream = await service.story(request)
    text = "".join([delta async for delta in stream])
    return text, await stream.result()


async def test_one_failing_row_fails_alone_and_the_other_seven_finish(poisoned_model):
    config = Config(
        service=ServiceConfig(batch_window_ms=100.0, max_batch_size=8, per_user_in_flight=1, finish_sentences=False),
        limits=LimitsConfig(max_prompt_tokens=64, max_new_tokens=200),
    )
    service = ModelService(poisoned_model, config)
    await service.start()
    try:
        prompts = [*GOOD[:3], POISON, *GOOD[3:]]
        requests = [StoryRequest(100 + i, prompt, SETTINGS, seed=i) for i, prompt in enumerate(prompts)]
        outcomes = await asyncio.gather(*(run_one(service, r) for r in requests), return_exceptions=True)
    finally:
        await service.close()
    assert service.batches_run[0] == 8, service.batches_run
    failed = [
        request.prompt for request, outcome in zip(requests, outcomes, strict=True) if isinstance(outcome, Exception)
    ]
    print(f"\n{len(failed)} of 8 failed: {failed}")
    assert failed == [POISON]
    assert isinstance(outcomes[3], GenerationFailedError)
    for request, outcome in zip(requests, outcomes, strict=True):
        if request.prompt == POISON:
            continue
        text, result = outcome
        assert text == result.continuation, "the story's reader saw other text than its result"
        assert result.continuation and result.new_tokens > 0


def config_for_eight() -> Config:
    return Config(
        service=ServiceConfig(batch_window_ms=0.0, max_batch_size=8, per_user_in_flight=1, finish_sentences=False),
        limits=LimitsConfig(max_prompt_tokens=64, max_new_tokens=200),
    )


async def run_eight(loaded, prompts: list[str]) -> tuple[list, ModelService]:
    service = ModelService(loaded, config_for_eight())
    await service.start()
    try:
        requests = [StoryRequest(100 + i, prompt, SAMPLING, seed=i) for i, prompt in enumerate(prompts)]
        outcomes = await asyncio.gather(*(run_one(service, r) for r in requests), return_exceptions=True)
    finally:
        await service.close()
    return outcomes, service


async def test_a_prompt_that_breaks_its_prefill_fails_alone_in_the_continuous_batch(tiny_loaded, monkeypatch):
    poison_id = tiny_loaded.tokenizer(POISON)["input_ids"][0]
    forward = tiny_loaded.model.forward

    def faulty(*args, **kwargs):
        if bool((kwargs["input_ids"] == poison_id).any()) and kwargs["input_ids"].shape[1] > 1:
            raise RuntimeError("injected fault in a prefill")
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", faulty)
    prompts = [*GOOD[:3], POISON, *GOOD[3:]]
    outcomes, service = await run_eight(tiny_loaded, prompts)
    assert [isinstance(o, Exception) for o in outcomes] == [p == POISON for p in prompts]
    assert isinstance(outcomes[3], GenerationFailedError)
    assert all(result.new_tokens == SAMPLING.max_new_tokens for _, result in outcomes[:3] + outcomes[4:])
    assert max(service.engine.stats.batch_sizes) == 7


async def test_a_row_that_breaks_a_shared_step_fails_alone_and_the_others_finish_as_alone(tiny_loaded, monkeypatch):
    """A fault that only one row's input triggers (here: its position, far beyond the others')
    breaks the whole step; each row then runs that step alone, and only the bad row fails."""
    long_prompt = " ".join(["Holmes"] * 14)
    limit = len(tiny_loaded.tokenizer(long_prompt)["input_ids"]) + 3
    alone, _ = await run_eight(tiny_loaded, GOOD)
    forward = tiny_loaded.model.forward

    def faulty(*args, **kwargs):
        positions = kwargs.get("position_ids")
        if positions is not None and kwargs["input_ids"].shape[1] == 1 and int(positions.max()) >= limit:
            raise RuntimeError("injected fault in a step")
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", faulty)
    outcomes, service = await run_eight(tiny_loaded, [*GOOD, long_prompt])
    assert isinstance(outcomes[-1], GenerationFailedError)
    for (text, result), (_, expected) in zip(outcomes[:-1], alone, strict=True):
        assert text == result.continuation == expected.continuation  # the same story as without the bad row
    assert max(service.engine.stats.batch_sizes) == 8
