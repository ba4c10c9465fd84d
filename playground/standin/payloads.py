"""Discord's JSON shapes for the world's objects, as discord.py expects to parse them."""

from __future__ import annotations

import datetime
from typing import Any

from playground.standin.messages import Attachment, Message
from playground.standin.world import APPLICATION_ID, GUILD_ID, Channel, Guild, Member, Role, User, World

GUILD_TEXT = 0
JOINED_AT = "2024-01-01T00:00:00+00:00"


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.name,
        "global_name": user.display_name,
        "discriminator": "0",
        "avatar": None,
        "bot": user.bot,
        "system": False,
        "public_flags": 0,
        "flags": 0,
    }


def member_json(world: World, member: Member, *, with_user: bool = True, guild_id: int = GUILD_ID) -> dict[str, Any]:
    roles = {role.id for role in world.roles_of(guild_id)}
    body: dict[str, Any] = {
        "roles": [str(role_id) for role_id in member.role_ids if role_id in roles],
        "joined_at": JOINED_AT,
        "nick": None,
        "avatar": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "premium_since": None,
        "communication_disabled_until": None,
    }
    if with_user:
        body["user"] = user_json(member.user)
    return body


def role_json(role: Role) -> dict[str, Any]:
    return {
        "id": str(role.id),
        "name": role.name,
        "color": role.color,
        "colors": {"primary_color": role.color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": role.position,
        "permissions": str(role.permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def channel_json(channel: Channel) -> dict[str, Any]:
    if channel.is_thread:
        return thread_json(channel)
    return {
        "id": str(channel.id),
        "type": GUILD_TEXT,
        "guild_id": str(channel.guild_id),
        "name": channel.name,
        "topic": channel.topic,
        "position": channel.position,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
    }


def thread_json(thread: Channel) -> dict[str, Any]:
    """A public thread as Discord sends it: type 11, its parent channel, its owner and thread metadata."""
    return {
        "id": str(thread.id),
        "type": thread.type,
        "guild_id": str(thread.guild_id),
        "name": thread.name,
        "parent_id": str(thread.parent_id),
        "owner_id": str(thread.owner_id or APPLICATION_ID),
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "flags": 0,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": JOINED_AT,
            "locked": False,
            "create_timestamp": now().isoformat(),
        },
    }


def guild_json(world: World, guild: Guild) -> dict[str, Any]:
    """The full guild, as sent in GUILD_CREATE and answered by GET /guilds/{id}."""
    return {
        "id": str(guild.id),
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(guild.owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "system_channel_id": str(world.channels_of(guild.id)[0].id),
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "features": [],
        "roles": [role_json(role) for role in world.roles_of(guild.id)],
        "emojis": [],
        "stickers": [],
        "max_members": 500000,
        "vanity_url_code": None,
        "premium_progress_bar_enabled": False,
        "application_id": None,
    }


def guild_create_json(world: World, guild: Guild) -> dict[str, Any]:
    """GUILD_CREATE adds the members and channels; member_count matches, so no chunking is needed."""
    channels = world.channels_of(guild.id)
    return guild_json(world, guild) | {
        "joined_at": JOINED_AT,
        "large": False,
        "unavailable": False,
        "member_count": len(world.members),
        "members": [member_json(world, member, guild_id=guild.id) for member in world.members],
        "channels": [channel_json(channel) for channel in channels if not channel.is_thread],
        "threads": [thread_json(channel) for channel in channels if channel.is_thread],
        "presences": [],
        "voice_states": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def application_json(world: World) -> dict[str, Any]:
    """GET /oauth2/applications/@me: no interactions endpoint URL, so interactions come by gateway."""
    owner = world.users[world.owner_id]
    return {
        "id": str(APPLICATION_ID),
        "name": world.bot.display_name,
        "icon": None,
        "description": "A local stand-in for the Taleweaver application",
        "rpc_origins": [],
        "bot_public": True,
        "bot_require_code_grant": False,
        "bot": user_json(world.bot),
        "owner": user_json(owner),
        "team": None,
        "verify_key": "0" * 64,
        "flags": 0,
        "tags": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "approximate_guild_count": len(world.guilds),
    }


def attachment_json(attachment: Attachment, base_url: str) -> dict[str, Any]:
    url = f"{base_url}/attachments/{attachment.id}/{attachment.filename}"
    body: dict[str, Any] = {
        "id": str(attachment.id),
        "filename": attachment.filename,
        "size": attachment.size,
        "url": url,
        "proxy_url": url,
        "content_type": attachment.content_type,
    }
    if attachment.description:
        body["description"] = attachment.description
    return body


def message_json(world: World, message: Message, base_url: str) -> dict[str, Any]:
    """The message as Discord would send it to the bot."""
    author = world.users[message.author_id]
    body: dict[str, Any] = {
        "id": str(message.id),
        "type": message.type,
        "channel_id": str(message.channel_id),
        "guild_id": str(world.find_channel(message.channel_id).guild_id),
        "author": user_json(author),
        "content": message.content,
        "timestamp": message.created_at.isoformat(),
        "edited_timestamp": message.edited_at.isoformat() if message.edited_at else None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "mention_channels": [],
        "attachments": [attachment_json(a, base_url) for a in message.attachments],
        "embeds": message.embeds,
        "components": message.components,
        "reactions": [],
        "pinned": False,
        "flags": message.flags,
        "application_id": str(APPLICATION_ID),
    }
    if message.webhook_id is not None:
        body["webhook_id"] = str(message.webhook_id)
    if message.interaction_metadata is not None:
        body["interaction_metadata"] = message.interaction_metadata
    if message.thread_id is not None:
        thread = next((c for c in world.channels if c.id == message.thread_id), None)
        if thread is not None:
            body["thread"] = thread_json(thread)
    return body


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def interaction_json(
    world: World,
    *,
    interaction_id: int,
    interaction_type: int,
    token: str,
    user_id: int,
    channel: Channel,
    data: dict[str, Any],
    attachment_size_limit: int,
    message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a guild channel, with the member's computed permissions."""
    guild_id = channel.guild_id
    permissions = str(world.permissions_of(user_id, guild_id))
    member = member_json(world, world.member(user_id), guild_id=guild_id) | {"permissions": permissions}
    body: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(APPLICATION_ID),
        "type": interaction_type,
        "data": data,
        "guild_id": str(guild_id),
        "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
        "channel_id": str(channel.id),
        "channel": channel_json(channel) | {"permissions": permissions},
        "member": member,
        "token": token,
        "version": 1,
        "app_permissions": str(world.permissions_of(world.bot.id, guild_id)),
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id)},
        "context": 0,
        "attachment_size_limit": attachment_size_limit,
    }
    if message is not None:
        body["message"] = message
    return body
