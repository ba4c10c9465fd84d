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
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
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
from core.limits import ALREADY_RUNNING, RATE_TABLE_MAX, RATE_WINDOW_S, rate_limited
from core.metrics import (
    BATCH_SIZE,
    MODEL_PRECISION,
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
from model.endings import EndingRules, margin
from model.engine import ContinuousBatch
from model.generation import RowJob, RowOutput, generate_batch
from model.jobs import JobStream, StoryJob, StoryStream, WhyJob, WhyStream
from model.loading import LoadedModel
from model.relay import TextRelay

log = logging.getLogger(__name__)

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
        """Sizes of the static batches (beam search, /why) started so far (for tests and the benchmark)."""
        self.engine = ContinuousBatch(
            loaded, on_error=self._row_failed_in_worker, max_rows=config.service.max_batch_size
        )
        """Greedy and sampling stories: written together, joining and leaving at every step."""
        self._writing: dict[int, StoryJob] = {}
        """Stories in the continuous batch, by the id of their `RowJob`."""
        self._engine_run: asyncio.Future[None] | None = None
        self._relay: TextRelay | None = None
        self._tokens_in_flight = 0

    @staticmethod
    def _new_executor() -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-worker")

    @property
    def _endings(self) -> EndingRules:
        service = self.config.service
        return EndingRules(whole_words=service.whole_words, finish_sentences=service.finish_sentences)

    @property
    def max_prompt_tokens(self) -> int:
        return self.config.limits.max_prompt_tokens

    async def start(self) -> None:
        if self.loaded.device.type == "cpu":
            torch.set_num_threads(self.config.model.cpu_threads)
        precision = self.loaded.precision
        MODEL_PRECISION.clear()
        MODEL_PRECISION.labels(precision=precision.mode).set(1)
        log.info("writing stories in %s (%s)", precision.mode, precision.reason)
        if self.config.why.prepare_at_start:
            await self._prepare_why()
        self._scheduler = asyncio.create_task(self._schedule(), name="model-scheduler")
        QUEUE_LENGTH.set_function(lambda: self.queue_length)

    async def _prepare_why(self) -> None:
        """/why's one-off work (r, the bf16 copy of the weights) in the worker, before any request.

        A failure is logged, not raised: stories do not need it, and the first /why meets the same
        problem again and answers it with a clear error.
        """
        from model.explain.importance import prepare  # heavy module, loaded once here

        started = time.monotonic()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, prepare, self.loaded, self.config.why, self.config.cache_dir
            )
        except Exception:
            log.warning("Could not prepare /why at start; the first /why will try again", exc_info=True)
            return
        log.info("/why prepared in %.1f s", time.monotonic() - started)

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
        for job in self._writing.values():  # they end at the next step, answered "stopped"
            job.stream.stop()
        if self._engine_run is not None and not self._engine_run.done():
            await asyncio.wait([self._engine_run], timeout=HANG_GRACE_S)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # Public API -------------------------------------------------------------------------------
    async def count_tokens(self, text: str) -> int:
        # verbose=False: counting a text longer than the model's context is the point, not a mistake.
        return len(self.loaded.tokenizer(text, split_special_tokens=True, verbose=False)["input_ids"])

    async def story(self, request: StoryRequest) -> StoryStream:
        prompt = await self._checked_prompt(request.prompt, PromptKind.STORY, keep_tail=request.keep_tail)
        tokens = await self.count_tokens(prompt) + request.settings.max_new_tokens
        if self.config.service.finish_sentences:
            tokens += 2 * margin(request.settings.max_new_tokens)  # the most a sentence's end may take
        self._admit(request.user_id, tokens)
        request = StoryRequest(request.user_id, prompt, request.settings, request.seed, request.keep_tail)
        stream: StoryStream = JobStream(queue_position=self.queue_length)
        job = StoryJob(request.user_id, request=request, key=batch_key(request.settings), stream=stream)
        job.tokens = tokens
        self._tokens_in_flight += tokens
        self._enqueue(job)
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
        return len(self._pending) + len(self._running) + len(self._writing)

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

    def _admit(self, user_id: int, tokens: int = 0) -> None:
        service = self.config.service
        if self._in_flight[user_id] >= service.per_user_in_flight:
            REJECTIONS.labels(reason="user_busy").inc()
            raise UserBusyError(ALREADY_RUNNING)
        now = time.monotonic()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= service.per_user_per_minute:
            wait = recent[0] + RATE_WINDOW_S - now
            REJECTIONS.labels(reason="rate_limited").inc()
            raise rate_limited(len(recent), wait)
        if len(self._pending) >= service.queue_size:
            REJECTIONS.labels(reason="queue_full").inc()
            raise QueueFullError(
                f"I'm busy: {len(self._pending)} requests are waiting, the most I queue. Please try again in a minute.",
                retry_after=60.0,
            )
        if self._tokens_in_flight + tokens > service.max_tokens_in_flight:
            REJECTIONS.labels(reason="token_budget").inc()
            raise QueueFullError(
                "I'm busy: the stories being written or waiting already hold as many tokens as I keep in "
                "memory at once. Please try again in a minute.",
                retry_after=30.0,
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
        self._tokens_in_flight -= job.tokens
        self._in_flight[job.user_id] -= 1
        if self._in_flight[job.user_id] <= 0:
            del self._in_flight[job.user_id]

    # Scheduling -------------------------------------------------------------------------------
    async def _schedule(self) -> None:
        """Oldest first. A greedy or sampling story joins the continuous batch while it has room; a
        beam search or an explanation at the head runs alone once the rows being written have ended
        (rows that arrive after it wait behind it, so it is not starved)."""
        while not self._closing:
            self._wakeup.clear()
            if not self._pending:
                await self._wakeup.wait()
                continue
            head = self._pending[0]
            if _continuous(head) and self.config.service.continuous_batching:
                if len(self._writing) >= self.config.service.max_batch_size:
                    await self._wakeup.wait()
                    continue
                self._pending.popleft()
                try:
                    self._join(head)
                except Exception:  # never let one story kill the scheduler
                    log.exception("a story could not join the batch")
                    head.fail(GenerationFailedError("Something went wrong on my side; please try again."))
                    self._writing.pop(head.row_id, None)
                    self._release(head)
                continue
            if self._writing:
                await self._wakeup.wait()
                continue
            await self._run_alone()

    async def _run_alone(self) -> None:
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

    # The continuous batch ---------------------------------------------------------------------
    def _join(self, job: StoryJob) -> None:
        """Hand a story to the continuous batch: it is prefilled and joins at the next step."""
        loop = asyncio.get_running_loop()
        if self._relay is None:
            self._relay = TextRelay(loop, self.config.service.stream_interval_s)
        relay, request = self._relay, job.request
        job.started_at = time.monotonic()
        row = RowJob(
            prompt=request.prompt,
            settings=request.settings,
            seed=request.seed,
            on_text=lambda delta: relay.add(job.stream, delta),
            on_done=lambda output: loop.call_soon_threadsafe(self._row_done, job, output),
            stop_event=job.stream.stop_event,
            deadline=job.started_at + self.config.service.request_timeout_s,
            endings=self._endings,
        )
        self._writing[id(row)] = job
        job.row_id = id(row)
        if not self.engine.submit(row):
            self.engine.start([row])
            self._engine_run = loop.run_in_executor(self._executor, self.engine.run)
            self._engine_run.add_done_callback(self._engine_stopped)

    def _row_done(self, job: StoryJob, output: RowOutput) -> None:
        """On the loop: a row has its last token; its text first, then its result."""
        self._relay.flush()
        self._finish_story(job, output, time.monotonic() - job.started_at)
        self._leave(job)

    def _row_failed_in_worker(self, row: RowJob, exc: BaseException) -> None:
        job = self._writing.get(id(row))
        if job is not None:
            log.error("a story failed in the continuous batch", exc_info=exc)
            self._loop_call(self._row_failed, job, _user_error(exc))

    def _row_failed(self, job: StoryJob, error: TaleweaverError) -> None:
        self._relay.flush()
        job.fail(error)
        self._leave(job)

    def _leave(self, job: StoryJob) -> None:
        self._writing.pop(job.row_id, None)
        self._release(job)
        self._wakeup.set()

    def _engine_stopped(self, run: asyncio.Future[None]) -> None:
        """The worker's loop returned: normally with no row left; after a crash, fail what is left."""
        if run.cancelled() or run.exception() is not None:
            if not run.cancelled():
                log.error("the continuous batch stopped", exc_info=run.exception())
            for job in list(self._writing.values()):
                self._row_failed(job, GenerationFailedError("Something went wrong on my side; please try again."))
        self._wakeup.set()

    def _loop_call(self, callback: Callable[..., object], *args: object) -> None:
        try:
            self._scheduler.get_loop().call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the bot is gone, nobody to tell
            pass

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

    async def _execute(self, batch: list[Job], work: Callable[[], T], *, fail_batch: bool = True) -> T | None:
        """Run `work` on the worker thread; on a failure or a hang, fail the batch and return None.

        With `fail_batch=False` a failure (not a hang) is raised instead, for the caller to retry.
        """
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
            if not fail_batch:
                raise
            log.error("model failed on a batch of %d", len(batch), exc_info=exc)
            for job in batch:
                job.fail(_user_error(exc))
        return None

    async def _run_stories(self, batch: list[StoryJob]) -> None:
        """Run a batch; if the batch itself fails, run each unfinished row again alone.

        One row can break a whole `generate` call (a fault in its prompt, out of memory on its
        length), and the exception does not say which row it was. Rather than fail every story that
        shared the forward pass, each row still running is retried on its own, so only the row that
        fails alone ends with an error. A retried row goes on from the text it had already streamed
        (its prompt plus that text, with the tokens left), so its reader sees one story, not a
        second one pasted after the first.
        """
        loop = asyncio.get_running_loop()
        relay = TextRelay(loop, self.config.service.stream_interval_s)
        started = time.monotonic()
        deadline = started + self.config.service.request_timeout_s
        streamed: list[list[str]] = [[] for _ in batch]
        """Text each row has sent to its stream (appended to on the worker thread only)."""
        prefixes = [""] * len(batch)
        """Text a retried row had streamed before its batch failed, and its length in tokens."""
        prefix_tokens = [0] * len(batch)

        def output_of(index: int, output: RowOutput) -> RowOutput:
            if not prefixes[index]:
                return output
            return RowOutput(
                prefixes[index] + output.continuation, prefix_tokens[index] + output.new_tokens, output.stop_reason
            )

        def finish_early(index: int, output: RowOutput) -> None:
            """On the loop: a row has ended inside a running batch; its text first, then its result."""
            relay.flush()
            self._finish_story(batch[index], output_of(index, output), time.monotonic() - started)
            self._release(batch[index])

        def on_text(index: int, delta: str) -> None:
            streamed[index].append(delta)
            relay.add(batch[index].stream, delta)

        def row_for(index: int) -> RowJob:
            request = batch[index].request
            prompt, settings = request.prompt + prefixes[index], request.settings
            if prefix_tokens[index]:
                settings = settings.replace(max_new_tokens=max(1, settings.max_new_tokens - prefix_tokens[index]))
            return RowJob(
                prompt=prompt,
                settings=settings,
                seed=request.seed,
                on_text=lambda delta: on_text(index, delta),
                # A short story batched with a long one is answered when it ends, not with the batch.
                on_done=lambda output: loop.call_soon_threadsafe(finish_early, index, output),
                stop_event=batch[index].stream.stop_event,
                deadline=deadline,
                # A rerun from part of a story resumes mid-text: its "prompt" may end mid-word.
                endings=self._endings if not prefix_tokens[index] else replace(self._endings, whole_words=False),
            )

        rows = [row_for(index) for index in range(len(batch))]
        try:
            outputs = await self._execute(batch, lambda: generate_batch(self.loaded, rows), fail_batch=len(batch) == 1)
        except Exception as exc:
            relay.flush()
            left = [index for index, job in enumerate(batch) if not job.stream.done]
            log.warning(
                "a batch of %d failed (%s: %s); retrying its %d unfinished rows one by one",
                len(batch),
                type(exc).__name__,
                exc,
                len(left),
            )
            for index in left:
                prefixes[index] = "".join(streamed[index])
                if prefixes[index]:
                    prefix_tokens[index] = await self.count_tokens(prefixes[index])
                job, row = batch[index], row_for(index)
                output = await self._execute([job], lambda row=row: generate_batch(self.loaded, [row]))
                relay.flush()
                if output is not None:
                    self._finish_story(job, output_of(index, output[0]), time.monotonic() - started)
                self._release(job)
            return
        if outputs is None:
            return
        relay.flush()
        for index, output in enumerate(outputs):
            self._finish_story(batch[index], output_of(index, output), time.monotonic() - started)

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
                cache_dir=self.config.cache_dir,
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
                precision=self.loaded.precision.mode,
            )
        )


def _user_error(exc: BaseException) -> TaleweaverError:
    """Turn a failure in the worker into a message for the user; the traceback goes to the log."""
    if isinstance(exc, TaleweaverError):
        return exc
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return GenerationFailedError("The model ran out of memory on that request. Try fewer tokens or beams.")
    return GenerationFailedError("Something went wrong while writing; please try again.")


def _continuous(job: StoryJob | WhyJob) -> bool:
    """Greedy and sampling stories share the continuous batch; beam search and /why run alone."""
    return isinstance(job, StoryJob) and job.request.settings.strategy != "beam"
