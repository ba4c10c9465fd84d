"""Story boundaries: no token glued onto the prompt's last word, and an ending at a sentence's end."""

from __future__ import annotations

from core.settings import DecodingSettings
from model.endings import OFF, EndingRules, margin, sentence_ended
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


def test_a_story_at_its_length_ends_before_a_new_word_within_the_margin(tiny_loaded) -> None:
    rules = EndingRules(whole_words=False, finish_sentences=True)
    cut_at_a_boundary = 0
    for seed in range(8):
        out = generate_batch(tiny_loaded, [RowJob("Once upon a time", SAMPLE, seed, endings=rules)])[0]
        full = generate_batch(
            tiny_loaded, [RowJob("Once upon a time", SAMPLE.replace(max_new_tokens=60), seed, endings=OFF)]
        )[0]
        if out.stop_reason != "length":
            continue
        assert SAMPLE.max_new_tokens <= out.new_tokens <= SAMPLE.max_new_tokens + 2 * margin(SAMPLE.max_new_tokens)
        # The same seed written on: our text is its beginning, and what comes next starts a new word
        # (the ending never cuts a word), after a sentence's end unless the margin ran out.
        assert full.continuation.startswith(out.continuation)
        rest = full.continuation[len(out.continuation) :]
        if out.new_tokens < SAMPLE.max_new_tokens + 2 * margin(12):  # else a word that never ended was cut
            assert rest[:1].isspace(), (out.continuation, rest)
            assert sentence_ended(out.continuation) or out.new_tokens >= SAMPLE.max_new_tokens + margin(12)
            cut_at_a_boundary += 1
    assert cut_at_a_boundary


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


def test_beam_search_is_cut_the_same_way(tiny_loaded) -> None:
    beam = DecodingSettings(strategy="beam", num_beams=2, max_new_tokens=10, repetition_penalty=1.0)
    out = generate_batch(tiny_loaded, [RowJob("Once upon a time", beam, 0)])[0]
    plain = generate_batch(tiny_loaded, [RowJob("Once upon a time", beam, 0, endings=OFF)])[0]
    assert out.new_tokens >= 10 or out.stop_reason == "eos"
    assert plain.new_tokens <= 10
