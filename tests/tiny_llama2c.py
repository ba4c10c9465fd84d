"""A tiny llama2.c model and tokenizer written in llama2.c's own formats, for the teacher's tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

PIECES = [" ", "a", "b", "d", "e", "h", "i", "l", "n", "o", "r", "s", "t", "w", "y", ",", ".", "!"]
MERGED = ["he", " t", " the", "ce", "on", " on", " once", "in", " a", "er", " there", " was", "as", "ay", " day", " th"]
"""Merged pieces, best first; some can be made from two different pairs (" the" = " t"+"he" = " th"+"e")."""


def write_tokenizer(path: Path) -> int:
    """A llama2.c tokenizer.bin: <unk>, <s>, </s>, 256 byte tokens, merged pieces and characters."""
    entries: list[tuple[bytes, float]] = [(b"<unk>", 0.0), (b"\n<s>\n", 0.0), (b"\n</s>\n", 0.0)]
    entries += [(f"<0x{b:02X}>".encode(), 0.0) for b in range(256)]
    entries += [(p.encode(), -float(i)) for i, p in enumerate(MERGED)]
    entries += [(p.encode(), -float(len(MERGED) + i)) for i, p in enumerate(PIECES)]
    entries += [("é".encode(), -100.0)]
    with path.open("wb") as f:
        f.write(struct.pack("<i", max(len(p) for p, _ in entries)))
        for piece, score in entries:
            f.write(struct.pack("<fi", score, len(piece)))
            f.write(piece)
    return len(entries)


def write_checkpoint(
    path: Path, vocab_size: int, *, dim: int = 16, hidden: int = 24, layers: int = 2, heads: int = 4, kv_heads: int = 2
) -> None:
    """A legacy llama2.c export with random weights (shared classifier)."""
    seq_len = 64
    head_dim = dim // heads
    rng = np.random.default_rng(0)
    shapes = [
        (vocab_size, dim),
        (layers, dim),
        (layers, dim, dim),
        (layers, kv_heads * head_dim, dim),
        (layers, kv_heads * head_dim, dim),
        (layers, dim, dim),
        (layers, dim),
        (layers, hidden, dim),
        (layers, dim, hidden),
        (layers, hidden, dim),
        (dim,),
        (seq_len, head_dim // 2),
        (seq_len, head_dim // 2),
    ]
    with path.open("wb") as f:
        f.write(struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab_size, seq_len))
        for i, shape in enumerate(shapes):
            scale = 1.0 if i in (1, 6, 10) else 0.3
            values = rng.normal(0.0, scale, size=shape) + (1.0 if i in (1, 6, 10) else 0.0)
            f.write(values.astype("<f4").tobytes())


def build_tiny_llama2c(folder: Path) -> tuple[Path, Path]:
    """Write both files into `folder`; return (checkpoint, tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = folder / "tok.bin"
    vocab_size = write_tokenizer(tokenizer)
    checkpoint = folder / "model.bin"
    write_checkpoint(checkpoint, vocab_size)
    return checkpoint, tokenizer
