"""Decoding strategies compared on the shipped story model, in the manner of Holtzman et al.
("The Curious Case of Neural Text Degeneration", 2020).

For the model: exact perplexity on eval.txt. For each strategy (greedy, beam 4, pure sampling,
top-k 40, top-k 40 at temperature 0.7, nucleus 0.95), continuations of 20 story openings taken
from eval.txt, scored by
- rep-4: the share of a continuation's word 4-grams that repeat an earlier 4-gram in it (the
  loops that greedy and beam search fall into), averaged over continuations;
- distinct-2: distinct word bigrams over all bigrams of all continuations (Li et al., 2016).
The real continuations of the same openings in eval.txt give the human reference row.
Each strategy is plain `model.generate` with its own `GenerationConfig`; sampling is seeded
per prompt, so the table is reproducible on one machine.

    python -m bench.strategies [--model models/tales] [--eval ../shared/corpus/tales/eval.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig

from core.settings import PRESETS
from model.loading import LoadedModel, load_model
from model.training.corpus import build_blocks, read_corpus
from model.training.perplexity import evaluate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "strategies.json"
DEFAULT_EVAL = ROOT.parent / "shared" / "corpus" / "tales" / "eval.txt"

STRATEGIES: dict[str, dict[str, object]] = {
    "greedy": {"do_sample": False, "num_beams": 1},
    "beam 4": {"do_sample": False, "num_beams": 4},
    "pure sampling": {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0},
    "top-k 40": {"do_sample": True, "top_k": 40, "top_p": 1.0, "temperature": 1.0},
    "top-k 40, temperature 0.7": {"do_sample": True, "top_k": 40, "top_p": 1.0, "temperature": 0.7},
    "nucleus 0.95": {"do_sample": True, "top_k": 0, "top_p": 0.95, "temperature": 1.0},
}
"""`top_k=0` is spelt out because `GenerationConfig` otherwise applies top-k 50 when sampling."""


def preset_generation(values: dict[str, object]) -> dict[str, object]:
    """A /settings preset as `GenerationConfig` arguments (the bot's strategies and their controls)."""
    strategy = values.get("strategy", "sampling")
    settings: dict[str, object] = {
        "do_sample": strategy == "sampling",
        "num_beams": int(values.get("num_beams", 4)) if strategy == "beam" else 1,
        "repetition_penalty": float(values.get("repetition_penalty", 1.0)),
        "no_repeat_ngram_size": int(values.get("no_repeat_ngram_size", 0)),
    }
    if strategy == "sampling":
        settings |= {k: values[k] for k in ("temperature", "top_k", "top_p") if k in values}
    return settings


STRATEGIES |= {f"{name} (preset)": preset_generation(preset.values) for name, preset in PRESETS.items()}
"""The bot's presets as they stand in core/settings.py, so the table shows what users get."""


@dataclass(frozen=True)
class StrategyScore:
    name: str
    rep4: float
    distinct2: float
    mean_words: float
    ended_story: float
    """Share of continuations that end the story (`<|endoftext|>`) before the length limit."""
    seconds: float | None
    """Generation time for all prompts (None for the human reference)."""


@dataclass(frozen=True)
class Opening:
    """The start of a story in eval.txt and what really follows it."""

    prompt: str
    continuation: str
    story_ends: bool
    """The story ends within the tokens the model may write."""


def story_openings(
    documents: list[str], loaded: LoadedModel, count: int, prompt_tokens: int, new_tokens: int
) -> list[Opening]:
    """Openings of `count` stories spread evenly over the eval file.

    The prompt is the first `prompt_tokens` tokens cut back to a word boundary; the continuation
    is what follows it, as many tokens as the model may write."""
    step = max(1, len(documents) // count)
    openings = []
    for doc in documents[::step][:count]:
        ids = loaded.tokenizer(doc)["input_ids"]
        prompt = loaded.tokenizer.decode(ids[:prompt_tokens])
        prompt = prompt[: prompt.rstrip().rfind(" ")] if " " in prompt.strip() else prompt
        rest_ids = loaded.tokenizer(doc[len(prompt) :])["input_ids"]
        openings.append(Opening(prompt, loaded.tokenizer.decode(rest_ids[:new_tokens]), len(rest_ids) < new_tokens))
    return openings


def rep_n(words: list[str], n: int = 4) -> float:
    """Share of the n-grams that repeat an earlier n-gram of the same text."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(texts: list[list[str]], n: int = 2) -> float:
    """Distinct n-grams over all n-grams, pooled over the texts."""
    grams = [tuple(words[i : i + n]) for words in texts for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def score(name: str, texts: list[str], ended: list[bool], seconds: float | None) -> StrategyScore:
    words = [text.split() for text in texts]
    scored = [w for w in words if len(w) >= 4]
    return StrategyScore(
        name=name,
        rep4=sum(rep_n(w) for w in scored) / max(1, len(scored)),
        distinct2=distinct_n(words),
        mean_words=sum(map(len, words)) / len(words),
        ended_story=sum(ended) / len(ended),
        seconds=seconds,
    )


def generate_all(
    loaded: LoadedModel, openings: list[str], settings: dict[str, object], new_tokens: int, seed: int
) -> tuple[list[str], list[bool]]:
    """One continuation per opening; the seed of prompt i is `seed + i`."""
    tokenizer, model = loaded.tokenizer, loaded.model
    config = GenerationConfig(
        max_new_tokens=new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **settings
    )
    texts, ended = [], []
    for i, opening in enumerate(openings):
        torch.manual_seed(seed + i)
        inputs = tokenizer(opening, return_tensors="pt").to(loaded.device)
        output = model.generate(**inputs, generation_config=config)[0, inputs["input_ids"].shape[1] :]
        ended.append(bool((output == tokenizer.eos_token_id).any()))
        texts.append(tokenizer.decode(output, skip_special_tokens=True))
    return texts, ended


def markdown_table(scores: list[StrategyScore]) -> str:
    lines = [
        "| strategy | rep-4 (%) ↓ | distinct-2 (%) ↑ | mean words | ended the story (%) | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {s.name} | {100 * s.rep4:.1f} | {100 * s.distinct2:.1f} | {s.mean_words:.0f} | "
        f"{100 * s.ended_story:.0f} | {'—' if s.seconds is None else f'{s.seconds:.0f}'} |"
        for s in scores
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "tales"))
    parser.add_argument("--eval", default=str(DEFAULT_EVAL))
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--prompt-tokens", type=int, default=40)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 prompts of 40 new tokens: checks that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.new_tokens = 3, 40
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model, device="cpu", dtype="float32")
    corpus = read_corpus(args.eval, "evaluation")
    blocks = build_blocks(corpus, "evaluation", loaded.tokenizer, loaded.model.config.n_positions)
    perplexity = evaluate(loaded.model, blocks)
    print(
        f"Model {args.model}: {sum(p.numel() for p in loaded.model.parameters()):,} parameters; eval perplexity "
        f"{perplexity.perplexity:.2f} on {args.eval} ({perplexity.tokens:,} tokens, "
        f"{perplexity.bits_per_byte(corpus.n_bytes):.3f} bits per byte)\n",
        flush=True,
    )

    stories = story_openings(corpus.documents, loaded, args.prompts, args.prompt_tokens, args.new_tokens)
    openings = [story.prompt for story in stories]
    scores = [
        score(
            "human (eval.txt)", [story.continuation for story in stories], [story.story_ends for story in stories], None
        )
    ]
    samples: dict[str, str] = {}
    for name, settings in STRATEGIES.items():
        started = time.perf_counter()
        texts, ended = generate_all(loaded, openings, settings, args.new_tokens, args.seed)
        scores.append(score(name, texts, ended, time.perf_counter() - started))
        samples[name] = texts[0]
        print(f"{name}: {openings[0]!r} -> {texts[0][:160]!r}...", flush=True)

    print(
        f"\n{args.prompts} story openings from eval.txt ({args.prompt_tokens} tokens or fewer), up to "
        f"{args.new_tokens} new tokens each; words are whitespace-separated.\n"
    )
    print(markdown_table(scores))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "model": args.model,
                "eval_file": args.eval,
                "eval_perplexity": perplexity.perplexity,
                "eval_tokens": perplexity.tokens,
                "bits_per_byte": perplexity.bits_per_byte(corpus.n_bytes),
                "prompts": openings,
                "new_tokens": args.new_tokens,
                "seed": args.seed,
                "settings": STRATEGIES,
                "scores": [asdict(s) for s in scores],
                "samples": samples,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\n(raw numbers: {RESULTS.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
