"""`/settings` and `/server-settings`: how Taleweaver writes for each user, and in each server.

The options, their ranges and choices come from `core.settings.FIELDS`, so Discord's client
enforces what it can; the store checks everything again, because a modified client can send
anything. Every reply here is private: settings are nobody else's business, and neither are
mistakes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.confirm import ConfirmAction, ConfirmView
from cogs.utils.options import narrow_option
from cogs.utils.replies import defer_if_slow, send_ephemeral, send_error
from core.errors import SettingsError, TaleweaverError
from core.settings import FIELDS, PRESETS, FieldSpec
from store import LIMIT_FIELDS, PreferencesStore, ResolvedSettings, Scope

if TYPE_CHECKING:
    from bot import TaleweaverBot

log = logging.getLogger(__name__)

DESCRIPTION_LIMIT = 100
"""Discord's limit on option, command and choice descriptions."""

SOURCE_LABELS: dict[str, str] = {
    "default": "built-in default",
    "config": "bot default",
    "server": "server default",
    "you": "yours",
    "this command": "this command",
    "strategy": "the strategy's preset",
}
SERVER_ONLY = "Server settings exist only inside a server. In DMs, `/settings` is all there is."
NOT_ALLOWED = (
    "Only members with the **Manage Server** permission can change this server's settings. "
    "Your own settings are under `/settings`."
)
MANAGERS_ONLY = (
    "This server's defaults and limits are set by members with **Manage Server** (`/server-settings`), "
    "which is why you may not see that command."
)
ResetPart = Literal["defaults", "limits", "defaults and limits"]
RESET_SCOPES: dict[str, tuple[Scope, ...]] = {
    "defaults": (Scope.SERVER,),
    "limits": (Scope.SERVER_LIMIT,),
    "defaults and limits": (Scope.SERVER, Scope.SERVER_LIMIT),
}


def option_type(name: str) -> Any:
    """The slash-command type of one setting: its choices or its range, from `FIELDS`."""
    spec = FIELDS[name]
    if spec.choices is not None:
        return Literal[spec.choices]
    return app_commands.Range[spec.kind, spec.minimum, spec.maximum]


def option_description(spec: FieldSpec) -> str:
    """The setting's help, made to fit Discord's 100 characters by dropping asides, then clauses."""
    text = re.sub(r"\s*\([^)]*\)", "", spec.help)
    while len(text) > DESCRIPTION_LIMIT and "; " in text:
        text = text.rsplit("; ", 1)[0] + "."
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


StrategyOption = option_type("strategy")
MaxNewTokensOption = option_type("max_new_tokens")
TemperatureOption = option_type("temperature")
TopKOption = option_type("top_k")
TopPOption = option_type("top_p")
NumBeamsOption = option_type("num_beams")
RepetitionPenaltyOption = option_type("repetition_penalty")
NoRepeatNgramSizeOption = option_type("no_repeat_ngram_size")
SeedOption = option_type("seed")

OPTION_DESCRIPTIONS = {name: option_description(spec) for name, spec in FIELDS.items()}
# An option left out means "unchanged" here, so the help's "empty means random" would mislead.
OPTION_DESCRIPTIONS["seed"] = "Fixes the random draws so a story can be reproduced; reset it for a new one each time."
LIMIT_DESCRIPTIONS = {name: f"Highest {name} anyone may use here." for name in LIMIT_FIELDS}
SETTING_CHOICES = [app_commands.Choice(name=name, value=name) for name in FIELDS]
PRESET_CHOICES = [
    app_commands.Choice(name=f"{preset.name}: {preset.description}"[:DESCRIPTION_LIMIT], value=preset.name)
    for preset in PRESETS.values()
]


class SettingsCog(commands.Cog):
    """Per-user and per-server decoding settings, kept by the preferences store."""

    settings = app_commands.Group(name="settings", description="How Taleweaver writes stories for you.")
    server_settings = app_commands.Group(
        name="server-settings",
        description="How Taleweaver writes in this server (needs Manage Server).",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: TaleweaverBot) -> None:
        self.bot = bot
        for command in self.walk_app_commands():  # the bot's own cap, so Discord refuses more
            if isinstance(command, app_commands.Command) and "max_new_tokens" in command._params:
                narrow_option(command, "max_new_tokens", max_value=bot.config.limits.max_new_tokens)

    @property
    def store(self) -> PreferencesStore:
        return self.bot.preferences

    # /settings

    @settings.command(name="show")
    async def settings_show(self, interaction: discord.Interaction) -> None:
        """See every setting you write with here, and where each value comes from."""
        try:
            async with defer_if_slow(interaction):
                resolved = await self.store.resolve(interaction.user.id, interaction.guild_id, {})
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        where = "in this server" if interaction.guild_id is not None else "in DMs"
        footer = "Change them with `/settings set`, `/settings preset` or `/settings reset`."
        if interaction.guild_id is not None and not interaction.permissions.manage_guild:
            footer += "\n" + MANAGERS_ONLY
        await send_ephemeral(interaction, render_settings(f"**Your settings** {where}", resolved, footer))

    @settings.command(name="set")
    @app_commands.describe(**OPTION_DESCRIPTIONS)
    async def settings_set(
        self,
        interaction: discord.Interaction,
        strategy: StrategyOption | None = None,
        max_new_tokens: MaxNewTokensOption | None = None,
        temperature: TemperatureOption | None = None,
        top_k: TopKOption | None = None,
        top_p: TopPOption | None = None,
        num_beams: NumBeamsOption | None = None,
        repetition_penalty: RepetitionPenaltyOption | None = None,
        no_repeat_ngram_size: NoRepeatNgramSizeOption | None = None,
        seed: SeedOption | None = None,
    ) -> None:
        """Change some of your settings; the ones you leave out stay as they are."""
        values = given(
            strategy=strategy,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            seed=seed,
        )
        if not values:
            await send_error(interaction, nothing_given("/settings set temperature:0.7"))
            return
        await self._save(interaction, Scope.USER, interaction.user.id, values, "Saved for you")

    @settings.command(name="preset", description=f"Switch to a named style: {', '.join(PRESETS)}.")
    @app_commands.describe(name="A named set of values; your other settings stay as they are.")
    @app_commands.choices(name=PRESET_CHOICES)
    async def settings_preset(self, interaction: discord.Interaction, name: str) -> None:
        """Apply a preset's values on top of the user's own (the description lists the presets)."""
        preset = PRESETS.get(name)
        if preset is None:
            await send_error(interaction, f"There is no preset `{name}`; choose one of {_names(PRESETS)}.")
            return
        await self._save(
            interaction,
            Scope.USER,
            interaction.user.id,
            preset.values,
            f"Preset **{preset.name}**: {preset.description}\nSaved for you",
        )

    @settings.command(name="reset")
    @app_commands.describe(setting="The setting to forget; leave it out to reset all of them.")
    @app_commands.choices(setting=SETTING_CHOICES)
    async def settings_reset(self, interaction: discord.Interaction, setting: str | None = None) -> None:
        """Go back to the defaults for one setting, or for all of them."""
        owner = interaction.user.id
        if setting is not None:
            await self._reset_one(interaction, (Scope.USER,), owner, setting, whose="your")
            return

        async def reset_all(press: discord.Interaction) -> str:
            removed = await self.store.reset(Scope.USER, owner)
            return "All your settings are back to the defaults." if removed else "You had no settings to reset."

        await self._confirm(interaction, "Reset **all** your settings to the defaults?", reset_all)

    # /server-settings

    @server_settings.command(name="show")
    async def server_show(self, interaction: discord.Interaction) -> None:
        """See this server's defaults and limits."""
        if not await self._may_manage(interaction):
            return
        try:
            async with defer_if_slow(interaction):
                resolved = await self.store.resolve_server(interaction.guild_id)
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        footer = (
            "Members' own settings come on top of these defaults; the limits cap everyone. Change them "
            "with `/server-settings set`, `preset`, `limit` or `reset`."
        )
        await send_ephemeral(interaction, render_settings("**This server's defaults**", resolved, footer))

    @server_settings.command(name="set")
    @app_commands.describe(**OPTION_DESCRIPTIONS)
    async def server_set(
        self,
        interaction: discord.Interaction,
        strategy: StrategyOption | None = None,
        max_new_tokens: MaxNewTokensOption | None = None,
        temperature: TemperatureOption | None = None,
        top_k: TopKOption | None = None,
        top_p: TopPOption | None = None,
        num_beams: NumBeamsOption | None = None,
        repetition_penalty: RepetitionPenaltyOption | None = None,
        no_repeat_ngram_size: NoRepeatNgramSizeOption | None = None,
        seed: SeedOption | None = None,
    ) -> None:
        """Change this server's defaults; members' own settings still come first."""
        if not await self._may_manage(interaction):
            return
        values = given(
            strategy=strategy,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            num_beams=num_beams,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            seed=seed,
        )
        if not values:
            await send_error(interaction, nothing_given("/server-settings set temperature:0.7"))
            return
        await self._save(interaction, Scope.SERVER, interaction.guild_id, values, "Saved as this server's defaults")

    @server_settings.command(name="preset")
    @app_commands.describe(name="A named set of values for this server's defaults.")
    @app_commands.choices(name=PRESET_CHOICES)
    async def server_preset(self, interaction: discord.Interaction, name: str) -> None:
        """Make a named style this server's default."""
        if not await self._may_manage(interaction):
            return
        preset = PRESETS.get(name)
        if preset is None:
            await send_error(interaction, f"There is no preset `{name}`; choose one of {_names(PRESETS)}.")
            return
        await self._save(
            interaction,
            Scope.SERVER,
            interaction.guild_id,
            preset.values,
            f"Preset **{preset.name}**: {preset.description}\nSaved as this server's defaults",
        )

    @server_settings.command(name="limit")
    @app_commands.describe(**LIMIT_DESCRIPTIONS)
    async def server_limit(
        self,
        interaction: discord.Interaction,
        max_new_tokens: MaxNewTokensOption | None = None,
        num_beams: NumBeamsOption | None = None,
        temperature: TemperatureOption | None = None,
    ) -> None:
        """Cap what anyone may use in this server; higher values are lowered, and the user told."""
        if not await self._may_manage(interaction):
            return
        values = given(max_new_tokens=max_new_tokens, num_beams=num_beams, temperature=temperature)
        if not values:
            await send_error(interaction, nothing_given("/server-settings limit max_new_tokens:200"))
            return
        await self._save(interaction, Scope.SERVER_LIMIT, interaction.guild_id, values, "New limits for this server")

    @server_settings.command(name="reset")
    @app_commands.describe(
        setting="The setting to forget; leave it out to reset all of them.",
        part="Reset the server's defaults, its limits, or both (defaults if left out).",
    )
    @app_commands.choices(setting=SETTING_CHOICES)
    async def server_reset(
        self, interaction: discord.Interaction, setting: str | None = None, part: ResetPart = "defaults"
    ) -> None:
        """Forget this server's defaults or limits, for one setting or for all."""
        if not await self._may_manage(interaction):
            return
        guild_id = interaction.guild_id
        scopes = RESET_SCOPES.get(part)
        if scopes is None:
            await send_error(interaction, f"`part` must be one of {_names(RESET_SCOPES)}.")
            return
        if setting is not None:
            if part == "limits" and setting not in LIMIT_FIELDS:
                await send_error(interaction, f"`{setting}` has no limit; limits exist for {_names(LIMIT_FIELDS)}.")
                return
            await self._reset_one(interaction, scopes, guild_id, setting, whose="this server's")
            return

        async def reset_all(press: discord.Interaction) -> str:
            if not press.permissions.manage_guild:
                return NOT_ALLOWED
            removed = [name for scope in scopes for name in await self.store.reset(scope, guild_id)]
            return f"This server's {part} are reset." if removed else f"This server had no {part} to reset."

        await self._confirm(interaction, f"Reset **all** this server's {part}?", reset_all)

    # shared steps

    async def _may_manage(self, interaction: discord.Interaction) -> bool:
        """Checked on every use: `default_permissions` only hides the command, and can be overridden."""
        if interaction.guild_id is None:
            await send_error(interaction, SERVER_ONLY)
            return False
        if not interaction.permissions.manage_guild:
            await send_error(interaction, NOT_ALLOWED)
            return False
        return True

    async def _save(
        self, interaction: discord.Interaction, scope: Scope, owner_id: int, values: Mapping[str, Any], headline: str
    ) -> None:
        try:
            async with defer_if_slow(interaction):
                saved = await self.store.set(scope, owner_id, values)
                hints = await self._hints(interaction, scope, saved)
        except SettingsError as exc:
            await send_error(interaction, f"{exc.message}\nNothing was saved.")
            return
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        lines = [f"{headline}: " + ", ".join(f"`{name}` {_show(value)}" for name, value in saved.items()) + "."]
        await send_ephemeral(interaction, "\n".join(lines + hints))

    async def _hints(self, interaction: discord.Interaction, scope: Scope, saved: Mapping[str, Any]) -> list[str]:
        """What the user should know about values just saved: capped here, or unused by the strategy."""
        try:
            resolved = await self._resolved_for(interaction, scope)
        except TaleweaverError:
            log.warning("saved, but could not resolve the settings for the hints", exc_info=True)
            return []
        if scope is Scope.SERVER_LIMIT:
            return [
                f"Note: the default `{name}` {_show(clamp.requested)} is now capped to {clamp.limit.value}."
                for name, clamp in resolved.clamps.items()
                if clamp.limit.by == "server"
            ]
        hints = [
            f"Note: here `{name}` is capped to {clamp.limit.value} by {clamp.limit.owner}."
            for name, clamp in resolved.clamps.items()
            if name in saved
        ]
        unused = [name for name in saved if name not in resolved.settings.relevant_fields()]
        if unused:
            hints.append(f"Note: the {resolved.settings.strategy} strategy does not use {_names(unused)}.")
        return hints

    async def _resolved_for(self, interaction: discord.Interaction, scope: Scope) -> ResolvedSettings:
        if scope is Scope.USER:
            return await self.store.resolve(interaction.user.id, interaction.guild_id, {})
        return await self.store.resolve_server(interaction.guild_id)

    async def _reset_one(
        self, interaction: discord.Interaction, scopes: tuple[Scope, ...], owner_id: int, setting: str, *, whose: str
    ) -> None:
        try:
            async with defer_if_slow(interaction):
                removed = [name for scope in scopes for name in await self.store.reset(scope, owner_id, [setting])]
                resolved = await self._resolved_for(interaction, scopes[0])
        except TaleweaverError as exc:
            await send_error(interaction, exc.message)
            return
        now = f"{_show(getattr(resolved.settings, setting))} ({SOURCE_LABELS[resolved.sources[setting]]})"
        if removed:
            await send_ephemeral(interaction, f"Forgot {whose} `{setting}`; it is now {now}.")
        else:
            await send_ephemeral(
                interaction, f"{whose.capitalize()} `{setting}` was not set, so nothing changed; it is {now}."
            )

    async def _confirm(self, interaction: discord.Interaction, question: str, action: ConfirmAction) -> None:
        view = ConfirmView(interaction.user.id, action, confirm_label="Reset all")
        view.prompt = interaction
        await send_ephemeral(interaction, f"{question} This cannot be undone.", view=view)


def nothing_given(example: str) -> str:
    return f"Give at least one setting to change, for example `{example}`. Nothing was saved."


def given(**options: Any) -> dict[str, Any]:
    """The options the user filled in (Discord leaves the others out, which arrive as None)."""
    return {name: value for name, value in options.items() if value is not None}


def render_settings(title: str, resolved: ResolvedSettings, footer: str) -> str:
    """Every setting, its value and where it comes from; settings the strategy ignores marked so."""
    settings = resolved.settings
    relevant = settings.relevant_fields()
    lines = [title]
    for name in FIELDS:
        value = getattr(settings, name)
        origin = SOURCE_LABELS[resolved.sources[name]]
        clamp = resolved.clamps.get(name)
        if clamp is not None:
            origin += f", {_show(clamp.requested)} capped by {clamp.limit.owner}"
        unused = "" if name in relevant else f" · not used by {settings.strategy}"
        lines.append(f"• `{name}` **{_show(value)}** — {origin}{unused}")
    if resolved.limits:
        caps = ", ".join(f"`{name}` ≤ {limit.value} ({limit.owner})" for name, limit in resolved.limits.items())
        lines.append(f"Limits here: {caps}.")
    lines.append(footer)
    return "\n".join(lines)


def _show(value: Any) -> str:
    return "random" if value is None else str(value)


def _names(names: Any) -> str:
    return ", ".join(f"`{name}`" for name in names)


async def setup(bot: TaleweaverBot) -> None:
    await bot.add_cog(SettingsCog(bot))
