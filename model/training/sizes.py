"""Named shapes for GPT-2-architecture models trained from scratch (`--from-scratch --size`).

Every shape keeps GPT-2's head width of 64 and its tied input/output embeddings, so a model
made here is a plain `GPT2LMHeadModel` that any GPT-2 code loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config


@dataclass(frozen=True)
class ModelSize:
    """Depth, width and context of one named shape."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int

    @property
    def shape(self) -> str:
        """Depth, width and context, for a model card (its parameter count depends on the vocabulary)."""
        return f"{self.n_layer} layers × {self.n_embd}, context {self.n_positions}"

    @property
    def description(self) -> str:
        return f"{self.shape}, {self.parameters(8192) / 1e6:.1f}M parameters with 8192 tokens"

    def parameters(self, vocab_size: int) -> int:
        """Count with tied embeddings: token and position embeddings, blocks, final layer norm."""
        d = self.n_embd
        per_block = 12 * d * d + 13 * d
        return (vocab_size + self.n_positions) * d + self.n_layer * per_block + 2 * d

    def config(self, vocab_size: int, eos_token_id: int, dropout: float = 0.1) -> GPT2Config:
        """A `GPT2Config` of this shape; `<|endoftext|>` serves as bos, eos and pad, as in GPT-2."""
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=self.n_positions,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=eos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
            tie_word_embeddings=True,
        )


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(2, 128, 2, 256),
    "mini": ModelSize(4, 256, 4, 512),
    "small": ModelSize(6, 320, 5, 512),
    "medium": ModelSize(8, 384, 6, 512),
    "gpt2": ModelSize(12, 768, 12, 1024),
}
