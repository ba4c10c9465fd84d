"""Held-out perplexity and bits per byte of several models on several eval files, float32.

`python -m bench.eval_models --model models/tales --model models/tales-v2 --eval FILE ...`
Bits per byte compare models whose tokenizers differ (each model reads the file with its own).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.training.corpus import build_blocks, read_corpus
from model.training.perplexity import context_length, evaluate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--eval", action="append", required=True)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    rows = []
    print("| model | eval file | tokens | perplexity | bits per byte |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in options.model:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval()
        for path in options.eval:
            corpus = read_corpus(path, "evaluation")
            blocks = build_blocks(corpus, "evaluation", tokenizer, context_length(model.config))
            result = evaluate(model, blocks)
            bpb = result.bits_per_byte(corpus.n_bytes)
            rows.append({"model": name, "eval": path, "perplexity": result.perplexity, "bits_per_byte": bpb})
            print(f"| `{name}` | `{path}` | {blocks.n_tokens:,} | {result.perplexity:.2f} | {bpb:.3f} |", flush=True)
    json.dump(rows, sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
