"""What the bot sends back: initial responses, follow-ups, edits, and plain channel messages.

Each message payload is checked against `limits` first. A payload over a limit is recorded and
refused with Discord's error (400 Invalid Form Body, or 413 for a file that is too large), so
the bot meets the failure it would meet on Discord. A payload that does not disable mentions is
recorded but accepted, as Discord would accept it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from playground.standin import breaches as rules
from playground.standin import limits
from playground.standin.errors import ApiError, invalid_form_body, unknown
from playground.standin.interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    MODAL,
    UPDATE_MESSAGE,
    InteractionRecord,
)
from playground.standin.messages import EPHEMERAL, LOADING, Attachment, Message
from playground.standin.multipart import Upload
from playground.standin.payloads import now, user_json
from playground.standin.state import StandInState
from playground.standin.world import APPLICATION_ID

DEFAULT, CHAT_INPUT_COMMAND = 0, 20
"""Message types: a follow-up or channel message, and the reply to a slash command."""


class Responder:
    """Applies the bot's answers to the stand-in's state, enforcing Discord's rules on the way."""

    def __init__(self, state: StandInState) -> None:
        self._state = state

    async def interaction_callback(
        self, interaction_id: int, token: str, payload: Mapping[str, Any], uploads: Sequence[Upload], route: str
    ) -> dict[str, Any]:
        """POST /interactions/{id}/{token}/callback; returns Discord's with_response body."""
        try:
            record = self._state.interactions.get(interaction_id)
        except KeyError:
            raise unknown("interaction") from None
        if record.token != token:
            raise unknown("interaction")
        response_type = int(payload.get("type") or 0)
        self._state.interactions.check_callback(record, response_type, route)
        data = payload.get("data") or {}
        attachments: list[Attachment] = []
        if response_type in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
            attachments = self._checked_message(data, uploads, route, record.id)
        elif response_type == AUTOCOMPLETE_RESULT:
            self._refuse_breaches(limits.check_autocomplete(data), route, record.id)
        elif response_type == MODAL:
            self._refuse_breaches(limits.check_modal(data), route, record.id)
        self._state.interactions.acknowledge(record, response_type)
        message = self._apply_callback(record, response_type, data, attachments, uploads)
        self._state.interactions.publish(record)
        return self._callback_body(record, response_type, message)

    def _apply_callback(
        self,
        record: InteractionRecord,
        response_type: int,
        data: Mapping[str, Any],
        attachments: list[Attachment],
        uploads: Sequence[Upload],
    ) -> Message | None:
        if response_type == CHANNEL_MESSAGE:
            return self._create_reply(record, data, attachments, original=True)
        if response_type == DEFERRED_CHANNEL_MESSAGE:
            flags = int(data.get("flags") or 0) & EPHEMERAL
            return self._create_reply(record, {"flags": flags | LOADING}, [], original=True)
        if response_type in (UPDATE_MESSAGE, DEFERRED_UPDATE_MESSAGE):
            record.original_message_id = record.source_message_id
            message = self._state.messages.get(record.source_message_id or 0)
            if response_type == UPDATE_MESSAGE:
                self._edit(message, data, attachments, _kept_ids(data, uploads))
            return message
        if response_type == AUTOCOMPLETE_RESULT:
            record.choices = list(data.get("choices") or [])
        elif response_type == MODAL:
            record.modal = dict(data)
            self._state.open_modals[(record.user_id, str(data.get("custom_id")))] = record
            self._state.events.publish(
                "modal_open", {"user_id": str(record.user_id), "interaction_id": str(record.id), "modal": record.modal}
            )
        return None

    def _callback_body(self, record: InteractionRecord, response_type: int, message: Message | None) -> dict[str, Any]:
        interaction: dict[str, Any] = {"id": str(record.id), "type": record.type}
        resource: dict[str, Any] = {"type": response_type}
        if message is not None and response_type in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, UPDATE_MESSAGE):
            interaction |= {
                "response_message_id": str(message.id),
                "response_message_loading": bool(message.flags & LOADING),
                "response_message_ephemeral": bool(message.flags & EPHEMERAL),
            }
            resource["message"] = self._state.message_json(message)
        return {"interaction": interaction, "resource": resource}

    async def followup(
        self, application_id: int, token: str, payload: Mapping[str, Any], uploads: Sequence[Upload], route: str
    ) -> dict[str, Any]:
        """POST /webhooks/{app}/{token}: a follow-up; the first one after a defer fills its "thinking…"."""
        record = self._token_record(application_id, token, route)
        attachments = self._checked_message(payload, uploads, route, record.id)
        original = self._original(record)
        if original is not None and original.flags & LOADING:
            changes = {key: value for key, value in payload.items() if key != "flags"}
            self._edit(original, changes, attachments, None)
            message = original
        else:
            message = self._create_reply(record, payload, attachments, original=False)
            record.followup_message_ids.append(message.id)
        self._state.interactions.publish(record)
        return self._state.message_json(message)

    async def get_webhook_message(self, application_id: int, token: str, ref: str, route: str) -> dict[str, Any]:
        record = self._token_record(application_id, token, route)
        return self._state.message_json(self._webhook_message(record, ref))

    async def edit_webhook_message(
        self,
        application_id: int,
        token: str,
        ref: str,
        payload: Mapping[str, Any],
        uploads: Sequence[Upload],
        route: str,
    ) -> dict[str, Any]:
        """PATCH /webhooks/{app}/{token}/messages/{@original|id}: an edit, streaming included."""
        record = self._token_record(application_id, token, route)
        message = self._webhook_message(record, ref)
        attachments = self._checked_message(payload, uploads, route, record.id)
        self._edit(message, payload, attachments, _kept_ids(payload, uploads))
        return self._state.message_json(message)

    async def delete_webhook_message(self, application_id: int, token: str, ref: str, route: str) -> None:
        record = self._token_record(application_id, token, route)
        self._delete(self._webhook_message(record, ref))

    async def create_channel_message(
        self, channel_id: int, payload: Mapping[str, Any], uploads: Sequence[Upload], route: str
    ) -> dict[str, Any]:
        """POST /channels/{id}/messages: a message outside any interaction."""
        self._channel(channel_id)
        attachments = self._checked_message(payload, uploads, route, None)
        message = Message(
            id=self._state.ids.next(),
            channel_id=channel_id,
            author_id=APPLICATION_ID,
            type=DEFAULT,
            created_at=now(),
            content=str(payload.get("content") or ""),
            embeds=list(payload.get("embeds") or []),
            components=list(payload.get("components") or []),
            attachments=attachments,
            flags=int(payload.get("flags") or 0) & ~EPHEMERAL,
        )
        self._state.messages.add(message)
        self._state.publish_message("message_create", message)
        return self._state.message_json(message)

    def channel_message(self, channel_id: int, message_id: int) -> Message:
        """A message reachable through the channel routes: ephemeral ones are not."""
        self._channel(channel_id)
        try:
            message = self._state.messages.get(message_id)
        except KeyError:
            raise unknown("message") from None
        if message.deleted or message.channel_id != channel_id or message.flags & EPHEMERAL:
            raise unknown("message")
        return message

    async def edit_channel_message(
        self, channel_id: int, message_id: int, payload: Mapping[str, Any], uploads: Sequence[Upload], route: str
    ) -> dict[str, Any]:
        message = self.channel_message(channel_id, message_id)
        if message.author_id != APPLICATION_ID:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        attachments = self._checked_message(payload, uploads, route, None)
        self._edit(message, payload, attachments, _kept_ids(payload, uploads))
        return self._state.message_json(message)

    async def delete_channel_message(self, channel_id: int, message_id: int) -> None:
        self._delete(self.channel_message(channel_id, message_id))

    def _checked_message(
        self, payload: Mapping[str, Any], uploads: Sequence[Upload], route: str, interaction_id: int | None
    ) -> list[Attachment]:
        """Check a message payload; record breaches; refuse one over a limit; the new attachments."""
        for breach in limits.check_allowed_mentions(payload):
            self._state.breaches.record(rules.MENTIONS, breach, route=route, interaction_id=interaction_id)
        file_breaches = limits.check_files(
            [(u.filename, len(u.data)) for u in uploads], self._state.config.attachment_size_limit
        )
        self._refuse_breaches(limits.check_message(payload) + file_breaches, route, interaction_id)
        return self._attachments(payload, uploads)

    def _refuse_breaches(self, found: list[str], route: str, interaction_id: int | None) -> None:
        if not found:
            return
        for breach in found:
            self._state.breaches.record(rules.LIMIT, breach, route=route, interaction_id=interaction_id)
        if all(breach.startswith("files[") for breach in found):
            raise ApiError(413, 40005, "Request entity too large")
        raise invalid_form_body(found)

    def _attachments(self, payload: Mapping[str, Any], uploads: Sequence[Upload]) -> list[Attachment]:
        described = {str(entry.get("id")): entry for entry in payload.get("attachments") or []}
        attachments = []
        for upload in uploads:
            entry = described.get(str(upload.index), {})
            attachments.append(
                Attachment(
                    id=self._state.ids.next(),
                    filename=str(entry.get("filename") or upload.filename),
                    content_type=upload.content_type,
                    data=upload.data,
                    description=entry.get("description"),
                )
            )
        return attachments

    def _create_reply(
        self, record: InteractionRecord, data: Mapping[str, Any], attachments: list[Attachment], *, original: bool
    ) -> Message:
        flags = int(data.get("flags") or 0)
        message = Message(
            id=self._state.ids.next(),
            channel_id=record.channel_id,
            author_id=APPLICATION_ID,
            type=CHAT_INPUT_COMMAND if original and record.type == APPLICATION_COMMAND else DEFAULT,
            created_at=now(),
            content=str(data.get("content") or ""),
            embeds=list(data.get("embeds") or []),
            components=list(data.get("components") or []),
            attachments=attachments,
            flags=flags,
            webhook_id=APPLICATION_ID,
            interaction_id=record.id,
            interaction_metadata=self._metadata(record),
            visible_to=record.user_id if flags & EPHEMERAL else None,
        )
        self._state.messages.add(message)
        if original:
            record.original_message_id = message.id
        self._state.publish_message("message_create", message)
        return message

    def _metadata(self, record: InteractionRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "id": str(record.id),
            "type": record.type,
            "user": user_json(self._state.world.users[record.user_id]),
            "authorizing_integration_owners": {"0": record.payload["guild_id"]},
        }
        if record.type == APPLICATION_COMMAND:
            metadata["name"] = record.payload["data"]["name"]
        return metadata

    def _edit(
        self, message: Message, changes: Mapping[str, Any], attachments: list[Attachment], keep_ids: set[int] | None
    ) -> None:
        self._state.messages.edit(message, changes, attachments, keep_ids, now())
        self._state.publish_message("message_update", message)

    def _delete(self, message: Message) -> None:
        message.deleted = True
        self._state.publish_message("message_delete", message)

    def _token_record(self, application_id: int, token: str, route: str) -> InteractionRecord:
        if application_id != APPLICATION_ID:
            raise unknown("webhook")
        record = self._state.interactions.by_token(token)
        self._state.interactions.check_token(record, route)
        return record

    def _original(self, record: InteractionRecord) -> Message | None:
        if record.original_message_id is None:
            return None
        message = self._state.messages.get(record.original_message_id)
        return None if message.deleted else message

    def _webhook_message(self, record: InteractionRecord, ref: str) -> Message:
        message_id = record.original_message_id if ref == "@original" else int(ref)
        if message_id is None or (
            message_id != record.original_message_id and message_id not in record.followup_message_ids
        ):
            raise unknown("message")
        message = self._state.messages.get(message_id)
        if message.deleted:
            raise unknown("message")
        return message

    def _channel(self, channel_id: int) -> None:
        try:
            self._state.world.find_channel(channel_id)
        except KeyError:
            raise unknown("channel") from None


def _kept_ids(payload: Mapping[str, Any], uploads: Sequence[Upload]) -> set[int] | None:
    """Existing attachments an edit keeps: the `attachments` entries that are not new uploads."""
    if "attachments" not in payload:
        return None
    upload_indexes = {str(upload.index) for upload in uploads}
    return {int(entry["id"]) for entry in payload["attachments"] or [] if str(entry.get("id")) not in upload_indexes}
