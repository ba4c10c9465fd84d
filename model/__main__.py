"""The bot's model from the terminal, no Discord needed.

python -m model generate "prompt" [--strategy beam ...]   write a story
python -m model why "prompt"                              which words drive the next word
python -m model.training --help                              fine-tune or train a model
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

from core.config import ConfigError, load_config
from core.errors import TaleweaverError
from core.settings import FIELDS, SEED_MAX, DecodingSettings


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
        f"\n\n[{settings.summary().replace('seed=None', f'seed={seed}')}; {output.new_tokens} tokens in "
        f"{elapsed:.1f} s, {output.new_tokens / max(elapsed, 1e-9):.1f} tok/s; ended by {output.stop_reason}]",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["why"]:
        from model.explain.cli import main_why

        return main_why(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=os.environ.get("TALEWEAVER_CONFIG", "config.yaml"))
    parser.add_argument("--model", default=None, help="model directory or hub id (default: config's model.source)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("why", help="show which words of a prompt drive the next word (see `why --help`)")
    generate = commands.add_parser("generate", help="write a story from a prompt")
    generate.add_argument("prompt")
    _add_settings_options(generate)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return generate_main(args)
    except (TaleweaverError, ConfigError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
