"""A story and its parts as every store returns them: plain values, no database in sight."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import DecodingSettings


@dataclass(frozen=True)
class Part:
    """One finished generation: the line added before it (threads), what wrote it, and its text."""

    id: int
    parent_id: int | None
    author_id: int
    added: str
    settings: DecodingSettings
    seed: int
    text: str
    stop_reason: str = ""
    precision: str = ""
    """The weights' precision it was written in (fp32, int8…); "" for parts kept before it was recorded."""


@dataclass(frozen=True)
class Story:
    """A story as its message shows it: the chain of parts up to the shown one, and that part's drafts."""

    id: int
    owner_id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    thread_id: int | None
    opening: str
    settings: DecodingSettings
    """What `/story` resolved: Continue and Regenerate write with these."""
    chain: tuple[Part, ...]
    drafts: tuple[int, ...]
    """Ids of the shown part and its siblings, oldest first (one id: no other draft)."""
    updated_at: float

    @property
    def text(self) -> str:
        return self.opening + "".join(part.added + part.text for part in self.chain)

    @property
    def shown(self) -> Part | None:
        return self.chain[-1] if self.chain else None

    @property
    def draft_index(self) -> int:
        """The shown part's place among its drafts, from 0."""
        return self.drafts.index(self.shown.id) if self.shown is not None else 0

    def text_before_shown(self) -> str:
        """What the shown part continued: a draft of it starts again from here."""
        return self.opening + "".join(part.added + part.text for part in self.chain[:-1])
