"""Story boundaries: no token glued onto the prompt's last word, and an ending at a sentence's end."""

from __future__ import annotations

import pytest
import torch

from core.settings import DecodingSettings
from model.endings import OFF, WORD_GRACE, EndingRules, closing_step, sentence_ended
from model.engine import ContinuousBatch
from model.generation import RowJob, generate_batch

SAMPLE = DecodingSettings(strategy="sampling", max_new_tokens=12, temperature=1.0, top_k=0, repetition_penalty=1.0)


def first_token_text(loaded, prompt: str, seed: int, rules: EndingRules) -> str:
    settings = SAMPLE.replace(max_new_tokens=1)
    return generate_batch(loaded, [RowJob(prompt, settings, seed, endings=rules)])[0].continuation


def test_the_first_token_never_glues_onto_the_prompts_last_word(tiny_loaded) -> None:
    rules = EndingRules(whole_words=True, finish_sentences=False)
    firsts = [first_token_text(tiny_loaded, "The fox met a crow", seed, rules) for seed in range(12)]
    assert all(not text[:1].isalnum() for text in firsts), firsts
    # Without the rule the random tiny model glues letters on: the check above can fail.
    plain = [first_token_text(tiny_loaded, "The fox met a crow", seed, OFF) for seed in range(12)]
    assert any(text[:1].isalnum() for text in plain), plain


def test_a_prompt_ending_in_punctuation_is_left_alone(tiny_loaded) -> None:
    rules = EndingRules(whole_words=True, finish_sentences=False)
    for seed in range(6):
        assert first_token_text(tiny_loaded, "The fox met a crow.", seed, rules) == first_token_text(
            tiny_loaded, "The fox met a crow.", seed, OFF
        )


def test_a_story_at_its_length_ends_before_a_new_word_or_with_a_sentence_its_margin_forced(tiny_loaded) -> None:
    """Either the text ended a sentence within the margin and the next word is not shown (the same
    seed written on goes on with a new word), or the margin ran out and the last token closed it."""
    rules = EndingRules(whole_words=False, finish_sentences=True)
    natural = forced = 0
    last = closing_step(SAMPLE.max_new_tokens)
    for seed in range(12):
        out = generate_batch(tiny_loaded, [RowJob("Once upon a time", SAMPLE, seed, endings=rules)])[0]
        full = generate_batch(
            tiny_loaded, [RowJob("Once upon a time", SAMPLE.replace(max_new_tokens=60), seed, endings=OFF)]
        )[0]
        if out.stop_reason != "length":
            continue
        assert SAMPLE.max_new_tokens <= out.new_tokens <= last + WORD_GRACE + 1 and sentence_ended(out.continuation)
        if out.new_tokens <= last:
            assert full.continuation.startswith(out.continuation)
            assert full.continuation[len(out.continuation) :][:1].isspace()
            natural += 1
        else:
            forced += 1
    assert forced, "the random tiny model should run out of margin now and then"


def continuous_batch(loaded, prompts: list[str], settings: DecodingSettings, seed: int, rules: EndingRules) -> list:
    """The prompts' outputs from the service's continuous batch, in prompt order."""
    outputs: dict[str, object] = {}
    engine = ContinuousBatch(loaded, on_error=lambda job, exc: None)
    engine.start(
        [RowJob(p, settings, seed, endings=rules, on_done=lambda o, p=p: outputs.__setitem__(p, o)) for p in prompts]
    )
    engine.run()
    return [outputs[p] for p in prompts]


STRATEGIES = [
    DecodingSettings(strategy="greedy", max_new_tokens=12, repetition_penalty=1.0),
    DecodingSettings(strategy="greedy", max_new_tokens=12, no_repeat_ngram_size=1, repetition_penalty=2.0),
    SAMPLE,
    DecodingSettings(strategy="sampling", max_new_tokens=30, temperature=0.8, top_k=40),
    DecodingSettings(strategy="sampling", max_new_tokens=12, temperature=1.0, top_k=0, top_p=0.9),
    DecodingSettings(strategy="beam", num_beams=3, max_new_tokens=12, no_repeat_ngram_size=3, repetition_penalty=1.0),
]


@pytest.mark.parametrize("settings", STRATEGIES, ids=lambda s: s.summary())
def test_every_strategy_ends_a_story_at_its_length_with_a_finished_sentence(tiny_loaded, settings) -> None:
    """The random tiny model almost never ends a sentence by itself: the rule has to make it happen,
    in the static batch, in beam search and in the continuous batch alike."""
    rules = EndingRules()
    prompts = ["Once upon a time", "The fox said to the crow", "Holmes looked"]
    for seed in range(3):
        static = generate_batch(tiny_loaded, [RowJob(p, settings, seed, endings=rules) for p in prompts])
        continuous = (
            continuous_batch(tiny_loaded, prompts, settings, seed, rules) if settings.strategy != "beam" else []
        )
        at_length = [out for out in [*static, *continuous] if out.stop_reason == "length"]
        assert at_length, "every story ended by itself: nothing was tested"
        for out in at_length:
            assert settings.max_new_tokens <= out.new_tokens <= closing_step(settings.max_new_tokens) + WORD_GRACE + 1
            assert sentence_ended(out.continuation), (settings.summary(), out.continuation)


def test_the_continuous_batch_ends_stories_as_the_static_path_does(tiny_loaded) -> None:
    prompts = ["Once upon a time", "The fox said", "Holmes looked at the letter"]
    rules = EndingRules()
    static = [generate_batch(tiny_loaded, [RowJob(p, SAMPLE, 3, endings=rules)])[0].continuation for p in prompts]
    engine = ContinuousBatch(tiny_loaded, on_error=lambda job, exc: None)
    outputs: dict[str, str] = {}
    jobs = [
        RowJob(p, SAMPLE, 3, endings=rules, on_done=lambda out, p=p: outputs.__setitem__(p, out.continuation))
        for p in prompts
    ]
    engine.start(jobs)
    engine.run()
    assert [outputs[p] for p in prompts] == static


def test_beam_search_runs_past_its_length_to_end_its_sentence(tiny_loaded) -> None:
    beam = DecodingSettings(strategy="beam", num_beams=2, max_new_tokens=10, repetition_penalty=1.0)
    out = generate_batch(tiny_loaded, [RowJob("Once upon a time", beam, 0)])[0]
    plain = generate_batch(tiny_loaded, [RowJob("Once upon a time", beam, 0, endings=OFF)])[0]
    assert out.stop_reason == "eos" or (out.new_tokens >= 10 and sentence_ended(out.continuation))
    assert plain.new_tokens <= 10


def test_a_row_out_of_margin_inside_a_word_may_finish_it_before_its_full_stop(tiny_loaded) -> None:
    """Forced to close while its text ends in a letter, a row may take a token that continues the
    word or one that ends the sentence, nothing else; after the grace, only the sentence enders."""
    from model.endings import boundaries_for

    bounds = boundaries_for(tiny_loaded.tokenizer)
    step = closing_step(20)
    assert bounds.may_finish_word("and the prin", step, 20)
    assert not bounds.may_finish_word("and the prince,", step, 20)  # no word to finish
    assert not bounds.may_finish_word("and the prin", step + WORD_GRACE, 20)  # grace spent
    vocab = len(tiny_loaded.tokenizer)
    finishing = bounds.close(torch.zeros(1, vocab), finish_word=True)[0]
    strict = bounds.close(torch.zeros(1, vocab))[0]
    assert torch.equal(torch.isfinite(strict), bounds.closers[:vocab])
    assert torch.equal(torch.isfinite(finishing), bounds.closers[:vocab] | bounds.glues[:vocab])
    assert bounds.glues[:vocab].any() and not bounds.glues[:vocab].all()
