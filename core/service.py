"""The model service's interface, as the cogs and the bot see it: plain data in, streams out.

Requests and results are frozen dataclasses of primitives, so the service can live in another
process (behind the same `ModelServiceAPI`) with no change in the cogs. Both kinds of work come
back the same way: a stream to iterate for events as they happen (story text, `/why` progress),
then `result()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, TypeVar

from core.settings import DecodingSettings

EventT_co = TypeVar("EventT_co", covariant=True)
ResultT_co = TypeVar("ResultT_co", covariant=True)

WhyView = Literal["bars", "attention"]
WHY_VIEWS: tuple[str, ...] = ("bars", "attention")


class StopReason(StrEnum):
    """Why a story ended. A `StrEnum`, so it compares equal to (and serialises as) its text."""

    LENGTH = "length"
    """`max_new_tokens` was reached."""
    EOS = "eos"
    """The model ended the text."""
    STOPPED = "stopped"
    """The user pressed Stop (or the message was deleted)."""
    TIMEOUT = "timeout"
    """The request ran past `service.request_timeout_s`."""


@dataclass(frozen=True)
class StoryRequest:
    """One `/story` (or Continue/Regenerate) request; `seed` is already chosen."""

    user_id: int
    prompt: str
    settings: DecodingSettings
    seed: int
    keep_tail: bool = False
    """Continue a story: a prompt over the token limit keeps its last tokens instead of being refused."""


@dataclass(frozen=True)
class StoryResult:
    """What a finished story request produced."""

    prompt: str
    continuation: str
    seed: int
    settings: DecodingSettings
    new_tokens: int
    elapsed_s: float
    stop_reason: StopReason
    precision: str = ""
    """The weights' precision it was written in (fp32, bf16, int8…): a replay in another may differ."""


@dataclass(frozen=True)
class WhyRequest:
    """One `/why` request."""

    user_id: int
    prompt: str
    seed: int = 0
    view: WhyView = "bars"
    """"bars" (perturbation importance) or "attention" (the attention picture too)."""
    keep_tail: bool = False
    """Explain a story's next word: a prompt over the token limit keeps its last tokens instead of being refused."""


@dataclass(frozen=True)
class WhyProgress:
    """How far a `/why` explanation has got: a fraction done (0–1) and a short status line."""

    fraction: float
    status: str


@dataclass(frozen=True)
class WordImportance:
    word: str
    tokens: tuple[str, ...]
    sigma: float
    importance: float
    """0–1, 1 for the most important word (smallest σ)."""


@dataclass(frozen=True)
class WhyResult:
    """Importance of each prompt word for the next-token prediction."""

    prompt: str
    words: tuple[WordImportance, ...]
    token_sigmas: tuple[tuple[str, float], ...]
    top_predictions: tuple[tuple[str, float], ...]
    iterations: int
    elapsed_s: float
    stopped_early: bool
    image_png: bytes | None = None
    attention_png: bytes | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


class Stream(Protocol[EventT_co, ResultT_co]):
    """Running work: iterate for its events as they happen, then read `result()`."""

    @property
    def queue_position(self) -> int:
        """How many requests were ahead of this one when it was accepted (0 = runs at once)."""
        ...

    def __aiter__(self) -> AsyncIterator[EventT_co]: ...

    async def result(self) -> ResultT_co:
        """Wait for the end; raises the request's `TaleweaverError` if it failed."""
        ...

    def stop(self) -> None:
        """Ask the work to end early; what it has so far is kept."""
        ...


StoryStream = Stream[str, StoryResult]
"""Events are pieces of text, in order; stopping ends the story with `StopReason.STOPPED`."""
WhyStream = Stream[WhyProgress, WhyResult]
"""Events are progress reports; stopping ends the optimisation with its best estimate so far."""


class ModelServiceAPI(Protocol):
    """What the bot and the cogs may call, in process or remote. Safe to call from the event loop."""

    @property
    def max_prompt_tokens(self) -> int: ...

    async def start(self) -> None: ...

    async def ready(self) -> bool:
        """Whether it can take work now (loaded, running; for a remote service: reachable)."""
        ...

    async def close(self) -> None:
        """Stop taking work; requests still waiting fail with a message for their users."""
        ...

    async def count_tokens(self, text: str) -> int: ...

    async def story(self, request: StoryRequest) -> StoryStream:
        """Queue a story; raises PromptError, QueueFullError or UserBusyError at once."""
        ...

    async def why(self, request: WhyRequest) -> WhyStream:
        """Queue an explanation of the next-token prediction; raises like `story` at once."""
        ...
