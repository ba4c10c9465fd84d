"""The model service: off the event loop, bounded, per-user limits, timeouts, faults, batching."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

import model.service as service_module
from core.config import Config, DatabaseConfig, LimitsConfig, ServiceConfig, WhyConfig
from core.errors import GenerationFailedError, PromptError, QueueFullError, RequestTimeoutError, UserBusyError
from core.service import StoryRequest, WhyProgress, WhyRequest
from core.settings import DecodingSettings
from model.endings import OFF
from model.generation import RowJob, generate_batch
from model.service import ModelService

GREEDY = DecodingSettings(strategy="greedy", max_new_tokens=20)
SAMPLE = DecodingSettings(strategy="sampling", max_new_tokens=20, temperature=1.0, top_k=0)


def make_config(**service: object) -> Config:
    return Config(
        # Token-exact lengths: these tests count tokens (the story endings have tests of their own).
        service=ServiceConfig(**{"batch_window_ms": 20.0, "whole_words": False, "finish_sentences": False, **service}),
        limits=LimitsConfig(max_prompt_tokens=64, max_new_tokens=200),
    )


@pytest.fixture
async def start_service(tiny_loaded):
    services: list[ModelService] = []

    async def start(config: Config) -> ModelService:
        svc = ModelService(tiny_loaded, config)
        await svc.start()
        services.append(svc)
        return svc

    yield start
    for svc in services:
        await svc.close()


@pytest.fixture
def make_service(start_service):
    return lambda **service: start_service(make_config(**service))


@pytest.fixture
def slow_model(tiny_loaded, monkeypatch):
    """Makes every forward pass wait on a gate (a fault injected into the real model)."""
    gate = threading.Event()
    forward = tiny_loaded.model.forward

    def gated(*args, **kwargs):
        gate.wait(timeout=10)
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", gated)
    return gate


async def collect(stream) -> str:
    return "".join([delta async for delta in stream])


async def test_generation_does_not_block_the_event_loop(make_service) -> None:
    svc = await make_service()
    stream = await svc.story(StoryRequest(1, "Once upon a time", GREEDY.replace(max_new_tokens=150), seed=0))
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    text = await collect(stream)
    finished = time.monotonic()
    done.set()
    await task
    result = await stream.result()
    assert result.new_tokens == 150 and text == result.continuation
    during = [t for t in ticks if started < t < finished]
    assert len(during) >= 5, f"the loop ticked only {len(during)} times while the model worked"


async def test_streamed_text_is_the_result(make_service) -> None:
    svc = await make_service()
    stream = await svc.story(StoryRequest(1, "The fox said", SAMPLE, seed=3))
    deltas = [d async for d in stream]
    result = await stream.result()
    assert len(deltas) > 1
    assert "".join(deltas) == result.continuation
    assert result.prompt == "The fox said"


async def test_text_reaches_the_loop_in_a_few_handovers_first_piece_at_once(make_service) -> None:
    """The worker hands text over at most every `service.stream_interval_s` (and the first piece at once)."""
    svc = await make_service()
    stream = await svc.story(StoryRequest(1, "Once upon a time", GREEDY.replace(max_new_tokens=150), seed=0))
    arrivals: list[tuple[float, str]] = []
    async for delta in stream:
        arrivals.append((time.monotonic(), delta))
    result = await stream.result()
    assert "".join(d for _, d in arrivals) == result.continuation and result.new_tokens == 150
    assert len(arrivals) < result.new_tokens / 3, f"{len(arrivals)} hand-overs for {result.new_tokens} tokens"
    # The first piece is a token or two, not a batch of them: it was handed over as soon as it existed.
    assert len(arrivals[0][1]) < len(result.continuation) / 10


async def test_second_request_from_same_user_is_refused(make_service, slow_model) -> None:
    svc = await make_service()
    first = await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))
    with pytest.raises(UserBusyError):
        await svc.story(StoryRequest(1, "Again", GREEDY, seed=0))
    slow_model.set()
    await first.result()
    await (await svc.story(StoryRequest(1, "Again", GREEDY, seed=0))).result()


async def test_full_queue_refuses_with_a_busy_message(make_service, slow_model) -> None:
    svc = await make_service(queue_size=2, batch_window_ms=0.0, max_batch_size=1)
    running = await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))
    await _until(lambda: svc._running or svc._writing)
    waiting = [await svc.story(StoryRequest(u, "Once", GREEDY, seed=0)) for u in (2, 3)]
    assert [w.queue_position for w in waiting] == [1, 2]
    with pytest.raises(QueueFullError, match="busy"):
        await svc.story(StoryRequest(4, "Once", GREEDY, seed=0))
    slow_model.set()
    for stream in (running, *waiting):
        assert (await stream.result()).new_tokens == GREEDY.max_new_tokens


async def test_prompt_over_the_limit_or_empty_is_refused(make_service) -> None:
    svc = await make_service()
    with pytest.raises(PromptError, match="limit is 64 tokens"):
        await svc.story(StoryRequest(1, "word " * 70, GREEDY, seed=0))
    with pytest.raises(PromptError, match="too long"):
        await svc.story(StoryRequest(1, "x" * 100_000, GREEDY, seed=0))
    with pytest.raises(PromptError):
        await svc.story(StoryRequest(1, "   ", GREEDY, seed=0))
    assert svc.queue_length == 0 and not svc._in_flight


async def test_continuing_keeps_the_tail_of_a_long_story(make_service) -> None:
    svc = await make_service()
    stream = await svc.story(StoryRequest(1, "word " * 70 + "end", GREEDY, seed=0, keep_tail=True))
    result = await stream.result()
    assert result.prompt.endswith("end") and len(result.prompt) < len("word " * 70)


async def test_a_request_that_runs_too_long_is_cut_off(make_service, tiny_loaded, monkeypatch) -> None:
    forward = tiny_loaded.model.forward
    monkeypatch.setattr(tiny_loaded.model, "forward", lambda *a, **k: (time.sleep(0.02), forward(*a, **k))[1])
    svc = await make_service(request_timeout_s=0.3)
    stream = await svc.story(StoryRequest(1, "Once", GREEDY.replace(max_new_tokens=200), seed=0))
    text = await collect(stream)
    with pytest.raises(RequestTimeoutError, match="cut off"):
        await stream.result()
    assert 0 < len(text)
    monkeypatch.setattr(tiny_loaded.model, "forward", forward)
    assert (await (await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))).result()).new_tokens == 20


async def test_a_hung_worker_is_replaced(make_service, slow_model, monkeypatch) -> None:
    monkeypatch.setattr(service_module, "HANG_GRACE_S", 0.2)
    svc = await make_service(request_timeout_s=0.2)
    stream = await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))
    with pytest.raises(RequestTimeoutError):
        await stream.result()
    slow_model.set()  # the abandoned thread may now finish; nobody waits for it
    assert (await (await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))).result()).new_tokens == 20


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (RuntimeError("boom"), "went wrong"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    ],
)
async def test_a_failing_request_fails_alone_and_the_service_keeps_serving(
    make_service, tiny_loaded, monkeypatch, fault, message
) -> None:
    forward = tiny_loaded.model.forward
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise fault
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", failing_once)
    svc = await make_service()
    with pytest.raises(GenerationFailedError, match=message):
        await (await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))).result()
    assert (await (await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))).result()).new_tokens == 20


async def test_stop_ends_a_running_story_and_keeps_its_text(make_service) -> None:
    svc = await make_service()
    stream = await svc.story(StoryRequest(1, "Once", GREEDY.replace(max_new_tokens=200), seed=0))
    async for _ in stream:
        stream.stop()
    result = await stream.result()
    assert result.stop_reason == "stopped" and 0 < result.new_tokens < 200


async def test_batched_requests_match_their_results_alone(make_service, tiny_loaded) -> None:
    requests = [
        StoryRequest(10 + i, prompt, settings, seed=i)
        for i, (prompt, settings) in enumerate(
            [
                ("Once upon a time", SAMPLE),
                ("The fox said to the crow", SAMPLE.replace(max_new_tokens=7)),
                ("Holmes", GREEDY),
                ("A king", SAMPLE.replace(top_k=5, temperature=0.7)),
            ]
        )
    ]
    alone = [
        generate_batch(tiny_loaded, [RowJob(r.prompt, r.settings, r.seed, endings=OFF)])[0].continuation
        for r in requests
    ]
    svc = await make_service(batch_window_ms=50.0)
    streams = [await svc.story(r) for r in requests]
    batched = [(await s.result()).continuation for s in streams]
    assert max(svc.engine.stats.batch_sizes) == 4  # all four were written together
    assert batched == alone


async def test_a_short_story_in_a_batch_is_answered_when_it_ends_not_with_the_batch(make_service) -> None:
    """Its result (and its user's slot) come back while the long story it was batched with still runs."""
    svc = await make_service(batch_window_ms=50.0)
    long = await svc.story(StoryRequest(1, "Once upon a time", GREEDY.replace(max_new_tokens=200), seed=0))
    short = await svc.story(StoryRequest(2, "The fox", GREEDY.replace(max_new_tokens=5), seed=0))
    text = await collect(short)
    result = await short.result()
    assert result.new_tokens == 5 and text == result.continuation and result.stop_reason == "length"
    assert not long._result.done(), "the short story waited for the whole batch"
    again = await svc.story(StoryRequest(2, "The fox", GREEDY.replace(max_new_tokens=5), seed=0))  # slot is free
    assert (await long.result()).new_tokens == 200
    assert (await again.result()).continuation == result.continuation
    assert svc.batches_run == [] and max(svc.engine.stats.batch_sizes) == 2


async def test_requests_that_cannot_share_a_batch_run_in_turn_in_order(make_service) -> None:
    svc = await make_service(batch_window_ms=50.0)
    beam = DecodingSettings(strategy="beam", max_new_tokens=5)
    order = [("greedy", GREEDY), ("beam", beam), ("sample", SAMPLE), ("beam2", beam.replace(num_beams=2))]
    streams = [await svc.story(StoryRequest(i, "Once", s, seed=i)) for i, (_, s) in enumerate(order)]
    ended: list[str] = []

    async def watch(name: str, stream) -> None:
        assert (await stream.result()).new_tokens > 0
        ended.append(name)

    await asyncio.gather(*(watch(name, stream) for (name, _), stream in zip(order, streams, strict=True)))
    # Beam searches run alone, in their turn: the sampling story behind the first waits for it.
    assert ended == ["greedy", "beam", "sample", "beam2"]
    assert svc.batches_run == [1, 1]


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_per_user_rate_limit_says_when_to_come_back(make_service) -> None:
    svc = await make_service(per_user_per_minute=2, per_user_in_flight=5)
    for _ in range(2):
        await (await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))).result()
    with pytest.raises(UserBusyError, match=r"try again in \d+ s") as info:
        await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))
    assert 0 < info.value.retry_after <= 60
    await (await svc.story(StoryRequest(2, "Once", GREEDY, seed=0))).result()  # others are unaffected


async def test_a_request_that_cannot_join_the_batch_is_not_starved(make_service, slow_model) -> None:
    svc = await make_service(batch_window_ms=0.0, per_user_in_flight=1)
    first = await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))
    await _until(lambda: svc._running or svc._writing)
    beam = await svc.story(StoryRequest(2, "Once", DecodingSettings(strategy="beam", max_new_tokens=5), seed=0))
    later = [await svc.story(StoryRequest(10 + i, "Once", GREEDY, seed=0)) for i in range(4)]
    finished: list[str] = []

    async def watch(name: str, stream) -> None:
        await stream.result()
        finished.append(name)

    slow_model.set()
    await asyncio.gather(
        watch("first", first), watch("beam", beam), *(watch(f"later{i}", s) for i, s in enumerate(later))
    )
    assert finished.index("beam") < min(finished.index(f"later{i}") for i in range(4))
    assert svc.batches_run == [1]  # the beam search, alone
    assert list(svc.engine.stats.batch_sizes)[-1] <= 4 and max(svc.engine.stats.batch_sizes) == 4


# /why through the service: a stream of progress events ending in the result ---------------------


def why_config(**why: object) -> Config:
    return make_config(batch_window_ms=0.0).model_copy(
        update={"why": WhyConfig(**{"time_budget_s": 30.0, "max_steps": 6, "starts": 2, "patience": 100, **why})}
    )


@pytest.fixture
def why_service(start_service):
    return lambda **why: start_service(why_config(**why))


@pytest.mark.parametrize("prepare", [True, False])
async def test_why_is_prepared_at_start_only_when_asked(tiny_model_dir, tmp_path, prepare: bool) -> None:
    """`why.prepare_at_start`: r and the bf16 copy of the weights are made before the first /why
    (a freshly loaded model, so nothing is left from other tests); off, the first /why makes them."""
    from model.explain import importance
    from model.loading import load_model

    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    config = why_config(compute_dtype="bfloat16", prepare_at_start=prepare).model_copy(
        update={"database": DatabaseConfig(path=str(tmp_path / "taleweaver.db"))}
    )
    svc = ModelService(loaded, config)
    await svc.start()
    try:
        assert (loaded.model in importance._low_precision_copies) is prepare
        assert (loaded.model in importance._phi_std_memory) is prepare
        assert len(list((tmp_path / "cache").glob("phi_std-*.pt"))) == int(prepare)
        copy = importance._low_precision_copies.get(loaded.model)
        result = await (await svc.why(WhyRequest(1, "The fox said to the crow"))).result()
        assert len(result.words) == 6
        assert importance._low_precision_copies[loaded.model].dtype == torch.bfloat16
        if prepare:  # the first /why used the copy made at start, not a new one
            assert importance._low_precision_copies[loaded.model] is copy
    finally:
        await svc.close()


async def test_why_streams_progress_then_its_result(why_service, monkeypatch) -> None:
    monkeypatch.setattr("model.explain.importance.PROGRESS_INTERVAL_S", 0.0)
    svc = await why_service()
    stream = await svc.why(WhyRequest(1, "The fox said to the crow"))
    events = [event async for event in stream]
    result = await stream.result()
    assert all(isinstance(e, WhyProgress) for e in events) and len(events) >= 3
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [w.word for w in result.words] == ["The", "fox", "said", "to", "the", "crow"]
    assert result.iterations == 6


async def test_stopping_a_why_ends_it_early_with_its_best_estimate(why_service, monkeypatch) -> None:
    monkeypatch.setattr("model.explain.importance.PROGRESS_INTERVAL_S", 0.0)
    svc = await why_service(max_steps=10**6, time_budget_s=60.0)
    stream = await svc.why(WhyRequest(1, "The fox said to the crow"))
    async for event in stream:
        if event.fraction > 0:
            stream.stop()
    result = await stream.result()
    assert "Cancelled" in result.notes[0] and result.iterations < 10**6


async def test_a_storys_why_explains_the_tail_that_fits_the_prompt_limit(why_service, tiny_loaded) -> None:
    """The story's Why? button: a story longer than the limit is explained from its last tokens."""
    svc = await why_service()
    story = "word " * 70 + "and the fox said to the crow"
    result = await (await svc.why(WhyRequest(1, story, keep_tail=True))).result()
    assert result.prompt.endswith("the fox said to the crow") and story.endswith(result.prompt)
    assert len(tiny_loaded.tokenizer(result.prompt)["input_ids"]) <= svc.max_prompt_tokens == 64
    assert [w.word for w in result.words][-3:] == ["to", "the", "crow"]


async def test_why_prompts_are_checked_before_they_are_queued(why_service) -> None:
    svc = await why_service()
    with pytest.raises(PromptError, match="single token"):
        await svc.why(WhyRequest(1, "a"))
    with pytest.raises(PromptError, match="it was empty"):
        await svc.why(WhyRequest(1, " \n\x00 "))
    with pytest.raises(PromptError, match="limit is 64 tokens"):
        await svc.why(WhyRequest(1, "word " * 70))
    assert svc.batches_run == [] and svc.queue_length == 0


async def test_a_why_waits_for_a_running_story_and_runs_alone(why_service, slow_model) -> None:
    svc = await why_service()
    story = await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))
    await _until(lambda: svc._running or svc._writing)
    why = await svc.why(WhyRequest(2, "The fox said"))
    other = await svc.story(StoryRequest(3, "Once", GREEDY, seed=0))
    assert why.queue_position == 1
    slow_model.set()
    await story.result()
    assert (await why.result()).words
    await other.result()
    assert svc.batches_run == [1]  # the explanation, alone; the stories in the continuous batch


async def test_a_failing_why_reports_an_error_and_the_service_keeps_serving(why_service, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("model.explain.importance.sigmas_fast", broken)
    svc = await why_service()
    stream = await svc.why(WhyRequest(1, "The fox said"))
    async for event in stream:  # the first progress report comes before the failure
        assert isinstance(event, WhyProgress)
    with pytest.raises(GenerationFailedError):
        await stream.result()
    monkeypatch.undo()
    assert (await (await svc.story(StoryRequest(1, "Once", GREEDY, seed=0))).result()).new_tokens > 0


# Continuous batching: stories join and leave at every step -----------------------------------------


async def test_a_story_that_arrives_mid_batch_joins_at_once_and_writes_what_it_would_alone(
    make_service, tiny_loaded
) -> None:
    late = StoryRequest(2, "The fox said to the crow", SAMPLE.replace(max_new_tokens=30), seed=9)
    alone = generate_batch(tiny_loaded, [RowJob(late.prompt, late.settings, late.seed, endings=OFF)])[0].continuation
    svc = await make_service(batch_window_ms=0.0)
    long = await svc.story(StoryRequest(1, "Once upon a time", GREEDY.replace(max_new_tokens=200), seed=0))
    await _until(lambda: svc.engine.stats.steps >= 3)  # the long story is being written, a few steps in
    steps_before = svc.engine.stats.steps
    stream = await svc.story(late)
    text = await collect(stream)
    result = await stream.result()
    assert text == result.continuation == alone
    assert not long._result.done(), "the late story waited for the long one"
    assert 2 in svc.engine.stats.batch_sizes and steps_before > 0
    assert (await long.result()).new_tokens == 200


async def test_stopping_one_row_or_its_timeout_leaves_the_others_running(
    make_service, tiny_loaded, monkeypatch
) -> None:
    forward = tiny_loaded.model.forward

    def paced(*args, **kwargs):  # 10 ms a step: 200 tokens cannot fit in the half-second timeout
        time.sleep(0.01)
        return forward(*args, **kwargs)

    monkeypatch.setattr(tiny_loaded.model, "forward", paced)
    svc = await make_service(batch_window_ms=0.0, request_timeout_s=0.5)
    first = await svc.story(StoryRequest(1, "Once upon a time", GREEDY.replace(max_new_tokens=200), seed=0))
    second = await svc.story(StoryRequest(2, "The fox", SAMPLE.replace(max_new_tokens=200), seed=1))
    third = await svc.story(StoryRequest(3, "A king", GREEDY.replace(max_new_tokens=10), seed=0))
    async for _ in second:
        second.stop()
        break
    stopped = await second.result()
    assert stopped.stop_reason == "stopped" and stopped.new_tokens < 200
    assert (await third.result()).new_tokens == 10  # finished normally beside them
    with pytest.raises(RequestTimeoutError):
        await first.result()
    assert svc.queue_length == 0 and not svc._in_flight


async def test_the_token_budget_refuses_politely_and_frees_what_ends(make_service, slow_model) -> None:
    svc = await make_service(batch_window_ms=0.0, max_tokens_in_flight=300, per_user_in_flight=1)
    first = await svc.story(StoryRequest(1, "Once", GREEDY.replace(max_new_tokens=200), seed=0))
    with pytest.raises(QueueFullError, match="busy") as refused:
        await svc.story(StoryRequest(2, "Once", GREEDY.replace(max_new_tokens=150), seed=0))
    assert "tokens" in refused.value.message
    small = await svc.story(StoryRequest(3, "Once", GREEDY.replace(max_new_tokens=50), seed=0))
    slow_model.set()
    await first.result()
    await small.result()
    assert svc._tokens_in_flight == 0
    await (await svc.story(StoryRequest(2, "Once", GREEDY.replace(max_new_tokens=150), seed=0))).result()
