"""The small, fixed Discord world the stand-in simulates: one guild, its channels, people and roles.

Ids are constants so tests and the web page can name them; alice is a moderator (Manage Server and
Manage Messages), bob and carol are not, which is what permission checks in the bot need to be
tried against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

APPLICATION_ID = 1300000000000000001
"""The application and its bot user share one id, as they do for bots made since 2020."""
GUILD_ID = 1300000000000000100

VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
CREATE_PUBLIC_THREADS = 1 << 35
SEND_MESSAGES_IN_THREADS = 1 << 38
MANAGE_MESSAGES = 1 << 13
MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | SEND_MESSAGES_IN_THREADS
)
"""Discord's defaults for @everyone, threads included."""


@dataclass(frozen=True)
class User:
    """A Discord account; `name` is also how the driver API and the web page refer to it."""

    id: int
    name: str
    display_name: str
    bot: bool = False


@dataclass(frozen=True)
class Role:
    """A guild role; the guild's id is the id of @everyone."""

    id: int
    name: str
    permissions: int
    position: int
    color: int = 0


GUILD_TEXT = 0
PUBLIC_THREAD = 11


@dataclass(frozen=True)
class Channel:
    """A text channel of the guild, or a public thread (type 11) with its parent channel."""

    id: int
    name: str
    topic: str
    position: int
    type: int = GUILD_TEXT
    parent_id: int | None = None
    owner_id: int | None = None
    """A thread's creator."""

    @property
    def is_thread(self) -> bool:
        return self.type == PUBLIC_THREAD


@dataclass(frozen=True)
class Member:
    """A user's membership of the guild."""

    user: User
    role_ids: tuple[int, ...] = ()


@dataclass
class World:
    """Everything fixed about the simulated Discord; messages and interactions live elsewhere."""

    bot: User
    guild_name: str
    owner_id: int
    roles: list[Role]
    channels: list[Channel]
    members: list[Member]
    users: dict[int, User] = field(init=False)

    def __post_init__(self) -> None:
        self.users = {member.user.id: member.user for member in self.members}

    def member(self, user_id: int) -> Member:
        """The membership of `user_id`; KeyError when that user is not in the guild."""
        for member in self.members:
            if member.user.id == user_id:
                return member
        raise KeyError(user_id)

    def permissions_of(self, user_id: int) -> int:
        """The user's guild permissions: @everyone, then their roles; the owner has them all."""
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        roles = {role.id: role for role in self.roles}
        total = roles[GUILD_ID].permissions
        for role_id in self.member(user_id).role_ids:
            total |= roles[role_id].permissions
        return ALL_PERMISSIONS if total & ADMINISTRATOR else total

    def find_user(self, ref: str | int) -> User:
        """A person (not the bot) by id or by name, for the driver API."""
        for user in self.users.values():
            if not user.bot and (str(user.id) == str(ref) or user.name == str(ref).lower()):
                return user
        raise KeyError(ref)

    def find_channel(self, ref: str | int) -> Channel:
        """A channel (or thread) by id or by name, with or without its leading #."""
        for channel in self.channels:
            if str(channel.id) == str(ref) or channel.name.lower() == str(ref).lstrip("#").lower():
                return channel
        raise KeyError(ref)

    def find_role(self, ref: str | int) -> Role:
        """A role by id or by name."""
        for role in self.roles:
            if str(role.id) == str(ref) or role.name.lower() == str(ref).lstrip("@").lower():
                return role
        raise KeyError(ref)

    @property
    def people(self) -> list[User]:
        """The members who are not bots, in the order the web page lists them."""
        return [member.user for member in self.members if not member.user.bot]


MODERATOR_ROLE_ID = 1300000000000000301
BOT_ROLE_ID = 1300000000000000302
OWNER_ID = 1300000000000000400
ALICE_ID = 1300000000000000401
BOB_ID = 1300000000000000402
CAROL_ID = 1300000000000000403
GENERAL_CHANNEL_ID = 1300000000000000201
STORIES_CHANNEL_ID = 1300000000000000202


def default_world() -> World:
    """The guild every stand-in starts with."""
    bot = User(APPLICATION_ID, "taleweaver", "Taleweaver", bot=True)
    owner = User(OWNER_ID, "olivia", "Olivia (owner)")
    return World(
        bot=bot,
        guild_name="Taleweaver Playground",
        owner_id=owner.id,
        roles=[
            Role(GUILD_ID, "@everyone", EVERYONE_PERMISSIONS, 0),
            Role(MODERATOR_ROLE_ID, "Moderator", MANAGE_GUILD | MANAGE_MESSAGES, 2, color=0x3BA55C),
            Role(BOT_ROLE_ID, "Taleweaver", EVERYONE_PERMISSIONS, 1, color=0x5865F2),
        ],
        channels=[
            Channel(GENERAL_CHANNEL_ID, "general", "Say hello", 0),
            Channel(STORIES_CHANNEL_ID, "stories", "Tales told by Taleweaver", 1),
        ],
        members=[
            Member(bot, (BOT_ROLE_ID,)),
            Member(User(ALICE_ID, "alice", "Alice (moderator)"), (MODERATOR_ROLE_ID,)),
            Member(User(BOB_ID, "bob", "Bob")),
            Member(User(CAROL_ID, "carol", "Carol")),
            Member(owner),
        ],
    )
