"""Everything the stand-in knows, in one place that the route modules share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from playground.standin.breaches import BreachLog
from playground.standin.commands import CommandRegistry
from playground.standin.config import StandInConfig
from playground.standin.events import EventLog
from playground.standin.gateway import GatewayHub
from playground.standin.ids import Snowflakes
from playground.standin.interactions import InteractionRecord, InteractionTracker
from playground.standin.messages import Message, MessageStore
from playground.standin.payloads import message_json
from playground.standin.world import World, default_world


@dataclass
class StandInState:
    """The world, what happened in it, and the gateway; `base_url` is known once the server listens."""

    config: StandInConfig
    world: World
    ids: Snowflakes
    events: EventLog
    breaches: BreachLog
    messages: MessageStore
    interactions: InteractionTracker
    commands: CommandRegistry
    hub: GatewayHub
    open_modals: dict[tuple[int, str], InteractionRecord] = field(default_factory=dict)
    """(user id, modal custom_id) → the interaction that opened it; removed when submitted."""
    base_url: str = ""

    @classmethod
    def create(cls, config: StandInConfig) -> StandInState:
        world = default_world()
        ids = Snowflakes()
        events = EventLog()
        breaches = BreachLog(events)
        return cls(
            config=config,
            world=world,
            ids=ids,
            events=events,
            breaches=breaches,
            messages=MessageStore(),
            interactions=InteractionTracker(config, breaches, events),
            commands=CommandRegistry(ids.next),
            hub=GatewayHub(world, events, config.heartbeat_interval_ms, config.bot_token),
        )

    def message_json(self, message: Message) -> dict[str, Any]:
        """The message as the bot sees it."""
        return message_json(self.world, message, self.base_url)

    def message_view(self, message: Message, *, with_history: bool = True) -> dict[str, Any]:
        """The message as drivers see it: Discord's shape plus who may see it, its edits and state.

        `history` holds every earlier version, oldest first; events leave it out (only
        `edit_count`), so streaming a long story does not resend it on every edit.
        """
        view = self.message_json(message) | {
            "visible_to": str(message.visible_to) if message.visible_to else None,
            "interaction_id": str(message.interaction_id) if message.interaction_id else None,
            "edit_count": len(message.history),
            "deleted": message.deleted,
        }
        if with_history:
            view["history"] = message.history
        return view

    def publish_message(self, kind: str, message: Message) -> None:
        self.events.publish(kind, self.message_view(message, with_history=False))
