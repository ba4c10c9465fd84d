"""Discord's REST routes under /api/v10 that discord.py 2.x uses for a slash-command bot.

Login (users/@me, the application), the gateway URL, command sync, interaction callbacks and
webhook follow-ups, channel messages, and a few reads of the guild. Anything else answers 404
and is logged, so a bot that needs more shows it at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from playground.standin import breaches as rules
from playground.standin import limits
from playground.standin.errors import ApiError, DriverError, invalid_form_body, unknown
from playground.standin.multipart import read_body
from playground.standin.payloads import (
    application_json,
    channel_json,
    guild_json,
    member_json,
    role_json,
    user_json,
)
from playground.standin.responses import Responder
from playground.standin.state import StandInState
from playground.standin.threads import start_thread_from_message
from playground.standin.world import APPLICATION_ID, Guild

log = logging.getLogger(__name__)

API = "/api/v10"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAUTHENTICATED = ("/gateway", "/interactions/", "/webhooks/")
"""Routes discord.py calls without the bot token: the gateway URL, and interaction-token routes."""


def json_reply(body: Any, status: int = 200) -> web.Response:
    """JSON with Content-Type exactly `application/json`: discord.py parses nothing else as JSON."""
    return web.Response(body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"})


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn our exceptions into answers: Discord's error body, or a plain one for drivers."""
    try:
        return await handler(request)
    except ApiError as error:
        return json_reply(error.to_json(), error.status)
    except DriverError as error:
        return json_reply({"error": error.message}, error.status)
    except json.JSONDecodeError as error:
        return json_reply({"code": 50109, "message": f"The request body contains invalid JSON ({error})"}, 400)


class DiscordApi:
    """The REST half of the stand-in; `routes()` lists what it serves."""

    def __init__(self, state: StandInState, responder: Responder) -> None:
        self._state = state
        self._responder = responder

    def routes(self) -> list[web.RouteDef]:
        r = web
        app = "/applications/{app_id}"
        hook = "/webhooks/{app_id}/{token}"
        table = [
            r.get("/users/@me", self.me),
            r.get("/users/{user_id}", self.user),
            r.get("/oauth2/applications/@me", self.application),
            r.get("/applications/@me", self.application),
            r.get("/gateway", self.gateway),
            r.get("/gateway/bot", self.gateway_bot),
            r.get(f"{app}/commands", self.list_commands),
            r.put(f"{app}/commands", self.put_commands),
            r.post(f"{app}/commands", self.post_command),
            r.get(f"{app}/commands/{{command_id}}", self.get_command),
            r.patch(f"{app}/commands/{{command_id}}", self.patch_command),
            r.delete(f"{app}/commands/{{command_id}}", self.delete_command),
            r.get(f"{app}/guilds/{{guild_id}}/commands/permissions", self.command_permissions),
            r.get(f"{app}/guilds/{{guild_id}}/commands", self.list_commands),
            r.put(f"{app}/guilds/{{guild_id}}/commands", self.put_commands),
            r.post(f"{app}/guilds/{{guild_id}}/commands", self.post_command),
            r.get(f"{app}/guilds/{{guild_id}}/commands/{{command_id}}", self.get_command),
            r.patch(f"{app}/guilds/{{guild_id}}/commands/{{command_id}}", self.patch_command),
            r.delete(f"{app}/guilds/{{guild_id}}/commands/{{command_id}}", self.delete_command),
            r.post("/interactions/{interaction_id}/{token}/callback", self.interaction_callback),
            r.post(hook, self.followup),
            r.get(f"{hook}/messages/{{message}}", self.get_webhook_message),
            r.patch(f"{hook}/messages/{{message}}", self.edit_webhook_message),
            r.delete(f"{hook}/messages/{{message}}", self.delete_webhook_message),
            r.get("/channels/{channel_id}", self.channel),
            r.post("/channels/{channel_id}/messages", self.create_message),
            r.get("/channels/{channel_id}/messages", self.list_messages),
            r.get("/channels/{channel_id}/messages/{message_id}", self.get_message),
            r.patch("/channels/{channel_id}/messages/{message_id}", self.edit_message),
            r.delete("/channels/{channel_id}/messages/{message_id}", self.delete_message),
            r.post("/channels/{channel_id}/typing", self.typing),
            r.post("/channels/{channel_id}/messages/{message_id}/threads", self.start_thread),
            r.get("/guilds/{guild_id}", self.guild),
            r.get("/guilds/{guild_id}/channels", self.guild_channels),
            r.get("/guilds/{guild_id}/roles", self.guild_roles),
            r.get("/guilds/{guild_id}/members/{user_id}", self.guild_member),
        ]
        routes = [web.route(d.method, API + d.path, self._authenticated(d.path, d.handler)) for d in table]
        return routes + [web.route("*", API + "/{tail:.*}", self.not_implemented)]

    def _authenticated(self, path: str, handler: Handler) -> Handler:
        if path.startswith(UNAUTHENTICATED):
            return handler

        async def checked(request: web.Request) -> web.StreamResponse:
            token = request.headers.get("Authorization", "").removeprefix("Bot ").strip()
            expected = self._state.config.bot_token
            if not token or (expected is not None and token != expected):
                raise ApiError(401, 0, "401: Unauthorized")
            return await handler(request)

        return checked

    async def not_implemented(self, request: web.Request) -> web.Response:
        log.warning("stand-in: %s %s is not implemented", request.method, request.path)
        return json_reply({"code": 0, "message": "404: Not Found (not implemented by the stand-in)"}, 404)

    async def me(self, request: web.Request) -> web.Response:
        return json_reply(user_json(self._state.world.bot) | {"verified": True, "mfa_enabled": False})

    async def user(self, request: web.Request) -> web.Response:
        user = self._state.world.users.get(_int(request, "user_id"))
        if user is None:
            raise unknown("user")
        return json_reply(user_json(user))

    async def application(self, request: web.Request) -> web.Response:
        return json_reply(application_json(self._state.world))

    async def gateway(self, request: web.Request) -> web.Response:
        return json_reply({"url": self._state.hub.url})

    async def gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_reply({"url": self._state.hub.url, "shards": 1, "session_start_limit": limit})

    def _scope(self, request: web.Request) -> int | None:
        if _int(request, "app_id") != APPLICATION_ID:
            raise ApiError(403, 50001, "Missing Access")
        if "guild_id" not in request.match_info:
            return None
        guild_id = _int(request, "guild_id")
        if guild_id not in {guild.id for guild in self._state.world.guilds}:
            raise ApiError(403, 50001, "Missing Access")
        return guild_id

    async def list_commands(self, request: web.Request) -> web.Response:
        return json_reply(self._state.commands.scope(self._scope(request)))

    async def put_commands(self, request: web.Request) -> web.Response:
        guild_id = self._scope(request)
        commands = await request.json()
        self._check_commands(commands, request)
        stored = self._state.commands.replace(guild_id, commands)
        self._state.events.publish(
            "commands_update", {"guild_id": str(guild_id) if guild_id else None, "commands": stored}
        )
        return json_reply(stored)

    async def post_command(self, request: web.Request) -> web.Response:
        guild_id = self._scope(request)
        command = await request.json()
        self._check_commands([command], request)
        stored = self._state.commands.upsert(guild_id, command)
        self._state.events.publish(
            "commands_update",
            {"guild_id": str(guild_id) if guild_id else None, "commands": self._state.commands.scope(guild_id)},
        )
        return json_reply(stored, 201)

    async def get_command(self, request: web.Request) -> web.Response:
        return json_reply(self._command(request))

    async def patch_command(self, request: web.Request) -> web.Response:
        guild_id, command = self._scope(request), self._command(request)
        merged = command | await request.json()
        self._check_commands([merged], request)
        return json_reply(self._state.commands.upsert(guild_id, merged))

    async def delete_command(self, request: web.Request) -> web.Response:
        self._state.commands.delete(self._scope(request), int(self._command(request)["id"]))
        return web.Response(status=204)

    async def command_permissions(self, request: web.Request) -> web.Response:
        self._scope(request)
        return json_reply([])

    def _command(self, request: web.Request) -> dict[str, Any]:
        try:
            return self._state.commands.find_by_id(self._scope(request), _int(request, "command_id"))
        except KeyError:
            raise unknown("command") from None

    def _check_commands(self, commands: list[dict[str, Any]], request: web.Request) -> None:
        found = limits.check_commands(commands)
        for breach in found:
            self._state.breaches.record(rules.COMMANDS, breach, route=_route(request))
        if found:
            raise invalid_form_body(found)

    async def interaction_callback(self, request: web.Request) -> web.Response:
        payload, uploads = await read_body(request)
        body = await self._responder.interaction_callback(
            _int(request, "interaction_id"), request.match_info["token"], payload, uploads, _route(request)
        )
        if request.query.get("with_response", "").lower() in ("1", "true"):
            return json_reply(body)
        return web.Response(status=204)

    async def followup(self, request: web.Request) -> web.Response:
        payload, uploads = await read_body(request)
        message = await self._responder.followup(
            _int(request, "app_id"), request.match_info["token"], payload, uploads, _route(request)
        )
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_reply(message)
        return web.Response(status=204)

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        return json_reply(
            await self._responder.get_webhook_message(
                _int(request, "app_id"), request.match_info["token"], request.match_info["message"], _route(request)
            )
        )

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        payload, uploads = await read_body(request)
        return json_reply(
            await self._responder.edit_webhook_message(
                _int(request, "app_id"),
                request.match_info["token"],
                request.match_info["message"],
                payload,
                uploads,
                _route(request),
            )
        )

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        await self._responder.delete_webhook_message(
            _int(request, "app_id"), request.match_info["token"], request.match_info["message"], _route(request)
        )
        return web.Response(status=204)

    async def channel(self, request: web.Request) -> web.Response:
        try:
            return json_reply(channel_json(self._state.world.find_channel(_int(request, "channel_id"))))
        except KeyError:
            raise unknown("channel") from None

    async def create_message(self, request: web.Request) -> web.Response:
        payload, uploads = await read_body(request)
        return json_reply(
            await self._responder.create_channel_message(_int(request, "channel_id"), payload, uploads, _route(request))
        )

    async def list_messages(self, request: web.Request) -> web.Response:
        channel_id = _int(request, "channel_id")
        await self.channel(request)
        messages = [m for m in self._state.messages.in_channel(channel_id) if not m.visible_to]
        limit = int(request.query.get("limit", 50))
        return json_reply([self._state.message_json(m) for m in reversed(messages)][:limit])

    async def get_message(self, request: web.Request) -> web.Response:
        message = self._responder.channel_message(_int(request, "channel_id"), _int(request, "message_id"))
        return json_reply(self._state.message_json(message))

    async def edit_message(self, request: web.Request) -> web.Response:
        payload, uploads = await read_body(request)
        return json_reply(
            await self._responder.edit_channel_message(
                _int(request, "channel_id"), _int(request, "message_id"), payload, uploads, _route(request)
            )
        )

    async def delete_message(self, request: web.Request) -> web.Response:
        await self._responder.delete_channel_message(_int(request, "channel_id"), _int(request, "message_id"))
        return web.Response(status=204)

    async def start_thread(self, request: web.Request) -> web.Response:
        payload, _ = await read_body(request)
        thread = await start_thread_from_message(
            self._state, _int(request, "channel_id"), _int(request, "message_id"), payload, _route(request)
        )
        return json_reply(thread, 201)

    async def typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    def _guild(self, request: web.Request) -> Guild:
        try:
            return self._state.world.guild(_int(request, "guild_id"))
        except KeyError:
            raise unknown("guild") from None

    async def guild(self, request: web.Request) -> web.Response:
        return json_reply(guild_json(self._state.world, self._guild(request)))

    async def guild_channels(self, request: web.Request) -> web.Response:
        channels = self._state.world.channels_of(self._guild(request).id)
        return json_reply([channel_json(c) for c in channels if not c.is_thread])

    async def guild_roles(self, request: web.Request) -> web.Response:
        return json_reply([role_json(role) for role in self._state.world.roles_of(self._guild(request).id)])

    async def guild_member(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        try:
            member = self._state.world.member(_int(request, "user_id"))
        except KeyError:
            raise unknown("member") from None
        return json_reply(member_json(self._state.world, member, guild_id=guild.id))


def _int(request: web.Request, key: str) -> int:
    """A snowflake from the path; a malformed one is a 404, as on Discord."""
    try:
        return int(request.match_info[key])
    except ValueError:
        raise ApiError(404, 0, "404: Not Found") from None


def _route(request: web.Request) -> str:
    """Method and path with the interaction token cut short, for breach records and logs."""
    path = request.path.removeprefix(API)
    token = request.match_info.get("token")
    if token:
        path = path.replace(token, token[:8] + "…")
    return f"{request.method} {path}"
