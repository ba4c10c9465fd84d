"""Errors the stand-in answers with: Discord's own error bodies for the bot, plain ones for drivers."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer in Discord's shape, so discord.py raises the exception Discord would cause."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body


def invalid_form_body(breaches: list[str]) -> ApiError:
    """Discord's 50035 for fields over their limits; each breach becomes an error under its path."""
    errors: dict[str, Any] = {}
    for breach in breaches:
        path, _, detail = breach.partition(": ")
        errors.setdefault(path, {"_errors": []})["_errors"].append({"code": "BASE_TYPE_MAX_LENGTH", "message": detail})
    return ApiError(400, 50035, "Invalid Form Body", errors)


def unknown(what: str) -> ApiError:
    """Discord's 404 for an id or token it does not know."""
    codes = {
        "interaction": 10062,
        "message": 10008,
        "webhook": 10015,
        "channel": 10003,
        "user": 10013,
        "guild": 10004,
        "member": 10007,
        "application": 10002,
        "command": 10063,
    }
    return ApiError(404, codes.get(what, 0), f"Unknown {what.capitalize()}")


class DriverError(Exception):
    """A driver request that cannot be carried out: what a Discord client would not let you do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
