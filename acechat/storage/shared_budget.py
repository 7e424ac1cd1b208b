"""Processes drawing on one budget, counted in PostgreSQL (no other service): each beats every second
in `budget_members`, and a member silent for longer than `EXPIRY` is gone. A process told the count
takes its share of the limit (core.pacing.shared_window).

The budget is named by a hash of what it limits (a Discord bot token), never by the token itself. The
database's clock is the one every member's beat is read against.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Callable

import asyncpg

from acechat.storage.errors import StoreError
from acechat.storage.postgres_connections import CONNECT_TIMEOUT, safe_label

log = logging.getLogger(__name__)

UNREACHABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
BEAT = 1.0
EXPIRY = 3.0
_NOW = "extract(epoch from clock_timestamp())"
_SCHEMA_LOCK = int.from_bytes(
    hashlib.blake2b(b"acechat:budget_members", digest_size=8).digest(), "big", signed=True
)
_CREATE = (
    "CREATE TABLE IF NOT EXISTS budget_members (budget text NOT NULL, member text NOT NULL, "
    "seen_at double precision NOT NULL, PRIMARY KEY (budget, member))"
)
# One round trip: this member's beat, the departed swept, the live others counted (the statement's own
# insert is not visible to its select, hence "+ 1").
_BEAT = (
    f"WITH me AS (INSERT INTO budget_members (budget, member, seen_at) VALUES ($1, $2, {_NOW}) "
    "ON CONFLICT (budget, member) DO UPDATE SET seen_at = excluded.seen_at), "
    f"gone AS (DELETE FROM budget_members WHERE budget = $1 AND seen_at < {_NOW} - $3 * 10) "
    f"SELECT count(*) + 1 FROM budget_members WHERE budget = $1 AND member <> $2 AND seen_at >= {_NOW} - $3"
)


def budget_name(kind: str, secret: str) -> str:
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()[:24]}"


class SharedBudget:
    """This process's membership of `budget`; `on_members(count, joined)` hears every beat's count, and
    `on_lost()` when beats fail for longer than members are kept."""

    def __init__(
        self,
        url: str,
        budget: str,
        on_members: Callable[[int, bool], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._url = url
        self._budget = budget
        self._member = uuid.uuid4().hex
        self._on_members = on_members
        self._on_lost = on_lost
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_beat = 0.0

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
            async with self._conn.transaction():
                await self._conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await self._conn.execute(_CREATE)
            await self._beat(joined=True)
        except UNREACHABLE as exc:
            raise StoreError(f"cannot open the database {safe_label(self._url)}: {exc}") from exc
        self._task = asyncio.create_task(self._run(), name="acechat-shared-budget")

    async def _beat(self, *, joined: bool = False) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
        count = await self._conn.fetchval(_BEAT, self._budget, self._member, EXPIRY)
        self._last_beat = asyncio.get_running_loop().time()
        self._on_members(int(count), joined)

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(BEAT)
            try:
                await self._beat(joined=failing)
                if failing:
                    log.info("shared budget %s: the database answers again", self._budget)
                failing = False
            except UNREACHABLE as error:
                if not failing:
                    log.warning(
                        "shared budget %s: cannot reach %s (%s): spending nothing until it answers",
                        self._budget,
                        safe_label(self._url),
                        error,
                    )
                failing = True
                if asyncio.get_running_loop().time() - self._last_beat > EXPIRY - BEAT:
                    self._on_lost()
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                    self._conn = None

    async def close(self) -> None:
        """Leave at once, so the others take this process's share at their next beat."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.execute(
                    "DELETE FROM budget_members WHERE budget = $1 AND member = $2", self._budget, self._member
                )
            with contextlib.suppress(Exception):
                await self._conn.close()
