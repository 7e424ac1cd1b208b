"""One turn at a time per scope, in arrival order; scopes run in parallel (within one process).

A lock lives only while someone holds or awaits it, so idle scopes cost nothing.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class ScopeQueue:
    def __init__(self) -> None:
        # key -> (lock, number of holders and waiters)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """How many scopes have a turn running or waiting."""
        return len(self._locks)

    def turn(self, key: str) -> ScopeTurn:
        """`async with queue.turn(key):` runs the body once every earlier turn of `key` has ended."""
        return ScopeTurn(self._locks, key)


class ScopeTurn:
    # A plain class rather than @asynccontextmanager: every question enters one, and the generator
    # machinery costs more than the lock itself.
    __slots__ = ("_key", "_lock", "_locks")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, int]], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        locks, key = self._locks, self._key
        entry = locks.get(key)
        lock, users = entry if entry is not None else (asyncio.Lock(), 0)
        locks[key] = (lock, users + 1)
        self._lock = lock
        try:
            # asyncio.Lock wakes waiters first-in first-out, which gives arrival order.
            await lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        """End the turn (what leaving the `async with` does), for callers that compose turns."""
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        locks, key = self._locks, self._key
        lock, users = locks[key]
        if users <= 1:
            del locks[key]
        else:
            locks[key] = (lock, users - 1)
