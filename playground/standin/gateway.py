"""The gateway websocket, protocol v10: HELLO, heartbeats, IDENTIFY → READY and GUILD_CREATE, RESUME.

Shards as on Discord: IDENTIFY's `shard: [id, count]` (default [0, 1]) gives a session the guilds
with `(guild_id >> 22) % count == id`, and each guild's events go to the session of its shard, so
a bot split across processes gets each guild's interactions in one process only.

discord.py asks for `compress=zlib-stream` when no zstd module is installed: then every frame is
binary, one shared zlib stream per connection, each message ending in a Z_SYNC_FLUSH. Without
that parameter (or with a compression we do not offer) frames are plain JSON text, which
discord.py reads too.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from playground.standin.events import EventLog
from playground.standin.payloads import guild_create_json, member_json, user_json
from playground.standin.world import APPLICATION_ID, GUILD_ID, Guild, World, shard_of

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11
CLOSE_DECODE_ERROR, CLOSE_NOT_AUTHENTICATED, CLOSE_AUTHENTICATION_FAILED, CLOSE_ALREADY_AUTHENTICATED = (
    4002,
    4003,
    4004,
    4005,
)
CLOSE_INVALID_SHARD = 4010
HEARTBEAT_ACK_DELAY_S = 0.05
"""A network's worth of delay. discord.py's heartbeat thread notes the send time only after the
send completes; an ACK that arrives before then (loopback is that fast) is measured against the
previous beat and logged as "Can't keep up, … 41s behind"."""
CLEAN_CLOSES = (WSCloseCode.OK, WSCloseCode.GOING_AWAY)
"""A client that closes with 1000 or 1001 ends its session: it cannot be resumed (as on Discord)."""


class Connection:
    """One websocket; serialises sends so the zlib stream stays in order."""

    def __init__(self, ws: web.WebSocketResponse, compress: bool) -> None:
        self.ws = ws
        self.compression = "zlib-stream" if compress else None
        self._compressor = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return
            try:
                if self._compressor is None:
                    await self.ws.send_str(text)
                else:
                    data = self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
            except ConnectionResetError:
                log.info("gateway: connection closed while sending; the session keeps the event for RESUME")


@dataclass
class Session:
    """A gateway session: it outlives its connection, so a client can RESUME and get what it missed."""

    id: str
    token: str
    shard: tuple[int, int] = (0, 1)
    """[shard id, shard count] from IDENTIFY."""
    seq: int = 0
    connection: Connection | None = None
    sent: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=1000))

    def serves(self, guild_id: int) -> bool:
        shard_id, shard_count = self.shard
        return shard_of(guild_id, shard_count) == shard_id

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.sent.append(payload)
        if self.connection is not None:
            await self.connection.send(payload)


class GatewayHub:
    """Every session, and the current one (the latest to identify or resume); a guild's events go to
    the latest session whose shard holds that guild."""

    def __init__(self, world: World, events: EventLog, heartbeat_interval_ms: int, bot_token: str | None) -> None:
        self._world = world
        self._events = events
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._bot_token = bot_token
        self._sessions: dict[str, Session] = {}
        self._connections: set[Connection] = set()
        self.current: Session | None = None
        self.url = ""
        """The websocket URL, set once the server listens; sent as resume_gateway_url."""

    @property
    def connected(self) -> bool:
        return self.current is not None and self.current.connection is not None

    def session_for(self, guild_id: int) -> Session | None:
        """The session that receives this guild's events: the latest one of its shard, if any."""
        serving = [session for session in self._sessions.values() if session.serves(guild_id)]
        return serving[-1] if serving else None

    def connected_to(self, guild_id: int) -> bool:
        session = self.session_for(guild_id)
        return session is not None and session.connection is not None

    async def dispatch(self, event: str, data: dict[str, Any], guild_id: int = GUILD_ID) -> bool:
        """Send a guild's event to its shard's session (buffered if it is between connections); False if none."""
        session = self.session_for(guild_id)
        if session is None:
            return False
        await session.dispatch(event, data)
        return True

    async def request_reconnect(self) -> int:
        """Ask every connected client to reconnect (op 7), as Discord does before it moves a session."""
        connections = list(self._connections)
        for connection in connections:
            await connection.send({"op": RECONNECT, "d": None, "s": None, "t": None})
        return len(connections)

    async def close_all(self) -> None:
        for connection in list(self._connections):
            await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"stand-in stopping")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        connection = Connection(ws, compress=request.query.get("compress") == "zlib-stream")
        if request.query.get("encoding", "json") != "json":
            await ws.close(code=CLOSE_DECODE_ERROR, message=b"only encoding=json is supported")
            return ws
        self._connections.add(connection)
        session: Session | None = None
        try:
            await connection.send(
                {"op": HELLO, "d": {"heartbeat_interval": self._heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                session = await self._on_payload(connection, session, json.loads(message.data))
        finally:
            self._connections.discard(connection)
            if session is not None and session.connection is connection:
                self._detach(session, ws.close_code)
        return ws

    async def _on_payload(
        self, connection: Connection, session: Session | None, payload: dict[str, Any]
    ) -> Session | None:
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            await asyncio.sleep(HEARTBEAT_ACK_DELAY_S)
            await connection.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            return await self._identify(connection, session, data or {})
        elif op == RESUME:
            return await self._resume(connection, session, data or {})
        elif op == REQUEST_GUILD_MEMBERS and session is not None:
            await self._send_members(session, data or {})
        elif op not in (PRESENCE_UPDATE, VOICE_STATE_UPDATE):
            log.info("gateway: ignoring op %s", op)
        return session

    async def _identify(self, connection: Connection, session: Session | None, data: dict[str, Any]) -> Session | None:
        if session is not None:
            await connection.ws.close(code=CLOSE_ALREADY_AUTHENTICATED, message=b"already identified")
            return session
        token = str(data.get("token", "")).removeprefix("Bot ")
        if not token or (self._bot_token is not None and token != self._bot_token):
            await connection.ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"authentication failed")
            return None
        shard = data.get("shard", [0, 1])
        if not _valid_shard(shard):
            await connection.ws.close(code=CLOSE_INVALID_SHARD, message=b"invalid shard")
            return None
        session = Session(secrets.token_hex(16), token, shard=(shard[0], shard[1]), connection=connection)
        self._sessions[session.id] = session
        self.current = session
        guilds = [guild for guild in self._world.guilds if session.serves(guild.id)]
        await session.dispatch("READY", self._ready(session, guilds))
        for guild in guilds:
            await session.dispatch("GUILD_CREATE", guild_create_json(self._world, guild))
        self._events.publish(
            "gateway",
            {
                "state": "ready",
                "session_id": session.id,
                "compression": connection.compression,
                "shard": list(session.shard),
            },
        )
        return session

    def _ready(self, session: Session, guilds: list[Guild]) -> dict[str, Any]:
        return {
            "v": 10,
            "user": user_json(self._world.bot) | {"verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(guild.id), "unavailable": True} for guild in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.url,
            "shard": list(session.shard),
            "application": {"id": str(APPLICATION_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
        }

    async def _resume(self, connection: Connection, session: Session | None, data: dict[str, Any]) -> Session | None:
        found = self._sessions.get(str(data.get("session_id")))
        if session is not None or found is None or found.token != str(data.get("token", "")).removeprefix("Bot "):
            await connection.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return session
        found.connection = connection
        self.current = found
        self._sessions[found.id] = self._sessions.pop(found.id)  # the latest of its shard again
        missed = [payload for payload in found.sent if payload["s"] > int(data.get("seq") or 0)]
        for payload in missed:
            await connection.send(payload)
        await found.dispatch("RESUMED", {})
        self._events.publish("gateway", {"state": "resumed", "session_id": found.id, "replayed": len(missed)})
        return found

    async def _send_members(self, session: Session, data: dict[str, Any]) -> None:
        guild_id = int(data.get("guild_id") or GUILD_ID)
        members = [member_json(self._world, member, guild_id=guild_id) for member in self._world.members]
        await session.dispatch(
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(guild_id),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "nonce": data.get("nonce"),
            },
        )

    def _detach(self, session: Session, close_code: int | None) -> None:
        session.connection = None
        ended = close_code in CLEAN_CLOSES
        if ended:
            self._sessions.pop(session.id, None)
            if self.current is session:
                self.current = None
        self._events.publish(
            "gateway",
            {"state": "ended" if ended else "disconnected", "session_id": session.id, "close_code": close_code},
        )


def _valid_shard(shard: Any) -> bool:
    return (
        isinstance(shard, list)
        and len(shard) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
        and 0 <= shard[0] < shard[1]
    )
