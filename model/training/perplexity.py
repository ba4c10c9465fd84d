"""Exact perplexity of a causal language model over a block dataset.

The Trainer's `eval_loss` averages per-batch means, which weights a short last block like a full
one; here every predicted token counts once, so the number is the corpus perplexity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel

from model.training.corpus import IGNORE_INDEX, BlockDataset


@dataclass(frozen=True)
class EvalResult:
    """Mean negative log-likelihood per predicted token (nats) and how many tokens it covers."""

    loss: float
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def bits_per_byte(self, n_bytes: int) -> float:
        """Tokenizer-independent: compares models whose vocabularies differ."""
        return self.loss * self.tokens / (n_bytes * math.log(2))


def context_length(config: PretrainedConfig) -> int:
    """Positions a model can attend over: GPT-2 calls it `n_positions`, Llama `max_position_embeddings`."""
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


@torch.no_grad()
def evaluate(model: PreTrainedModel, dataset: BlockDataset, batch_size: int = 8) -> EvalResult:
    """Sum of token losses over every block, divided by the number of predicted tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = {k: v.to(device) for k, v in dataset[start : start + batch_size].items()}
        n_predicted = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        loss = model(**batch).loss
        total_loss += float(loss) * n_predicted
        total_tokens += n_predicted
    model.train(was_training)
    return EvalResult(loss=total_loss / total_tokens, tokens=total_tokens)
