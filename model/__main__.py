"""The bot's model from the terminal, no Discord needed.

python -m model generate "prompt" [--strategy beam ...]   write a story
python -m model why "prompt"                              which words drive the next word
python -m model.training --help                           fine-tune or train a model

--config and --model go before or after the command: `python -m model --model DIR why "..."` and
`python -m model why "..." --model DIR` are the same.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

from core.config import ROOT, ConfigError, load_config
from core.errors import TaleweaverError
from core.settings import FIELDS, SEED_MAX, DecodingSettings
from model.explain.cli import DESCRIPTION, add_why_arguments, run_why


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    for name, spec in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = str if spec.choices else spec.kind
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            choices=spec.choices,
            default=None,
            help=f"{spec.help} ({spec.describe_range()})",
        )


def generate_main(args: argparse.Namespace) -> int:
    from model.generation import RowJob, generate_batch
    from model.loading import load_model

    config = load_config(args.config)
    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    settings = DecodingSettings.from_mapping(overrides, base=config.defaults)
    seed = settings.seed if settings.seed is not None else random.randrange(SEED_MAX)
    model = config.model
    loaded = load_model(args.model or config.model_source, model.device, model.dtype, precision=model.precision)
    started = time.monotonic()
    job = RowJob(
        prompt=args.prompt, settings=settings, seed=seed, on_text=lambda delta: print(delta, end="", flush=True)
    )
    print(args.prompt, end="", flush=True)
    output = generate_batch(loaded, [job])[0]
    elapsed = time.monotonic() - started
    print(
        f"\n\n[{settings.replace(seed=seed).summary()}; {output.new_tokens} tokens in "
        f"{elapsed:.1f} s, {output.new_tokens / max(elapsed, 1e-9):.1f} tok/s; ended by {output.stop_reason}]",
        file=sys.stderr,
    )
    return 0


def add_shared_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """`--config` and `--model`, accepted before the command and after it alike. Only the main
    parser holds the defaults; a command's copies set a value only when given there."""
    config = os.environ.get("TALEWEAVER_CONFIG", str(ROOT / "config.yaml"))
    parser.add_argument(
        "--config",
        default=config if defaults else argparse.SUPPRESS,
        help="config file (default: $TALEWEAVER_CONFIG or the checkout's config.yaml)",
    )
    parser.add_argument(
        "--model",
        default=None if defaults else argparse.SUPPRESS,
        help="model directory or hub id (default: model.source from the config)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_shared_arguments(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write a story from a prompt")
    add_shared_arguments(generate, defaults=False)
    generate.add_argument("prompt")
    _add_settings_options(generate)
    why = commands.add_parser("why", help="show which words of a prompt drive the next word", description=DESCRIPTION)
    add_shared_arguments(why, defaults=False)
    add_why_arguments(why)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "why":
        return run_why(args)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return generate_main(args)
    except (TaleweaverError, ConfigError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
