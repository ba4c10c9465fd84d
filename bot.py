"""Taleweaver's composition root: read the config, load the model, open the store, run the bot.

    python bot.py [--config config.yaml]

The token comes from the DISCORD_TOKEN environment variable only, and is never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import discord  # noqa: E402
from discord.ext import commands  # noqa: E402

from core.config import Config, ConfigError, load_config  # noqa: E402
from core.errors import TaleweaverError  # noqa: E402
from core.service import ModelServiceAPI  # noqa: E402
from store import PreferencesStore  # noqa: E402

log = logging.getLogger("taleweaver")

INITIAL_EXTENSIONS = ("cogs.errors", "cogs.story", "cogs.settings", "cogs.why")
TOKEN_ENV = "DISCORD_TOKEN"


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


class TaleweaverBot(commands.Bot):
    """The bot: holds the config, the model service and the preferences store for the cogs."""

    def __init__(self, config: Config, service: ModelServiceAPI, preferences: PreferencesStore) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.none() | discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
        )
        self.config = config
        self.service = service
        self.preferences = preferences

    async def setup_hook(self) -> None:
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()

    async def sync_commands(self) -> None:
        """Guild sync is instant, so configured test servers get it; otherwise sync globally."""
        if self.config.discord.guild_ids:
            for guild_id in self.config.discord.guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d commands to server %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))

    async def on_ready(self) -> None:
        log.info("ready as %s in %d servers", self.user, len(self.guilds))


def configure_logging(level: str, token: str) -> None:
    discord.utils.setup_logging(level=getattr(logging, level), root=True)
    redact = RedactSecrets(token)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)


async def run(config: Config, token: str) -> None:
    from model.loading import load_model
    from model.service import ModelService
    from store import SqlitePreferencesStore

    if config.discord.api_base:
        from playground.connect import point_discordpy_at

        point_discordpy_at(config.discord.api_base)
        log.info("using the Discord API stand-in at %s", config.discord.api_base)
    # The model first: it is the likelier to fail, and nothing is open yet to keep the process
    # alive when it does (the store's database thread would).
    loaded = await asyncio.to_thread(
        load_model, config.model_source, config.model.device, config.model.dtype, config.model.compile
    )
    preferences = await SqlitePreferencesStore.open(
        config.resolve_path(config.database.path),
        config_defaults=config.defaults,
        max_new_tokens_cap=config.limits.max_new_tokens,
    )
    try:
        service = ModelService(loaded, config)
        await service.start()
        try:
            bot = TaleweaverBot(config, service, preferences)
            async with bot:
                await bot.start(token)
        finally:
            await service.close()
    finally:
        await preferences.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Taleweaver Discord bot.")
    parser.add_argument(
        "--config",
        default=os.environ.get("TALEWEAVER_CONFIG", "config.yaml"),
        help="path of config.yaml (default: %(default)s)",
    )
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config} is valid; model: {config.model_source}")
        return 0
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        print(
            f"No {TOKEN_ENV} is set. To try Taleweaver without Discord, run `make run` (it starts the local "
            'playground), or `python -m model generate "Once upon a time"`.',
            file=sys.stderr,
        )
        return 2
    configure_logging(config.log_level, token)
    try:
        asyncio.run(run(config, token))
    except discord.LoginFailure:
        log.error("Discord refused the token in %s; check it in the Developer Portal.", TOKEN_ENV)
        return 1
    except TaleweaverError as exc:
        log.error("%s", exc.message)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
