"""Discord's buttons, forms and message menu: each press or submission acknowledged at once, then the core
decides what it does.

Buttons are `DynamicItem`s registered on the client, so a press on a message sent before a restart
still reaches them, and no view is kept in memory per message. Forms (modals) are answered from
`on_interaction` by their custom id for the same reason: discord.py forgets a modal it sent when the
process restarts, Discord does not. Every id is the core's `acechat:<feature>:<argument>`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import discord
from discord import app_commands

from acechat.bots.discord_buttons import owner
from acechat.bots.discord_facts import actor_of_interaction, attachment_of, interaction_scope
from acechat.bots.discord_targets import NO_MENTIONS, InteractionTarget, MessageTarget
from acechat.core import notices
from acechat.core.chat import ChatCore, Question
from acechat.core.commands import Action, Command, CommandReply
from acechat.core.interactions import ASK, PRESET, PresetForm, control_id, parse_control
from acechat.core.presets import NAME_MAX, NAME_MIN
from acechat.core.reply_target import TargetLimits
from acechat.core.scope import Scope

log = logging.getLogger(__name__)

# Discord's limits for a modal's text inputs.
MAX_INPUT_CHARS = 4000
MAX_TITLE_CHARS = 45
QUESTION_FIELD = "question"
NAME_FIELD = "name"
DESCRIPTION_FIELD = "description"
PROMPT_FIELD = "prompt"
# Messages someone opened "Ask acechat" on lately: their text as the menu delivered it. After a restart
# the message is fetched instead.
ABOUT_CACHE = 1000
ASK_MENU = "Ask acechat"


# --- forms ------------------------------------------------------------------------------------------


def _modal(title: str, custom_id: str, inputs: Iterable[discord.ui.TextInput[Any]]) -> discord.ui.Modal:
    modal = discord.ui.Modal(title=title[:MAX_TITLE_CHARS], custom_id=custom_id, timeout=None)
    for field in inputs:
        modal.add_item(field)
    # Not kept by discord.py: `on_interaction` answers the submission, also after a restart.
    modal.stop()
    return modal


def preset_modal(form: PresetForm) -> discord.ui.Modal:
    limit = min(form.max_chars, MAX_INPUT_CHARS)
    verb = "Edit" if form.editing else "Create"
    return _modal(
        f"{verb} a preset",
        control_id(PRESET, form.feature),
        (
            discord.ui.TextInput(
                label="Name",
                custom_id=NAME_FIELD,
                # Whatever was typed with the command: Discord refuses a form prefilled past the field.
                default=form.name[:NAME_MAX] or None,
                min_length=NAME_MIN,
                max_length=NAME_MAX,
            ),
            discord.ui.TextInput(
                label="Description (one line)",
                custom_id=DESCRIPTION_FIELD,
                default=form.description or None,
                required=False,
                max_length=200,
            ),
            discord.ui.TextInput(
                label="Prompt: the instructions the AI follows",
                custom_id=PROMPT_FIELD,
                style=discord.TextStyle.paragraph,
                default=form.prompt[:limit] or None,
                max_length=limit,
            ),
        ),
    )


def ask_modal(message_id: int) -> discord.ui.Modal:
    return _modal(
        ASK_MENU,
        control_id(ASK, str(message_id)),
        (
            discord.ui.TextInput(
                label="Your question about this message",
                custom_id=QUESTION_FIELD,
                style=discord.TextStyle.paragraph,
                max_length=MAX_INPUT_CHARS,
            ),
        ),
    )


def submitted_values(components: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """A modal submission's values by input id, from rows (type 1) or labels (type 18)."""
    values: dict[str, str] = {}
    for component in components:
        inner = component.get("components") or ([component["component"]] if "component" in component else [])
        if inner:
            values.update(submitted_values(inner))
        elif isinstance(component.get("custom_id"), str) and isinstance(component.get("value"), str):
            values[component["custom_id"]] = component["value"]
    return values


async def open_preset_form(
    core: ChatCore, interaction: discord.Interaction, *, editing: bool, name: str
) -> None:
    """`/preset create` or `/preset edit` without a prompt: the form, or why it does not open."""
    scope = interaction_scope(interaction)
    if scope is None:
        await interaction.response.send_message(notices.UNKNOWN_CHANNEL, ephemeral=True)
        return
    form = await core.preset_form(scope, actor_of_interaction(interaction), editing=editing, name=name)
    if isinstance(form, CommandReply):
        await interaction.response.send_message(form.text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    if len(form.prompt) > MAX_INPUT_CHARS:
        await interaction.response.send_message(
            f"This prompt is longer than a Discord form holds ({MAX_INPUT_CHARS:,} characters); "
            "edit it with the `prompt` option instead.",
            ephemeral=True,
        )
        return
    await interaction.response.send_modal(preset_modal(form))


async def ask_menu(interaction: discord.Interaction, message: discord.Message) -> None:
    """The message menu's "Ask acechat": a form for the question."""
    owner(interaction).about.put(message.id, message)
    await interaction.response.send_modal(ask_modal(message.id))


def ask_context_menu() -> app_commands.ContextMenu:
    return app_commands.ContextMenu(name=ASK_MENU, callback=ask_menu)


async def on_modal(interaction: discord.Interaction) -> None:
    """A submitted form of acechat's, whichever process sent it."""
    data = cast(Mapping[str, Any], interaction.data or {})
    parsed = parse_control(str(data.get("custom_id", "")))
    if parsed is None:
        return
    feature, argument = parsed
    values = submitted_values(data.get("components") or ())
    core = owner(interaction).core
    scope = interaction_scope(interaction)
    if scope is None:
        await interaction.response.send_message(notices.UNKNOWN_CHANNEL, ephemeral=True)
        return
    actor = actor_of_interaction(interaction)
    if feature == PRESET and argument in ("create", "edit"):
        action = Action.PRESET_CREATE if argument == "create" else Action.PRESET_EDIT
        command = Command(
            action,
            name=values.get(NAME_FIELD, ""),
            text=values.get(PROMPT_FIELD, ""),
            description=values.get(DESCRIPTION_FIELD) or None,
        )
        await core.run_command(scope, actor, command, InteractionTarget(interaction))
    elif feature == ASK and argument.isdecimal():
        await _ask_about(interaction, core, scope, int(argument), values.get(QUESTION_FIELD, ""))


async def _ask_about(
    interaction: discord.Interaction, core: ChatCore, scope: Scope, message_id: int, question: str
) -> None:
    # The submission is answered at once; the answer replies to the message in the channel.
    await interaction.response.send_message("Asking about that message…", ephemeral=True)
    message = owner(interaction).about.get(message_id)
    channel = interaction.channel
    if message is None and isinstance(channel, discord.abc.Messageable):
        try:
            message = await channel.fetch_message(message_id)
        except discord.HTTPException as error:
            log.info("could not fetch a message to ask about: %s", error, extra={"platform": "discord"})
    if message is None:
        await interaction.followup.send(
            "I can't read that message any more; ask with a mention instead.", ephemeral=True
        )
        return
    target = AboutTarget(message, owner(interaction).limits.limits(message.channel.id), interaction)
    asked = Question(
        scope,
        actor_of_interaction(interaction),
        question,
        tuple(attachment_of(a) for a in message.attachments),
        quoted=message.content or "(a message with no text)",
    )
    await core.ask(asked, target)


class AboutTarget(MessageTarget):
    """An answer about a message: replies to it in the channel; notices go to the asker alone."""

    def __init__(
        self, message: discord.Message, limits: TargetLimits, interaction: discord.Interaction
    ) -> None:
        super().__init__(message, dataclasses.replace(limits, private_notices=True))
        self._interaction = interaction

    async def notify(self, text: str) -> None:
        await self._interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
