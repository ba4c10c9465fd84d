"""Slash-command options that declare the limits actually in force.

A range written in a decorator is fixed when the module is imported, before `config.yaml` is
read, so it can only say what the settings type allows (a length of 1-1024). Discord's client
enforces the declared range before a value is sent, so it should be the bot's real limit
(`limits.max_new_tokens`, the prompt's length): each cog narrows its own copies of its commands'
options when it is created. Server limits cannot be declared this way (one global command
serves every server); they are checked after sending, and the reply says so.
"""

from __future__ import annotations

import dataclasses

from discord import app_commands

from core.config import Config
from core.prompts import MAX_CHARS_PER_TOKEN

DISCORD_STRING_MAX = 6000
"""The longest string option Discord accepts."""


def narrow_option(
    command: app_commands.Command,
    name: str,
    *,
    max_value: int | float | None = None,
    description: str | None = None,
) -> None:
    """Lower one option's declared maximum (a string's length, a number's value) and reword its help.

    The cog's commands are copies made for this cog, with their own table of options, so the
    option is replaced there rather than changed in place: another cog (another config) is untouched.
    """
    params = command._params  # discord.py keeps no public setter for a parameter's range
    param = params[name]
    changes: dict[str, object] = {}
    if max_value is not None:
        changes["max_value"] = max_value if param.max_value is None else min(param.max_value, max_value)
    if description is not None:
        changes["description"] = description[:100]
    params[name] = dataclasses.replace(param, **changes)


def prompt_chars(config: Config) -> int:
    """The most characters a prompt can have and still fit the token limit (the service's first check)."""
    return min(DISCORD_STRING_MAX, config.limits.max_prompt_tokens * MAX_CHARS_PER_TOKEN)


def prompt_help(config: Config, what: str) -> str:
    """Help for a prompt option: its real limit is in tokens, which only the bot can count. Discord's
    client shows the declared length in characters beside it, so the help gives words, not a second
    character count that would contradict it."""
    tokens = config.limits.max_prompt_tokens
    return f"{what} At most {tokens} tokens (about {round(tokens * 0.75)} words), counted after sending."
