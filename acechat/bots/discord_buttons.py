"""Discord's buttons under an answer: Stop while it streams, 👍/👎 once it is done.

The buttons are `DynamicItem`s, so discord.py keeps no view in memory per message. Presses are answered by
`on_press` from their id alone (`acechat:<feature>:<argument>`), so a press on a message sent before a
restart, or on a button just removed, is answered too: acknowledged at once with a deferred update of
the message it is on, then the core decides what it does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import discord

from acechat.bots.discord_facts import actor_of_interaction, interaction_scope
from acechat.core.cache import LRU
from acechat.core.chat import ChatCore
from acechat.core.interactions import STOP, VOTE, Controls, control_id, parse_control

if TYPE_CHECKING:
    from acechat.bots.discord_targets import DiscordLimits

NO_MENTIONS = discord.AllowedMentions.none()


class Owner(Protocol):
    """What the client that received an interaction holds for its handlers (bots.discord_bot.AceClient)."""

    core: ChatCore
    about: LRU[int, discord.Message]
    limits: DiscordLimits


def owner(interaction: discord.Interaction) -> Owner:
    return cast(Owner, interaction.client)


class StopButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"acechat:stop:(?P<answer>[0-9a-f]{1,32})"
):
    def __init__(self, answer_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Stop",
                style=discord.ButtonStyle.secondary,
                emoji="⏹️",
                custom_id=control_id(STOP, answer_id),
            )
        )
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> StopButton:
        return cls(match["answer"])


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"acechat:vote:(?P<answer>[0-9a-f]{1,32}):(?P<vote>up|down)",
):
    def __init__(self, answer_id: str, up: bool) -> None:
        super().__init__(
            discord.ui.Button(
                emoji="👍" if up else "👎",
                style=discord.ButtonStyle.secondary,
                custom_id=control_id(VOTE, f"{answer_id}:{'up' if up else 'down'}"),
            )
        )
        self.answer_id = answer_id
        self.up = up

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> VoteButton:
        return cls(match["answer"], match["vote"] == "up")


BUTTONS = (StopButton, VoteButton)


async def on_press(interaction: discord.Interaction) -> None:
    """A press on one of acechat's buttons, acknowledged at once with a deferred update of its message.

    Answered here rather than by the items' callbacks: discord.py drops a press on a button the message
    no longer shows (a Stop pressed as the answer ended), and Discord would tell the user it failed."""
    data = cast(Mapping[str, Any], interaction.data or {})
    parsed = parse_control(str(data.get("custom_id", "")))
    if parsed is None:
        return
    feature, argument = parsed
    await interaction.response.defer()
    scope = interaction_scope(interaction)
    if scope is None:
        return
    core, actor = owner(interaction).core, actor_of_interaction(interaction)
    notice: str | None = None
    if feature == STOP:
        notice = await core.stop(argument, scope, actor)
    elif feature == VOTE:
        answer_id, _, vote = argument.partition(":")
        if vote in ("up", "down"):
            notice = await core.vote(answer_id, scope, actor, up=vote == "up")
    if notice is not None:
        await interaction.followup.send(notice, ephemeral=True, allowed_mentions=NO_MENTIONS)


def view_of(controls: Controls) -> discord.ui.View | None:
    """The buttons for `controls`; None for none (which, in an edit, removes them)."""
    if not controls:
        return None
    view = discord.ui.View(timeout=None)
    if controls.stop is not None:
        view.add_item(StopButton(controls.stop))
    if controls.vote is not None:
        view.add_item(VoteButton(controls.vote, True))
        view.add_item(VoteButton(controls.vote, False))
    return view
