"""Discord's interactive surfaces: presses of the core's buttons (`discord_components`) and its
one-field forms, handed to the core.

Every press is acknowledged at once (a deferred update, which shows nothing), except "Other…",
whose first response must be the one-field form itself; the core's rights check before it is a couple
of database reads, well inside Discord's 3 seconds. Who may press and what a press does are the core's
decisions (`ChatCore.press`, `ChatCore.submit`); this module only renders them. Presses and
forms arrive through the client's one entry point (`AceClient.on_interaction`), which routes by id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import discord

from acechat.bots.discord_facts import actor_of_interaction, interaction_scope
from acechat.bots.discord_targets import NO_MENTIONS, MessageTarget, platform_errors
from acechat.core.chat import ChatCore, PressResult
from acechat.core.choices import Form, parse_control
from acechat.core.reply_target import TargetLimits

log = logging.getLogger(__name__)

FIELD = "text"
# Discord's limits: a modal title and a text input label of 45 characters, an input of 4,000.
TITLE_CHARS = 45
INPUT_CHARS = 4000


class AnswerForm(discord.ui.Modal):
    """A question's one-field form. Its submission reaches `DiscordInteractions.submitted` through the
    client's `on_interaction` by its custom id, so a form opened before a restart still counts."""

    def __init__(self, form: Form) -> None:
        super().__init__(title=form.title[:TITLE_CHARS], custom_id=form.id, timeout=None)
        self.text: discord.ui.TextInput[AnswerForm] = discord.ui.TextInput(
            label=form.label[:TITLE_CHARS],
            style=discord.TextStyle.paragraph,
            custom_id=FIELD,
            max_length=min(form.max_chars, INPUT_CHARS),
        )
        self.add_item(self.text)


class PressTarget(MessageTarget):
    """The answer to a press goes where its buttons are (a reply to them); notices go to the presser alone."""

    def __init__(
        self, interaction: discord.Interaction, message: discord.Message, limits: TargetLimits
    ) -> None:
        super().__init__(message, limits)
        self._interaction = interaction

    async def notify(self, text: str) -> None:
        interaction = self._interaction
        with platform_errors():
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


class DiscordInteractions:
    """Hands presses and form submissions to the core, and shows what it decided."""

    def __init__(self, core: ChatCore, limits: Callable[[int], TargetLimits], client: discord.Client) -> None:
        self._core = core
        self._limits = limits
        self._client = client
        core.register_closer("discord", self._replace)

    async def _replace(self, workspace: str, where: str, text: str) -> None:
        """Buttons at `where` ("channel:message", from `offer_choices`) give way to `text`, through this
        process's client whichever showed them; a failure is raised, for the core to log."""
        channel_id, _, message_id = where.partition(":")
        message = self._client.get_partial_messageable(int(channel_id)).get_partial_message(int(message_id))
        await message.edit(content=text, view=None, allowed_mentions=NO_MENTIONS)

    @staticmethod
    def owns(custom_id: str) -> bool:
        """Whether a button or form id is a question's (not Stop, votes, preset forms, Ask acechat)."""
        return parse_control(custom_id) is not None

    async def pressed(self, interaction: discord.Interaction, control_id: str) -> None:
        pressed = parse_control(control_id)
        if pressed is None:
            return
        if pressed.kind != "other":
            # Acknowledged now: the answer it resumes may stream for a while.
            await interaction.response.defer()
        target = self._target(interaction)
        if target is None:
            return
        scope, actor = interaction_scope(interaction), actor_of_interaction(interaction)
        assert scope is not None
        result = await self._core.press(scope, actor, control_id, target)
        if result.form is not None and not interaction.response.is_done():
            await interaction.response.send_modal(AnswerForm(result.form))
        await self._close(interaction, result)
        if not interaction.response.is_done():
            await interaction.response.defer()

    async def submitted(self, interaction: discord.Interaction, form_id: str, text: str) -> None:
        await interaction.response.defer()
        target = self._target(interaction)
        if target is None:
            return
        scope, actor = interaction_scope(interaction), actor_of_interaction(interaction)
        assert scope is not None
        result = await self._core.submit(scope, actor, form_id, text, target)
        await self._close(interaction, result)

    def _target(self, interaction: discord.Interaction) -> PressTarget | None:
        message = interaction.message
        if message is None or interaction_scope(interaction) is None:
            log.warning("a press without its message or channel", extra={"platform": "discord"})
            return None
        return PressTarget(interaction, message, self._limits(message.channel.id))

    @staticmethod
    async def _close(interaction: discord.Interaction, result: PressResult) -> None:
        """Done buttons give way to a line saying what became of their question."""
        if result.closed is None or interaction.message is None:
            return
        with contextlib.suppress(discord.HTTPException):
            await interaction.message.edit(content=result.closed, view=None, allowed_mentions=NO_MENTIONS)
