"""The continuous batch itself: rows prefilled together or alone, joining a running batch and leaving
it, each writing exactly what it writes alone through `generate`."""

from __future__ import annotations

import threading
import time

import torch
from transformers import DynamicCache
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

from core.settings import DecodingSettings
from model.engine import ContinuousBatch, _repetition_controls, _step_attention_mask, _with_new_column
from model.generation import RowJob, generate_batch
from model.kv_cache import GrowingLayer

SETTINGS = [
    DecodingSettings(strategy="greedy", max_new_tokens=40),
    DecodingSettings(max_new_tokens=50),
    DecodingSettings(max_new_tokens=30, temperature=1.3, top_k=0, top_p=0.9, repetition_penalty=1.3),
    DecodingSettings(strategy="greedy", max_new_tokens=25, no_repeat_ngram_size=2, repetition_penalty=1.0),
    DecodingSettings(max_new_tokens=35, top_k=5, temperature=0.7),
]
PROMPTS = ["Once upon a time there", "The fox said", "A king had three daughters and the youngest", "Hello", "The"]


def test_rows_prefilled_together_and_joining_later_write_what_they_write_alone(tiny_loaded) -> None:
    alone = [generate_batch(tiny_loaded, [RowJob(p, s, 7)])[0] for p, s in zip(PROMPTS, SETTINGS, strict=True)]
    done: dict[int, object] = {}
    errors: list[BaseException] = []
    engine = ContinuousBatch(tiny_loaded, on_error=lambda job, exc: errors.append(exc))
    jobs = [
        RowJob(p, s, 7, on_done=lambda output, i=i: done.__setitem__(i, output))
        for i, (p, s) in enumerate(zip(PROMPTS, SETTINGS, strict=True))
    ]
    buffers: list[torch.Tensor] = []  # held, so that a freed buffer's memory cannot come back as a "new" one
    step = engine._step

    def step_noting_the_buffer() -> None:
        if not buffers or engine._kv.layers[0]._key_buffer is not buffers[-1]:
            buffers.append(engine._kv.layers[0]._key_buffer)
        step()

    engine._step = step_noting_the_buffer
    engine.start(jobs[:3])  # three arrive at once: one batched prefill
    worker = threading.Thread(target=engine.run)
    worker.start()
    for job in jobs[3:]:  # two join while the others are being written
        while engine.stats.steps < 5:
            time.sleep(0.001)
        assert engine.submit(job)
    worker.join(timeout=60)
    assert errors == [] and sorted(done) == [0, 1, 2, 3, 4]
    for index, expected in enumerate(alone):
        got = done[index]
        assert (got.continuation, got.new_tokens, got.stop_reason) == (
            expected.continuation,
            expected.new_tokens,
            expected.stop_reason,
        )
    sizes = list(engine.stats.batch_sizes)
    assert sizes[0] == 3 and max(sizes) == 5 and sizes[-1] == 1  # joined, then left one by one
    assert len(buffers) == 1  # joins, steps and departures all inside the cache's first buffers
    assert not engine.submit(jobs[0])  # the run is over: a new job starts a new run


def test_growing_cache_layer_writes_in_place_and_rebuffers_what_the_engine_replaced() -> None:
    """Steps write into spare room (no copy of the past); keys replaced from outside (a row joined or
    left) move into a new buffer at the next step; the values are always those `torch.cat` gives."""
    generator = torch.Generator().manual_seed(0)
    keys, values = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(2))
    layer = GrowingLayer(keys.clone(), values.clone())
    expected_keys, expected_values = keys, values
    pointers = set()
    for _ in range(70):  # past the first buffer's room (5 + 64): one reallocation
        new_keys, new_values = (torch.randn(2, 3, 1, 4, generator=generator) for _ in range(2))
        got_keys, got_values = layer.update(new_keys, new_values)
        expected_keys = torch.cat([expected_keys, new_keys], dim=-2)
        expected_values = torch.cat([expected_values, new_values], dim=-2)
        assert torch.equal(got_keys, expected_keys) and torch.equal(got_values, expected_values)
        pointers.add(got_keys.data_ptr())
    assert len(pointers) == 2
    old_buffer = layer._key_buffer  # held, so that its memory cannot be reused for the new one
    layer.keys, layer.values = layer.keys[[1]], layer.values[[1]]  # a row left the batch
    new_keys, new_values = (torch.randn(1, 3, 1, 4, generator=generator) for _ in range(2))
    got_keys, got_values = layer.update(new_keys, new_values)
    assert torch.equal(got_keys, torch.cat([expected_keys[[1]], new_keys], dim=-2))
    assert torch.equal(got_values, torch.cat([expected_values[[1]], new_values], dim=-2))
    assert got_keys.data_ptr() != old_buffer.data_ptr() and got_keys.data_ptr() == layer._key_buffer.data_ptr()


def test_repetition_controls_of_rows_of_different_lengths_together_equal_each_row_alone(tiny_loaded) -> None:
    """One call per group of settings, rows left-padded: each row's scores are exactly those of
    Hugging Face's processors applied to that row alone."""
    engine = ContinuousBatch(tiny_loaded, on_error=lambda job, exc: None)
    settings = [
        DecodingSettings(repetition_penalty=1.3, no_repeat_ngram_size=2),
        DecodingSettings(repetition_penalty=1.3, no_repeat_ngram_size=2),
        DecodingSettings(repetition_penalty=1.1),
        DecodingSettings(repetition_penalty=1.0),
        DecodingSettings(repetition_penalty=1.3, no_repeat_ngram_size=2),
    ]
    prompts = ["the cat and the cat and the", "the", "a dog saw a dog", "the the the", "once upon a time a fox"]
    rows = [engine._new_row(RowJob(p, s, 1)) for p, s in zip(prompts, settings, strict=True)]
    scores = torch.randn(len(rows), tiny_loaded.model.config.vocab_size, generator=torch.Generator().manual_seed(1))
    scores[0, rows[0].ids[0]] = -2.0  # a penalised score below zero is multiplied, not divided

    def each_alone(batch: list) -> torch.Tensor:
        expected = []
        for index, row in batch:
            ids = torch.tensor([row.ids])
            alone = scores[index : index + 1]
            if row.settings.repetition_penalty != 1.0:
                alone = RepetitionPenaltyLogitsProcessor(row.settings.repetition_penalty)(ids, alone)
            if row.settings.no_repeat_ngram_size:
                alone = NoRepeatNGramLogitsProcessor(row.settings.no_repeat_ngram_size)(ids, alone)
            expected.append(alone[0])
        return torch.stack(expected)

    together = _repetition_controls(rows, scores.clone())
    assert torch.equal(together, each_alone(list(enumerate(rows))))
    assert torch.isinf(together[0]).any()  # "the cat and the" → after "the", "cat" is banned
    # One group for the whole batch (changed in place, rows of three lengths), and one row alone.
    same = [0, 1, 4]
    assert torch.equal(
        _repetition_controls([rows[i] for i in same], scores[same]), each_alone([(i, rows[i]) for i in same])
    )
    assert torch.equal(_repetition_controls([rows[2]], scores[[2]]), each_alone([(2, rows[2])]))


def test_step_mask_gives_the_logits_of_hugging_faces_own_mask(tiny_loaded) -> None:
    """The engine hands the model its own 4D mask for a decoding step (or None when no row is padded);
    the logits must be those of the model's mask built from the 2D one, padding hidden and all."""
    model = tiny_loaded.model
    rows, past = 3, 9
    layers = model.config.n_layer
    heads, size = model.config.n_head, model.config.n_embd // model.config.n_head
    generator = torch.Generator().manual_seed(0)
    cache = [
        (
            torch.randn(rows, heads, past, size, generator=generator),
            torch.randn(rows, heads, past, size, generator=generator),
        )
        for _ in range(layers)
    ]
    padded = torch.ones(rows, past, dtype=torch.long)
    padded[1, :4] = 0
    padded[2, :7] = 0
    ids = torch.randint(0, 100, (rows, 1), generator=generator)
    for mask in (padded, torch.ones(rows, past, dtype=torch.long)):
        ours = _step_attention_mask(_with_new_column(mask))
        assert (ours is None) == bool(mask.all())
        with torch.inference_mode():
            logits = [
                model(
                    input_ids=ids,
                    cache=DynamicCache([(k.clone(), v.clone()) for k, v in cache]),
                    attention_mask=attention_mask,
                    position_ids=mask.sum(dim=1, keepdim=True),
                ).logits
                for attention_mask in (_with_new_column(mask), ours)
            ]
        torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)
    # The padding is really hidden: other values in the padded columns change nothing.
    changed = [(k.clone(), v.clone()) for k, v in cache]
    for k, v in changed:
        k[2, :, :7] += 5.0
        v[2, :, :7] -= 3.0
    with torch.inference_mode():
        again = model(
            input_ids=ids,
            cache=DynamicCache(changed),
            attention_mask=_step_attention_mask(_with_new_column(padded)),
            position_ids=padded.sum(dim=1, keepdim=True),
        ).logits
        before = model(
            input_ids=ids,
            cache=DynamicCache([(k.clone(), v.clone()) for k, v in cache]),
            attention_mask=_step_attention_mask(_with_new_column(padded)),
            position_ids=padded.sum(dim=1, keepdim=True),
        ).logits
    torch.testing.assert_close(again[2], before[2], rtol=1e-6, atol=1e-6)


def test_growing_cache_layer_joins_and_departures_equal_the_rebuilt_cache() -> None:
    """Rows join (shorter and longer than the batch), leave (first, middle, last) and padding is cut,
    all inside the layer's buffers; after each, keys and values are what rebuilding the cache with
    `torch.cat` and indexing gives, and only running out of rows or room makes new buffers."""
    generator = torch.Generator().manual_seed(1)
    heads, dim = 2, 3

    def states(rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.randn(rows, heads, length, dim, generator=generator) for _ in range(2))

    def pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
        missing = width - tensor.shape[2]
        return torch.cat([tensor.new_zeros(tensor.shape[0], heads, missing, dim), tensor], dim=2)

    keys, values = states(2, 6)
    layer = GrowingLayer(keys.clone(), values.clone(), row_room=4)
    buffer = layer._key_buffer

    def check() -> None:
        assert torch.equal(layer.keys, keys) and torch.equal(layer.values, values)

    def step() -> None:
        nonlocal keys, values
        new_keys, new_values = states(keys.shape[0], 1)
        layer.update(new_keys, new_values)
        keys, values = torch.cat([keys, new_keys], dim=2), torch.cat([values, new_values], dim=2)
        check()

    def join(length: int) -> None:
        nonlocal keys, values
        new_keys, new_values = states(1, length)
        layer.add_row(new_keys, new_values)
        width = max(length, keys.shape[2])
        keys = torch.cat([pad_left(keys, width), pad_left(new_keys, width)])
        values = torch.cat([pad_left(values, width), pad_left(new_values, width)])
        check()

    def leave(kept: list[int], cut: int) -> None:
        nonlocal keys, values
        layer.keep_rows(kept, cut)
        keys, values = keys[kept, :, cut:], values[kept, :, cut:]
        check()

    step()
    join(3)  # shorter: padded on the left
    step()
    leave([0, 2], 0)  # the middle row leaves: the last one moves up
    join(5)
    leave([1, 2], 2)  # the first row leaves, and two padding positions nobody needs go
    join(keys.shape[2] + 2)  # longer than the batch, by no more than the room the cut left
    assert layer._key_buffer is buffer  # all of that inside the first buffers
    step()
    join(2)  # the fourth row: the buffers' last
    assert layer._key_buffer is buffer
    join(1)  # the fifth: more rows than the buffers hold
    assert layer._key_buffer is not buffer and layer._key_buffer.shape[0] >= 5
    buffer = layer._key_buffer
    join(keys.shape[2] + 10)  # longer than any room on the left: new buffers too
    assert layer._key_buffer is not buffer
    for _ in range(80):  # past the room for positions
        step()
    leave([1, 5], 3)
    step()
