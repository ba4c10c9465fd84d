"""The driver API under /_playground: act as a user, read channels and breaches, follow events.

The web page and end-to-end tests use the same routes; README.md lists them with their payloads.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from playground.standin.actions import Actions
from playground.standin.errors import DriverError
from playground.standin.interactions import InteractionRecord
from playground.standin.rest import json_reply
from playground.standin.state import StandInState
from playground.standin.world import APPLICATION_ID, GUILD_ID, MANAGE_GUILD, MANAGE_MESSAGES

PREFIX = "/_playground"
MAX_WAIT_S = 30.0
SSE_KEEPALIVE_S = 15.0


class DriverApi:
    """Routes for drivers; `closing` ends the event streams when the server stops."""

    def __init__(self, state: StandInState, actions: Actions) -> None:
        self._state = state
        self._actions = actions
        self.closing = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/state", self.overview),
            web.post(f"{PREFIX}/interactions", self.interact),
            web.get(f"{PREFIX}/interactions/{{interaction_id}}", self.interaction),
            web.get(f"{PREFIX}/channels/{{channel}}/messages", self.channel_messages),
            web.get(f"{PREFIX}/messages/{{message_id}}", self.message),
            web.get(f"{PREFIX}/breaches", self.breaches),
            web.delete(f"{PREFIX}/breaches", self.clear_breaches),
            web.get(f"{PREFIX}/events", self.events),
            web.get(f"{PREFIX}/events/stream", self.event_stream),
            web.post(f"{PREFIX}/gateway/reconnect", self.reconnect),
        ]

    async def overview(self, request: web.Request) -> web.Response:
        """Who and what there is: the bot, the guild, channels, users, the bot's commands, the limits."""
        state, world = self._state, self._state.world
        config = state.config
        return json_reply(
            {
                "application_id": str(APPLICATION_ID),
                "bot": {"id": str(world.bot.id), "name": world.bot.display_name, "connected": state.hub.connected},
                "guild": {"id": str(GUILD_ID), "name": world.guild_name},
                "channels": [
                    {
                        "id": str(c.id),
                        "name": c.name,
                        "topic": c.topic,
                        "type": c.type,
                        "parent_id": str(c.parent_id) if c.parent_id else None,
                    }
                    for c in world.channels
                ],
                "users": [
                    {
                        "id": str(u.id),
                        "name": u.name,
                        "display_name": u.display_name,
                        "permissions": str(world.permissions_of(u.id)),
                        "manage_guild": bool(world.permissions_of(u.id) & MANAGE_GUILD),
                        "manage_messages": bool(world.permissions_of(u.id) & MANAGE_MESSAGES),
                    }
                    for u in world.people
                ],
                "commands": state.commands.usable(),
                "limits": {
                    "ack_deadline_s": config.ack_deadline_s,
                    "token_lifetime_s": config.token_lifetime_s,
                    "attachment_size_limit": config.attachment_size_limit,
                },
                "last_event_seq": state.events.last_seq,
            }
        )

    async def interact(self, request: web.Request) -> web.Response:
        """Start an interaction as a user; with "wait": true, answer once it has its initial response."""
        body = await _json_body(request)
        record = await self._start(body)
        if body.get("wait") or record.type == 4:
            await self._settled(record)
        return json_reply({"interaction": record.to_json()}, 201)

    async def _start(self, body: dict[str, Any]) -> InteractionRecord:
        kind, user = body.get("type"), str(body.get("user", ""))
        channel = str(body.get("channel", "general"))
        if kind == "command":
            return await self._actions.command(user, channel, _required(body, "command"), body.get("options") or {})
        if kind == "modified command":
            return await self._actions.modified_command(
                user, channel, _required(body, "command"), body.get("raw_options") or []
            )
        if kind == "autocomplete":
            return await self._actions.autocomplete(
                user, channel, _required(body, "command"), body.get("options") or {}, _required(body, "focused")
            )
        if kind == "component":
            return await self._actions.component(
                user, int(_required(body, "message_id")), _required(body, "custom_id"), body.get("values") or []
            )
        if kind == "modal":
            return await self._actions.submit_modal(user, _required(body, "custom_id"), body.get("values") or {})
        raise DriverError(400, "type must be one of command, modified command, autocomplete, component, modal")

    async def _settled(self, record: InteractionRecord) -> None:
        """Wait for the initial response; the deadline timer settles it at the latest."""
        await asyncio.wait_for(record.settled.wait(), self._state.config.ack_deadline_s + 1.0)

    async def interaction(self, request: web.Request) -> web.Response:
        try:
            record = self._state.interactions.get(int(request.match_info["interaction_id"]))
        except (KeyError, ValueError):
            raise DriverError(404, "no such interaction") from None
        if request.query.get("wait"):
            await self._settled(record)
        return json_reply({"interaction": record.to_json()})

    async def channel_messages(self, request: web.Request) -> web.Response:
        """Oldest first; `?as=user` leaves out the ephemeral messages that user cannot see."""
        try:
            channel = self._state.world.find_channel(request.match_info["channel"])
        except KeyError:
            raise DriverError(404, "no such channel") from None
        viewer = self._viewer(request)
        messages = [
            m for m in self._state.messages.in_channel(channel.id) if viewer is None or m.visible_to in (None, viewer)
        ]
        return json_reply({"messages": [self._state.message_view(m) for m in messages]})

    def _viewer(self, request: web.Request) -> int | None:
        ref = request.query.get("as")
        if not ref:
            return None
        try:
            return self._state.world.find_user(ref).id
        except KeyError:
            raise DriverError(404, f"no user {ref!r}") from None

    async def message(self, request: web.Request) -> web.Response:
        try:
            message = self._state.messages.get(int(request.match_info["message_id"]))
        except (KeyError, ValueError):
            raise DriverError(404, "no such message") from None
        return json_reply(self._state.message_view(message))

    async def breaches(self, request: web.Request) -> web.Response:
        return json_reply({"breaches": [breach.to_json() for breach in self._state.breaches.all()]})

    async def clear_breaches(self, request: web.Request) -> web.Response:
        self._state.breaches.clear()
        return web.Response(status=204)

    async def events(self, request: web.Request) -> web.Response:
        """Long poll: events after `after`, waiting up to `timeout` seconds for the first one."""
        after = int(request.query.get("after", 0))
        timeout = min(float(request.query.get("timeout", 0)), MAX_WAIT_S)
        events = await self._state.events.wait_since(after, timeout)
        return json_reply({"events": [e.to_json() for e in events], "last_seq": self._state.events.last_seq})

    async def event_stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for the web page; resumes after Last-Event-ID when the browser reconnects."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        seq = int(request.headers.get("Last-Event-ID") or request.query.get("after") or self._state.events.last_seq)
        await response.write(b"retry: 1000\n\n")
        while not self.closing.is_set():
            events = await self._state.events.wait_since(seq, SSE_KEEPALIVE_S)
            chunk = "".join(f"id: {e.seq}\nevent: {e.kind}\ndata: {json.dumps(e.data)}\n\n" for e in events)
            try:
                await response.write((chunk or ": keepalive\n\n").encode())
            except ConnectionResetError:
                break
            seq = events[-1].seq if events else seq
        return response

    async def reconnect(self, request: web.Request) -> web.Response:
        """Send RECONNECT (op 7) to the bot, which should come back with RESUME."""
        return json_reply({"connections": await self._state.hub.request_reconnect()})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        raise DriverError(400, f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise DriverError(400, "the body must be a JSON object")
    return body


def _required(body: dict[str, Any], key: str) -> Any:
    if body.get(key) in (None, ""):
        raise DriverError(400, f"{key!r} is required")
    return body[key]
