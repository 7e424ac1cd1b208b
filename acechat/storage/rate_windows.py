"""Sliding-window rate limits kept in this process's memory (the SQLite backend's `take_rate`)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from acechat.storage.records import RateCheck, RateVerdict

ALLOWED = RateVerdict(None, 0.0)


class SlidingWindows:
    """Hits per key within each window length; a check refuses at `count` hits in the last `per_seconds`.

    Keys with no hit inside their window are dropped as time passes, so memory follows active keys only.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # One map per window length, least recently hit key first, so idle keys are found at the front.
        self._windows: dict[float, OrderedDict[str, deque[float]]] = {}

    def __len__(self) -> int:
        """How many (window, key) pairs are remembered."""
        return sum(len(hits) for hits in self._windows.values())

    def take(self, checks: Sequence[RateCheck], now: float | None = None) -> RateVerdict:
        """Record a hit on every enabled check's key if none refuses; else the first refusal and its wait."""
        active = [(i, c) for i, c in enumerate(checks) if c.count > 0]
        if not active:
            return ALLOWED
        now = self._clock() if now is None else now
        for index, check in active:
            hits = self._current(check, now)
            if hits is not None and len(hits) >= check.count:
                # The hit that must leave the window for one more to fit.
                wait = hits[len(hits) - check.count] + check.per_seconds - now
                return RateVerdict(index, max(wait, 0.0))
        for _, check in active:
            # Looked up again: evicting for a later check may have dropped an emptied entry.
            window = self._windows.setdefault(check.per_seconds, OrderedDict())
            hits = window.get(check.key)
            if hits is None:
                hits = window[check.key] = deque()
            hits.append(now)
            window.move_to_end(check.key)
        return ALLOWED

    def forget_idle(self, now: float | None = None) -> None:
        """Drop every key with no hit inside its window."""
        now = self._clock() if now is None else now
        for per_seconds, window in list(self._windows.items()):
            self._evict(window, now - per_seconds)
            if not window:
                del self._windows[per_seconds]

    def _current(self, check: RateCheck, now: float) -> deque[float] | None:
        window = self._windows.get(check.per_seconds)
        if window is None:
            return None
        horizon = now - check.per_seconds
        self._evict(window, horizon)
        hits = window.get(check.key)
        if hits is not None:
            while hits and hits[0] <= horizon:
                hits.popleft()
        return hits

    @staticmethod
    def _evict(window: OrderedDict[str, deque[float]], horizon: float) -> None:
        while window:
            oldest = next(iter(window.values()))
            if oldest and oldest[-1] > horizon:
                break
            window.popitem(last=False)
