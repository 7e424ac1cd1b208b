"""One turn at a time per scope, in arrival order; scopes run in parallel.

A lock lives only while someone holds or awaits it, so idle scopes cost nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ScopeQueue:
    def __init__(self) -> None:
        # key -> (lock, number of holders and waiters)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def waiting(self, key: str) -> int:
        entry = self._locks.get(key)
        return 0 if entry is None else entry[1]

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            # asyncio.Lock wakes waiters first-in first-out, which gives arrival order.
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
