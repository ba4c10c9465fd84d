"""A small async client of the driver API, for end-to-end tests that run the bot as a separate process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp


class DriverRefused(Exception):
    """The stand-in refused the action the way Discord's client would (bad option, hidden command…)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class DriverClient:
    """`async with DriverClient("http://127.0.0.1:PORT") as driver:`; every method is one driver route."""

    def __init__(self, base_url: str) -> None:
        self._session = aiohttp.ClientSession(base_url=base_url.rstrip("/"))

    async def __aenter__(self) -> DriverClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        async with self._session.request(method, f"/_playground{path}", json=body) as response:
            data = await response.json() if response.status != 204 else None
            if response.status >= 400:
                raise DriverRefused(response.status, (data or {}).get("error", response.reason or ""))
            return data

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "/state")

    async def command(
        self,
        user: str,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        channel: str = "general",
        wait: bool = True,
    ) -> dict[str, Any]:
        """Run `/command` (e.g. "settings set") as `user`; with `wait`, return once it is acknowledged."""
        body = {
            "type": "command",
            "user": user,
            "channel": channel,
            "command": command,
            "options": dict(options or {}),
            "wait": wait,
        }
        return (await self._call("POST", "/interactions", body))["interaction"]

    async def modified_command(
        self, user: str, command: str, raw_options: Sequence[Mapping[str, Any]], *, channel: str = "general"
    ) -> dict[str, Any]:
        """`/command` with raw payload options no real client would send (a modified client)."""
        body = {
            "type": "modified command",
            "user": user,
            "channel": channel,
            "command": command,
            "raw_options": [dict(option) for option in raw_options],
            "wait": True,
        }
        return (await self._call("POST", "/interactions", body))["interaction"]

    async def autocomplete(
        self, user: str, command: str, options: Mapping[str, Any], focused: str, *, channel: str = "general"
    ) -> list[dict[str, Any]]:
        """The choices the bot offers while `user` types option `focused`."""
        body = {
            "type": "autocomplete",
            "user": user,
            "channel": channel,
            "command": command,
            "options": dict(options),
            "focused": focused,
        }
        return (await self._call("POST", "/interactions", body))["interaction"]["choices"] or []

    async def click(
        self, user: str, message_id: str, custom_id: str, values: Sequence[str] = (), *, wait: bool = True
    ) -> dict[str, Any]:
        """Press a button (or choose `values` in a select menu) on a message."""
        body = {
            "type": "component",
            "user": user,
            "message_id": message_id,
            "custom_id": custom_id,
            "values": list(values),
            "wait": wait,
        }
        return (await self._call("POST", "/interactions", body))["interaction"]

    async def submit_modal(
        self, user: str, custom_id: str, values: Mapping[str, str], *, wait: bool = True
    ) -> dict[str, Any]:
        body = {"type": "modal", "user": user, "custom_id": custom_id, "values": dict(values), "wait": wait}
        return (await self._call("POST", "/interactions", body))["interaction"]

    async def interaction(self, interaction_id: str) -> dict[str, Any]:
        return (await self._call("GET", f"/interactions/{interaction_id}"))["interaction"]

    async def messages(self, channel: str = "general", *, as_user: str | None = None) -> list[dict[str, Any]]:
        """The channel's messages, oldest first, each with its `history` of earlier versions."""
        query = f"?as={as_user}" if as_user else ""
        return (await self._call("GET", f"/channels/{channel}/messages{query}"))["messages"]

    async def message(self, message_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/messages/{message_id}")

    async def breaches(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/breaches"))["breaches"]

    async def clear_breaches(self) -> None:
        await self._call("DELETE", "/breaches")

    async def reconnect_gateway(self) -> int:
        return (await self._call("POST", "/gateway/reconnect"))["connections"]

    async def wait_for_event(
        self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first event after `after` with `predicate(event)` true ({seq, kind, data}); TimeoutError if none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            page = await self._call("GET", f"/events?after={after}&timeout={min(remaining, 25):.2f}")
            for event in page["events"]:
                if predicate(event):
                    return event
                after = event["seq"]
        raise TimeoutError(f"no matching event within {timeout} s")

    async def wait_for_message(
        self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first message created or edited after event `after` that satisfies `predicate`."""
        event = await self.wait_for_event(
            lambda e: e["kind"] in ("message_create", "message_update") and predicate(e["data"]),
            after=after,
            timeout=timeout,
        )
        return event["data"]
