"""The operations endpoint: `/healthz`, `/readyz` and `/metrics`, on aiohttp (already a dependency).

`/healthz` answers 200 while the process's event loop does. `/readyz` runs every readiness check
(the Discord gateway, the model service, the database) with a time limit and answers 503 naming
those that failed, so an orchestrator stops routing to, or restarts, a bot that cannot serve.
`/metrics` is prometheus-client's text format of the default registry (`core.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_S = 2.0


def build_app(checks: Mapping[str, ReadinessCheck]) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        results = dict(zip(checks, await asyncio.gather(*(_run(check) for check in checks.values())), strict=True))
        ready = all(results.values())
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def _run(check: ReadinessCheck) -> bool:
    """A check that raises or takes too long counts as failed: readiness must answer quickly."""
    try:
        return bool(await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S))
    except Exception:
        log.debug("readiness check failed", exc_info=True)
        return False


class OpsServer:
    """The endpoint's lifetime: `start` binds (port 0 picks a free one), `stop` closes it."""

    def __init__(self, checks: Mapping[str, ReadinessCheck], host: str = "127.0.0.1", port: int = 9108) -> None:
        self._runner = web.AppRunner(build_app(checks), access_log=None)
        self.host, self.port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
        log.info("operations endpoint on http://%s:%d (/healthz, /readyz, /metrics)", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
