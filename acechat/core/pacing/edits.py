"""How often one message is edited: the platform's per-message (or per-channel) edit window."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from acechat.core.reply_target import TargetLimits


class EditPacer:
    """Per-target sliding window of edit times: stricter than any fixed window the platform uses."""

    def __init__(self, limits: TargetLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = max(1, limits.edit_burst)
        self._window = max(0.0, limits.edit_window)
        # Spread intermediate edits so one slot is always free for the final one.
        self._spacing = self._window / max(1, self._burst - 1)
        self._times: deque[float] = deque()
        self._blocked_until = 0.0
        self._clock = clock

    def delay(self, final: bool, *, spaced: bool = True, spare: int = 0) -> float:
        """Seconds until an edit may go. `spaced=False` skips the spreading of intermediate edits (the
        first answer text after a tool line); `spare` more slots must stay free after it (progress)."""
        now = self._clock()
        while self._times and now - self._times[0] >= self._window:
            self._times.popleft()
        wait = max(0.0, self._blocked_until - now)
        allowed = self._burst if final or self._burst == 1 else self._burst - 1
        allowed -= spare
        if allowed <= 0:
            return max(wait, self._window)
        if len(self._times) >= allowed:
            wait = max(wait, self._times[len(self._times) - allowed] + self._window - now)
        if not final and spaced and self._times:
            wait = max(wait, self._times[-1] + self._spacing - now)
        return wait

    def record(self) -> None:
        self._times.append(self._clock())

    def penalize(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)
