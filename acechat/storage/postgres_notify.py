"""Change notifications between processes: a settings or preset change made by one process reaches the
caches of every other through PostgreSQL's LISTEN/NOTIFY, on the commit of the change."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import asyncpg

from acechat.storage.postgres_connections import CONNECT_TIMEOUT, close_connection
from acechat.storage.records import EVERYTHING, Change, ChangeKind

log = logging.getLogger(__name__)

CHANNEL = "acechat_changes"
RECONNECT_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)


async def notify(conn: asyncpg.pool.PoolConnectionProxy, origin: str, kind: ChangeKind, key: str) -> None:
    """Tell every listening process of a change; delivered when `conn`'s transaction commits, never before."""
    payload = json.dumps({"origin": origin, "kind": kind, "key": key})
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)


class NotificationListener:
    """A connection that stays open, LISTENing for changes; reconnects if it drops."""

    def __init__(self, url: str, origin: str, deliver: Callable[[Change], None]) -> None:
        self._url = url
        self._origin = origin
        self._deliver = deliver
        self._conn: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
        try:
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._conn = conn

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        try:
            message = json.loads(str(payload))
            if message["origin"] == self._origin:
                return  # our own write: its listeners ran when it committed
            kind = message["kind"]
            if kind not in ("setting", "preset", "control"):
                raise ValueError(kind)
            change = Change(kind, str(message["key"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed change notification")
            return
        self._deliver(change)

    def _terminated(self, conn: object) -> None:
        if self._closed or conn is not self._conn:
            return
        self._conn = None
        log.warning("the change notification connection closed; reconnecting")
        self._reconnecting = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self.start()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.warning("cannot reconnect for change notifications (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if self._closed:
                break
            log.info("change notifications reconnected")
            # Whatever changed while no one was listening is unknown: every cache must go.
            self._deliver(Change("setting", EVERYTHING))
            self._deliver(Change("preset", EVERYTHING))
            self._deliver(Change("control", EVERYTHING))
            return

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_connection(conn)
