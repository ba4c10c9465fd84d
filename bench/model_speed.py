"""Batch-1 story speed of several models through the bot's own service, in tokens and in characters.

Models with different tokenizers write different amounts of text per token (tales v2's 8,192-token
vocabulary about 2 characters a token less than a 512-token one), so tokens per second alone would
flatter the smaller vocabulary: characters and words per second are the user's measure. Every model
gets its own `ModelService` with the bot's config (the default preset, `model.cpu_threads`), the
same openings and seeds, and the models take turns story by story so load on this shared machine
falls on all of them alike; each figure is the median over the rounds.

    python -m bench.model_speed --model models/tales --model data/models/tales-v2 [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass

from bench.common import NOISE_NOTE, median, print_table, service_config, set_threads
from core.service import StoryRequest
from core.settings import PRESETS, DecodingSettings
from model.loading import load_model
from model.service import ModelService

SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s*$")
"""What a story's last characters look like when it ends a sentence (closing quotes allowed)."""

OPENINGS = [
    "The dragon who was afraid of the dark",
    "Once upon a time a fox and a crow",
    "A poor miller had three sons",
]


@dataclass(frozen=True)
class Story:
    tokens: int
    characters: int
    words: int
    seconds: float
    ends_sentence: bool


async def write(service: ModelService, opening: str, settings: DecodingSettings, seed: int) -> Story:
    set_threads(service.config.model.cpu_threads)
    started = time.perf_counter()
    stream = await service.story(StoryRequest(user_id=1, prompt=opening, settings=settings, seed=seed))
    async for _delta in stream:
        pass
    result = await stream.result()
    text = result.continuation
    elapsed = time.perf_counter() - started
    return Story(result.new_tokens, len(text), len(text.split()), elapsed, bool(SENTENCE_END.search(text)))


async def measure(models: list[str], rounds: int, new_tokens: int) -> dict[str, list[Story]]:
    config = service_config()
    settings = DecodingSettings().replace(**PRESETS["balanced"].values, max_new_tokens=new_tokens)
    services = {}
    for name in models:
        services[name] = ModelService(load_model(name, config.model.device, config.model.dtype), config)
        await services[name].start()
    stories: dict[str, list[Story]] = {name: [] for name in models}
    try:
        for service in services.values():
            await write(service, OPENINGS[0], settings.replace(max_new_tokens=8), 0)  # warm-up
        for round_ in range(rounds):
            for index, opening in enumerate(OPENINGS):
                order = models[round_ % len(models) :] + models[: round_ % len(models)]
                for name in order:
                    stories[name].append(await write(services[name], opening, settings, 100 * round_ + index))
    finally:
        for service in services.values():
            await service.close()
    return stories


def rates(stories: list[Story], rounds: int) -> dict[str, float]:
    """Per round: everything written over the time it took; then the median over rounds."""
    per_round = len(stories) // rounds
    chunks = [stories[i * per_round : (i + 1) * per_round] for i in range(rounds)]

    def rate(attribute: str) -> float:
        return median([sum(getattr(s, attribute) for s in c) / sum(s.seconds for s in c) for c in chunks])

    return {key: rate(key) for key in ("tokens", "characters", "words")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="first one is the baseline of the ratios")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=200)
    options = parser.parse_args(argv)
    stories = asyncio.run(measure(options.model, options.rounds, options.new_tokens))
    measured = {name: rates(found, options.rounds) for name, found in stories.items()}
    base = measured[options.model[0]]
    rows = [
        [
            f"`{name}`",
            f"{sum(s.tokens for s in stories[name]) / sum(s.characters for s in stories[name]):.3f}",
            f"{m['tokens']:.0f}",
            f"{m['characters']:.0f}",
            f"{m['words']:.1f}",
            f"{m['characters'] / base['characters']:.2f}×",
            f"{sum(s.ends_sentence for s in stories[name])} of {len(stories[name])}",
        ]
        for name, m in measured.items()
    ]
    print_table(
        f"Batch-1 stories through the service ({len(OPENINGS)} openings × {options.rounds} rounds, "
        f"balanced preset, up to {options.new_tokens} new tokens)",
        [
            "model",
            "tokens per character",
            "tokens/s",
            "characters/s",
            "words/s",
            "characters/s vs first",
            "ends a sentence",
        ],
        rows,
    )
    print(NOISE_NOTE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
