"""The core's buttons (`acechat.core.choices`) as Discord message components.

Buttons are `DynamicItem`s matched on their `custom_id`, so a press is understood after a restart and by
any shard. The client's one entry point for presses (`AceClient.on_interaction`) hands them to its
`interactions` router (`discord_interactive`), as it hands Stop and votes to theirs.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from acechat.core.choices import OTHER_LABEL, Choices

# What `acechat.core.choices` makes: an option of a question, or its "Other…".
TEMPLATE = r"acechat:(?:answer:[0-9a-f]{1,32}:[0-9]{1,3}|other:[0-9a-f]{1,32})"
CHOOSE = "Choose an answer:"


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


def choices_view(choices: Choices) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for control in choices.buttons:
        view.add_item(ControlButton(control.id, control.label))
    return view
