"""Continuous batching: stories join and leave one shared batch at every decoding step.

Text-generation servers (Orca, vLLM, TGI) schedule per iteration rather than per request: a
request that arrives while others are being written is prefilled on its own and joins the
running batch at the next step, and a row that ends leaves at once, so nobody waits for the
longest story of a batch they were not even in. This is that loop, over Hugging Face's
`DynamicCache`, for the greedy and sampling rows of the model service (beam search keeps the
static path in `model.generation`: its beams are a batch of their own).

How rows share a step. The batch's key/value cache is left-padded: each row's past sits at the
right end, and an attention mask hides the padding. A new row's cache (from its own prefill) is
written into a spare row of the batch's buffers, padded to the batch's length (or the batch's
padding extended to the row's); a finished row is closed up in place; padding columns that no row
needs any more are cut from the left (`model.kv_cache`: none of this copies the whole cache). Positions are
per row (GPT-2's position embeddings are absolute), so a row's numbers are the ones it would
get alone: the same prefill, the same steps, its own seed and its own settings (temperature,
top-k, top-p, repetition penalty, n-gram ban), whoever shares the step.

Bit for bit. Every story is prefilled alone, even when several arrive at once (a left-padded
prefill shifts the attention's sums into other vector lanes), and a GPT-2 model's steps go through
`model.step`, which attends each run of equally padded rows over its own positions. With layers
whose rows do not depend on each other (int8, `model.int8`; oneDNN's fp32 kernels) a row's logits
are then exactly those it gets alone; MKL's fp32 product for one or two rows differs from the
packed one in the last bits, which in fp32 has not changed a story in `bench/exactness.py`.

Hugging Face's own continuous batching (`generate_batch`, `ContinuousBatchingManager` in
transformers 5.x) was evaluated first and is not used: it samples with `torch.multinomial` on
the global generator (no per-request seed, so a story could not be reproduced), takes one
generation config per manager, and switches the model to paged attention, which `/why`'s
gradients through the same model do not go through.

Everything here is blocking torch code for the service's single worker thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

from core.metrics import BATCH_SIZE
from core.service import StopReason
from core.settings import DecodingSettings
from model.decoding import _SamplingGroup
from model.endings import boundaries_for, closing_step, prompt_ends_word
from model.generation import RowJob, _RowState, context_room
from model.kv_cache import growing
from model.loading import LoadedModel
from model.step import DecodeStep

ENDING_SLACK = 32
"""Positions reserved past a story's length for ending its sentence (more are made if it needs them)."""


@dataclass(eq=False)
class _Row:
    """One story in the running batch: its tokens so far (prompt included) and its own state."""

    job: RowJob
    state: _RowState
    ids: list[int]
    """Prompt and generated tokens: what the repetition controls look at."""
    id_buffer: torch.Tensor
    """`ids` as a tensor with room for the whole context, filled as tokens come (no list → tensor
    copy of the whole story at every step)."""
    generator: torch.Generator
    max_new_tokens: int
    """The row's length; it may run a little past it to end its sentence (`model.endings`)."""
    room: int
    """Tokens left in the model's context after the prompt: a hard end."""
    whole_words: bool = False
    """The prompt ends in a word: the first token must not glue onto it."""
    next_token: int = -1
    """The token to feed at the next step (sampled at the end of the previous one)."""
    generated: int = 0

    @property
    def settings(self) -> DecodingSettings:
        return self.job.settings


@dataclass
class EngineStats:
    steps: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=100_000))
    """Rows in each recent decoding step (for tests and the benchmark)."""


class ContinuousBatch:
    """The rows being written and their shared cache. Owned by the worker thread.

    `submit` (any thread) queues a job; the worker's `run` admits queued jobs between steps,
    prefilling each on its own, and returns when no row is left and nothing is queued. A job
    whose prefill fails reports through `on_error` and never joins; the rest carry on.
    """

    def __init__(self, loaded: LoadedModel, on_error, stats: EngineStats | None = None, max_rows: int = 8) -> None:
        self.loaded = loaded
        self.max_rows = max_rows
        """Rows the cache is made with room for (more still fit: it grows)."""
        self.on_error = on_error
        """Called from the worker with (job, exception) when one job fails alone."""
        self.stats = stats or EngineStats()
        self._inbox: list[RowJob] = []
        self._lock = threading.Lock()
        self._running = False
        self.rows: list[_Row] = []
        self._kv: DynamicCache | None = None
        """The batch's cache, kept from step to step (the model appends to it in place); rows joining
        and leaving replace its layers' tensors."""
        self._mask: torch.Tensor | None = None
        self._eos = loaded.tokenizer.eos_token_id
        self._bounds = boundaries_for(loaded.tokenizer)
        self._decode_step = DecodeStep(loaded.model) if DecodeStep.supports(loaded.model) else None
        """The lean step for GPT-2 models (`model.step`); other models take their own forward pass."""

    # Any thread ---------------------------------------------------------------------------------
    def submit(self, job: RowJob) -> bool:
        """Queue a job for the next step; False when no run is going (start one with `run`)."""
        with self._lock:
            if not self._running:
                return False
            self._inbox.append(job)
            return True

    def start(self, jobs: list[RowJob]) -> None:
        """Mark a run as going, with its first jobs, before `run` is handed to the worker."""
        with self._lock:
            self._running = True
            self._inbox.extend(jobs)

    # Worker thread ------------------------------------------------------------------------------
    def run(self) -> None:
        """Step until every row has ended and nothing is queued."""
        with torch.inference_mode():
            while True:
                with self._lock:
                    joining, self._inbox = self._inbox, []
                    if not joining and not self.rows:
                        self._running = False
                        return
                for job in joining:  # each alone: a left-padded prefill would change its numbers
                    self._join(job)
                self._end_rows(self._stopped_rows())
                if self.rows:
                    self._step()

    def _new_row(self, job: RowJob) -> _Row:
        tokenizer = self.loaded.tokenizer
        ids = tokenizer(job.prompt, split_special_tokens=True, verbose=False)["input_ids"]
        room = context_room(self.loaded.model, len(ids))
        if room < 1:
            raise ValueError(f"a prompt of {len(ids)} tokens leaves no room in the model's context")
        return _Row(
            job=job,
            state=_RowState(job, tokenizer),
            ids=list(ids),
            id_buffer=_id_buffer(ids, room, self.loaded.device),
            generator=torch.Generator(device=self.loaded.device).manual_seed(job.seed),
            max_new_tokens=min(job.settings.max_new_tokens, room),
            room=room,
            whole_words=job.endings.whole_words and prompt_ends_word(job.prompt),
        )

    def _join(self, job: RowJob) -> None:
        try:
            row = self._new_row(job)
            input_ids = torch.tensor([row.ids], device=self.loaded.device)
            output = self.loaded.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
            cache = output.cache
            logits = output.logits[:, -1, :]
        except Exception as exc:  # this job alone fails; the running rows are untouched
            self.on_error(job, exc)
            return
        self._add_to_batch(row, cache)
        self._choose([row], logits)

    def _add_to_batch(self, row: _Row, cache: DynamicCache) -> None:
        length = cache.get_seq_length()
        mask = torch.ones(1, length, dtype=torch.long, device=self.loaded.device)
        steps = min(row.room, row.max_new_tokens + ENDING_SLACK)  # the most this row is likely to need
        if not self.rows:
            self._kv, self._mask = growing(cache, self.max_rows, 2 * steps), mask
        else:
            width = max(length, self._mask.shape[1])
            for layer, new in zip(self._kv.layers, cache.layers, strict=True):
                layer.add_row(new.keys, new.values)
            self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        self.rows.append(row)
        for layer in self._kv.layers:
            layer.reserve(steps)

    def _step(self) -> None:
        """One token for every row: a forward pass over the last tokens, then each row's choice."""
        self.stats.steps += 1
        self.stats.batch_sizes.append(len(self.rows))
        BATCH_SIZE.observe(len(self.rows))
        mask = _with_new_column(self._mask)
        try:
            logits = self._forward(self._kv, mask, self.rows)
        except Exception as exc:
            self._step_rows_alone(exc)
            return
        self._mask = mask
        self._choose(self.rows, logits)

    def _forward(self, kv: DynamicCache, mask: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """The next-token logits of `rows` (their last tokens in, their cache, the step's mask: the
        past and the token fed); the cache grows."""
        if self._decode_step is not None and self._decode_step.replaces_forward():
            return self._decode_step([row.next_token for row in rows], [len(row.ids) for row in rows], kv)
        device = self.loaded.device
        output = self.loaded.model(
            input_ids=torch.tensor([[row.next_token] for row in rows], device=device),
            cache=kv,
            attention_mask=_step_attention_mask(mask),
            position_ids=mask.sum(dim=1, keepdim=True) - 1,
            use_cache=True,
        )
        return output.logits[:, -1, :]

    def _step_rows_alone(self, error: Exception) -> None:
        """A step failed and the exception does not say for which row (a fault in one row's input,
        memory for one row's length): run this step for each row on its own, so only the row
        that fails alone ends with an error, and rebuild the batch from the others."""
        rows, kv, mask = self.rows, self._kv, self._mask
        self.rows, self._kv, self._mask = [], None, None
        if len(rows) == 1:
            self.on_error(rows[0].job, error)
            return
        survivors, logits = [], []
        for index, row in enumerate(rows):
            start = int(mask[index].nonzero()[0])
            alone = DynamicCache(
                [(k[index : index + 1, :, start:], v[index : index + 1, :, start:]) for k, v in _layers(kv)]
            )
            try:
                logits.append(self._forward(alone, _with_new_column(mask[index : index + 1, start:]), [row]))
            except Exception as exc:
                self.on_error(row.job, exc)
                continue
            self._add_to_batch(row, alone)
            survivors.append(row)
        if survivors:
            self._choose(survivors, torch.cat(logits))

    def _choose(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Each row's next token, by its own settings and generator; then stream it or end the row."""
        scores = _repetition_controls(rows, logits.float())
        for index, row in enumerate(rows):
            if row.generated == 0 and row.whole_words:
                self._bounds.ban_glue(scores[index : index + 1])
            if (
                row.job.endings.finish_sentences
                and row.generated >= closing_step(row.max_new_tokens, row.room)
                and self._bounds.must_close(row.state.text, row.generated, row.max_new_tokens, row.room)
            ):
                # out of margin: this token ends the sentence (or finishes the word it is in)
                finish_word = self._bounds.may_finish_word(row.state.text, row.generated, row.max_new_tokens, row.room)
                self._bounds.close(scores[index : index + 1], finish_word)
        sampling: dict[tuple[float, int, float], list[int]] = {}
        greedy = []
        for index, row in enumerate(rows):
            if row.settings.strategy == "sampling":
                key = (row.settings.temperature, row.settings.top_k, row.settings.top_p)
                sampling.setdefault(key, []).append(index)
            else:
                greedy.append(index)
        if len(greedy) == len(rows):
            tokens = scores.argmax(dim=-1)
        else:  # the argmax of the whole vocabulary only for the rows that use it
            tokens = torch.empty(len(rows), dtype=torch.long, device=scores.device)
            if greedy:
                tokens[greedy] = scores[greedy].argmax(dim=-1)
        for members in sampling.values():
            generators = [rows[i].generator for i in members]
            # Hugging Face's warpers take input ids but do not read them.
            no_ids = torch.zeros(len(members), 1, dtype=torch.long)
            if len(members) == len(rows):  # the usual case: everyone on the same settings, no copies
                tokens = _SamplingGroup(rows[members[0]].settings, None, generators).draw(no_ids, scores)
                continue
            indices = torch.tensor(members, device=scores.device)
            tokens[indices] = _SamplingGroup(rows[members[0]].settings, indices, generators).draw(no_ids, scores)
        ended = []
        for row, token in zip(rows, tokens.tolist(), strict=True):
            if token == self._eos:
                row.state.finished_by = StopReason.EOS
                ended.append(row)
                continue
            finish = row.job.endings.finish_sentences
            if (
                finish
                and row.generated >= row.max_new_tokens
                and self._bounds.ends_before(token, row.state.text, row.generated, row.max_new_tokens, row.room)
            ):
                row.state.finished_by = StopReason.LENGTH  # before the next word: it is not shown
                ended.append(row)
                continue
            row.id_buffer[len(row.ids)] = token
            row.ids.append(token)
            row.generated += 1
            row.next_token = token
            row.state.add(token)
            if row.generated >= (row.room if finish else row.max_new_tokens):
                row.state.finished_by = StopReason.LENGTH
                ended.append(row)
        self._end_rows(ended)

    def _stopped_rows(self) -> list[_Row]:
        """Rows whose user pressed Stop or whose time ran out, checked before each step."""
        now = time.monotonic()
        ended = []
        for row in self.rows:
            if row.job.stop_event.is_set():
                row.state.finished_by = StopReason.STOPPED
            elif now >= row.job.deadline:
                row.state.finished_by = StopReason.TIMEOUT
            else:
                continue
            ended.append(row)
        return ended

    def _end_rows(self, ended: list[_Row]) -> None:
        """Answer the ended rows at once, and take them (and padding nobody needs) out of the batch."""
        if not ended:
            return
        for row in ended:
            row.state.complete()
        keep = [i for i, row in enumerate(self.rows) if row not in ended]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self._kv, self._mask = None, None
            return
        mask = self._mask[torch.tensor(keep, device=self.loaded.device)]
        start = int((mask.sum(dim=0) > 0).nonzero()[0])  # the first column some row still uses
        self._mask = mask[:, start:]
        for layer in self._kv.layers:
            layer.keep_rows(keep, start)


def _repetition_controls(rows: list[_Row], scores: torch.Tensor) -> torch.Tensor:
    """Hugging Face's repetition penalty and n-gram ban, each row on its own tokens; `scores` is the
    step's own tensor, changed in place.

    Rows with the same settings go through the controls together. The penalty is Hugging Face's
    `RepetitionPenaltyLogitsProcessor` arithmetic (gather, multiply or divide, scatter) done in
    place: its own call pads and copies the whole vocabulary twice, 34 of a 50 µs sampling step on
    the shipped model. Shorter rows are left-padded with their own last token, which is penalised
    once either way (a repeated index scatters the same value). The n-gram ban is Hugging Face's
    processor, its rows left-padded with an id past the vocabulary, which no n-gram with a row's
    last tokens can match; so each row is penalised and banned exactly as alone (tested).
    """
    groups: dict[tuple[float, int], list[int]] = {}
    for index, row in enumerate(rows):
        settings = row.settings
        if settings.repetition_penalty != 1.0 or settings.no_repeat_ngram_size:
            groups.setdefault((settings.repetition_penalty, settings.no_repeat_ngram_size), []).append(index)
    vocabulary = scores.shape[-1]
    for (penalty, ngram), members in groups.items():
        everyone = len(members) == len(rows)
        histories = [rows[i].id_buffer[: len(rows[i].ids)] for i in members]
        part = scores if everyone else scores[members]
        if penalty != 1.0:
            if len(histories) == 1:
                ids = histories[0][None]
            else:
                ids = pad_sequence(histories, batch_first=True, padding_value=-1, padding_side="left")
                ids = torch.where(ids < 0, ids[:, -1:], ids)
            picked = part.gather(1, ids)
            part.scatter_(1, ids, torch.where(picked < 0, picked * penalty, picked / penalty))
        if ngram:
            ids = pad_sequence(histories, batch_first=True, padding_value=vocabulary, padding_side="left")
            part = NoRepeatNGramLogitsProcessor(ngram)(ids, part)
        if everyone:
            scores = part
        else:
            scores[members] = part
    return scores


def _id_buffer(ids: list[int], room: int, device: torch.device) -> torch.Tensor:
    buffer = torch.empty(len(ids) + room, dtype=torch.long, device=device)
    buffer[: len(ids)] = torch.tensor(ids, dtype=torch.long, device=device)
    return buffer


def _layers(kv: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in kv.layers]


def _step_attention_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """What a decoding step's one query per row may attend to (`mask`: the step's 2D mask, its row's
    past without the left padding, and itself), as the 4D boolean mask (rows, 1, 1, past + 1) that
    SDPA takes; None when no row is padded.

    It is the mask Hugging Face would build from the 2D one (for the last position the causal part
    allows everything), built here because its general mask code (packed-sequence detection, mask
    functions per layer type) cost more than the attention's own mask handling on eight rows.
    """
    if bool(mask.all()):
        return None
    return mask.bool()[:, None, None, :]


def _with_new_column(mask: torch.Tensor) -> torch.Tensor:
    """The mask of a step: the past, and the token being fed."""
    return torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)


def _pad_left(mask: torch.Tensor, width: int) -> torch.Tensor:
    """A 2D mask padded with zeros on the left to `width` columns."""
    missing = width - mask.shape[1]
    if missing == 0:
        return mask
    return torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
