"""Logging: plain or JSON lines, colour only on a terminal, secrets redacted, no voice warnings."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replaces the bot token, and every interaction token, wherever they would appear in a log
    record (a second line of defence: nothing logs them on purpose, but discord.py logs gateway
    events and request URLs at DEBUG). An interaction token lets whoever holds it edit the bot's
    replies for 15 minutes."""

    INTERACTION_TOKENS = (
        # In URLs: /interactions/<id>/<token>/callback and /webhooks/<application id>/<token>/…
        (re.compile(r"(/(?:interactions|webhooks)/\d+/)[^/\s?'\"]+"), r"\1[redacted]"),
        # In gateway payloads, printed as a dict or as JSON: 'token': '…' or "token": "…"
        (re.compile(r"""(['"]token['"]\s*:\s*)(['"])[^'"]*\2"""), r"\1\2[redacted]\2"),
    )

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = original = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "[redacted]")
        for pattern, replacement in self.INTERACTION_TOKENS:
            message = pattern.sub(replacement, message)
        if message != original:
            record.msg, record.args = message, None
        return True


class CountRateLimits(logging.Filter):
    """discord.py retries a 429 itself and only logs it: count those lines as rate limits."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "discord.http" and "rate limited" in record.getMessage():
            from core.metrics import DISCORD_RATE_LIMITS

            DISCORD_RATE_LIMITS.inc()
        return True


def wants_colour(stream: TextIO) -> bool:
    """Colour codes only for a person at a terminal (https://no-color.org), never in a file or a pipe."""
    return (
        hasattr(stream, "isatty")
        and stream.isatty()
        and not os.environ.get("NO_COLOR")
        and (os.environ.get("TERM") != "dumb")
    )


def configure_logging(level: str, fmt: str = "text", *secrets: str, stream: TextIO | None = None) -> None:
    """One handler on the root logger, in the format asked for, redacting `secrets`."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"})
        )
    elif wants_colour(stream):
        from discord.utils import _ColourFormatter  # discord.py's own, as its setup_logging uses on a terminal

        handler.setFormatter(_ColourFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets(*secrets))
    handler.addFilter(CountRateLimits())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
