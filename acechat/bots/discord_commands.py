"""The slash commands: /ask, /reset, /status, /audit, /preset …, /model ….

Each command turns its options into a core `Command` and shows the core's reply: public when the
core says so, otherwise only to the invoker. `default_permissions` on the admin commands is a hint
for the Discord client (it hides them from members without Manage Server until a server admin
changes that); the check that counts is the core's, with the invoker's real permissions.
Discord applies that hint only to top-level commands, so it sits on the /preset and /model groups;
members still see the channel's preset and model with /status.
"""

from __future__ import annotations

import functools
import logging

import discord
from discord import app_commands

from acechat.bots.discord_controls import RunGroup, add_control_commands
from acechat.bots.discord_facts import (
    actor_of_interaction,
    attachment_of,
    interaction_scope,
    roles_of,
)
from acechat.bots.discord_targets import NO_MENTIONS, InteractionTarget
from acechat.bots.discord_ui import ask_context_menu, open_preset_form
from acechat.core import notices
from acechat.core.chat import ChatCore, Question
from acechat.core.commands import Action, Command

log = logging.getLogger(__name__)

ADMIN_HINT = discord.Permissions(manage_guild=True)
MAX_CHOICES = 25  # Discord's limit for autocomplete choices
MAX_CHOICE_CHARS = 100  # Discord's limit for a choice's name and value


def _choices(names: list[str] | tuple[str, ...], current: str) -> list[app_commands.Choice[str]]:
    wanted = current.strip().lower()
    return [
        app_commands.Choice(name=n[:MAX_CHOICE_CHARS], value=n)
        for n in names
        if wanted in n.lower() and len(n) <= MAX_CHOICE_CHARS
    ][:MAX_CHOICES]


async def _unknown_channel(interaction: discord.Interaction) -> None:
    log.warning("slash command from a channel Discord did not identify", extra={"platform": "discord"})
    await interaction.response.send_message(
        notices.UNKNOWN_CHANNEL, ephemeral=True, allowed_mentions=NO_MENTIONS
    )


async def _run(core: ChatCore, interaction: discord.Interaction, command: Command) -> None:
    """Have the core run `command` for the invoker, answering on the interaction."""
    scope = interaction_scope(interaction)
    if scope is None:
        await _unknown_channel(interaction)
        return
    actor = actor_of_interaction(interaction)
    await core.run_command(scope, actor, command, InteractionTarget(interaction))


def build_tree(
    client: discord.Client, core: ChatCore, *, dms: bool = True
) -> app_commands.CommandTree[discord.Client]:
    """The slash commands; `dms` is the operator's ACECHAT_DISCORD_DMS, a fact for /ask in a DM."""
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)

    @tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.error("slash command failed", exc_info=error)
        await InteractionTarget(interaction).notify(notices.INTERNAL_ERROR)

    @tree.command(name="ask", description="Ask the AI; everyone in this channel shares the conversation")
    @app_commands.describe(question="Your question", file="An image or document for the model to read")
    async def ask(
        interaction: discord.Interaction, question: str, file: discord.Attachment | None = None
    ) -> None:
        scope = interaction_scope(interaction)
        if scope is None:
            await _unknown_channel(interaction)
            return
        await interaction.response.defer(thinking=True)
        attachments = (attachment_of(file),) if file is not None else ()
        asked = Question(
            scope,
            actor_of_interaction(interaction),
            question,
            attachments,
            roles=roles_of(interaction.user),
            operator_dms=dms,
        )
        await core.ask(asked, InteractionTarget(interaction))

    @tree.command(name="reset", description="Start a new conversation in this channel or thread")
    async def reset(interaction: discord.Interaction) -> None:
        await _run(core, interaction, Command(Action.RESET))

    @tree.command(name="status", description="This channel's model, preset and conversation")
    async def status(interaction: discord.Interaction) -> None:
        await _run(core, interaction, Command(Action.STATUS))

    @tree.command(name="audit", description="Recent changes to presets and models (server admins)")
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.describe(page="Page 1 holds the newest changes")
    async def audit(interaction: discord.Interaction, page: app_commands.Range[int, 1, 1000] = 1) -> None:
        await _run(core, interaction, Command(Action.AUDIT, page=page))

    @tree.command(name="feedback", description="How answers were rated, by model and preset (server admins)")
    @app_commands.default_permissions(ADMIN_HINT)
    async def feedback(interaction: discord.Interaction) -> None:
        await _run(core, interaction, Command(Action.FEEDBACK))

    tree.add_command(PresetGroup(core))
    tree.add_command(ModelGroup(core))
    add_control_commands(tree, functools.partial(_run, core))
    tree.add_command(ask_context_menu())
    tree.add_command(ToolsGroup(core))
    return tree


class CommandGroup(RunGroup):
    """A `RunGroup` that keeps the core at hand for its options' autocomplete.

    A subclass names the group in its class line and declares its subcommands as methods."""

    def __init__(self, core: ChatCore) -> None:
        super().__init__(lambda interaction, command: _run(core, interaction, command))
        self.core = core


class PresetGroup(
    CommandGroup,
    name="preset",
    description="The role the AI plays in this channel",
    default_permissions=ADMIN_HINT,
):
    async def complete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        scope = interaction_scope(interaction)
        return [] if scope is None else _choices(await self.core.state.preset_names(scope), current)

    @app_commands.command(name="list", description="Built-in and this server's presets")
    async def list_(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.PRESET_LIST))

    @app_commands.command(name="show", description="Show a preset's prompt (this channel's by default)")
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(name="The preset to show; leave empty for the one in use here")
    async def show(self, interaction: discord.Interaction, name: str | None = None) -> None:
        await self.run(interaction, Command(Action.PRESET_SHOW, name=name))

    @app_commands.command(name="set", description="Use a preset in this channel or thread (channel admins)")
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(name="A built-in or this server's preset (see /preset list)")
    async def set_(self, interaction: discord.Interaction, name: str) -> None:
        await self.run(interaction, Command(Action.PRESET_SET, name=name))

    @app_commands.command(name="clear", description="Go back to the inherited preset here (channel admins)")
    async def clear(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.PRESET_CLEAR))

    @app_commands.command(
        name="default", description="The preset for every channel without one (server admins)"
    )
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(name="A built-in or this server's preset (see /preset list)")
    async def default(self, interaction: discord.Interaction, name: str) -> None:
        await self.run(interaction, Command(Action.PRESET_DEFAULT, name=name))

    @app_commands.command(name="create", description="Create a preset for this server (server admins)")
    @app_commands.describe(
        name="2-32 lowercase letters, digits or hyphens, starting with a letter",
        prompt="The instructions the AI follows; leave empty to write them in a form",
        description="One line shown in /preset list",
    )
    async def create(
        self,
        interaction: discord.Interaction,
        name: str | None = None,
        prompt: str | None = None,
        description: str | None = None,
    ) -> None:
        if prompt is None:
            await open_preset_form(self.core, interaction, editing=False, name=name or "")
            return
        await self.run(
            interaction, Command(Action.PRESET_CREATE, name=name, text=prompt, description=description)
        )

    @app_commands.command(name="edit", description="Change one of this server's presets (server admins)")
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(
        name="One of this server's presets",
        prompt="The new instructions; leave empty to edit them in a form",
        description="A new one-line description",
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        name: str,
        prompt: str | None = None,
        description: str | None = None,
    ) -> None:
        if prompt is None:
            await open_preset_form(self.core, interaction, editing=True, name=name)
            return
        await self.run(
            interaction, Command(Action.PRESET_EDIT, name=name, text=prompt, description=description)
        )

    @app_commands.command(name="delete", description="Delete one of this server's presets (server admins)")
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(name="One of this server's presets")
    async def delete(self, interaction: discord.Interaction, name: str) -> None:
        await self.run(interaction, Command(Action.PRESET_DELETE, name=name))


class ModelGroup(
    CommandGroup,
    name="model",
    description="The AI model that answers in this channel",
    default_permissions=ADMIN_HINT,
):
    async def complete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return _choices(self.core.models, current)

    @app_commands.command(name="list", description="The models this bot allows")
    async def list_(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.MODEL_LIST))

    @app_commands.command(
        name="show", description="The model answering here, and where that choice comes from"
    )
    async def show(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.MODEL_SHOW))

    @app_commands.command(name="set", description="Use a model in this channel or thread (channel admins)")
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(name="One of the models this bot allows (see /model list)")
    async def set_(self, interaction: discord.Interaction, name: str) -> None:
        await self.run(interaction, Command(Action.MODEL_SET, name=name))

    @app_commands.command(
        name="default", description="The model for every channel without one (server admins)"
    )
    @app_commands.autocomplete(name=complete)
    @app_commands.describe(name="One of the models this bot allows (see /model list)")
    async def default(self, interaction: discord.Interaction, name: str) -> None:
        await self.run(interaction, Command(Action.MODEL_DEFAULT, name=name))


TOOLS_SWITCH = [app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]


class ToolsGroup(
    CommandGroup,
    name="tools",
    description="Whether the AI may search the web and read pages here",
    default_permissions=ADMIN_HINT,
):
    """AI Chat v2's tools (web search, page fetch, files, the account's MCP servers) per channel."""

    @app_commands.command(name="show", description="Whether tools are on here, and where that choice comes from")
    async def show(self, interaction: discord.Interaction) -> None:
        await self.run(interaction, Command(Action.TOOLS_SHOW))

    @app_commands.command(name="set", description="Turn tools on or off in this channel or thread (channel admins)")
    @app_commands.choices(state=TOOLS_SWITCH)
    @app_commands.describe(state="on: the AI may search the web and read pages and files; off: it may not")
    async def set_(self, interaction: discord.Interaction, state: app_commands.Choice[str]) -> None:
        await self.run(interaction, Command(Action.TOOLS_SET, name=state.value))

    @app_commands.command(
        name="default", description="Tools on or off for every channel without a choice (server admins)"
    )
    @app_commands.choices(state=TOOLS_SWITCH)
    @app_commands.describe(state="The choice for channels and threads that have none of their own")
    async def default(self, interaction: discord.Interaction, state: app_commands.Choice[str]) -> None:
        await self.run(interaction, Command(Action.TOOLS_DEFAULT, name=state.value))
