"""The model service: the async facade the cogs call, with the model running off the event loop.

Requests wait in one bounded FIFO queue. A scheduler task takes the oldest request, waits a
few milliseconds for others that can share its forward pass (same `batch_key`), and hands the
batch to the device's single worker thread. The oldest request always goes first, so nobody
starves; requests that cannot join it wait their turn. Text comes back through per-request
streams fed from the worker thread with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch

from appconfig import Config
from model.api import ProgressCallback, StoryRequest, StoryResult, WhyRequest, WhyResult
from model.decoding import batch_key
from model.errors import (
    GenerationFailedError,
    PromptError,
    QueueFullError,
    RequestTimeoutError,
    TaleweaverError,
    UserBusyError,
)
from model.generation import RowJob, generate_batch
from model.loading import LoadedModel
from model.text import clean_prompt

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0
RATE_TABLE_MAX = 10_000
HANG_GRACE_S = 5.0
"""How long past its deadline a batch may run before its worker is given up as hung."""
RELAY_INTERVAL_S = 0.05
"""Least time between two hand-overs of streamed text from the worker to the event loop."""


class StoryStream:
    """One running story, as the cog sees it (implements `model.api.StoryStream`)."""

    def __init__(self, request: StoryRequest, queue_position: int) -> None:
        self.request = request
        self.queue_position = queue_position
        self.stop_event = threading.Event()
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self._result: asyncio.Future[StoryResult] = asyncio.get_running_loop().create_future()

    async def __aiter__(self) -> AsyncIterator[str]:
        while (delta := await self._deltas.get()) is not None:
            yield delta

    async def result(self) -> StoryResult:
        return await asyncio.shield(self._result)

    def stop(self) -> None:
        self.stop_event.set()

    # Called on the event loop by the service.
    def _push(self, delta: str) -> None:
        self._deltas.put_nowait(delta)

    def _finish(self, result: StoryResult | None, error: BaseException | None = None) -> None:
        if self._result.done():
            return
        if error is not None:
            self._result.set_exception(error)
        else:
            self._result.set_result(result)
        self._deltas.put_nowait(None)


class _TextRelay:
    """Carries streamed text from the worker thread to the streams, a few times a second.

    Handing every token of every row to the event loop on its own (`call_soon_threadsafe` per
    token) wakes the loop over a thousand times a second with the shipped model at batch 8 and
    makes the two threads take turns with the GIL. Here the worker collects text and hands it
    over at most every RELAY_INTERVAL_S, except a stream's first text, which goes at once (time to
    first text is what users see); the cogs edit their message at most once a second, so nobody
    sees the difference.
    `flush` on the loop delivers whatever is left, in order, before a stream is finished.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: dict[StoryStream, list[str]] = {}
        self._started: set[StoryStream] = set()
        self._last_handover = -math.inf
        self._scheduled = False

    def add(self, stream: StoryStream, delta: str) -> None:
        """From the worker thread: queue `delta` for `stream`, handing over when it is time."""
        with self._lock:
            self._pending.setdefault(stream, []).append(delta)
            first = stream not in self._started
            self._started.add(stream)
            now = time.monotonic()
            if self._scheduled or not (first or now - self._last_handover >= RELAY_INTERVAL_S):
                return
            self._scheduled, self._last_handover = True, now
        self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """On the event loop: push every queued piece of text to its stream."""
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, {}, False
        for stream, deltas in pending.items():
            stream._push("".join(deltas))


@dataclass
class _Job:
    user_id: int
    key: object
    story: StoryStream | None = None
    why: tuple[WhyRequest, ProgressCallback | None, asyncio.Future[WhyResult]] | None = None
    enqueued_at: float = field(default_factory=time.monotonic)
    released: bool = False
    """Whether the user's in-flight slot was given back (once: when the row ends, or with its batch)."""


class ModelService:
    """Queue, per-user limits, batching, timeouts and the worker thread for one model."""

    def __init__(self, loaded: LoadedModel, config: Config) -> None:
        self.loaded = loaded
        self.config = config
        self._pending: deque[_Job] = deque()
        self._in_flight: Counter[int] = Counter()
        self._recent: dict[int, deque[float]] = {}
        """Start times of each user's requests in the last minute (the per-user rate limit)."""
        self._wakeup = asyncio.Event()
        self._closing = False
        self._executor = self._new_executor()
        self._scheduler: asyncio.Task[None] | None = None
        self._running: list[_Job] = []
        self.batches_run: list[int] = []
        """Sizes of the batches started so far (for tests and the benchmark)."""

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-worker")

    @property
    def max_prompt_tokens(self) -> int:
        return self.config.limits.max_prompt_tokens

    @property
    def max_new_tokens(self) -> int:
        return self.config.limits.max_new_tokens

    async def start(self) -> None:
        if self.loaded.device.type == "cpu":
            torch.set_num_threads(self.config.model.cpu_threads)
        self._scheduler = asyncio.create_task(self._schedule(), name="model-scheduler")

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
            self._fail(job, GenerationFailedError("The bot is shutting down; please try again in a minute."))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # Public API -------------------------------------------------------------------------------
    async def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer(text, split_special_tokens=True)["input_ids"])

    async def story(self, request: StoryRequest) -> StoryStream:
        request = dataclasses.replace(request, prompt=clean_prompt(request.prompt))
        if not request.prompt.strip():
            raise PromptError("Please give the story an opening line.")
        if request.keep_tail:
            request = dataclasses.replace(request, prompt=self._tail(request.prompt))
        await self._check_prompt(request.prompt)
        self._admit(request.user_id)
        stream = StoryStream(request, queue_position=self.queue_length)
        self._enqueue(_Job(request.user_id, batch_key(request.settings), story=stream))
        return stream

    async def why(self, request: WhyRequest, progress: ProgressCallback | None = None) -> WhyResult:
        request = dataclasses.replace(request, prompt=clean_prompt(request.prompt))
        if not request.prompt.strip():
            raise PromptError("Please give a prompt to explain.")
        await self._check_prompt(request.prompt)
        self._admit(request.user_id)
        future: asyncio.Future[WhyResult] = asyncio.get_running_loop().create_future()
        self._enqueue(_Job(request.user_id, ("why", id(future)), why=(request, progress, future)))
        return await future

    @property
    def queue_length(self) -> int:
        """Requests waiting or running (what a newcomer would wait behind)."""
        return len(self._pending) + len(self._running)

    def _tail(self, text: str) -> str:
        """The end of `text` that fits the prompt limit, cut at a token boundary."""
        ids = self.loaded.tokenizer(text[-self.max_prompt_tokens * 16 :], split_special_tokens=True)["input_ids"]
        return (
            text
            if len(text) <= self.max_prompt_tokens * 16 and len(ids) <= self.max_prompt_tokens
            else self.loaded.tokenizer.decode(ids[-self.max_prompt_tokens :])
        )

    # Admission --------------------------------------------------------------------------------
    async def _check_prompt(self, prompt: str) -> None:
        limit = self.max_prompt_tokens
        # Any token is at least one character, so a prompt this long cannot fit: refuse it
        # before spending time tokenising 100 000 characters.
        if len(prompt) > limit * 16:
            raise PromptError(f"That prompt is too long: at most {limit} tokens (about {limit * 4} characters).")
        count = await self.count_tokens(prompt)
        if count > limit:
            raise PromptError(f"That prompt is {count} tokens long; the limit is {limit} tokens.")

    def _admit(self, user_id: int) -> None:
        service = self.config.service
        if self._in_flight[user_id] >= service.per_user_in_flight:
            raise UserBusyError("You already have a request running; wait for it to finish (or press Stop).")
        now = time.monotonic()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= service.per_user_per_minute:
            wait = recent[0] + RATE_WINDOW_S - now
            raise UserBusyError(
                f"You've started {len(recent)} requests in the last minute, the most allowed. "
                f"Please try again in {math.ceil(wait)} s.",
                retry_after=wait,
            )
        if len(self._pending) >= service.queue_size:
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

    def _enqueue(self, job: _Job) -> None:
        self._in_flight[job.user_id] += 1
        self._pending.append(job)
        self._wakeup.set()

    def _release(self, job: _Job) -> None:
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
            try:
                await self._run(batch)
            except Exception:  # never let one batch kill the scheduler
                log.exception("batch failed outside the worker")
                for job in batch:
                    self._fail(job, GenerationFailedError("Something went wrong on my side; please try again."))
            finally:
                self._running = []
                for job in batch:
                    self._release(job)

    def _take_batch(self) -> list[_Job]:
        """The oldest job, plus the next jobs that can share its forward pass (FIFO among them)."""
        head = self._pending.popleft()
        batch = [head]
        if head.story is None:
            return batch
        limit = self.config.service.max_batch_size
        for job in list(self._pending):
            if len(batch) >= limit:
                break
            if job.story is not None and job.key == head.key:
                self._pending.remove(job)
                batch.append(job)
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.service.request_timeout_s
        if batch[0].why is not None:
            work: Callable[[], object] = self._why_work(batch[0], loop, deadline)
        else:
            relay = _TextRelay(loop)
            work = self._story_work(batch, loop, relay, deadline)
        self.batches_run.append(len(batch))
        future = loop.run_in_executor(self._executor, work)
        budget = self.config.service.request_timeout_s + HANG_GRACE_S
        try:
            outcome = await asyncio.wait_for(asyncio.shield(future), timeout=budget)
        except TimeoutError:
            log.error("worker hung past its deadline on a batch of %d; starting a new worker", len(batch))
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            for job in batch:
                self._fail(
                    job,
                    RequestTimeoutError(
                        f"That took longer than {self.config.service.request_timeout_s:.0f} s and was cut off."
                    ),
                )
            return
        except Exception as exc:
            log.error("model failed on a batch of %d", len(batch), exc_info=exc)
            for job in batch:
                self._fail(job, _user_error(exc))
            return
        if batch[0].why is not None:
            _, _, result_future = batch[0].why
            if not result_future.done():
                result_future.set_result(outcome)
            return
        relay.flush()
        for job, output in zip(batch, outcome):
            self._finish_story(job, output)

    def _story_work(self, batch: list[_Job], loop: asyncio.AbstractEventLoop, relay: _TextRelay, deadline: float):
        started = time.monotonic()
        rows = []
        for job in batch:
            stream = job.story
            rows.append(
                RowJob(
                    prompt=stream.request.prompt,
                    settings=stream.request.settings,
                    seed=stream.request.seed,
                    on_text=lambda delta, s=stream: relay.add(s, delta),
                    # A short story batched with a long one is answered when it ends, not with the batch.
                    on_done=lambda output, j=job: loop.call_soon_threadsafe(
                        self._finish_early, j, relay, (output, time.monotonic() - started)
                    ),
                    stop_event=stream.stop_event,
                    deadline=deadline,
                )
            )

        def work():
            outputs = generate_batch(self.loaded, rows)
            return [(output, time.monotonic() - started) for output in outputs]

        return work

    def _finish_early(self, job: _Job, relay: _TextRelay, outcome: tuple) -> None:
        """On the loop: a row has ended inside a running batch; its text first, then its result."""
        relay.flush()
        self._finish_story(job, outcome)
        self._release(job)

    def _why_work(self, job: _Job, loop: asyncio.AbstractEventLoop, deadline: float):
        request, progress, _ = job.why
        cancel = threading.Event()

        def work():
            from model.importance import explain  # heavy module, loaded on first use

            budget = min(self.config.why.time_budget_s, max(0.0, deadline - time.monotonic()))
            why_config = self.config.why.__class__(**{**self.config.why.__dict__, "time_budget_s": budget})
            return explain(
                self.loaded,
                request.prompt,
                config=why_config,
                max_prompt_tokens=self.max_prompt_tokens,
                seed=request.seed,
                progress=progress,
                cancel=cancel,
                view=request.view,
            )

        return work

    def _finish_story(self, job: _Job, outcome: tuple) -> None:
        output, elapsed = outcome
        request = job.story.request
        if output.stop_reason == "timeout":
            self._fail(
                job, RequestTimeoutError(f"The story was cut off after {self.config.service.request_timeout_s:.0f} s.")
            )
            return
        job.story._finish(
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

    def _fail(self, job: _Job, error: TaleweaverError) -> None:
        if job.story is not None:
            job.story._finish(None, error)
        elif job.why is not None and not job.why[2].done():
            job.why[2].set_exception(error)


def _user_error(exc: BaseException) -> TaleweaverError:
    """Turn a failure in the worker into a message for the user; the traceback goes to the log."""
    if isinstance(exc, TaleweaverError):
        return exc
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return GenerationFailedError("The model ran out of memory on that request. Try fewer tokens or beams.")
    return GenerationFailedError("Something went wrong while writing; please try again.")
