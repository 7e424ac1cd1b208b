"""Drive one answer onto a platform: first text at once, paced edits, splitting, typing, the final text.

The first fragment is posted as soon as it exists. After that each message is edited no more often
than the platform allows (`TargetLimits.edit_burst` per `edit_window`), always keeping one edit in
reserve, so the final edit goes out the moment the answer is complete instead of waiting for the next
tick of a clock. Text past `max_chars` continues in further messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable

from core.splitting import split_message
from core.target import EditBudget, PlatformRateLimited, ReplyTarget, TargetLimits
from core.upstream import AnswerText

log = logging.getLogger(__name__)

# Streams currently drawing on each shared budget: each keeps one call back for its final edit.
_active: weakref.WeakKeyDictionary[EditBudget, int] = weakref.WeakKeyDictionary()

EMPTY_ANSWER = "_(The model returned no text.)_"
# Longest wait before looking at a shared budget again: other answers may finish and free their reserve.
SHARED_RECHECK = 1.0


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

    def delay(self, final: bool) -> float:
        now = self._clock()
        while self._times and now - self._times[0] >= self._window:
            self._times.popleft()
        wait = max(0.0, self._blocked_until - now)
        allowed = self._burst if final or self._burst == 1 else self._burst - 1
        if len(self._times) >= allowed:
            wait = max(wait, self._times[len(self._times) - allowed] + self._window - now)
        if not final and self._times:
            wait = max(wait, self._times[-1] + self._spacing - now)
        return wait

    def record(self) -> None:
        self._times.append(self._clock())

    def penalize(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


class StreamingReply:
    """One answer's messages on one target. Feed it with `update`, end it with `finish` or `fail`."""

    def __init__(
        self, target: ReplyTarget, *, render: Callable[[str], str] = str, finish_timeout: float = 60.0
    ) -> None:
        self._target = target
        # Partial text is rendered only when a post or edit is about to go out, not for every fragment.
        self._render = render
        self._raw: str | AnswerText = ""
        self._rendered_raw: str | AnswerText = ""
        self._rendered_version = -1
        self._limits = target.limits
        self._pacer = EditPacer(self._limits)
        self._shared = self._limits.shared
        self._handles: list[str] = []
        self._shown: list[str] = []
        self._desired = ""
        # `_desired` as last split into messages: the loop asks for its next step after every post and edit.
        self._split: tuple[str, list[str]] = ("", [])
        self._done = False
        self._wake = asyncio.Event()
        self._completed = asyncio.Event()
        self._finish_timeout = finish_timeout
        self._task: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None
        self.first_text_at: float | None = None
        self.edits = 0

    @property
    def started(self) -> bool:
        return bool(self._handles)

    def start_typing(self) -> None:
        """Show the answer is coming: once, then every `typing_interval` seconds, until the first text."""
        if self._typing is None:
            self._typing = asyncio.create_task(self._keep_typing(self._limits.typing_interval))

    def update(self, raw: str | AnswerText) -> None:
        """The raw answer so far. Never blocks: a background task renders and catches up.

        An `AnswerText` is read only when a post or edit goes out, so fragments cost nothing here.
        """
        # isspace, not strip: no copy of the whole answer so far for every fragment.
        if self._done or not len(raw) or (isinstance(raw, str) and raw.isspace()):
            return
        self._raw = raw
        if self._task is None:
            if self._shared is not None:
                _active[self._shared] = _active.get(self._shared, 0) + 1
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def finish(self, text: str) -> None:
        """Show exactly `text` (split as needed) and return once every message shows it."""
        self._desired = text if text.strip() else EMPTY_ANSWER
        self._done = True
        self._completed.set()
        self._stop_typing()
        if self._task is None:
            if self._shared is not None:
                _active[self._shared] = _active.get(self._shared, 0) + 1
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        try:
            async with asyncio.timeout(self._finish_timeout):
                await self._task
        except TimeoutError:
            log.warning("final edit did not complete within %.0fs; giving up", self._finish_timeout)

    async def fail(self, message: str) -> None:
        """End the answer with a warning, after whatever text had arrived."""
        warning = f"⚠️ {message}"
        shown = self._current().rstrip()
        await self.finish(f"{shown}\n\n{warning}" if shown else warning)

    def _current(self) -> str:
        if self._done:
            return self._desired
        raw = self._raw
        version = raw.version if isinstance(raw, AnswerText) else 0
        if raw is not self._rendered_raw or version != self._rendered_version:
            self._rendered_raw, self._rendered_version = raw, version
            self._desired = self._render(str(raw))
        return self._desired

    async def abort(self) -> None:
        """Stop all background work without sending anything more (the target itself failed)."""
        self._done = True
        self._stop_typing()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def _stop_typing(self) -> None:
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None

    async def _keep_typing(self, interval: float | None) -> None:
        while True:
            try:
                await self._target.typing()
            except Exception as exc:  # typing is decoration: never let it end an answer
                log.debug("typing indicator failed: %s", exc)
            if interval is None:
                return
            await asyncio.sleep(interval)

    def _next(self) -> tuple[int, str] | None:
        text = self._current()
        if self._split[0] is not text:
            self._split = (text, split_message(text, self._limits.max_chars))
        chunks = self._split[1]
        for index, chunk in enumerate(chunks):
            if index >= len(self._shown) or self._shown[index] != chunk:
                return index, chunk
        return None

    async def _run(self) -> None:
        try:
            while True:
                step = self._next()
                if step is None:
                    if self._done:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                index, chunk = step
                if index >= len(self._handles):
                    await self._post(chunk)
                    continue
                # Freezing an earlier message, or the last edit, may use the reserved slot.
                final = self._done or index < len(self._handles) - 1
                wait = self._pacer.delay(final)
                if wait <= 0 and self._shared is not None:
                    wait = self._take_shared(final)
                if wait > 0:
                    await self._sleep(wait)
                    continue
                await self._edit(index, chunk)
        finally:
            self._stop_typing()
            if self._shared is not None:
                remaining = _active.get(self._shared, 1) - 1
                if remaining > 0:
                    _active[self._shared] = remaining
                else:
                    _active.pop(self._shared, None)

    def _take_shared(self, final: bool) -> float:
        """Take a call from the shared budget: 0.0 on success, else how long to wait before trying again."""
        assert self._shared is not None
        reserve = 0 if final else _active.get(self._shared, 1)
        if self._shared.try_acquire(reserve):
            return 0.0
        # With more answers streaming than the budget holds, intermediate edits wait for others to finish.
        return min(max(self._shared.delay(reserve), 0.01), SHARED_RECHECK)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the answer completes: the final edit may go sooner."""
        if self._done:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._completed.wait(), seconds)
        except TimeoutError:
            pass

    async def _post(self, chunk: str) -> None:
        try:
            handle = await self._target.post(chunk)
        except PlatformRateLimited as limited:
            await asyncio.sleep(limited.retry_after)
            return
        if self.first_text_at is None:
            self.first_text_at = time.monotonic()
            self._stop_typing()
        self._handles.append(handle)
        self._shown.append(chunk)

    async def _edit(self, index: int, chunk: str) -> None:
        self._pacer.record()
        try:
            await self._target.edit(self._handles[index], chunk)
        except PlatformRateLimited as limited:
            log.info("platform rate limit on edit; retrying in %.2fs", limited.retry_after)
            self._pacer.penalize(limited.retry_after)
            if self._shared is not None:
                self._shared.penalize(limited.retry_after)
            return
        self.edits += 1
        self._shown[index] = chunk
