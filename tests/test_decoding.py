"""Each decoding strategy does what its definition says, on the tiny GPT-2."""

from __future__ import annotations

import pytest
import torch

from core.settings import DecodingSettings
from model.decoding import NUCLEUS_CANDIDATES, SeededSampling, batch_key, row_warpers, to_generation_config
from model.endings import OFF
from model.generation import RowJob, generate_batch

PROMPT = "Once upon a time there lived"


def _run(loaded, settings: DecodingSettings, seed: int = 0, prompt: str = PROMPT) -> str:
    return generate_batch(loaded, [RowJob(prompt, settings, seed, endings=OFF)])[0].continuation


def _token_ids(loaded, settings: DecodingSettings, seed: int) -> list[int]:
    """Generated ids (re-encoding decoded text is lossy on a byte-level tokenizer)."""
    from model import generation

    row = generation._RowState(RowJob(PROMPT, settings, seed), loaded.tokenizer)
    streamer = generation._BatchStreamer([row], loaded.tokenizer.eos_token_id)
    inputs = loaded.tokenizer(PROMPT, return_tensors="pt")
    sampler = SeededSampling([(settings, seed)], loaded.device)
    config = to_generation_config(
        settings, eos_token_id=loaded.tokenizer.eos_token_id, pad_token_id=loaded.tokenizer.pad_token_id
    )
    loaded.model.generate(
        **inputs, generation_config=config, logits_processor=[sampler] if sampler.active else [], streamer=streamer
    )
    return row.tokens


def _next_token_probs(loaded, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits.float(), dim=-1)


def test_greedy_is_deterministic_and_picks_the_likeliest_token(tiny_loaded) -> None:
    settings = DecodingSettings(strategy="greedy", max_new_tokens=12, repetition_penalty=1.0)
    assert _run(tiny_loaded, settings, seed=1) == _run(tiny_loaded, settings, seed=2)
    ids = tiny_loaded.tokenizer(PROMPT)["input_ids"]
    for token in _token_ids(tiny_loaded, settings, seed=0):
        assert token == int(_next_token_probs(tiny_loaded, ids).argmax())
        ids.append(token)


def test_same_seed_gives_same_text_and_other_seeds_differ(tiny_loaded) -> None:
    settings = DecodingSettings(strategy="sampling", max_new_tokens=20, temperature=1.0, top_k=0)
    assert _run(tiny_loaded, settings, seed=7) == _run(tiny_loaded, settings, seed=7)
    assert len({_run(tiny_loaded, settings, seed=s) for s in range(4)}) > 1


def test_top_k_only_picks_among_the_k_likeliest(tiny_loaded) -> None:
    k = 3
    settings = DecodingSettings(
        strategy="sampling", max_new_tokens=15, temperature=1.5, top_k=k, repetition_penalty=1.0
    )
    for seed in range(3):
        ids = tiny_loaded.tokenizer(PROMPT)["input_ids"]
        for token in _token_ids(tiny_loaded, settings, seed):
            allowed = set(_next_token_probs(tiny_loaded, ids).topk(k).indices.tolist())
            assert token in allowed
            ids.append(token)


def test_top_p_only_picks_inside_the_nucleus(tiny_loaded) -> None:
    p = 0.5
    settings = DecodingSettings(
        strategy="sampling", max_new_tokens=15, temperature=1.0, top_k=0, top_p=p, repetition_penalty=1.0
    )
    for seed in range(3):
        ids = tiny_loaded.tokenizer(PROMPT)["input_ids"]
        for token in _token_ids(tiny_loaded, settings, seed):
            probs = _next_token_probs(tiny_loaded, ids)
            sorted_probs, order = probs.sort(descending=True)
            # The nucleus: the smallest prefix whose mass reaches p (HF keeps at least one token).
            size = int((sorted_probs.cumsum(0) < p).sum()) + 1
            assert token in set(order[:size].tolist())
            ids.append(token)


def test_beam_search_returns_the_highest_scoring_beam(tiny_loaded) -> None:
    settings = DecodingSettings(strategy="beam", num_beams=4, max_new_tokens=8, repetition_penalty=1.0)
    tokenizer, model = tiny_loaded.tokenizer, tiny_loaded.model
    inputs = tokenizer(PROMPT, return_tensors="pt")
    config = to_generation_config(settings, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config.num_return_sequences, config.output_scores, config.return_dict_in_generate = 4, True, True
    out = model.generate(**inputs, generation_config=config)
    scores = out.sequences_scores.tolist()
    assert scores == sorted(scores, reverse=True)
    best = tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert _run(tiny_loaded, settings) == best
    # Re-score every returned beam with a plain forward pass: ours has the highest log-probability.
    prompt_length = inputs["input_ids"].shape[1]

    def log_prob(sequence: torch.Tensor) -> float:
        with torch.no_grad():
            logits = model(sequence[None]).logits[0, prompt_length - 1 : -1].float()
        return float(torch.log_softmax(logits, -1).gather(1, sequence[prompt_length:, None]).sum())

    rescored = [log_prob(seq) for seq in out.sequences]
    assert rescored[0] == pytest.approx(max(rescored), abs=1e-4)


def test_sampling_draws_are_per_row() -> None:
    settings = DecodingSettings(strategy="sampling", temperature=1.0, top_k=0)
    logits = torch.randn(1, 50)
    alone = SeededSampling([(settings, 5)], torch.device("cpu"))(torch.zeros(1, 1, dtype=torch.long), logits)
    pair = SeededSampling([(settings, 9), (settings, 5)], torch.device("cpu"))(
        torch.zeros(2, 1, dtype=torch.long), torch.cat([torch.randn(1, 50), logits])
    )
    assert alone[0].argmax() == pair[1].argmax()


def test_each_row_of_a_mixed_batch_samples_exactly_as_it_would_alone() -> None:
    """Rows grouped by equal settings and rows on their own each draw what they draw alone, step after step.

    The nucleus rows include a peaked one (its nucleus lies among the likeliest candidates) and a
    flat one (it does not): the two take different paths inside one group.
    """
    nucleus = DecodingSettings(strategy="sampling", top_k=0, top_p=0.9, temperature=1.3)
    rows = [
        (DecodingSettings(strategy="sampling", top_k=40, temperature=0.8), 1),
        (DecodingSettings(strategy="greedy"), 0),
        (DecodingSettings(strategy="sampling", top_k=40, temperature=0.8), 2),
        (nucleus, 3),
        (DecodingSettings(strategy="sampling", top_k=40, temperature=0.8), 4),
        (nucleus, 5),
        (DecodingSettings(strategy="sampling", top_k=20, top_p=0.8), 6),
    ]
    scale = torch.tensor([3.0, 3.0, 3.0, 8.0, 3.0, 0.1, 3.0]).unsqueeze(1)
    batch = SeededSampling(rows, torch.device("cpu"))
    alone = [SeededSampling([row], torch.device("cpu")) for row in rows]
    generator = torch.Generator().manual_seed(0)
    for step in range(30):
        ids = torch.randint(0, 500, (len(rows), step + 1), generator=generator)
        logits = torch.randn(len(rows), 500, generator=generator) * scale
        together = batch(ids, logits).argmax(-1)
        assert together.tolist() == [
            one(ids[i : i + 1], logits[i : i + 1]).argmax(-1).item() for i, one in enumerate(alone)
        ]
    assert together[1] == logits[1].argmax()


def _frequencies(settings: DecodingSettings, logits: torch.Tensor, draws: int) -> torch.Tensor:
    sampler = SeededSampling([(settings, 11)], torch.device("cpu"))
    ids = torch.zeros(1, 1, dtype=torch.long)
    tokens = torch.stack([sampler(ids, logits).argmax() for _ in range(draws)])
    return torch.bincount(tokens, minlength=logits.shape[-1]).double() / draws


def _hugging_face_probabilities(settings: DecodingSettings, logits: torch.Tensor) -> torch.Tensor:
    """What `generate(do_sample=True)` samples from: its warpers, then a softmax."""
    return torch.softmax(row_warpers(settings)(torch.zeros(1, 1, dtype=torch.long), logits.clone()), -1)[0].double()


@pytest.mark.parametrize(
    "settings",
    [
        DecodingSettings(strategy="sampling", top_k=4, temperature=0.7),
        DecodingSettings(strategy="sampling", top_k=0, top_p=0.8, temperature=1.2),
        DecodingSettings(strategy="sampling", top_k=5, top_p=0.7, temperature=0.9),
        DecodingSettings(strategy="sampling", top_k=0, top_p=1.0, temperature=1.0),
    ],
    ids=["top-k", "nucleus", "top-k then nucleus", "pure"],
)
def test_sampling_follows_hugging_faces_distribution(settings: DecodingSettings) -> None:
    """Over many draws, each token comes up about as often as Hugging Face's warpers say; never one they drop.

    The vocabulary is larger than NUCLEUS_CANDIDATES, so nucleus sampling takes its shortcut here.
    """
    logits = torch.full((1, 1000), -8.0)
    logits[0, :8] = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -1.5, -2.0, -3.0])
    expected = _hugging_face_probabilities(settings, logits)
    observed = _frequencies(settings, logits, 20_000)
    assert observed[expected == 0].sum() == 0
    assert torch.allclose(observed, expected, atol=0.015), (observed[:8], expected[:8])


def test_nucleus_wider_than_the_candidates_still_reaches_every_token_in_it() -> None:
    """A flat distribution whose nucleus spans more than NUCLEUS_CANDIDATES tokens is sampled over all of it."""
    logits = torch.linspace(1.0, 0.0, 2000).unsqueeze(0)
    settings = DecodingSettings(strategy="sampling", top_k=0, top_p=0.9, temperature=1.0)
    expected = _hugging_face_probabilities(settings, logits)
    assert (expected > 0).sum() > NUCLEUS_CANDIDATES
    observed = _frequencies(settings, logits, 3_000)
    assert observed[expected == 0].sum() == 0
    assert observed[NUCLEUS_CANDIDATES:].sum() > 0.5


def test_greedy_and_sampling_share_a_batch_but_beams_do_not() -> None:
    greedy, sample = DecodingSettings(strategy="greedy"), DecodingSettings(strategy="sampling")
    assert batch_key(greedy) == batch_key(sample)
    assert batch_key(DecodingSettings(strategy="beam", num_beams=2)) != batch_key(
        DecodingSettings(strategy="beam", num_beams=4)
    )
    assert batch_key(sample) != batch_key(sample.replace(repetition_penalty=1.5))


def test_generation_config_maps_every_strategy() -> None:
    ids = dict(eos_token_id=0, pad_token_id=0)
    beam = to_generation_config(DecodingSettings(strategy="beam", num_beams=3, no_repeat_ngram_size=2), **ids)
    assert beam.num_beams == 3 and beam.no_repeat_ngram_size == 2 and not beam.do_sample
    native = to_generation_config(
        DecodingSettings(strategy="sampling", top_k=0, top_p=0.9, temperature=0.7), native_sampling=True, **ids
    )
    assert native.do_sample and native.top_p == 0.9 and native.temperature == 0.7
    assert native.top_k == 0  # off, not None: `generate` would fill None in with its default top-k 50


def test_native_sampling_without_top_k_samples_from_the_whole_vocabulary(tiny_loaded) -> None:
    """The plain Hugging Face comparison must apply the same warpers as the settings say."""
    model, tokenizer = tiny_loaded.model, tiny_loaded.tokenizer
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    applied: list[list[str]] = []
    own = model._get_logits_processor

    def noting(*args, **kwargs):
        processors = own(*args, **kwargs)
        applied.append([type(p).__name__ for p in processors])
        return processors

    model._get_logits_processor = noting
    try:
        for top_k in (0, 40):
            config = to_generation_config(
                DecodingSettings(top_k=top_k, temperature=0.8, max_new_tokens=2), native_sampling=True, **ids
            )
            model.generate(**tokenizer("Once upon", return_tensors="pt"), generation_config=config)
    finally:
        del model._get_logits_processor
    assert applied == [["TemperatureLogitsWarper"], ["TemperatureLogitsWarper", "TopKLogitsWarper"]]
    assert to_generation_config(DecodingSettings(max_new_tokens=33), **ids).max_new_tokens == 33


@pytest.mark.parametrize("model_dir", ["tiny", "shipped"])
def test_decoding_straight_from_the_rust_tokenizer_is_the_wrappers_decoding(model_dir, tiny_model_dir) -> None:
    from pathlib import Path

    from transformers import AutoTokenizer

    from model.generation import _decode

    path = tiny_model_dir if model_dir == "tiny" else Path(__file__).resolve().parent.parent / "models" / "tales"
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = tokenizer('Once upon a time, "héllo" 😀 said the fox<|endoftext|> and ran.', split_special_tokens=False)[
        "input_ids"
    ]
    for start in range(len(ids)):
        for end in range(start + 1, len(ids) + 1):
            assert _decode(tokenizer, ids[start:end]) == tokenizer.decode(ids[start:end], skip_special_tokens=True)
