"""Cross-process scope turns: one turn at a time per scope across every process sharing the database.

A turn first waits its place in this process (`ScopeQueue`), then takes the scope's session-level
advisory lock in PostgreSQL:
- one lock connection (`AdvisoryLockSession`) holds the lock of every scope turn this process runs while
  no other process wants that scope; try-locks and releases queued while a round trip is in flight go
  out together in the next one (`acechat_lock_step`);
- when a scope is busy elsewhere, a wait connection (from a pool of at most `pool_size`) queues in
  PostgreSQL's own lock queue with a blocking `pg_advisory_lock` and holds the lock for that turn.

So turns in flight are not bounded by the query pool: only turns of scopes contended across processes
hold a connection each (at most `pool_size` at once; more wait for one, in this process). A process that
dies closes its connections, and PostgreSQL frees its locks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from types import TracebackType

import asyncpg

from acechat.storage.errors import StoreClosedError, StoreError
from acechat.storage.postgres_connections import CONNECT_TIMEOUT, close_connection
from acechat.storage.scope_lock import ScopeQueue, ScopeTurn

log = logging.getLogger(__name__)

LOCK_TABLE_FULL = (
    "cannot take a scope lock: the database's lock table is full "
    "(every turn in flight holds one; raise max_locks_per_transaction on the server)"
)


def lock_key(scope_key: str) -> int:
    """The scope's advisory lock: 64 bits of a hash of its key, as PostgreSQL's signed bigint."""
    return int.from_bytes(hashlib.blake2b(scope_key.encode(), digest_size=8).digest(), "big", signed=True)


class AdvisoryLockSession:
    """One dedicated connection holding many session-level advisory locks, one per scope turn."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None
        # Bumped whenever the connection is replaced: locks taken on an older one are already gone.
        self._generation = 0
        self._tries: list[tuple[int, asyncio.Future[int | None]]] = []
        self._unlocks: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def try_lock(self, key: int) -> asyncio.Future[int | None]:
        """Settles with the generation holding the lock, or None if another session holds or awaits it."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._tries.append((key, future))
        self._kick()
        return future

    def unlock(self, key: int, generation: int) -> None:
        if generation == self._generation and not self._closed:
            self._unlocks.append(key)
            self._kick()

    def _kick(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        retry = True
        try:
            while self._tries or self._unlocks:
                tries, self._tries = self._tries, []
                unlocks, self._unlocks = self._unlocks, []
                try:
                    conn = await self._connection()
                    granted = await conn.fetchval(
                        "SELECT acechat_lock_step($1::bigint[], $2::bigint[])", unlocks, [k for k, _ in tries]
                    )
                except Exception as exc:
                    # Locks taken or released before a failure are unknown: drop the session, and with it
                    # every lock it held, rather than guess.
                    await self._drop(f"the lock connection failed: {exc}")
                    if retry:  # once, on a new connection (the server may have restarted)
                        retry = False
                        self._tries[:0] = tries
                        continue
                    for _, future in tries:
                        if not future.done():
                            future.set_exception(StoreError(f"cannot take a scope lock: {exc}"))
                    continue
                retry = True
                for (key, future), ok in zip(tries, granted, strict=True):
                    if future.done():  # the turn was abandoned while its lock was being taken
                        if ok:
                            self._unlocks.append(key)
                    elif ok is None:
                        future.set_exception(StoreError(LOCK_TABLE_FULL))
                    else:
                        future.set_result(self._generation if ok else None)
        finally:
            self._task = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            if self._conn is not None:
                await self._drop("the lock connection closed")
            self._conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT)
            self._conn.add_termination_listener(self._terminated)
        return self._conn

    def _terminated(self, conn: object) -> None:
        if conn is self._conn and not self._closed:
            log.warning("the scope lock connection closed; turns in flight lost their cross-process lock")
            self._conn = None
            self._generation += 1

    async def _drop(self, why: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._generation += 1
            log.warning("%s; turns in flight lost their cross-process lock", why)
            conn.terminate()

    async def close(self) -> None:
        """Release every lock (closing the session does) and stop."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        conn, self._conn = self._conn, None
        if conn is not None:
            await close_connection(conn)


class SharedScopeTurn:
    """In this process, FIFO through the local queue; then the scope's advisory lock in the database."""

    __slots__ = ("_conn", "_generation", "_key", "_local", "_lock", "_locks", "_queue", "_waiters")

    def __init__(
        self, queue: ScopeQueue, locks: AdvisoryLockSession, waiters: asyncpg.Pool, key: str
    ) -> None:
        self._queue = queue
        self._locks = locks
        self._waiters = waiters
        self._key = key

    async def __aenter__(self) -> None:
        local = self._queue.turn(self._key)
        await local.__aenter__()
        try:
            self._lock = lock_key(self._key)
            self._conn: asyncpg.pool.PoolConnectionProxy | None = None
            generation = await self._locks.try_lock(self._lock)
            if generation is None:
                # Busy in another process: queue in PostgreSQL's lock queue on a connection of our own.
                conn = await self._waiters.acquire()
                try:
                    await conn.execute("SELECT pg_advisory_lock($1)", self._lock)
                except BaseException:
                    # Releasing resets the session, which frees the lock if it was granted meanwhile.
                    await self._waiters.release(conn)
                    raise
                self._conn = conn
            else:
                self._generation = generation
        except BaseException:
            local.release()
            raise
        self._local: ScopeTurn = local

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._conn is None:
                self._locks.unlock(self._lock, self._generation)
            else:
                try:
                    await self._conn.execute("SELECT pg_advisory_unlock($1)", self._lock)
                finally:
                    await self._waiters.release(self._conn)
        finally:
            self._local.release()
