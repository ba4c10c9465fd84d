"""Generating several stories as one left-padded batch, streaming each row's text as it grows.

Runs in the service's worker thread; everything here is blocking torch code. One call serves
one or many requests that share a `batch_key`; a single request is a batch of one, so there is
one code path and batching cannot change a request's result beyond floating-point order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from core.service import StopReason
from core.settings import DecodingSettings
from model.decoding import SeededSampling, batch_key, to_generation_config
from model.endings import WORD_GRACE, Boundaries, EndingRules, boundaries_for, closing_step, margin, prompt_ends_word
from model.loading import LoadedModel


@dataclass
class RowOutput:
    continuation: str
    new_tokens: int
    stop_reason: StopReason


@dataclass
class RowJob:
    """One request inside a batch, with the hooks the service listens on."""

    prompt: str
    settings: DecodingSettings
    seed: int
    on_text: Callable[[str], None] = lambda _delta: None
    """Called from the worker thread with each new piece of text."""
    on_done: Callable[[RowOutput], None] = lambda _output: None
    """Called from the worker thread once the row has its last token, before the rest of its batch
    ends (streamed rows only: a beam search's text is known only when the whole search ends)."""
    stop_event: threading.Event = field(default_factory=threading.Event)
    deadline: float = float("inf")
    """time.monotonic() after which the row is cut off (`StopReason.TIMEOUT`)."""
    endings: EndingRules = field(default_factory=EndingRules)
    """Word and sentence boundaries at the story's start and end (`model.endings`)."""


class _RowState:
    """Tokens and decoded text of one row.

    Text is decoded incrementally, the way text-generation servers do it: only the tokens from a
    `prefix` a few tokens back are decoded each step (so a step costs the same at token 10 and at
    token 300), and a trailing U+FFFD is held back, so a multi-byte character split across tokens
    comes out whole. Decoding from `prefix` rather than from the last token keeps byte-level
    merges and spaces right; the final text is decoded whole once.
    """

    def __init__(self, job: RowJob, tokenizer, streaming: bool = True) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.streaming = streaming
        self.completed = False
        self.tokens: list[int] = []
        self.emitted = ""
        self.finished_by: StopReason | None = None
        self.finishing: StopReason | None = None
        """Set by the stopping check: the token of this step is the row's last one."""
        self.max_new_tokens = job.settings.max_new_tokens
        self.room = 1 << 30
        self.drop_next = False
        """Set by the stopping check: the row ends before this step's token, which is not shown."""
        self._prefix = 0
        """Decoding starts at this token; the text of tokens[_prefix:_read] was emitted already."""
        self._read = 0

    def add(self, token: int) -> None:
        self.tokens.append(token)
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._emit(after[len(before) :])
            self._prefix, self._read = self._read, len(self.tokens)

    def flush(self) -> None:
        """Emit whatever the whole row decodes to beyond what was emitted (at the end of the row)."""
        text = self.text
        if text.startswith(self.emitted) and len(text) > len(self.emitted):
            self._emit(text[len(self.emitted) :])

    def complete(self) -> None:
        """The row has its last token: emit the rest of its text and report it done, once."""
        if self.completed or not self.streaming:
            return
        self.completed = True
        self.flush()
        self.job.on_done(self.output())

    def output(self) -> RowOutput:
        return RowOutput(self.text, len(self.tokens), self.finished_by or self.finishing or StopReason.LENGTH)

    def _emit(self, delta: str) -> None:
        self.emitted += delta
        self.job.on_text(delta)

    def _decode(self, tokens: list[int]) -> str:
        return _decode(self.tokenizer, tokens) if tokens else ""

    @property
    def text(self) -> str:
        return self._decode(self.tokens)


def _decode(tokenizer, tokens: list[int]) -> str:
    """`tokenizer.decode(tokens, skip_special_tokens=True)`, straight from the Rust tokenizer where
    that is all the Python wrapper would do (no clean-up of spaces): the wrapper's conversion of the
    ids, element by element, was a quarter of an eight-row step's sampling work on GPT-2 small."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return tokenizer.decode(tokens, skip_special_tokens=True)
    return backend.decode(tokens, skip_special_tokens=True)


class _BatchStreamer(BaseStreamer):
    """Routes each step's tokens (one per row) to the row they belong to."""

    def __init__(self, rows: list[_RowState], eos_token_id: int) -> None:
        self.rows = rows
        self.eos_token_id = eos_token_id
        self.saw_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.saw_prompt:
            self.saw_prompt = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist()):
            if row.finished_by is not None:
                continue  # a finished row's place in the batch is filled with padding
            if row.drop_next:
                row.finished_by = row.finishing
            elif token == self.eos_token_id:
                row.finished_by = StopReason.EOS
            else:
                row.add(token)
                # `generate` runs the stopping check before it hands over the step's tokens, so a
                # row marked `finishing` has just received its last token.
                row.finished_by = row.finishing
            if row.finished_by is not None:
                row.complete()

    def end(self) -> None:
        for row in self.rows:
            row.complete()


class _RowStopping(StoppingCriteria):
    """Per-row stop: the user pressed Stop, the deadline passed, or the row's own length is reached
    (and its sentence ended, `model.endings`)."""

    def __init__(self, rows: list[_RowState], prompt_length: int, bounds: Boundaries) -> None:
        self.rows = rows
        self.prompt_length = prompt_length
        self.bounds = bounds
        self._flags: torch.BoolTensor | None = None
        self._done: list[bool] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        beams_each = input_ids.shape[0] // len(self.rows)
        now = time.monotonic()
        done = []
        for index, row in enumerate(self.rows):
            if row.finished_by is None and row.finishing is None:
                if row.job.stop_event.is_set():
                    row.finishing = StopReason.STOPPED
                elif now >= row.job.deadline:
                    row.finishing = StopReason.TIMEOUT
                elif not row.job.endings.finish_sentences:
                    if generated >= row.max_new_tokens:
                        row.finishing = StopReason.LENGTH
                elif beams_each > 1:  # beam search: its cut comes at the end, after its closing token
                    if generated > closing_step(row.max_new_tokens, row.room) + WORD_GRACE or generated >= row.room:
                        row.finishing = StopReason.LENGTH
                elif generated > row.max_new_tokens and self.bounds.ends_before(
                    int(input_ids[index, -1]), row.text, generated - 1, row.max_new_tokens, row.room
                ):
                    row.finishing, row.drop_next = StopReason.LENGTH, True
                elif generated >= row.room:
                    row.finishing = StopReason.LENGTH
            done.append(row.finished_by is not None or row.finishing is not None)
        if done != self._done or self._flags is None or self._flags.shape[0] != input_ids.shape[0]:
            # Built only when a row's state changes: most steps reuse the last answer.
            flags = torch.tensor(done, dtype=torch.bool, device=input_ids.device)
            # Beam search asks about every candidate beam: rows are repeated beam by beam.
            self._flags = flags.repeat_interleave(input_ids.shape[0] // len(self.rows))
            self._done = done
        return self._flags.clone()


def generate_batch(loaded: LoadedModel, jobs: Sequence[RowJob]) -> list[RowOutput]:
    """Generate every job in one `generate` call; all jobs must share a `batch_key`."""
    keys = {batch_key(job.settings) for job in jobs}
    if len(keys) != 1:
        raise ValueError(f"jobs of different batch keys cannot share a batch: {keys}")
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "left"
    # User text is untrusted: "<|endoftext|>" typed in a prompt is text, not the end-of-text token.
    inputs = tokenizer([job.prompt for job in jobs], return_tensors="pt", padding=True, split_special_tokens=True).to(
        loaded.device
    )
    prompt_length = inputs["input_ids"].shape[1]
    beam = jobs[0].settings.strategy == "beam"
    rows = [_RowState(job, tokenizer, streaming=not beam) for job in jobs]
    room = context_room(model, prompt_length)
    if room < 1:
        raise ValueError(f"a prompt of {prompt_length} tokens leaves no room in the model's context")
    for row in rows:
        row.max_new_tokens = min(row.job.settings.max_new_tokens, room)
        row.room = room
    longest = max(row.max_new_tokens for row in rows)
    bounds = boundaries_for(tokenizer)
    if any(job.endings.finish_sentences for job in jobs):
        longest = min(longest + 2 * margin(longest), room)  # room to end the sentence
    config = to_generation_config(
        jobs[0].settings.replace(max_new_tokens=longest),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    sampler = SeededSampling([(job.settings, job.seed) for job in jobs], loaded.device)
    whole_words = [job.endings.whole_words and prompt_ends_word(job.prompt) for job in jobs]
    processors = LogitsProcessorList([_WholeWords(bounds, whole_words, prompt_length)] if any(whole_words) else [])
    if any(job.endings.finish_sentences for job in jobs):
        processors.append(_CloseSentences(bounds, rows, prompt_length))
    if sampler.active:
        processors.append(sampler)
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([_RowStopping(rows, prompt_length, bounds)]),
            streamer=None if beam else _BatchStreamer(rows, tokenizer.eos_token_id),
        )
    if beam:
        return [
            _beam_output(row, output[index, prompt_length:].tolist(), tokenizer.eos_token_id, bounds)
            for index, row in enumerate(rows)
        ]
    return [row.output() for row in rows]


def context_room(model, prompt_length: int) -> int:
    """New tokens that fit after the prompt in the model's context window (1024 for GPT-2)."""
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    return (limit - prompt_length) if limit else 1 << 30


class _WholeWords(LogitsProcessor):
    """At the first step, rows whose prompt ends in a word may not glue a token onto it."""

    def __init__(self, bounds: Boundaries, rows: list[bool], prompt_length: int) -> None:
        self.bounds = bounds
        self.rows = torch.tensor(rows, dtype=torch.bool)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.prompt_length:
            return scores
        flagged = self.rows.repeat_interleave(input_ids.shape[0] // len(self.rows)).to(scores.device)
        scores[flagged] = self.bounds.ban_glue(scores[flagged])
        return scores


class _CloseSentences(LogitsProcessor):
    """Rows (every beam of a beam search) out of margin whose text has not ended a sentence may only
    take a token that ends one (`model.endings`); the other rows' scores are untouched."""

    def __init__(self, bounds: Boundaries, rows: list[_RowState], prompt_length: int) -> None:
        self.bounds = bounds
        self.rows = rows
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids.shape[1] - self.prompt_length
        beams_each = input_ids.shape[0] // len(self.rows)
        for index, row in enumerate(self.rows):
            if not row.job.endings.finish_sentences or row.finished_by is not None or row.finishing is not None:
                continue
            if generated < closing_step(row.max_new_tokens, row.room):
                continue
            for beam in range(index * beams_each, (index + 1) * beams_each):
                text = row._decode(input_ids[beam, self.prompt_length :].tolist())
                if self.bounds.must_close(text, generated, row.max_new_tokens, row.room):
                    finish_word = self.bounds.may_finish_word(text, generated, row.max_new_tokens, row.room)
                    self.bounds.close(scores[beam : beam + 1], finish_word)
        return scores


def _beam_output(row: _RowState, tokens: list[int], eos_token_id: int, bounds: Boundaries) -> RowOutput:
    """Beam search cannot stream (its best beam is known only at the end): emit the text once."""
    ended = eos_token_id in tokens
    tokens = tokens[: tokens.index(eos_token_id)] if ended else tokens
    if not ended and row.job.endings.finish_sentences:
        tokens = bounds.cut(tokens, row._decode, row.max_new_tokens, row.room)
    tokens = tokens if row.job.endings.finish_sentences else tokens[: row.max_new_tokens]
    row.tokens = tokens
    row.flush()
    reason = (
        row.finishing
        if row.finishing in (StopReason.STOPPED, StopReason.TIMEOUT)
        else (StopReason.EOS if ended else StopReason.LENGTH)
    )
    return RowOutput(row.text, len(row.tokens), reason)
