"""The model service's interface, as the cogs see it: plain data in, plain data out.

Nothing here imports torch. Requests and results are dataclasses of primitives so the service can
move to another process (behind the same `ModelServiceAPI`) with no change in the cogs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from model.settings import DecodingSettings


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
    stop_reason: str
    """"length" (max_new_tokens reached), "eos" (the model ended the text) or "stopped" (by the user)."""

    @property
    def text(self) -> str:
        return self.prompt + self.continuation


class StoryStream(Protocol):
    """A running story: iterate for text deltas as they are produced, then read `result()`."""

    queue_position: int
    """How many requests were ahead of this one when it was accepted (0 = runs at once)."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def result(self) -> StoryResult:
        """Wait for the end; raises the request's `TaleweaverError` if it failed."""
        ...

    def stop(self) -> None:
        """Ask the generation to end early; the result so far is kept (stop_reason "stopped")."""
        ...


@dataclass(frozen=True)
class WhyRequest:
    """One `/why` request."""

    user_id: int
    prompt: str
    seed: int = 0
    view: str = "bars"
    """"bars" (perturbation importance) or "attention"."""


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


ProgressCallback = Callable[[float, str], None]
"""Called (from any thread) with a fraction done (0–1) and a short status line."""


class ModelServiceAPI(Protocol):
    """What the cogs may call. Every method is safe to call from the event loop."""

    @property
    def max_prompt_tokens(self) -> int: ...

    @property
    def max_new_tokens(self) -> int: ...

    async def count_tokens(self, text: str) -> int: ...

    async def story(self, request: StoryRequest) -> StoryStream:
        """Queue a story; raises PromptError, QueueFullError or UserBusyError at once."""
        ...

    async def why(self, request: WhyRequest, progress: ProgressCallback | None = None) -> WhyResult:
        """Explain the next-token prediction of a prompt."""
        ...
