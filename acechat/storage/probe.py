"""A health probe that runs at most once a second however often it is asked (`/healthz` is unauthenticated)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

REUSE_SECONDS = 1.0


class RecentProbe:
    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        reuse: float = REUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._reuse = reuse
        self._clock = clock
        self._result: bool | None = None
        self._at = 0.0
        self._running: asyncio.Future[bool] | None = None

    async def __call__(self) -> bool:
        """The last result if younger than `reuse` seconds; else one probe, shared by concurrent callers."""
        if self._result is not None and self._clock() - self._at < self._reuse:
            return self._result
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        # Shielded: one caller giving up must not cancel the probe the others wait for.
        return await asyncio.shield(self._running)

    async def _run(self) -> bool:
        try:
            result = await self._probe()
        except Exception:
            result = False
        self._result, self._at = result, self._clock()
        self._running = None
        return result
