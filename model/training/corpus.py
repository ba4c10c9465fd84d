"""Reading a story corpus and packing it into fixed-length training blocks.

The format: plain UTF-8 text in which a line holding only `<|endoftext|>` separates documents.
Each document is followed by the separator *token* and the token stream is cut into blocks, so
a block may span two stories only with the separator between them — the way GPT-2 was trained,
and the way the model learns where a story ends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from model.training.errors import TrainingError

SEPARATOR = "<|endoftext|>"
IGNORE_INDEX = -100
"""Label of padding positions: the loss skips them (PyTorch's and Hugging Face's convention)."""


@dataclass(frozen=True)
class CorpusFile:
    """One text file split into documents, with what the model card records about it."""

    path: Path
    sha256: str
    n_bytes: int
    documents: list[str]


def read_corpus(path: str | Path, role: str) -> CorpusFile:
    """Read and split `path`; `role` ("training", "evaluation") names the file in messages."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"The {role} file `{path}` does not exist.")
    if not path.is_file():
        raise TrainingError(f"The {role} file `{path}` is not a file.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TrainingError(f"The {role} file `{path}` is not UTF-8 text (bad byte on line {line}).") from exc
    documents = split_documents(text)
    if not documents:
        raise TrainingError(f"The {role} file `{path}` is empty: it holds no text besides separators.")
    return CorpusFile(path=path, sha256=hashlib.sha256(raw).hexdigest(), n_bytes=len(raw), documents=documents)


def split_documents(text: str) -> list[str]:
    """Split on lines holding only the separator; blank documents are dropped."""
    documents: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == SEPARATOR:
            documents.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    documents.append("\n".join(current).strip())
    return [doc for doc in documents if doc]


def separator_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of `<|endoftext|>`, which GPT-2 tokenizers use as end-of-text (eos) token."""
    token_id = tokenizer.convert_tokens_to_ids(SEPARATOR)
    if token_id is None or (token_id == tokenizer.unk_token_id and tokenizer.unk_token != SEPARATOR):
        raise TrainingError(f"The tokenizer has no `{SEPARATOR}` token, so documents cannot be separated.")
    return int(token_id)


def encode_documents(tokenizer: PreTrainedTokenizerBase, documents: list[str]) -> list[list[int]]:
    """Token ids of each document, with no special tokens added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer encodes in parallel and does not warn that a whole story is
        # longer than the model's context (it will be cut into blocks anyway).
        return [enc.ids for enc in backend.encode_batch(documents, add_special_tokens=False)]
    return tokenizer(documents, add_special_tokens=False)["input_ids"]


def pack_documents(token_docs: list[list[int]], sep_id: int) -> list[int]:
    """One token stream: each document followed by the separator token."""
    stream: list[int] = []
    for ids in token_docs:
        stream.extend(ids)
        stream.append(sep_id)
    return stream


class BlockDataset(Dataset):
    """A token stream cut into blocks of `block_size`; the last one is padded, not dropped.

    Padding (the separator id, masked out of attention and labelled `IGNORE_INDEX`) keeps every
    evaluation token in the perplexity instead of losing up to a block of text.
    """

    def __init__(self, stream: list[int], block_size: int, pad_id: int) -> None:
        if block_size < 2:
            raise ValueError("block_size must be at least 2")
        self.block_size = block_size
        self.n_tokens = len(stream)
        n_blocks = -(-len(stream) // block_size)
        padded = torch.full((n_blocks * block_size,), pad_id, dtype=torch.long)
        padded[: len(stream)] = torch.tensor(stream, dtype=torch.long)
        self.input_ids = padded.view(n_blocks, block_size)
        self.attention_mask = torch.zeros_like(self.input_ids)
        self.attention_mask.view(-1)[: len(stream)] = 1
        self.labels = self.input_ids.masked_fill(self.attention_mask == 0, IGNORE_INDEX)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
            "labels": self.labels[index],
        }


def build_blocks(corpus: CorpusFile, role: str, tokenizer: PreTrainedTokenizerBase, block_size: int) -> BlockDataset:
    """Encode, pack and cut a corpus; refuses one too small to fill a single block."""
    sep = separator_id(tokenizer)
    stream = pack_documents(encode_documents(tokenizer, corpus.documents), sep)
    if len(stream) < block_size:
        raise TrainingError(
            f"The {role} file `{corpus.path}` holds {len(stream)} tokens, fewer than one block of "
            f"{block_size}; give it more text or pass a smaller --block-size."
        )
    return BlockDataset(stream, block_size, pad_id=sep)
