"""The core's buttons as Slack Block Kit (`acechat.core.choices`); presses come back through
`slack_interactive`."""

from __future__ import annotations

from typing import Any

from acechat.core.choices import PREFIX, Choices

# Slack's limit on a section's text.
SECTION_CHARS = 3000


def choice_blocks(choices: Choices) -> list[dict[str, Any]]:
    """The question as plain text (it cannot ping or link) over one button per option and "Other…"."""
    buttons = [
        {
            "type": "button",
            "action_id": c.id,
            "text": {"type": "plain_text", "text": c.label},
            "value": str(n),
        }
        for n, c in enumerate(choices.buttons)
    ]
    question = choices.question[:SECTION_CHARS]
    return [
        {"type": "section", "text": {"type": "plain_text", "text": question, "emoji": True}},
        {"type": "actions", "block_id": f"{PREFIX}:choices", "elements": buttons},
    ]
