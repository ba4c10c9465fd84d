"""Whether one of the bot's views, dynamic items or forms will answer a press.

discord.py has no public way to ask, so `has_handler` makes the lookups its `ViewStore.dispatch_view`
and `dispatch_modal` make, on the same store. It must be asked as the interaction is dispatched:
a view's callback may stop the view (a confirm button does), which takes it out of the store
before any listener runs; `TaleweaverBot.dispatch` calls `note_handler` at that moment.
"""

from __future__ import annotations

import discord

KEY = "taleweaver.has_handler"
KINDS = (discord.InteractionType.component, discord.InteractionType.modal_submit)


def has_handler(interaction: discord.Interaction) -> bool:
    store = interaction.client._connection._view_store  # type: ignore[attr-defined]
    data = interaction.data or {}
    custom_id = str(data.get("custom_id", ""))
    if interaction.type == discord.InteractionType.modal_submit:
        return custom_id in store._modals
    if interaction.message is not None and any(pattern.fullmatch(custom_id) for pattern in store._dynamic_items):
        return True
    key = (int(data.get("component_type", 0)), custom_id)
    message_id = interaction.message.id if interaction.message is not None else None
    return key in store._views.get(message_id, {}) or key in store._views.get(None, {})


def note_handler(interaction: discord.Interaction) -> None:
    """Record, before any handler runs, whether a view will answer this press (in `extras`)."""
    if interaction.type in KINDS:
        interaction.extras[KEY] = has_handler(interaction)


def handled(interaction: discord.Interaction) -> bool:
    """What `note_handler` recorded; asked now when nothing was (an interaction built by hand)."""
    extras = getattr(interaction, "extras", {})
    return extras[KEY] if KEY in extras else has_handler(interaction)
