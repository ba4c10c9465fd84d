"""llama2.c's checkpoint and tokenizer formats, read as they are, and its forward pass written
out directly: the reference that a conversion into transformers is tested against.

The formats are those of Karpathy's `run.c` (the "legacy" float32 export): a header of seven
int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size — negative when the classifier
is not shared with the embedding —, seq_len), then float32 weights in a fixed order. The tokenizer
file holds the longest token's length, then per token a float32 merge score, an int32 length and
the token's bytes; encoding prepends a space, maps characters to tokens (bytes + 3 where a
character has no token) and merges the adjacent pair whose merged string scores highest until
no pair merges.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.training.errors import TrainingError

HEADER = struct.Struct("7i")
BYTE_OFFSET = 3
"""Token id of byte 0 in llama2.c's vocabularies: ids 0–2 are <unk>, <s> and </s>."""


@dataclass(frozen=True)
class Llama2cConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass(frozen=True)
class Llama2cCheckpoint:
    config: Llama2cConfig
    weights: dict[str, torch.Tensor]
    """Per-layer weights stacked on a first axis of n_layers, in run.c's names and shapes."""


@dataclass(frozen=True)
class Llama2cVocab:
    pieces: list[bytes]
    scores: list[float]


def read_checkpoint(path: str | Path) -> Llama2cCheckpoint:
    """The weights of a legacy llama2.c export, shaped as run.c reads them."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        raise TrainingError(f"`{path}` is too short to be a llama2.c checkpoint.")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = HEADER.unpack_from(data)
    config = Llama2cConfig(dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len, shared_classifier=vocab > 0)
    if min(dim, hidden, layers, heads, kv_heads, config.vocab_size, seq_len) <= 0 or dim % heads:
        raise TrainingError(f"`{path}` has an impossible llama2.c header: {HEADER.unpack_from(data)}.")
    floats = np.frombuffer(data, dtype="<f4", offset=HEADER.size)
    head_dim, kv_dim = dim // heads, dim // heads * kv_heads
    shapes = {
        "token_embedding": (config.vocab_size, dim),
        "rms_att": (layers, dim),
        "wq": (layers, dim, dim),
        "wk": (layers, kv_dim, dim),
        "wv": (layers, kv_dim, dim),
        "wo": (layers, dim, dim),
        "rms_ffn": (layers, dim),
        "w1": (layers, hidden, dim),
        "w2": (layers, dim, hidden),
        "w3": (layers, hidden, dim),
        "rms_final": (dim,),
        "freq_cis_real": (seq_len, head_dim // 2),
        "freq_cis_imag": (seq_len, head_dim // 2),
    }
    if not config.shared_classifier:
        shapes["classifier"] = (config.vocab_size, dim)
    weights, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        if offset + size > floats.size:
            raise TrainingError(f"`{path}` ends inside `{name}`: the checkpoint is truncated.")
        weights[name] = torch.from_numpy(floats[offset : offset + size].copy()).view(shape)
        offset += size
    if offset != floats.size:
        raise TrainingError(f"`{path}` holds {floats.size - offset} floats more than its header describes.")
    if config.shared_classifier:
        weights["classifier"] = weights["token_embedding"]
    return Llama2cCheckpoint(config, weights)


def read_vocab(path: str | Path, vocab_size: int | None = None) -> Llama2cVocab:
    """The pieces and merge scores of a llama2.c `tokenizer.bin` (`tok512.bin`)."""
    data = Path(path).read_bytes()
    offset, pieces, scores = 4, [], []
    while offset < len(data) and (vocab_size is None or len(pieces) < vocab_size):
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        pieces.append(data[offset : offset + length])
        scores.append(score)
        offset += length
    if vocab_size is not None and len(pieces) != vocab_size:
        raise TrainingError(f"`{path}` holds {len(pieces)} tokens, the model has {vocab_size}.")
    return Llama2cVocab(pieces, scores)


def encode(vocab: Llama2cVocab, text: str) -> list[int]:
    """run.c's `encode` (no BOS or EOS): a dummy space, characters or their bytes, best merges."""
    lookup = {piece: index for index, piece in enumerate(vocab.pieces)}
    tokens: list[int] = []
    if text:
        tokens.append(lookup[b" "])
    for char in text:
        raw = char.encode("utf-8")
        tokens.extend([lookup[raw]] if raw in lookup else [byte + BYTE_OFFSET for byte in raw])
    while True:
        best = (-1e10, -1, -1)
        for index in range(len(tokens) - 1):
            merged = lookup.get(vocab.pieces[tokens[index]] + vocab.pieces[tokens[index + 1]])
            if merged is not None and vocab.scores[merged] > best[0]:
                best = (vocab.scores[merged], merged, index)
        if best[2] < 0:
            return tokens
        tokens[best[2] : best[2] + 2] = [best[1]]


def forward(checkpoint: Llama2cCheckpoint, tokens: list[int]) -> torch.Tensor:
    """Logits at every position, computed the way run.c does it, token by token with a cache."""
    c, w = checkpoint.config, checkpoint.weights
    kv_dim, rep = c.head_dim * c.n_kv_heads, c.n_heads // c.n_kv_heads
    keys = torch.zeros(c.n_layers, len(tokens), kv_dim, dtype=torch.float64)
    values = torch.zeros_like(keys)
    out = []

    def rmsnorm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean() + 1e-5) * weight

    def rotate(vec: torch.Tensor, pos: int, width: int) -> torch.Tensor:
        # run.c rotates consecutive pairs (i, i+1) by pos * 10000^(-(i % head_dim) / head_dim).
        vec = vec.clone()
        for i in range(0, width, 2):
            freq = 1.0 / 10000.0 ** ((i % c.head_dim) / c.head_dim)
            cos, sin = np.cos(pos * freq), np.sin(pos * freq)
            v0, v1 = vec[i].item(), vec[i + 1].item()
            vec[i], vec[i + 1] = v0 * cos - v1 * sin, v0 * sin + v1 * cos
        return vec

    for pos, token in enumerate(tokens):
        x = w["token_embedding"][token].double()
        for layer in range(c.n_layers):
            xb = rmsnorm(x, w["rms_att"][layer].double())
            q = rotate(w["wq"][layer].double() @ xb, pos, c.dim)
            keys[layer, pos] = rotate(w["wk"][layer].double() @ xb, pos, kv_dim)
            values[layer, pos] = w["wv"][layer].double() @ xb
            heads = []
            for h in range(c.n_heads):
                qh = q[h * c.head_dim : (h + 1) * c.head_dim]
                kv = slice((h // rep) * c.head_dim, (h // rep + 1) * c.head_dim)
                att = torch.softmax(keys[layer, : pos + 1, kv] @ qh / np.sqrt(c.head_dim), dim=0)
                heads.append(att @ values[layer, : pos + 1, kv])
            x = x + w["wo"][layer].double() @ torch.cat(heads)
            xb = rmsnorm(x, w["rms_ffn"][layer].double())
            hidden = w["w1"][layer].double() @ xb
            hidden = hidden * torch.sigmoid(hidden) * (w["w3"][layer].double() @ xb)
            x = x + w["w2"][layer].double() @ hidden
        out.append(w["classifier"].double() @ rmsnorm(x, w["rms_final"].double()))
    return torch.stack(out)
