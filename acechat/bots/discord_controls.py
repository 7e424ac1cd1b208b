"""Slash commands for admins' controls (issue 17): /channel, /access, /users, /quota, /usage, /engage,
/autothread, /transcripts and /forget me.

Each builds the line the text grammar reads (`channel off`, `quota user 20/day`) and runs it through
the core's one parser, so Discord, Slack and the console accept the same shapes; only `/users` passes
the person or role Discord resolved. Options offer their values by autocomplete. As elsewhere,
`default_permissions` is a hint for the client; the core checks the rights.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import discord
from discord import app_commands

from acechat.core.commands import Action, Command, parse_command

ADMIN_HINT = discord.Permissions(manage_guild=True)
CHANNEL_HINT = discord.Permissions(manage_channels=True)
MAX_CHOICES = 25

Run = Callable[[discord.Interaction, Command], Awaitable[None]]
Choices = list[app_commands.Choice[str]]


def _offer(values: tuple[str, ...]) -> Callable[[discord.Interaction, str], Coroutine[Any, Any, Choices]]:
    async def complete(interaction: discord.Interaction, current: str) -> Choices:
        wanted = current.strip().lower()
        return [app_commands.Choice(name=v, value=v) for v in values if wanted in v][:MAX_CHOICES]

    return complete


ON_OFF = ("on", "off")
QUOTA_AMOUNTS = ("20/day", "100/day", "200000 tokens/day", "off")


def subject_of(who: discord.Member | discord.User | discord.Role) -> str:
    return f"role:{who.id}" if isinstance(who, discord.Role) else f"user:{who.id}"


def add_control_commands(tree: app_commands.CommandTree[discord.Client], run: Run) -> None:
    async def line(interaction: discord.Interaction, text: str) -> None:
        command = parse_command(text)
        if command.action is Action.ASK:  # a value outside the choices
            shown = " ".join(text.split()).replace("`", "'")[:100]
            command = Command(Action.HELP, text=f"`{shown}` is not one of the choices offered.")
        await run(interaction, command)

    @tree.command(name="channel", description="Turn the bot on or off in this channel (channel admins)")
    @app_commands.default_permissions(CHANNEL_HINT)
    @app_commands.autocomplete(state=_offer(ON_OFF))
    @app_commands.describe(state="on or off")
    async def channel(interaction: discord.Interaction, state: str) -> None:
        await line(interaction, f"channel {state}")

    @tree.command(name="access", description="open: every channel; listed: only channels turned on")
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.autocomplete(mode=_offer(("open", "listed")))
    @app_commands.describe(mode="open or listed")
    async def access(interaction: discord.Interaction, mode: str) -> None:
        await line(interaction, f"access {mode}")

    tree.add_command(UsersGroup(run))

    @tree.command(name="quota", description="A daily cap per user, channel or server (server admins)")
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.autocomplete(level=_offer(("user", "channel", "workspace")), amount=_offer(QUOTA_AMOUNTS))
    @app_commands.describe(level="user, channel or workspace", amount="N/day, N tokens/day, or off")
    async def quota(interaction: discord.Interaction, level: str, amount: str) -> None:
        await line(interaction, f"quota {level} {amount}")

    @tree.command(name="usage", description="Questions, answers and tokens, with the top users and channels")
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.autocomplete(period=_offer(("today", "7d", "30d")))
    @app_commands.describe(period="today (UTC), 7d or 30d")
    async def usage(interaction: discord.Interaction, period: str = "today") -> None:
        await line(interaction, f"usage {period}")

    @tree.command(
        name="engage", description="mention: answer when mentioned; thread: keep talking in threads"
    )
    @app_commands.default_permissions(CHANNEL_HINT)
    @app_commands.autocomplete(mode=_offer(("mention", "thread")))
    @app_commands.describe(mode="mention or thread")
    async def engage(interaction: discord.Interaction, mode: str) -> None:
        await line(interaction, f"engage {mode}")

    @tree.command(name="autothread", description="Answer each mention here in a new thread (channel admins)")
    @app_commands.default_permissions(CHANNEL_HINT)
    @app_commands.autocomplete(state=_offer(ON_OFF))
    @app_commands.describe(state="on or off")
    async def autothread(interaction: discord.Interaction, state: str) -> None:
        await line(interaction, f"autothread {state}")

    @tree.command(name="transcripts", description="Keep question and answer text, or counts only")
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.autocomplete(state=_offer(ON_OFF))
    @app_commands.describe(state="on or off")
    async def transcripts(interaction: discord.Interaction, state: str) -> None:
        await line(interaction, f"transcripts {state}")

    tree.add_command(ForgetGroup(run))


class RunGroup(app_commands.Group):
    """A group whose subcommands each have the core run one `Command` through `run`."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run


Who = discord.Member | discord.Role


class UsersGroup(
    RunGroup, name="users", description="Who may ask the bot in this server", default_permissions=ADMIN_HINT
):
    @app_commands.command(name="allow", description="Allow a member or role (lifts a deny)")
    @app_commands.describe(who="A member or a role")
    async def allow(self, interaction: discord.Interaction, who: Who) -> None:
        await self.run(interaction, Command(Action.USERS_ALLOW, name=subject_of(who)))

    @app_commands.command(name="deny", description="Deny a member or role (a deny always wins)")
    @app_commands.describe(who="A member or a role")
    async def deny(self, interaction: discord.Interaction, who: Who) -> None:
        await self.run(interaction, Command(Action.USERS_DENY, name=subject_of(who)))

    @app_commands.command(name="remove", description="Take a member or role off both lists")
    @app_commands.describe(who="A member or a role")
    async def remove(self, interaction: discord.Interaction, who: Who) -> None:
        await self.run(interaction, Command(Action.USERS_REMOVE, name=subject_of(who)))

    @app_commands.command(name="list", description="The allow and deny lists")
    async def list_(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.USERS_LIST))


class ForgetGroup(RunGroup, name="forget", description="Delete what the bot keeps about you"):
    @app_commands.command(name="me", description="Delete your questions, answers and usage records here")
    async def me(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.FORGET_ME))
