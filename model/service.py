"""The in-process model service: the async facade the cogs call, with the model off the event loop.

Requests wait in one bounded FIFO queue. A scheduler task takes the oldest request, waits a
few milliseconds for others that can share its forward pass (same `batch_key`), and hands the
batch to the device's single worker thread. The oldest request always goes first, so nobody
starves; requests that cannot join it wait their turn. Story text and `/why` progress come back
through per-request streams fed from the worker thread with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TypeVar

import torch

from core.config import Config
from core.errors import (
    GenerationFailedError,
    PromptError,
    QueueFullError,
    RequestTimeoutError,
    TaleweaverError,
    UserBusyError,
)
from core.metrics import (
    BATCH_SIZE,
    QUEUE_LENGTH,
    REJECTIONS,
    STORY_DURATION,
    TIME_TO_FIRST_TEXT,
    TOKENS_WRITTEN,
    WHY_DURATION,
)
from core.prompts import PromptKind, check_text, check_token_count
from core.service import StopReason, StoryRequest, StoryResult, WhyProgress, WhyRequest, WhyResult
from model.decoding import batch_key
from model.generation import RowJob, RowOutput, generate_batch
from model.jobs import JobStream, StoryJob, StoryStream, WhyJob, WhyStream
from model.loading import LoadedModel
from model.relay import TextRelay

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
RATE_TABLE_MAX = 10_000
HANG_GRACE_S = 5.0
"""How long past its deadline a batch may run before its worker is given up as hung."""

Job = StoryJob | WhyJob
T = TypeVar("T")


class ModelService:
    """Queue, per-user limits, batching, timeouts and the worker thread for one model.

    Implements `core.service.ModelServiceAPI` in the bot's own process.
    """

    def __init__(self, loaded: LoadedModel, config: Config) -> None:
        self.loaded = loaded
        self.config = config
        self._pending: deque[Job] = deque()
        self._in_flight: Counter[int] = Counter()
        self._recent: dict[int, deque[float]] = {}
        """Start times of each user's requests in the last minute (the per-user rate limit)."""
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = self._new_executor()
        self._scheduler: asyncio.Task[None] | None = None
        self._running: list[Job] = []
        self.batches_run: list[int] = []
        """Sizes of the batches started so far (for tests and the benchmark)."""

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-worker")

    @property
    def max_prompt_tokens(self) -> int:
        return self.config.limits.max_prompt_tokens

    async def start(self) -> None:
        if self.loaded.device.type == "cpu":
            torch.set_num_threads(self.config.model.cpu_threads)
        self._scheduler = asyncio.create_task(self._schedule(), name="model-scheduler")
        QUEUE_LENGTH.set_function(lambda: self.queue_length)

    async def ready(self) -> bool:
        """Readiness: the model is loaded and the scheduler runs (a crashed one would serve nobody)."""
        return self._scheduler is not None and not self._scheduler.done() and not self._closing

    async def close(self) -> None:
        # The flag as well as the cancel: `asyncio.wait_for` (Python 3.11) swallows a cancellation
        # that arrives as the worker's future completes, which is exactly when a user whose story
        # ended early can close the bot; the scheduler then stops at its next turn instead.
        self._closing = True
        self._wakeup.set()
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        for job in list(self._pending):
            job.fail(GenerationFailedError("The bot is shutting down; please try again in a minute."))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # Public API -------------------------------------------------------------------------------
    async def count_tokens(self, text: str) -> int:
        # verbose=False: counting a text longer than the model's context is the point, not a mistake.
        return len(self.loaded.tokenizer(text, split_special_tokens=True, verbose=False)["input_ids"])

    async def story(self, request: StoryRequest) -> StoryStream:
        prompt = await self._checked_prompt(request.prompt, PromptKind.STORY, keep_tail=request.keep_tail)
        self._admit(request.user_id)
        request = StoryRequest(request.user_id, prompt, request.settings, request.seed, request.keep_tail)
        stream: StoryStream = JobStream(queue_position=self.queue_length)
        self._enqueue(StoryJob(request.user_id, request=request, key=batch_key(request.settings), stream=stream))
        return stream

    async def why(self, request: WhyRequest) -> WhyStream:
        prompt = await self._checked_prompt(request.prompt, PromptKind.WHY, keep_tail=request.keep_tail)
        self._admit(request.user_id)
        request = WhyRequest(request.user_id, prompt, request.seed, request.view, request.keep_tail)
        stream: WhyStream = JobStream(queue_position=self.queue_length)
        self._enqueue(WhyJob(request.user_id, request=request, stream=stream))
        return stream

    @property
    def queue_length(self) -> int:
        """Requests waiting or running (what a newcomer would wait behind)."""
        return len(self._pending) + len(self._running)

    def _tail(self, text: str) -> str:
        """The end of `text` that fits the prompt limit, cut at a token boundary.

        Decoding the last tokens and encoding them again can give more tokens (a cut word or a
        byte fragment tokenizes differently on its own), so the cut moves on until it fits.
        """
        limit = self.max_prompt_tokens
        encode = self.loaded.tokenizer
        ids = encode(text[-limit * 16 :], split_special_tokens=True, verbose=False)["input_ids"]
        if len(text) <= limit * 16 and len(ids) <= limit:
            return text
        keep = limit
        while True:
            tail = self.loaded.tokenizer.decode(ids[-keep:])
            count = len(encode(tail, split_special_tokens=True, verbose=False)["input_ids"])
            if count <= limit or keep <= 1:
                return tail
            keep -= count - limit

    # Admission --------------------------------------------------------------------------------
    async def _checked_prompt(self, prompt: str, kind: PromptKind, *, keep_tail: bool = False) -> str:
        """The cleaned prompt (its tail, for a continuation) once it passes every check of `core.prompts`."""
        try:
            prompt = check_text(prompt, kind)
            if keep_tail:
                prompt = self._tail(prompt)
            check_text(prompt, kind, self.max_prompt_tokens)  # refuses a huge prompt before tokenising it
            check_token_count(await self.count_tokens(prompt), self.max_prompt_tokens, kind)
        except PromptError:
            REJECTIONS.labels(reason="prompt").inc()
            raise
        return prompt

    def _admit(self, user_id: int) -> None:
        service = self.config.service
        if self._in_flight[user_id] >= service.per_user_in_flight:
            REJECTIONS.labels(reason="user_busy").inc()
            raise UserBusyError("You already have a request running; wait for it to finish (or press Stop).")
        now = time.monotonic()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= service.per_user_per_minute:
            wait = recent[0] + RATE_WINDOW_S - now
            REJECTIONS.labels(reason="rate_limited").inc()
            raise UserBusyError(
                f"You've started {len(recent)} requests in the last minute, the most allowed. "
                f"Please try again in {math.ceil(wait)} s.",
                retry_after=wait,
            )
        if len(self._pending) >= service.queue_size:
            REJECTIONS.labels(reason="queue_full").inc()
            raise QueueFullError(
                f"I'm busy: {len(self._pending)} requests are waiting, the most I queue. Please try again in a minute.",
                retry_after=60.0,
            )
        recent.append(now)
        if len(self._recent) > RATE_TABLE_MAX:
            self._forget_idle_users(now)

    def _forget_idle_users(self, now: float) -> None:
        """Drop users with no request in the last minute, so the table stays small."""
        for user_id in [u for u, times in self._recent.items() if not times or times[-1] <= now - RATE_WINDOW_S]:
            del self._recent[user_id]

    def _enqueue(self, job: Job) -> None:
        self._in_flight[job.user_id] += 1
        self._pending.append(job)
        self._wakeup.set()

    def _release(self, job: Job) -> None:
        if job.released:
            return
        job.released = True
        self._in_flight[job.user_id] -= 1
        if self._in_flight[job.user_id] <= 0:
            del self._in_flight[job.user_id]

    # Scheduling -------------------------------------------------------------------------------
    async def _schedule(self) -> None:
        while not self._closing:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            window = self.config.service.batch_window_ms / 1000
            if window and len(self._pending) < self.config.service.max_batch_size:
                await asyncio.sleep(window)
            batch = self._take_batch()
            self._running = batch
            self.batches_run.append(len(batch))
            BATCH_SIZE.observe(len(batch))
            try:
                if isinstance(batch[0], WhyJob):
                    await self._run_why(batch[0])
                else:
                    await self._run_stories(batch)
            except Exception:  # never let one batch kill the scheduler
                log.exception("batch failed outside the worker")
                for job in batch:
                    job.fail(GenerationFailedError("Something went wrong on my side; please try again."))
            finally:
                self._running = []
                for job in batch:
                    self._release(job)

    def _take_batch(self) -> list[Job]:
        """The oldest job, plus the next stories that can share its forward pass (FIFO among them)."""
        head = self._pending.popleft()
        if not isinstance(head, StoryJob):
            return [head]
        batch: list[Job] = [head]
        for job in list(self._pending):
            if len(batch) >= self.config.service.max_batch_size:
                break
            if isinstance(job, StoryJob) and job.key == head.key:
                self._pending.remove(job)
                batch.append(job)
        return batch

    async def _execute(self, batch: list[Job], work: Callable[[], T]) -> T | None:
        """Run `work` on the worker thread; on a failure or a hang, fail the batch and return None."""
        timeout = self.config.service.request_timeout_s
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=timeout + HANG_GRACE_S)
        except TimeoutError:
            log.error("worker hung past its deadline on a batch of %d; starting a new worker", len(batch))
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            for job in batch:
                job.fail(RequestTimeoutError(f"That took longer than {timeout:.0f} s and was cut off."))
        except Exception as exc:
            log.error("model failed on a batch of %d", len(batch), exc_info=exc)
            for job in batch:
                job.fail(_user_error(exc))
        return None

    async def _run_stories(self, batch: list[StoryJob]) -> None:
        loop = asyncio.get_running_loop()
        relay = TextRelay(loop)
        started = time.monotonic()
        deadline = started + self.config.service.request_timeout_s

        def finish_early(job: StoryJob, output: RowOutput) -> None:
            """On the loop: a row has ended inside a running batch; its text first, then its result."""
            relay.flush()
            self._finish_story(job, output, time.monotonic() - started)
            self._release(job)

        rows = [
            RowJob(
                prompt=job.request.prompt,
                settings=job.request.settings,
                seed=job.request.seed,
                on_text=lambda delta, s=job.stream: relay.add(s, delta),
                # A short story batched with a long one is answered when it ends, not with the batch.
                on_done=lambda output, j=job: loop.call_soon_threadsafe(finish_early, j, output),
                stop_event=job.stream.stop_event,
                deadline=deadline,
            )
            for job in batch
        ]
        outputs = await self._execute(batch, lambda: generate_batch(self.loaded, rows))
        if outputs is None:
            return
        relay.flush()
        for job, output in zip(batch, outputs, strict=True):
            self._finish_story(job, output, time.monotonic() - started)

    async def _run_why(self, job: WhyJob) -> None:
        from model.explain.importance import explain  # heavy module, loaded on first use

        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.service.request_timeout_s

        def work() -> WhyResult:
            budget = min(self.config.why.time_budget_s, max(0.0, deadline - time.monotonic()))
            return explain(
                self.loaded,
                job.request.prompt,
                config=self.config.why.model_copy(update={"time_budget_s": budget}),
                max_prompt_tokens=self.max_prompt_tokens,
                seed=job.request.seed,
                progress=lambda fraction, status: loop.call_soon_threadsafe(
                    job.stream.push, WhyProgress(fraction, status)
                ),
                cancel=job.stream.stop_event,
                view=job.request.view,
            )

        result = await self._execute([job], work)
        if result is not None:
            WHY_DURATION.observe(time.monotonic() - job.enqueued_at)
            job.stream.finish(result)

    def _finish_story(self, job: StoryJob, output: RowOutput, elapsed: float) -> None:
        if job.stream.done:
            return
        if output.stop_reason == StopReason.TIMEOUT:
            timeout = self.config.service.request_timeout_s
            job.fail(RequestTimeoutError(f"The story was cut off after {timeout:.0f} s."))
            return
        request = job.request
        TOKENS_WRITTEN.inc(output.new_tokens)
        STORY_DURATION.observe(time.monotonic() - job.enqueued_at)
        if job.stream.first_event_at is not None:
            TIME_TO_FIRST_TEXT.observe(job.stream.first_event_at - job.enqueued_at)
        job.stream.finish(
            StoryResult(
                prompt=request.prompt,
                continuation=output.continuation,
                seed=request.seed,
                settings=request.settings,
                new_tokens=output.new_tokens,
                elapsed_s=elapsed,
                stop_reason=output.stop_reason,
            )
        )


def _user_error(exc: BaseException) -> TaleweaverError:
    """Turn a failure in the worker into a message for the user; the traceback goes to the log."""
    if isinstance(exc, TaleweaverError):
        return exc
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return GenerationFailedError("The model ran out of memory on that request. Try fewer tokens or beams.")
    return GenerationFailedError("Something went wrong while writing; please try again.")
