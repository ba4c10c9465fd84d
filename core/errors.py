"""Errors a user can cause, each carrying a message written for that user.

Cogs turn any `TaleweaverError` into an ephemeral reply; everything else is a bug and is logged."""

from __future__ import annotations


class TaleweaverError(Exception):
    """Base of every error whose message may be shown to the user as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(TaleweaverError, ValueError):
    """A decoding setting is out of range, of the wrong type or inconsistent."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"`{field}`: {message}")
        self.field = field


class PromptError(TaleweaverError, ValueError):
    """The prompt is empty, too long or otherwise unusable."""


class BusyError(TaleweaverError):
    """The service cannot take the request now; `retry_after` is a hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFullError(BusyError):
    """The bounded request queue is full."""


class UserBusyError(BusyError):
    """The user already has as many requests in flight as allowed."""


class RequestTimeoutError(TaleweaverError):
    """A request ran past its time limit and was cut off."""


class GenerationFailedError(TaleweaverError):
    """The model failed on this request (out of memory, a bug); the service keeps serving."""


class ModelLoadError(TaleweaverError):
    """The model directory or hub id could not be loaded."""


class ServiceOfflineError(BusyError):
    """The remote model service cannot be reached (not started yet, restarting, network down)."""
