"""The core's buttons (`acechat.core.choices`) as Discord message components.

Buttons are `DynamicItem`s matched on their `custom_id`, so a press is understood after a restart and by
any shard; the client's `interactions` router (`discord_interactive`) takes it from there.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import discord

from acechat.core.choices import OTHER_LABEL, Choices

# What `acechat.core.choices` makes: an option of a question, or its "Other…".
TEMPLATE = r"acechat:(?:answer:[0-9a-f]{1,32}:[0-9]{1,3}|other:[0-9a-f]{1,32})"
CHOOSE = "Choose an answer:"


class Router(Protocol):
    async def pressed(self, interaction: discord.Interaction, control_id: str) -> None: ...


class ControlButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=TEMPLATE):
    def __init__(self, control_id: str, label: str = OTHER_LABEL) -> None:
        super().__init__(
            discord.ui.Button(label=label, custom_id=control_id, style=discord.ButtonStyle.secondary)
        )
        self.control_id = control_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ControlButton:
        return cls(match.group(0))

    async def callback(self, interaction: discord.Interaction) -> None:
        router: Router | None = getattr(interaction.client, "interactions", None)
        if router is not None:
            await router.pressed(interaction, self.control_id)


def choices_view(choices: Choices) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for control in choices.buttons:
        view.add_item(ControlButton(control.id, control.label))
    return view
