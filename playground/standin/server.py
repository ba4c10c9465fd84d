"""The stand-in as one aiohttp server on the loopback interface: Discord's API, gateway, driver, page."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from playground.standin.actions import Actions
from playground.standin.breaches import Breach
from playground.standin.config import StandInConfig
from playground.standin.driver import DriverApi
from playground.standin.errors import DriverError
from playground.standin.events import Event
from playground.standin.messages import Message
from playground.standin.responses import Responder
from playground.standin.rest import DiscordApi, error_middleware
from playground.standin.state import StandInState

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_REQUEST_BYTES = 256 * 1024 * 1024
"""Far above Discord's limits, so an oversized upload reaches our check and gets Discord's answer."""


class StandIn:
    """Start with `async with StandIn(config) as standin:`; point discord.py at `standin.api_base`."""

    def __init__(self, config: StandInConfig | None = None) -> None:
        self.state = StandInState.create(config or StandInConfig())
        self.actions = Actions(self.state)
        self._driver = DriverApi(self.state, self.actions)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The web page, and the base of every route."""
        return self.state.base_url + "/"

    @property
    def api_base(self) -> str:
        """What `point_discordpy_at` takes, and TALEWEAVER_DISCORD_API_BASE holds."""
        return self.state.base_url

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([web.get("/gateway", self.state.hub.handle)])
        app.add_routes(DiscordApi(self.state, Responder(self.state)).routes())
        app.add_routes(self._driver.routes())
        app.add_routes(
            [web.get("/attachments/{attachment_id}/{filename}", self._attachment), web.get("/", self._index)]
        )
        if WEB_DIR.is_dir():
            app.router.add_static("/web/", WEB_DIR)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def start(self) -> None:
        config = self.state.config
        self._runner = web.AppRunner(self.build_app(), shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, config.host, config.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.state.base_url = f"http://{config.host}:{self.port}"
        self.state.hub.url = f"ws://{config.host}:{self.port}/gateway"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.stop()

    async def _on_shutdown(self, app: web.Application) -> None:
        self._driver.closing.set()
        self.state.interactions.close()
        self.state.events.publish("shutdown", {})
        await self.state.hub.close_all()

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def _attachment(self, request: web.Request) -> web.Response:
        try:
            attachment = self.state.messages.attachment(int(request.match_info["attachment_id"]))
        except (KeyError, ValueError):
            raise DriverError(404, "no such attachment") from None
        return web.Response(body=attachment.data, content_type=attachment.content_type)

    def breaches(self, rule: str | None = None) -> list[Breach]:
        """Breaches so far, of one rule or of all."""
        return [b for b in self.state.breaches.all() if rule is None or b.rule == rule]

    def messages(self, channel: str = "general") -> list[Message]:
        """The channel's messages, oldest first, ephemeral ones included."""
        return self.state.messages.in_channel(self.state.world.find_channel(channel).id)

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0, after: int = 0) -> Event:
        """The first event numbered above `after` that satisfies `predicate`; TimeoutError if none comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seq = after
        while True:
            for event in self.state.events.since(seq):
                if predicate(event):
                    return event
                seq = event.seq
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching event within {timeout} s")
            await self.state.events.wait_since(seq, remaining)

    async def wait_for_breach(self, rule: str | None = None, timeout: float = 5.0) -> Breach:
        """The first breach (of `rule`, if given) recorded since the stand-in started."""
        for breach in self.breaches(rule):
            return breach
        await self.wait_for(lambda e: e.kind == "breach" and rule in (None, e.data["rule"]), timeout)
        return self.breaches(rule)[0]
