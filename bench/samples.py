"""Stories side by side (same openings, same seeds) and a memorisation check, for model cards.

For each model: five stories from fixed openings with the default preset ("balanced") and the
service's story endings, then the share of generated word 8-grams found verbatim in the training
text, next to the same share for the human continuations of the same eval openings.

    python -m bench.samples --model models/tales-v1 --model models/tales --train data/corpus/tales-v2/train.txt
"""

from __future__ import annotations

import argparse
import re

import torch

from core.settings import PRESETS, DecodingSettings
from model.generation import RowJob, generate_batch
from model.loading import load_model
from model.training.corpus import read_corpus

OPENINGS = [
    "A poor miller had a beautiful daughter, and",
    "Once upon a time a fox and a crow",
    "The king called his three sons and said",
    "In a little house at the edge of the forest lived an old woman who",
    "The princess looked out of the tower window and saw",
]
SEED = 7


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))


def ngrams(text: str, n: int = 8) -> list[tuple[str, ...]]:
    w = words(text)
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


def settings(max_new_tokens: int) -> DecodingSettings:
    return DecodingSettings().replace(**PRESETS["balanced"].values, max_new_tokens=max_new_tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--eval", default="../shared/corpus/tales/eval.txt")
    parser.add_argument("--openings", type=int, default=20, help="eval openings for the memorisation check")
    parser.add_argument(
        "--opening", action="append", help="an opening to write a story from (default: five tale openings)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=120)
    options = parser.parse_args(argv)
    openings = options.opening or OPENINGS
    torch.set_num_threads(1)
    train = set(ngrams(read_corpus(options.train, "training").path.read_text()))
    docs = [d for d in read_corpus(options.eval, "evaluation").documents if len(d.split()) > 150][: options.openings]
    heads = [" ".join(d.split("\n", 1)[-1].split()[:30]) for d in docs]
    tails = [" ".join(d.split("\n", 1)[-1].split()[30:150]) for d in docs]
    human = [g for t in tails for g in ngrams(t)]
    print(f"Human continuations: {sum(g in train for g in human) / max(1, len(human)):.2%} of 8-grams in training\n")
    for name in options.model:
        loaded = load_model(name, device="cpu", dtype="float32")
        print(f"### `{name}`\n")
        for opening in openings:
            out = generate_batch(loaded, [RowJob(opening, settings(options.max_new_tokens), SEED)])[0]
            print(f"> **{opening}**{out.continuation.rstrip()}\n")
        gen = [
            generate_batch(loaded, [RowJob(h, settings(options.max_new_tokens), SEED)])[0].continuation for h in heads
        ]
        grams = [g for t in gen for g in ngrams(t)]
        share = sum(g in train for g in grams) / max(1, len(grams))
        print(f"Memorisation: {share:.2%} of generated 8-grams ({len(grams)}) occur verbatim in training.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
