"""What a person does in Discord's client, turned into INTERACTION_CREATE events for the bot.

Each action is refused (`DriverError`) where Discord's client would not let the person do it:
an unknown command or option, a value out of range, a command their permissions hide, a button
they cannot see or that is disabled, a modal that is not open.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from playground.standin.commands import command_data, split_command
from playground.standin.errors import DriverError
from playground.standin.interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    InteractionRecord,
)
from playground.standin.limits import BUTTON, LABEL, SELECT_TYPES, TEXT_INPUT
from playground.standin.messages import Message
from playground.standin.payloads import interaction_json
from playground.standin.state import StandInState
from playground.standin.world import ADMINISTRATOR, Channel, User

STRING_SELECT = 3


class Actions:
    """Slash commands, autocomplete, component clicks and modal submissions, as a given user."""

    def __init__(self, state: StandInState) -> None:
        self._state = state

    async def command(self, user: str, channel: str, command: str, options: Mapping[str, Any]) -> InteractionRecord:
        """`/command [group] [subcommand]` with `options` by name."""
        person, place = self._user(user), self._channel(channel)
        name, path = split_command(command)
        definition = self._state.commands.find(name)
        self._check_permission(person, place, definition)
        data = command_data(self._state.world, definition, path, options)
        return await self._send(APPLICATION_COMMAND, person, place, data)

    async def modified_command(
        self, user: str, channel: str, command: str, options: Sequence[Mapping[str, Any]]
    ) -> InteractionRecord:
        """What a modified client can send and Discord's client never would: `/command` (a known
        command's name) with `options` as raw payload options, unchecked (an unknown subcommand, a
        number where text belongs)."""
        person, place = self._user(user), self._channel(channel)
        definition = self._state.commands.find(command)
        data: dict[str, Any] = {"id": definition["id"], "name": definition["name"], "type": 1, "options": list(options)}
        if definition.get("guild_id"):
            data["guild_id"] = definition["guild_id"]
        return await self._send(APPLICATION_COMMAND, person, place, data)

    async def autocomplete(
        self, user: str, channel: str, command: str, options: Mapping[str, Any], focused: str
    ) -> InteractionRecord:
        """The user is typing `focused`; the bot answers with choices."""
        person, place = self._user(user), self._channel(channel)
        name, path = split_command(command)
        definition = self._state.commands.find(name)
        self._check_permission(person, place, definition)
        data = command_data(self._state.world, definition, path, options, focused=focused)
        return await self._send(AUTOCOMPLETE, person, place, data)

    async def component(
        self, user: str, message_id: int, custom_id: str, values: Sequence[str] = ()
    ) -> InteractionRecord:
        """A click on a button, or a choice in a select menu, of a message the user can see."""
        person = self._user(user)
        message = self._visible_message(person, message_id)
        component = _find_component(message.components, custom_id)
        if component is None:
            raise DriverError(404, f"message {message_id} has no component with custom_id {custom_id!r}")
        if component.get("disabled"):
            raise DriverError(400, f"the component {custom_id!r} is disabled")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in SELECT_TYPES:
            data["values"] = _checked_select_values(component, values)
        elif component["type"] != BUTTON:
            raise DriverError(400, f"a component of type {component['type']} cannot be clicked")
        channel = self._channel(str(message.channel_id))
        return await self._send(MESSAGE_COMPONENT, person, channel, data, source=message)

    async def submit_modal(self, user: str, custom_id: str, values: Mapping[str, Any]) -> InteractionRecord:
        """Submit the modal the bot opened for this user, text inputs filled from `values`."""
        person = self._user(user)
        opener = self._state.open_modals.get((person.id, custom_id))
        if opener is None or opener.modal is None:
            raise DriverError(404, f"no modal {custom_id!r} is open for {person.name}")
        components = _submitted_components(opener.modal.get("components") or [], values)
        source = self._state.messages.get(opener.source_message_id) if opener.source_message_id else None
        channel = self._channel(str(opener.channel_id))
        record = await self._send(
            MODAL_SUBMIT, person, channel, {"custom_id": custom_id, "components": components}, source=source
        )
        del self._state.open_modals[(person.id, custom_id)]
        return record

    async def _send(
        self, kind: int, user: User, channel: Channel, data: dict[str, Any], source: Message | None = None
    ) -> InteractionRecord:
        state = self._state
        if not state.hub.connected_to(channel.guild_id):
            where = f"the guild of #{channel.name}"
            raise DriverError(503, f"the bot is not connected to the stand-in's gateway for {where}")
        interaction_id, token = state.ids.next(), state.interactions.new_token()
        payload = interaction_json(
            state.world,
            interaction_id=interaction_id,
            interaction_type=kind,
            token=token,
            user_id=user.id,
            channel=channel,
            data=data,
            attachment_size_limit=state.config.attachment_size_limit,
            message=state.message_json(source) if source is not None else None,
        )
        record = InteractionRecord(
            id=interaction_id,
            token=token,
            type=kind,
            user_id=user.id,
            channel_id=channel.id,
            payload=payload,
            created_at=state.config.clock(),
            source_message_id=source.id if source is not None else None,
        )
        state.interactions.open(record)
        await state.hub.dispatch("INTERACTION_CREATE", payload, guild_id=channel.guild_id)
        return record

    def _user(self, ref: str) -> User:
        try:
            return self._state.world.find_user(ref)
        except KeyError:
            names = ", ".join(user.name for user in self._state.world.people)
            raise DriverError(404, f"no user {ref!r} (users: {names})") from None

    def _channel(self, ref: str) -> Channel:
        try:
            return self._state.world.find_channel(ref)
        except KeyError:
            names = ", ".join(channel.name for channel in self._state.world.channels)
            raise DriverError(404, f"no channel {ref!r} (channels: {names})") from None

    def _check_permission(self, user: User, channel: Channel, definition: Mapping[str, Any]) -> None:
        """Discord hides a command whose default_member_permissions the member lacks ("0": admins only)."""
        required = definition.get("default_member_permissions")
        if required is None:
            return
        held = self._state.world.permissions_of(user.id, channel.guild_id)
        if held & ADMINISTRATOR or (int(required) and held & int(required) == int(required)):
            return
        raise DriverError(403, f"{user.name} lacks the permissions /{definition['name']} requires ({required})")

    def _visible_message(self, user: User, message_id: int) -> Message:
        try:
            message = self._state.messages.get(message_id)
        except KeyError:
            raise DriverError(404, f"no message {message_id}") from None
        if message.deleted or (message.visible_to is not None and message.visible_to != user.id):
            raise DriverError(404, f"{user.name} cannot see message {message_id}")
        return message


def _walk(components: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for component in components:
        yield component
        yield from _walk(component.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(component.get(key), Mapping):
                yield from _walk([component[key]])


def _find_component(components: Iterable[Mapping[str, Any]], custom_id: str) -> Mapping[str, Any] | None:
    return next((c for c in _walk(components) if c.get("custom_id") == custom_id), None)


def _checked_select_values(component: Mapping[str, Any], values: Sequence[str]) -> list[str]:
    low, high = component.get("min_values", 1), component.get("max_values", 1)
    if not low <= len(values) <= high:
        raise DriverError(400, f"pick {low} to {high} values, not {len(values)}")
    if component["type"] == STRING_SELECT:
        offered = {option["value"] for option in component.get("options") or []}
        if not set(values) <= offered:
            raise DriverError(400, f"values {sorted(set(values) - offered)} are not among the options")
    return list(values)


def _submitted_components(shown: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The modal's inputs as Discord submits them: same rows and labels, each with its value."""
    inputs = [c for c in _walk(shown) if c.get("type") == TEXT_INPUT]
    unknown = set(values) - {str(c.get("custom_id")) for c in inputs}
    if unknown:
        raise DriverError(400, f"the modal has no text input {', '.join(sorted(unknown))}")
    submitted: list[dict[str, Any]] = []
    for component in shown:
        if component.get("type") == LABEL and component.get("component", {}).get("type") == TEXT_INPUT:
            submitted.append(_with_id(component, {"type": LABEL, "component": _filled(component["component"], values)}))
        elif component.get("type") == 1:
            row = [
                _filled(child, values) for child in component.get("components") or [] if child.get("type") == TEXT_INPUT
            ]
            submitted.append({"type": 1, "components": row})
    return submitted


def _filled(text_input: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    custom_id = str(text_input.get("custom_id"))
    value = str(values.get(custom_id, text_input.get("value") or ""))
    low, high = text_input.get("min_length") or 0, text_input.get("max_length") or 4000
    if text_input.get("required", True) and not value:
        raise DriverError(400, f"the text input {custom_id!r} is required")
    if value and not low <= len(value) <= high:
        raise DriverError(400, f"the text input {custom_id!r} takes {low} to {high} characters")
    return _with_id(text_input, {"type": TEXT_INPUT, "custom_id": custom_id, "value": value})


def _with_id(shown: Mapping[str, Any], submitted: dict[str, Any]) -> dict[str, Any]:
    """Discord echoes a component's numeric id in the submission when the modal gave one."""
    if shown.get("id") is not None:
        submitted["id"] = shown["id"]
    return submitted
