"""The model card (`README.md`) written into every trained model directory.

It records what a reader needs to trust or reproduce the model: where it started (base or size),
the exact corpus files (sha256), how long it trained, its eval perplexity, and the command.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import tokenizers
import torch
import transformers

from model.training.corpus import CorpusFile
from model.training.perplexity import EvalResult


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states; filled in by `model.training.train` at the end of a run."""

    name: str
    base: str | None
    size: str | None
    size_description: str | None
    parameters: int
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    train: CorpusFile
    eval: CorpusFile
    train_tokens: int
    block_size: int
    steps: int
    epochs: float
    train_seconds: float
    stop_reason: str | None
    eval_before: EvalResult
    eval_after: EvalResult
    hyperparameters: dict[str, object]
    device: str
    precision: str
    saved_dtype: str
    weights_mb: float
    command: str


def write_model_card(out_dir: Path, facts: CardFacts) -> Path:
    """Write `README.md` in `out_dir` and return its path."""
    path = out_dir / "README.md"
    path.write_text(render_model_card(facts), encoding="utf-8")
    return path


def render_model_card(f: CardFacts) -> str:
    """The card as Markdown, with the Hugging Face metadata header."""
    origin = (
        f"fine-tuned from `{f.base}`" if f.base else f"trained from scratch, size `{f.size}` ({f.size_description})"
    )
    header = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gpt2, text-generation, stories, taleweaver]",
    ]
    if f.base:
        header.append(f"base_model: {f.base}")
    header.append("---")
    stop = f" (stopped before the planned end: {f.stop_reason})" if f.stop_reason else ""
    lines = [
        *header,
        "",
        f"# {f.name}",
        "",
        f"A GPT-2-architecture story model, {origin}, made with Taleweaver's `python -m model.training`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| origin | {origin} |",
        f"| parameters | {f.parameters:,} ({f.parameters / 1e6:.1f}M; {f.n_layer} layers, width {f.n_embd}, "
        f"{f.n_head} heads, context {f.n_positions}, vocabulary {f.vocab_size:,}) |",
        f"| weights on disk | {f.weights_mb:.1f} MB, stored as {f.saved_dtype} |",
        f"| eval perplexity | **{f.eval_after.perplexity:.2f}** (before training: {f.eval_before.perplexity:.2f}) |",
        f"| training | {f.steps:,} steps, {f.epochs:.2f} epochs, {_duration(f.train_seconds)}{stop} |",
        "",
        "## Data",
        "",
        "Plain UTF-8 text; a line holding only `<|endoftext|>` separates documents, and every",
        "training block that spans two documents holds the `<|endoftext|>` token between them.",
        "",
        "| role | file | sha256 | bytes | documents |",
        "| --- | --- | --- | --- | --- |",
        f"| train | `{f.train.path}` | `{f.train.sha256}` | {f.train.n_bytes:,} | {len(f.train.documents)} |",
        f"| eval | `{f.eval.path}` | `{f.eval.sha256}` | {f.eval.n_bytes:,} | {len(f.eval.documents)} |",
        "",
        f"Training tokens: {f.train_tokens:,}; evaluation tokens predicted: {f.eval_after.tokens:,}; "
        f"block size {f.block_size}.",
        "",
        "## Evaluation",
        "",
        "Exact corpus perplexity on the eval file (every predicted token counted once).",
        "",
        "| | eval loss (nats/token) | perplexity | bits per byte |",
        "| --- | --- | --- | --- |",
        _eval_row("before training", f.eval_before, f.eval.n_bytes),
        _eval_row("after training", f.eval_after, f.eval.n_bytes),
        "",
        "Perplexity per token depends on the tokenizer; bits per byte compare models whose tokenizers differ.",
        "",
        "## Training",
        "",
        f"Hugging Face `Trainer` on {f.device}, precision {f.precision}; {_duration(f.train_seconds)} "
        f"of training (evaluations included). transformers {transformers.__version__}, torch "
        f"{torch.__version__}, tokenizers {tokenizers.__version__}, Python {platform.python_version()}; "
        f"finished {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "| hyperparameter | value |",
        "| --- | --- |",
        *(f"| {key} | {value} |" for key, value in f.hyperparameters.items()),
        "",
        "Command:",
        "",
        "```sh",
        f.command,
        "```",
        "",
        "## Use",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{f.name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{f.name}", dtype=torch.float32)',
        'ids = tokenizer("Once upon a time", return_tensors="pt")',
        "out = model.generate(**ids, do_sample=True, top_k=40, temperature=0.8, max_new_tokens=80)",
        "print(tokenizer.decode(out[0]))",
        "```",
        "",
    ]
    return "\n".join(lines)


def _eval_row(label: str, result: EvalResult, n_bytes: int) -> str:
    return f"| {label} | {result.loss:.4f} | {result.perplexity:.2f} | {result.bits_per_byte(n_bytes):.3f} |"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
