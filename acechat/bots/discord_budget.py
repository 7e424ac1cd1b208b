"""Discord's global limit (50 requests a second per bot token) shared by every process that uses the
token on one PostgreSQL database: each takes an equal share (core.pacing.shared_window) of the members it
counts there (storage.shared_budget). With SQLite there is one process, which keeps the whole limit.

A process joining others spends nothing for `SETTLE` seconds: by then each of them has counted it at
a beat and shrunk its share, and their calls under the larger share have left the one-second window.
A process alone starts at once; one that starts beside it shrinks it at its next beat before spending.
"""

from __future__ import annotations

import logging

from acechat.bots.discord_targets import GLOBAL_PER_SECOND
from acechat.core.pacing.shared_window import SharedWindow
from acechat.storage.shared_budget import BEAT, SharedBudget, budget_name

log = logging.getLogger(__name__)

WINDOW = 1.0
SETTLE = 2 * BEAT + WINDOW


class SharedGlobal:
    def __init__(self, database_url: str, token: str) -> None:
        self.limit = SharedWindow(GLOBAL_PER_SECOND, WINDOW)
        self._members = SharedBudget(
            database_url, budget_name("discord", token), self._told, self.limit.close
        )
        self.started = False

    def _told(self, members: int, joined: bool) -> None:
        before = self.limit.members
        settle = (0.0 if members == 1 else SETTLE) if joined else None
        self.limit.share(members, settle=settle)
        if members != before:
            log.info(
                "Discord: %d process(es) share the bot token's global limit; this one makes up to %d requests a second",
                members,
                GLOBAL_PER_SECOND // members,
            )

    async def start(self) -> None:
        await self._members.start()
        self.started = True

    async def close(self) -> None:
        await self._members.close()


def shared_global_limit(database_url: str | None, token: str) -> SharedGlobal | None:
    return None if not database_url else SharedGlobal(database_url, token)
