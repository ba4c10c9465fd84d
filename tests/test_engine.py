"""The continuous batch itself: rows prefilled together or alone, joining a running batch and leaving
it, each writing exactly what it writes alone through `generate`."""

from __future__ import annotations

import threading
import time

from core.settings import DecodingSettings
from model.engine import ContinuousBatch
from model.generation import RowJob, generate_batch

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
    assert not engine.submit(jobs[0])  # the run is over: a new job starts a new run
