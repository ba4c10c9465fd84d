"""Application commands the bot registered, and turning a user's input into interaction data.

The checks here are those Discord's client makes before it sends anything: the command exists,
required options are there, values have the right type and lie within choices and ranges. A
driver request that fails them gets a `DriverError`; the bot never sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from playground.standin.errors import DriverError
from playground.standin.payloads import member_json, role_json, user_json
from playground.standin.world import APPLICATION_ID, GUILD_ID, World

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
CHAT_INPUT = 1


class CommandRegistry:
    """Global commands and the guild's commands, each with the id and version Discord assigns."""

    def __init__(self, new_id: Callable[[], int]) -> None:
        self._new_id = new_id
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}

    def scope(self, guild_id: int | None) -> list[dict[str, Any]]:
        return self.global_commands if guild_id is None else self.guild_commands.setdefault(guild_id, [])

    def replace(self, guild_id: int | None, commands: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Bulk overwrite: commands keep their id when a command of that name and type existed."""
        old = {(c["name"], c.get("type", CHAT_INPUT)): c["id"] for c in self.scope(guild_id)}
        stored = [
            self._stored(command, guild_id, old.get((command["name"], command.get("type", CHAT_INPUT))))
            for command in commands
        ]
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        return stored

    def upsert(self, guild_id: int | None, command: Mapping[str, Any]) -> dict[str, Any]:
        """Create one command, or overwrite the one with the same name and type."""
        commands = self.scope(guild_id)
        key = (command["name"], command.get("type", CHAT_INPUT))
        for index, existing in enumerate(commands):
            if (existing["name"], existing.get("type", CHAT_INPUT)) == key:
                commands[index] = self._stored(command, guild_id, existing["id"])
                return commands[index]
        commands.append(self._stored(command, guild_id, None))
        return commands[-1]

    def find_by_id(self, guild_id: int | None, command_id: int) -> dict[str, Any]:
        for command in self.scope(guild_id):
            if command["id"] == str(command_id):
                return command
        raise KeyError(command_id)

    def delete(self, guild_id: int | None, command_id: int) -> None:
        command = self.find_by_id(guild_id, command_id)
        self.scope(guild_id).remove(command)

    def usable(self) -> list[dict[str, Any]]:
        """Slash commands a member of the guild can see: the guild's, then the global ones."""
        seen: set[str] = set()
        usable = []
        for command in self.guild_commands.get(GUILD_ID, []) + self.global_commands:
            if command.get("type", CHAT_INPUT) == CHAT_INPUT and command["name"] not in seen:
                seen.add(command["name"])
                usable.append(command)
        return usable

    def find(self, name: str) -> dict[str, Any]:
        for command in self.usable():
            if command["name"] == name:
                return command
        raise DriverError(404, f"no command /{name} is registered (registered: {self._names()})")

    def _names(self) -> str:
        return ", ".join("/" + c["name"] for c in self.usable()) or "none"

    def _stored(self, command: Mapping[str, Any], guild_id: int | None, command_id: str | None) -> dict[str, Any]:
        stored = dict(command)
        stored.setdefault("type", CHAT_INPUT)
        stored.setdefault("description", "")
        stored.setdefault("options", [])
        stored.setdefault("default_member_permissions", None)
        stored.setdefault("nsfw", False)
        stored.setdefault("contexts", None)
        stored.setdefault("integration_types", [0])
        stored["id"] = command_id or str(self._new_id())
        stored["application_id"] = str(APPLICATION_ID)
        stored["version"] = str(self._new_id())
        if guild_id is not None:
            stored["guild_id"] = str(guild_id)
        return stored


def command_data(
    world: World,
    command: Mapping[str, Any],
    path: Sequence[str],
    values: Mapping[str, Any],
    *,
    focused: str | None = None,
) -> dict[str, Any]:
    """The `data` of an APPLICATION_COMMAND (or, with `focused`, AUTOCOMPLETE) interaction.

    `path` names the subcommand group and subcommand under `command`, if it has them; `values`
    maps option names to what the user typed or picked.
    """
    options, leaf_options = _descend(command, path)
    resolved: dict[str, dict[str, Any]] = {}
    leaf = _options_payload(world, leaf_options, values, focused, resolved, "/" + " ".join([command["name"], *path]))
    for name, kind in reversed(options):
        leaf = [{"name": name, "type": kind, "options": leaf}]
    data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": CHAT_INPUT, "options": leaf}
    if command.get("guild_id"):
        data["guild_id"] = command["guild_id"]
    if resolved:
        data["resolved"] = resolved
    return data


def _descend(command: Mapping[str, Any], path: Sequence[str]) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
    """Walk the subcommand path; the chain of (name, type) and the options of the leaf."""
    chain: list[tuple[str, int]] = []
    options = list(command.get("options") or [])
    for name in path:
        branch = next((o for o in options if o["name"] == name and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
        if branch is None:
            raise DriverError(400, f"/{command['name']} has no subcommand {name!r}")
        chain.append((name, branch["type"]))
        options = list(branch.get("options") or [])
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in options):
        choices = ", ".join(o["name"] for o in options)
        raise DriverError(400, f"/{' '.join([command['name'], *path])} needs a subcommand: {choices}")
    return chain, options


def _options_payload(
    world: World,
    declared: list[dict[str, Any]],
    values: Mapping[str, Any],
    focused: str | None,
    resolved: dict[str, dict[str, Any]],
    where: str,
) -> list[dict[str, Any]]:
    by_name = {option["name"]: option for option in declared}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise DriverError(400, f"{where} has no option {', '.join(unknown)} (options: {', '.join(by_name) or 'none'})")
    payload = []
    for option in declared:
        name, raw = option["name"], values.get(option["name"])
        if name == focused:
            payload.append(
                {"name": name, "type": option["type"], "value": "" if raw is None else str(raw), "focused": True}
            )
        elif raw is not None and raw != "":
            payload.append(
                {"name": name, "type": option["type"], "value": _typed_value(world, option, raw, resolved, where)}
            )
        elif option.get("required") and focused is None:
            raise DriverError(400, f"{where}: option {name!r} is required")
    return payload


def _typed_value(
    world: World, option: Mapping[str, Any], raw: Any, resolved: dict[str, dict[str, Any]], where: str
) -> Any:
    kind, name = option["type"], option["name"]
    try:
        value = _CONVERTERS[kind](world, raw, resolved)
    except KeyError as error:
        raise DriverError(400, f"{where}: option {name!r} does not accept {raw!r}") from error
    except (TypeError, ValueError) as error:
        raise DriverError(
            400, f"{where}: option {name!r} needs a {_KIND_NAMES.get(kind, kind)}, not {raw!r}"
        ) from error
    _check_constraints(option, value, where)
    return value


def _check_constraints(option: Mapping[str, Any], value: Any, where: str) -> None:
    name, choices = option["name"], option.get("choices") or []
    if choices and value not in [choice["value"] for choice in choices]:
        allowed = ", ".join(repr(choice["value"]) for choice in choices)
        raise DriverError(400, f"{where}: option {name!r} must be one of {allowed}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = option.get("min_value"), option.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise DriverError(400, f"{where}: option {name!r} must lie between {low} and {high}")
    if isinstance(value, str) and option["type"] == STRING:
        low, high = option.get("min_length"), option.get("max_length")
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            raise DriverError(400, f"{where}: option {name!r} must be {low or 0} to {high or 6000} characters")


def _to_int(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(raw)
    return int(raw)


def _to_float(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> float:
    if isinstance(raw, bool):
        raise ValueError(raw)
    return float(raw)


def _to_bool(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(raw)


def _to_user(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> str:
    user = world.find_user(str(raw).lstrip("@"))
    resolved.setdefault("users", {})[str(user.id)] = user_json(user)
    member = member_json(world, world.member(user.id), with_user=False)
    member["permissions"] = str(world.permissions_of(user.id))
    resolved.setdefault("members", {})[str(user.id)] = member
    return str(user.id)


def _to_channel(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> str:
    channel = world.find_channel(raw)
    resolved.setdefault("channels", {})[str(channel.id)] = {
        "id": str(channel.id),
        "name": channel.name,
        "type": 0,
        "permissions": str((1 << 51) - 1),
    }
    return str(channel.id)


def _to_role(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> str:
    role = world.find_role(raw)
    resolved.setdefault("roles", {})[str(role.id)] = role_json(role)
    return str(role.id)


def _to_mentionable(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> str:
    try:
        return _to_user(world, raw, resolved)
    except KeyError:
        return _to_role(world, raw, resolved)


def _unsupported(world: World, raw: Any, resolved: dict[str, dict[str, Any]]) -> Any:
    raise DriverError(400, "attachment options are not supported by the stand-in")


_CONVERTERS: dict[int, Callable[[World, Any, dict[str, dict[str, Any]]], Any]] = {
    STRING: lambda world, raw, resolved: str(raw),
    INTEGER: _to_int,
    NUMBER: _to_float,
    BOOLEAN: _to_bool,
    USER: _to_user,
    CHANNEL: _to_channel,
    ROLE: _to_role,
    MENTIONABLE: _to_mentionable,
    ATTACHMENT: _unsupported,
}
_KIND_NAMES = {
    STRING: "string",
    INTEGER: "whole number",
    NUMBER: "number",
    BOOLEAN: "true or false",
    USER: "user",
    CHANNEL: "channel",
    ROLE: "role",
    MENTIONABLE: "user or role",
}


def split_command(text: str) -> tuple[str, list[str]]:
    """'settings set' → ('settings', ['set']); a leading slash is allowed."""
    words = text.strip().lstrip("/").split()
    if not words:
        raise DriverError(400, "no command given")
    return words[0], words[1:]
