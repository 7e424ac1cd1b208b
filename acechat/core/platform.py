"""What the core must be told about a platform: what pings people there, what its rights are called, and
how people ask the bot there.

Every reply target carries its platform's `PlatformRules`; the core asks them before it posts model
text or cites rights in a refusal. A platform cannot leave its pings out by omission: `PlatformRules`
refuses to exist without `MentionRules`, and the adapter registry refuses an adapter without rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from acechat.core.permissions import GENERIC_RIGHTS, Privilege

# How people ask the bot and find its commands, where a platform does not say: the lines every adapter
# can hand to `ChatCore.run_line`.
GENERIC_ASKING = "send me `ask` and your question"
GENERIC_COMMANDS = "`help` lists my commands."

ZWSP = "\u200b"  # breaks a mention without a visible change
ZWJ = "\u200d"


@dataclass(frozen=True)
class MentionRule:
    """One kind of ping: each match of `pattern` becomes `defuse(match)`, which reads the same and pings
    no one. Every match holds `marker`, so text without it skips the scan (most answers do)."""

    marker: str
    pattern: re.Pattern[str]
    defuse: Callable[[re.Match[str]], str]

    def __post_init__(self) -> None:
        if len(self.marker) != 1:
            raise ValueError("a mention rule's marker is one character that every match holds")


@dataclass(frozen=True)
class MentionRules:
    """A platform's pings, applied in order. An empty tuple states that nothing pings there (a terminal)."""

    rules: tuple[MentionRule, ...]

    def neutralize(self, text: str) -> str:
        for rule in self.rules:
            if rule.marker in text:
                text = rule.pattern.sub(rule.defuse, text)
        return text


@dataclass(frozen=True)
class PlatformRules:
    name: str
    mentions: MentionRules
    # How the platform names the rights each level stands for, so a refusal says what to ask for.
    rights: Mapping[Privilege, str] = field(default_factory=lambda: dict(GENERIC_RIGHTS))
    # How one asks the bot there, completing "To ask, …" (a mention, a command, or both), and a sentence
    # saying where its commands are: what a refusal tells someone whose question could not be taken.
    asking: str = GENERIC_ASKING
    commands: str = GENERIC_COMMANDS

    def __post_init__(self) -> None:
        # Checked at run time too: an adapter written without type checking must not post pings.
        if not isinstance(self.mentions, MentionRules):
            raise TypeError(f"platform {self.name!r} has no mention rules: every platform declares its pings")
