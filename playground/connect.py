"""Point discord.py at a Discord API stand-in instead of discord.com.

The bot calls this once, before it logs in, when its config names an API base. It imports only
discord (and yarl, which discord.py's gateway already uses for its URL constant), so the bot does
not depend on the rest of the playground.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl


def point_discordpy_at(api_base: str) -> None:
    """Send REST calls (webhook follow-ups included) and the gateway connection to `api_base`.

    Two module constants are all discord.py hard-codes: `Route.BASE`, which every REST route,
    interaction callbacks and follow-ups included, is built on; and
    `DiscordWebSocket.DEFAULT_GATEWAY`, which a plain `Client` connects to without asking
    GET /gateway (only `AutoShardedClient` asks, and then the stand-in's answer points home too).
    """
    base = api_base.rstrip("/")
    discord.http.Route.BASE = f"{base}/api/v10"
    scheme = "wss" if base.startswith("https://") else "ws"
    host = base.split("://", 1)[-1]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{scheme}://{host}/gateway")
