"""Builds the tiny GPT-2 the tests run on: a byte-level BPE trained on a few sentences and a
randomly initialised 2-layer model, saved with `save_pretrained` so the real loading code reads it."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

TINY_TEXT = (
    """Once upon a time there lived a king who had three daughters.
The youngest was so beautiful that the sun itself was astonished whenever it shone in her face.
A fox and a crow met in the forest, and the fox said to the crow: what a fine voice you have.
Holmes looked at the letter and said nothing for a long while; then he smiled.
The little mermaid swam up to the surface and saw the ship with its many lanterns.
"""
    * 4
)


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    vocab_size: int = 400,
    n_positions: int = 256,
) -> Path:
    """Write a tiny GPT-2 and its tokenizer to `out_dir` and return it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([TINY_TEXT], vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.model_max_length = n_positions
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
