"""Taleweaver's composition root: read the config, load the model, open the store, run the bot.

    python bot.py [--config config.yaml]

The token comes from the DISCORD_TOKEN environment variable only, the PostgreSQL password (when
`database.url` is set) from TALEWEAVER_DATABASE_PASSWORD; neither is ever logged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import discord  # noqa: E402
from discord.ext import commands  # noqa: E402

from cogs.utils.checks import RESTARTING, Refused  # noqa: E402
from cogs.utils.dispatch import note_handler  # noqa: E402
from core.config import DATABASE_PASSWORD_ENV, Config, ConfigError, load_config  # noqa: E402
from core.errors import TaleweaverError  # noqa: E402
from core.metrics import COMMANDS, DISCORD_HTTP_ERRORS  # noqa: E402
from core.service import ModelServiceAPI  # noqa: E402
from ops.logs import configure_logging  # noqa: E402
from ops.loop_lag import watch_loop_lag  # noqa: E402
from ops.server import OpsServer  # noqa: E402
from store import PreferencesStore  # noqa: E402

# Taleweaver speaks no voice: discord.py's warnings about missing voice libraries are noise.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False

log = logging.getLogger("taleweaver")

INITIAL_EXTENSIONS = (
    "cogs.errors",
    "cogs.story",
    "cogs.story_threads",
    "cogs.settings",
    "cogs.why",
    "cogs.help",
    "cogs.unanswered",
)
TOKEN_ENV = "DISCORD_TOKEN"
SHUTDOWN_TIMEOUT_S = 10.0
"""The longest running stories get to tell their users about a restart before the bot closes."""


class TaleweaverBot(commands.AutoShardedBot):
    """The bot: holds the config, the model service and the preferences store for the cogs.

    Auto-sharded: one process runs every shard Discord recommends, or `discord.shard_ids` of
    `discord.shard_count` when the shards are split across processes.
    """

    def __init__(self, config: Config, service: ModelServiceAPI, preferences: PreferencesStore) -> None:
        shard_ids = config.discord.shard_ids
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.none() | discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            shard_count=config.discord.shard_count,
            shard_ids=list(shard_ids) if shard_ids is not None else None,
        )
        self.config = config
        self.service = service
        self.preferences = preferences
        self.shutting_down = False
        self._shutdown_task: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        self.tree.interaction_check = self._accepting_commands
        self._count_http_errors()
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()

    async def _accepting_commands(self, interaction: discord.Interaction) -> bool:
        if self.shutting_down:
            raise Refused(RESTARTING)
        return True

    def _count_http_errors(self) -> None:
        """Every failed Discord API call, by status, in `taleweaver_discord_http_errors_total`."""
        request = self.http.request

        async def counted(*args, **kwargs):
            try:
                return await request(*args, **kwargs)
            except discord.HTTPException as exc:
                DISCORD_HTTP_ERRORS.labels(status=str(exc.status)).inc()
                raise

        self.http.request = counted

    def dispatch(self, event_name: str, /, *args, **kwargs) -> None:
        if event_name == "interaction":  # before any view's callback can stop its view (cogs/unanswered.py)
            note_handler(args[0])
        super().dispatch(event_name, *args, **kwargs)

    async def on_app_command_completion(self, interaction: discord.Interaction, command) -> None:
        COMMANDS.labels(command=command.qualified_name, outcome="ok").inc()

    async def gateway_ready(self) -> bool:
        """Readiness: logged in, the gateway connected, and not on the way out."""
        return self.is_ready() and not self.is_closed() and not self.shutting_down

    def begin_shutdown(self, reason: str) -> None:
        """Stop taking commands, let running stories tell their users, then close (once)."""
        if self._shutdown_task is not None:
            return
        log.info("%s received: shutting down", reason)
        self.shutting_down = True
        self._shutdown_task = asyncio.create_task(self._shutdown(), name="shutdown")

    async def _shutdown(self) -> None:
        endings = [cog.shutdown() for cog in self.cogs.values() if hasattr(cog, "shutdown")]
        try:
            await asyncio.wait_for(asyncio.gather(*endings, return_exceptions=True), timeout=SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            log.warning("cogs took longer than %.0f s to wind down; closing anyway", SHUTDOWN_TIMEOUT_S)
        await self.close()

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


async def model_service(config: Config) -> ModelServiceAPI:
    """The remote model service when `service.url` is set (no model here: only aiohttp), else the
    model loaded in this process. A remote service that is down does not stop the bot starting."""
    if config.service.url:
        from yarl import URL

        from core.remote import RemoteModelService

        log.info("using the remote model service at %s", URL(config.service.url).with_user(None).origin())
        return RemoteModelService(config.service.url, config)
    from model.loading import load_model
    from model.service import ModelService

    loaded = await asyncio.to_thread(
        load_model,
        config.model_source,
        config.model.device,
        config.model.dtype,
        config.model.compile,
        config.model.onednn_linears,
        config.model.precision,
    )
    return ModelService(loaded, config)


async def open_preferences(config: Config) -> PreferencesStore:
    """PostgreSQL when `database.url` is set (every bot process shares it), else the SQLite file."""
    limits = {"config_defaults": config.defaults, "max_new_tokens_cap": config.limits.max_new_tokens}
    if config.database.url:
        from store.postgres import PostgresPreferencesStore

        password = os.environ.get(DATABASE_PASSWORD_ENV) or None
        store = await PostgresPreferencesStore.open(
            config.database.url, password=password, pool_size=config.database.pool_size, **limits
        )
        log.info("using PostgreSQL at %s", store.database.where)
        return store
    from store import SqlitePreferencesStore

    return await SqlitePreferencesStore.open(config.resolve_path(config.database.path), **limits)


async def run(config: Config, token: str) -> None:
    if config.discord.api_base:
        from playground.connect import point_discordpy_at

        point_discordpy_at(config.discord.api_base)
        log.info("using the Discord API stand-in at %s", config.discord.api_base)
    # The model first: it is the likelier to fail, and nothing is open yet to keep the process
    # alive when it does (the store's database thread would).
    service = await model_service(config)
    preferences = await open_preferences(config)
    ops, lag = None, None
    try:
        await service.start()
        bot = TaleweaverBot(config, service, preferences)
        ops = await start_ops(config, bot)
        lag = asyncio.create_task(watch_loop_lag(), name="loop-lag")
        stop_on_signals(bot)
        async with bot:
            await bot.start(token)
    finally:
        if lag is not None:
            lag.cancel()
        if ops is not None:
            await ops.stop()
        await service.close()
        await preferences.close()
        log.info("stopped cleanly")


async def start_ops(config: Config, bot: TaleweaverBot) -> OpsServer | None:
    """The health and metrics endpoint; a port that is taken is logged, and the bot serves on without it."""
    if not config.ops.enabled:
        return None
    checks = {"discord": bot.gateway_ready, "model": bot.service.ready, "database": bot.preferences.ping}
    server = OpsServer(checks, config.ops.host, config.ops.port)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot serve the operations endpoint on %s:%d (%s)", config.ops.host, config.ops.port, exc.strerror)
        return None
    return server


def stop_on_signals(bot: TaleweaverBot) -> None:
    """SIGTERM (docker stop, systemd, the playground) and SIGINT (Ctrl-C) both shut down cleanly."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda name=signal.Signals(signum).name: bot.begin_shutdown(name))


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
    configure_logging(config.log_level, config.log_format, token, os.environ.get(DATABASE_PASSWORD_ENV, ""))
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
