"""Discord's documented limits on what a bot sends, as pure checks.

Every function takes a JSON payload (as the bot sent it) and returns a list of breaches, each a
string that starts with the path of the offending field: ``"embeds[0].title: 300 characters,
limit 256"``. An empty list means the payload is within the limits. The stand-in records each
breach and answers the bot the way Discord would.

Sources: Discord API docs, "Message Resource" (content, embed limits), "Message Components"
(action rows, buttons, custom_id), "Interactions > Receiving and Responding" (autocomplete,
modals), "Application Commands" (names, options), "Reference > Uploading Files".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
EMBED_FIELD_NAME_MAX = 256
EMBED_FIELD_VALUE_MAX = 1024
EMBED_FOOTER_TEXT_MAX = 2048
EMBED_AUTHOR_NAME_MAX = 256
EMBED_TOTAL_MAX = 6000
ACTION_ROWS_MAX = 5
BUTTONS_PER_ROW_MAX = 5
CUSTOM_ID_MAX = 100
BUTTON_LABEL_MAX = 80
SELECT_OPTIONS_MAX = 25
SELECT_PLACEHOLDER_MAX = 150
COMPONENTS_V2_TOTAL_MAX = 40
FILES_MAX = 10
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
AUTOCOMPLETE_CHOICES_MAX = 25
CHOICE_NAME_MAX = 100
CHOICE_STRING_VALUE_MAX = 100
MODAL_TITLE_MAX = 45
MODAL_COMPONENTS_MAX = 5
TEXT_INPUT_LABEL_MAX = 45
TEXT_INPUT_VALUE_MAX = 4000
TEXT_INPUT_PLACEHOLDER_MAX = 100
COMMAND_NAME_MAX = 32
COMMAND_DESCRIPTION_MAX = 100
COMMAND_OPTIONS_MAX = 25
COMMAND_CHOICES_MAX = 25

IS_COMPONENTS_V2 = 1 << 15
ACTION_ROW = 1
BUTTON = 2
TEXT_INPUT = 4
LABEL = 18
SELECT_TYPES = frozenset({3, 5, 6, 7, 8})
LINK_BUTTON_STYLE = 5
PREMIUM_BUTTON_STYLE = 6
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def check_message(payload: Mapping[str, Any]) -> list[str]:
    """Content, embeds and components of a message the bot creates or edits."""
    flags = int(payload.get("flags") or 0)
    breaches = check_content(payload.get("content"))
    breaches += check_embeds(payload.get("embeds") or [])
    breaches += check_components(payload.get("components") or [], flags)
    if flags & IS_COMPONENTS_V2:
        for key in ("content", "embeds"):
            if payload.get(key):
                breaches.append(f"{key}: not allowed on a message with the IS_COMPONENTS_V2 flag")
    return breaches


def check_content(content: Any) -> list[str]:
    """Message content: at most 2000 characters."""
    if content is None:
        return []
    return _too_long("content", str(content), CONTENT_MAX)


def check_embeds(embeds: Sequence[Mapping[str, Any]]) -> list[str]:
    """Up to 10 embeds, each within its field limits, 6000 characters across all of them."""
    breaches: list[str] = []
    if len(embeds) > EMBEDS_MAX:
        breaches.append(f"embeds: {len(embeds)} embeds, limit {EMBEDS_MAX}")
    total = 0
    for index, embed in enumerate(embeds):
        path = f"embeds[{index}]"
        title = str(embed.get("title") or "")
        description = str(embed.get("description") or "")
        footer = str((embed.get("footer") or {}).get("text") or "")
        author = str((embed.get("author") or {}).get("name") or "")
        fields = embed.get("fields") or []
        breaches += _too_long(f"{path}.title", title, EMBED_TITLE_MAX)
        breaches += _too_long(f"{path}.description", description, EMBED_DESCRIPTION_MAX)
        breaches += _too_long(f"{path}.footer.text", footer, EMBED_FOOTER_TEXT_MAX)
        breaches += _too_long(f"{path}.author.name", author, EMBED_AUTHOR_NAME_MAX)
        if len(fields) > EMBED_FIELDS_MAX:
            breaches.append(f"{path}.fields: {len(fields)} fields, limit {EMBED_FIELDS_MAX}")
        total += len(title) + len(description) + len(footer) + len(author)
        for f_index, field in enumerate(fields):
            name, value = str(field.get("name") or ""), str(field.get("value") or "")
            breaches += _too_long(f"{path}.fields[{f_index}].name", name, EMBED_FIELD_NAME_MAX)
            breaches += _too_long(f"{path}.fields[{f_index}].value", value, EMBED_FIELD_VALUE_MAX)
            total += len(name) + len(value)
    if total > EMBED_TOTAL_MAX:
        breaches.append(f"embeds: {total} characters in all embeds together, limit {EMBED_TOTAL_MAX}")
    return breaches


def check_components(components: Sequence[Mapping[str, Any]], flags: int = 0) -> list[str]:
    """Layout of message components: 5 action rows of 5 buttons, or the v2 total of 40."""
    breaches: list[str] = []
    if flags & IS_COMPONENTS_V2:
        count = sum(1 for _ in _walk(components))
        if count > COMPONENTS_V2_TOTAL_MAX:
            breaches.append(f"components: {count} components, limit {COMPONENTS_V2_TOTAL_MAX}")
    else:
        if len(components) > ACTION_ROWS_MAX:
            breaches.append(f"components: {len(components)} action rows, limit {ACTION_ROWS_MAX}")
        for index, row in enumerate(components):
            if row.get("type") != ACTION_ROW:
                breaches.append(f"components[{index}]: type {row.get('type')} at top level, must be an action row")
    for path, component in _walk(components):
        breaches += _check_component(path, component)
    return breaches


def _check_component(path: str, component: Mapping[str, Any]) -> list[str]:
    kind = component.get("type")
    breaches: list[str] = []
    if kind == ACTION_ROW:
        children = component.get("components") or []
        buttons = sum(1 for child in children if child.get("type") == BUTTON)
        selects = sum(1 for child in children if child.get("type") in SELECT_TYPES)
        if buttons > BUTTONS_PER_ROW_MAX:
            breaches.append(f"{path}.components: {buttons} buttons in one row, limit {BUTTONS_PER_ROW_MAX}")
        if selects and len(children) > 1:
            breaches.append(f"{path}.components: a select menu must be alone in its row")
    custom_id = component.get("custom_id")
    if custom_id is not None:
        breaches += _too_long(f"{path}.custom_id", str(custom_id), CUSTOM_ID_MAX)
    elif kind == BUTTON and component.get("style") not in (LINK_BUTTON_STYLE, PREMIUM_BUTTON_STYLE):
        breaches.append(f"{path}.custom_id: missing on a non-link button")
    if kind == BUTTON and component.get("label") is not None:
        breaches += _too_long(f"{path}.label", str(component["label"]), BUTTON_LABEL_MAX)
    if kind in SELECT_TYPES:
        options = component.get("options") or []
        if len(options) > SELECT_OPTIONS_MAX:
            breaches.append(f"{path}.options: {len(options)} options, limit {SELECT_OPTIONS_MAX}")
        if component.get("placeholder") is not None:
            breaches += _too_long(f"{path}.placeholder", str(component["placeholder"]), SELECT_PLACEHOLDER_MAX)
    return breaches


def _walk(
    components: Iterable[Mapping[str, Any]], prefix: str = "components"
) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """Every component with its path, children and accessories included."""
    for index, component in enumerate(components):
        path = f"{prefix}[{index}]"
        yield path, component
        yield from _walk(component.get("components") or [], f"{path}.components")
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, Mapping):
                yield f"{path}.{key}", child
                yield from _walk(child.get("components") or [], f"{path}.{key}.components")


def check_files(files: Sequence[tuple[str, int]], size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT) -> list[str]:
    """Uploaded files given as (filename, size in bytes): at most 10, each within the size limit."""
    breaches: list[str] = []
    if len(files) > FILES_MAX:
        breaches.append(f"files: {len(files)} files, limit {FILES_MAX}")
    for index, (filename, size) in enumerate(files):
        if size > size_limit:
            breaches.append(f"files[{index}]: {filename!r} is {size} bytes, limit {size_limit}")
    return breaches


def check_allowed_mentions(payload: Mapping[str, Any]) -> list[str]:
    """The message must disable every mention: parse [], no users, no roles, no replied_user."""
    mentions = payload.get("allowed_mentions")
    if mentions is None:
        return ["allowed_mentions: missing, so Discord would ping whatever the content mentions"]
    breaches: list[str] = []
    if mentions.get("parse") != []:
        breaches.append(f"allowed_mentions.parse: {mentions.get('parse')!r}, must be []")
    for key in ("users", "roles"):
        if mentions.get(key):
            breaches.append(f"allowed_mentions.{key}: {mentions[key]!r}, must be empty")
    if mentions.get("replied_user") is True:
        breaches.append("allowed_mentions.replied_user: true, must be false")
    return breaches


def check_autocomplete(data: Mapping[str, Any]) -> list[str]:
    """Autocomplete result: at most 25 choices, names and string values of 1 to 100 characters."""
    choices = data.get("choices") or []
    breaches: list[str] = []
    if len(choices) > AUTOCOMPLETE_CHOICES_MAX:
        breaches.append(f"choices: {len(choices)} choices, limit {AUTOCOMPLETE_CHOICES_MAX}")
    for index, choice in enumerate(choices):
        breaches += _check_choice(f"choices[{index}]", choice)
    return breaches


def _check_choice(path: str, choice: Mapping[str, Any]) -> list[str]:
    breaches = _length_between(f"{path}.name", str(choice.get("name") or ""), 1, CHOICE_NAME_MAX)
    value = choice.get("value")
    if isinstance(value, str):
        breaches += _too_long(f"{path}.value", value, CHOICE_STRING_VALUE_MAX)
    return breaches


def check_modal(data: Mapping[str, Any]) -> list[str]:
    """Modal: title of at most 45 characters, 1 to 5 components, text inputs within their limits."""
    breaches = _length_between("title", str(data.get("title") or ""), 1, MODAL_TITLE_MAX)
    breaches += _length_between("custom_id", str(data.get("custom_id") or ""), 1, CUSTOM_ID_MAX)
    components = data.get("components") or []
    if not 1 <= len(components) <= MODAL_COMPONENTS_MAX:
        breaches.append(f"components: {len(components)} components, must be 1 to {MODAL_COMPONENTS_MAX}")
    for path, component in _walk(components):
        if component.get("type") != TEXT_INPUT:
            continue
        breaches += _too_long(f"{path}.custom_id", str(component.get("custom_id") or ""), CUSTOM_ID_MAX)
        if component.get("label") is not None:
            breaches += _too_long(f"{path}.label", str(component["label"]), TEXT_INPUT_LABEL_MAX)
        if component.get("value") is not None:
            breaches += _too_long(f"{path}.value", str(component["value"]), TEXT_INPUT_VALUE_MAX)
        if component.get("placeholder") is not None:
            breaches += _too_long(f"{path}.placeholder", str(component["placeholder"]), TEXT_INPUT_PLACEHOLDER_MAX)
    return breaches


def check_commands(commands: Sequence[Mapping[str, Any]]) -> list[str]:
    """Application commands as synced: names, descriptions, options and choices within limits."""
    breaches: list[str] = []
    for index, command in enumerate(commands):
        breaches += _check_command_like(f"commands[{index}]", command, slash=command.get("type", 1) == 1)
    return breaches


def _check_command_like(path: str, item: Mapping[str, Any], *, slash: bool = True) -> list[str]:
    name = str(item.get("name") or "")
    breaches: list[str] = []
    if slash and (not _COMMAND_NAME.match(name) or name != name.lower()):
        breaches.append(f"{path}.name: {name!r} must be 1 to {COMMAND_NAME_MAX} lowercase letters, digits, - or _")
    if slash:
        description = str(item.get("description") or "")
        breaches += _length_between(f"{path}.description", description, 1, COMMAND_DESCRIPTION_MAX)
    options = item.get("options") or []
    if len(options) > COMMAND_OPTIONS_MAX:
        breaches.append(f"{path}.options: {len(options)} options, limit {COMMAND_OPTIONS_MAX}")
    seen_optional = False
    for o_index, option in enumerate(options):
        o_path = f"{path}.options[{o_index}]"
        breaches += _check_command_like(o_path, option)
        if option.get("required") and seen_optional:
            breaches.append(f"{o_path}.required: required options must come before optional ones")
        seen_optional = seen_optional or not option.get("required")
        choices = option.get("choices") or []
        if len(choices) > COMMAND_CHOICES_MAX:
            breaches.append(f"{o_path}.choices: {len(choices)} choices, limit {COMMAND_CHOICES_MAX}")
        for c_index, choice in enumerate(choices):
            breaches += _check_choice(f"{o_path}.choices[{c_index}]", choice)
    return breaches


def _too_long(path: str, text: str, limit: int) -> list[str]:
    return [f"{path}: {len(text)} characters, limit {limit}"] if len(text) > limit else []


def _length_between(path: str, text: str, low: int, high: int) -> list[str]:
    if low <= len(text) <= high:
        return []
    return [f"{path}: {len(text)} characters, must be {low} to {high}"]
