"""What the core and the logs must know of Discord: what pings, what its rights are called, and which of
discord.py's lines are noise. Light on purpose (no discord.py): the adapter registry imports it."""

from __future__ import annotations

import re

from acechat.core.logs import Unwanted
from acechat.core.permissions import Privilege
from acechat.core.platform import ZWSP, MentionRule, MentionRules, PlatformRules

MENTIONS = MentionRules(
    (
        # @everyone and @here ping even inside a word or code, so each one is broken.
        MentionRule("@", re.compile(r"@(?=everyone|here)", re.IGNORECASE), lambda _: "@" + ZWSP),
        # Users <@123> <@!123> and roles <@&123>: the text stays, the mention does not.
        MentionRule("<", re.compile(r"<(?=@[!&]?[A-Za-z0-9])"), lambda _: "<" + ZWSP),
    )
)

RULES = PlatformRules(
    "discord",
    MENTIONS,
    rights={
        Privilege.CHANNEL_ADMIN: "Manage Channels on this channel, Manage Server or Administrator",
        Privilege.WORKSPACE_ADMIN: "Manage Server or Administrator",
    },
    # A mention is a question; commands are slash commands, /ask among them.
    asking="mention me with your question, or use `/ask`",
    commands="Type `/` to see my commands.",
)

NOISY_LOGGERS = ("discord",)
UNWANTED = (
    # The bot has no voice features, so voice's optional libraries are not missing.
    Unwanted("discord.client", "PyNaCl is not installed, voice will NOT be supported"),
    Unwanted("discord.client", "davey is not installed, voice will NOT be supported"),
)
