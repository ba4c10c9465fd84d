"""`python -m model why "prompt"`: the `/why` explanation as bars in the terminal (parsed by
`model/__main__.py`, which owns the options every command shares).

Same computation and same text bars as the Discord reply (`core.bars`), with the PNGs optionally
written to files. Exit status: 0 done, 2 a user error (bad prompt, model not found).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from core.bars import render_bars, render_predictions
from core.config import ConfigError, load_config
from core.errors import TaleweaverError

DESCRIPTION = "Show which words of a prompt drive the model's next word."


def add_why_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `why` after the ones every `python -m model` command shares (`--config`, `--model`)."""
    parser.add_argument("prompt", help="the text whose next-word prediction to explain")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: %(default)s)")
    parser.add_argument("--budget", type=float, help="time budget in seconds (default: why.time_budget_s)")
    parser.add_argument("--width", type=int, default=30, help="bar width in characters (default: %(default)s)")
    parser.add_argument("--png", type=Path, help="also write the bar chart to this PNG file")
    parser.add_argument("--attention-png", type=Path, help="also write the attention grid to this PNG file")


def run_why(args: argparse.Namespace) -> int:
    """Run one explanation from the parsed command line and print it; returns the exit status."""
    try:
        return _run(args)
    except (TaleweaverError, ConfigError) as exc:
        print(getattr(exc, "message", str(exc)), file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch  # after argument parsing, so `--help` is instant

    from model.explain.importance import explain
    from model.loading import load_model

    config = load_config(args.config if Path(args.config).exists() else None)
    torch.set_num_threads(config.model.cpu_threads)
    why = config.why if args.budget is None else config.why.model_copy(update={"time_budget_s": args.budget})
    model = config.model
    loaded = load_model(args.model or config.model_source, model.device, model.dtype, precision=model.precision)
    result = explain(
        loaded,
        args.prompt,
        config=why,
        max_prompt_tokens=config.limits.max_prompt_tokens,
        seed=args.seed,
        progress=_progress_printer(),
        cancel=threading.Event(),
        view="attention" if args.attention_png else "bars",
        cache_dir=config.cache_dir,
    )
    print(file=sys.stderr)
    print(f"Prompt: {args.prompt}")
    print(
        f"Which words drive the next word ({len(result.words)} words; ◀ most important; "
        "σ = noise the word tolerates, smaller = more important):"
    )
    for line in render_bars(result.words, args.width):
        print("  " + line)
    print("Tokens: " + " | ".join(f"{token!r} σ {sigma:.3g}" for token, sigma in result.token_sigmas))
    print("Most likely next tokens:")
    for line in render_predictions(result.top_predictions):
        print("  " + line)
    for note in result.notes:
        print(note)
    for path, data in ((args.png, result.image_png), (args.attention_png, result.attention_png)):
        if path is not None and data is not None:
            path.write_bytes(data)
            print(f"wrote {path}")
    return 0


def _progress_printer() -> Callable[[float, str], None]:
    interactive = sys.stderr.isatty()

    def show(fraction: float, status: str) -> None:
        if interactive:
            print(f"\r{100 * fraction:3.0f}%  {status[:70]:<70}", end="", file=sys.stderr, flush=True)

    return show
