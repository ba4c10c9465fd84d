"""Messages the bot has posted, with every earlier version kept so streaming edits can be checked."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

EPHEMERAL = 1 << 6
LOADING = 1 << 7
"""Set on a deferred response until its first edit: Discord shows "<bot> is thinking…"."""


@dataclass(frozen=True)
class Attachment:
    """An uploaded file, kept in memory and served back at `/attachments/{id}/{filename}`."""

    id: int
    filename: str
    content_type: str
    data: bytes
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Message:
    """One message in a channel; `visible_to` is the only user who sees an ephemeral one."""

    id: int
    channel_id: int
    author_id: int
    type: int
    created_at: datetime.datetime
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    webhook_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    visible_to: int | None = None
    edited_at: datetime.datetime | None = None
    deleted: bool = False
    thread_id: int | None = None
    """The thread started from this message, if any."""
    history: list[dict[str, Any]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """The visible state of this version, as kept in `history` before an edit replaces it."""
        return {
            "content": self.content,
            "embeds": copy.deepcopy(self.embeds),
            "components": copy.deepcopy(self.components),
            "attachment_ids": [str(a.id) for a in self.attachments],
            "flags": self.flags,
            "edited_timestamp": _iso(self.edited_at),
        }


class MessageStore:
    """All messages by id, in creation order, and their attachments."""

    def __init__(self) -> None:
        self._messages: dict[int, Message] = {}
        self._attachments: dict[int, Attachment] = {}

    def add(self, message: Message) -> Message:
        self._messages[message.id] = message
        for attachment in message.attachments:
            self._attachments[attachment.id] = attachment
        return message

    def get(self, message_id: int) -> Message:
        """The message, deleted or not; KeyError when there never was one."""
        return self._messages[message_id]

    def attachment(self, attachment_id: int) -> Attachment:
        return self._attachments[attachment_id]

    def in_channel(self, channel_id: int) -> list[Message]:
        return [m for m in self._messages.values() if m.channel_id == channel_id and not m.deleted]

    def edit(
        self,
        message: Message,
        changes: Mapping[str, Any],
        uploads: Iterable[Attachment],
        keep_ids: set[int] | None,
        now: datetime.datetime,
    ) -> None:
        """Apply the keys of an edit payload that are present; absent keys keep their value.

        `keep_ids` are the existing files the edit keeps (None: all of them); `uploads` are added.
        """
        message.history.append(message.snapshot())
        if "content" in changes:
            message.content = changes["content"] or ""
        if "embeds" in changes:
            message.embeds = list(changes["embeds"] or [])
        if "components" in changes:
            message.components = list(changes["components"] or [])
        if changes.get("flags") is not None:
            message.flags = (message.flags & EPHEMERAL) | int(changes["flags"])
        message.flags &= ~LOADING
        if keep_ids is not None:
            message.attachments = [a for a in message.attachments if a.id in keep_ids]
        for attachment in uploads:
            message.attachments.append(attachment)
            self._attachments[attachment.id] = attachment
        message.edited_at = now


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.isoformat() if moment else None
