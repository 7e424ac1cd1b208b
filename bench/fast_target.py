"""A ReplyTarget that does no platform work, for measuring the core alone."""

from __future__ import annotations

import itertools

from acechat.bots.discord_rules import RULES
from acechat.core.reply_target import Mark, TargetLimits

# Discord's limits, without the typing indicator (a platform call, not core work).
LIMITS = TargetLimits(max_chars=2000, edit_burst=5, edit_window=5.0, typing_interval=None)


class FastTarget:
    """Keeps only counters and the last text, so the target costs next to nothing."""

    _handles = itertools.count(1)
    rules = RULES

    def __init__(self) -> None:
        self.posts = 0
        self.edits = 0
        self.notices = 0
        self.last = ""

    @property
    def limits(self) -> TargetLimits:
        return LIMITS

    async def post(self, text: str) -> str:
        self.posts += 1
        self.last = text
        return str(next(self._handles))

    async def edit(self, handle: str, text: str) -> None:
        self.edits += 1
        self.last = text

    async def typing(self) -> None:
        pass

    async def notify(self, text: str) -> None:
        self.notices += 1
        self.last = text

    async def announce(self, text: str) -> None:
        self.last = text

    async def mark(self, mark: Mark) -> None:
        self.notices += 1
