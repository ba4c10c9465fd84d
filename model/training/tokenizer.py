"""Training a byte-level BPE tokenizer the way GPT-2's was made, for models trained from scratch.

Byte-level BPE starts from the 256 byte values, so any UTF-8 text encodes with no unknown token,
and merges the most frequent pairs until the vocabulary is full. `<|endoftext|>` is the one
special token: it separates documents and is the model's bos, eos and pad token.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2TokenizerFast

from model.training.corpus import SEPARATOR


def train_bpe_tokenizer(
    documents: Iterable[str], vocab_size: int, model_max_length: int, min_frequency: int = 2
) -> GPT2TokenizerFast:
    """A GPT-2-style tokenizer with at most `vocab_size` tokens, learnt from `documents`.

    The result is wrapped as `GPT2TokenizerFast` (never built from vocab files: in transformers 5
    that path silently yields a one-token tokenizer) so `save_pretrained` writes files that
    `AutoTokenizer.from_pretrained` reads back as they were.
    """
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        documents, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[SEPARATOR], show_progress=False
    )
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=SEPARATOR,
        eos_token=SEPARATOR,
        unk_token=SEPARATOR,
        pad_token=SEPARATOR,
    )
    tokenizer.model_max_length = model_max_length
    return tokenizer
