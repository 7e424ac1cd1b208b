"""Drive one answer onto a platform: a sign of life, the first text at once, paced edits, the final text.

The first fragment is posted as soon as it exists. After that each message is edited no more often than
the platform allows (`TargetLimits.edit_burst` per `edit_window`), always keeping one edit in reserve, so
the final edit goes out the moment the answer is complete. Text past `max_chars` continues in further
messages.

Under load the platform's shared allowances (core.pacing.scheduler) decide. When the first text is ready, an
answer streams by edits only if the allowance its final edit draws on can still promise that edit
within a second; otherwise it is held back and posted once, complete, which costs no edit at all, unless
a final can be promised before then, when it starts streaming after all. A held answer keeps its sign
of life (typing, Slack's thinking status) until then. Finals go before first posts, first posts before
intermediate edits, those before typing, and typing before a live tool line (progress), which is dropped
first. A tool line before any text decides nothing: the answer streams or is held back when its first
text comes, whether that text is a post or an edit of the message the tool line showed in. A target
that shows tool steps apart from the text (`TargetLimits.steps_apart`) never has the tool line in its
text: each change of it is a `status` call of its own, paced and ranked as the tool line's edits are.

Every answer takes a place in its channel's line (`join`) before anything is asked upstream, and is
refused if the posts the line already owes would take longer than `MAX_BACKLOG`. Time spent waiting in
line does not count against the finish timeout. A call refused with a 429 is waited out per Retry-After,
one whose outcome is unknown is settled by the target; after `FAILED_TRIES` failures in a row the answer
stops and posts what is missing anew, through the same line.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

from acechat.core import metrics
from acechat.core.pacing.edits import EditPacer
from acechat.core.pacing.limits import Limits
from acechat.core.pacing.scheduler import Place, Scheduler, Urgency
from acechat.core.platform_errors import MessageGone, PlatformRateLimited, PlatformUnsure
from acechat.core.reply_target import ReplyTarget
from acechat.core.splitting import split_message

log = logging.getLogger(__name__)

EMPTY_ANSWER = "_(The model returned no text.)_"
RESCUED = "_(My message above stopped updating, so the answer continues here from that point.)_"
# An answer streams only if the limits its final edit draws on could serve it within this long.
ADMISSION_WINDOW = 1.0
# Longest wait before looking at a shared limit again: other answers may finish and free their pledges.
RECHECK = 1.0
# Soonest a held answer looks again whether its final could be promised, so that it may stream after all.
HOLD_RECHECK = 0.25
# How long an answer may take to show its first text before a sign of life is worth a platform call.
TYPING_DELAY = 0.05
# A sign of life that found no room is tried again when there might be room, between these bounds.
TYPING_SOONEST = 0.02
TYPING_RETRY = 1.0
# A change that only moves the live tool line (no new answer text) waits at least this long after the
# answer's last call ended (so the platform sees them at least this far apart), and only while the
# window keeps room for the next text and the final edit: progress is the first thing to give way, and
# never delays the answer itself.
PROGRESS_INTERVAL = 1.0
# How long a rescue (posting what could not be edited) may take before the asker is told.
RESCUE_TIMEOUT = 20.0
# Most seconds of posts a channel's line of answers may owe: an answer that would join a longer one is
# refused up front rather than accepted and then not shown in time.
MAX_BACKLOG = 60.0
# Time an answer waits in line behind other answers does not count against its finish timeout, up to
# this long: a queue that moves is not a stuck answer, a platform that refuses everything is.
LINE_GRACE = 120.0
# Calls in a row of one answer that were refused (429, waited out per Retry-After) or whose outcome the
# target could not settle, before the answer stops and posts what is missing anew.
FAILED_TRIES = 3


class Draft(Protocol):
    """An answer still being written, read only when a post or edit goes out: `version` changes with
    every change, and `len()` is non-zero once there is something to show (`AnswerText`, say)."""

    @property
    def version(self) -> int: ...

    def __len__(self) -> int: ...


class Mode(enum.Enum):
    UNDECIDED = "undecided"
    STREAM = "stream"  # post the first text at once, then edit
    HOLD = "hold"  # post once, complete


class StreamingReply:
    """One answer's messages on one target. Feed it with `update`, end it with `finish` or `fail`."""

    def __init__(
        self,
        target: ReplyTarget,
        *,
        render: Callable[[str | Draft], str] = str,
        finish_timeout: float = 60.0,
    ) -> None:
        self._target = target
        # Partial text is rendered only when a post or edit is about to go out, not for every fragment.
        self._render = render
        self._raw: str | Draft = ""
        self._rendered_raw: str | Draft = ""
        self._rendered_version = -1
        self._limits = target.limits
        self._pacer = EditPacer(self._limits)
        # Without a platform scheduler an answer has its limits to itself; the code path is the same.
        self._scheduler = self._limits.scheduler or Scheduler()
        self._mode = Mode.UNDECIDED
        self._pledge: Limits = ()
        self._wanting: Limits = ()  # held back, waiting for a final it could pledge on these
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
        self._typing: asyncio.Task[None] | asyncio.TimerHandle | None = None
        self._place: Place | None = None
        self._in_line = 0.0  # seconds spent waiting behind other answers, the current wait included
        self._line_since: float | None = None
        self._failed = 0  # calls in a row refused or of unknown outcome
        self.first_text_at: float | None = None
        # The draft's `text_version` (answer text only, no tool line) last shown; None for drafts
        # without one, whose every change is text.
        self._shown_text_version: int | None = None
        self._last_was_progress = False
        self._last_call_at = -PROGRESS_INTERVAL
        self._shown_step = ""  # the tool step the target was last told of, where it shows them apart
        # Where the target has a status, the tool line before any text shows there (see `_status_line`).
        self._status_changed = asyncio.Event()
        self._status_call: asyncio.Future[None] | None = None
        self._clearing: asyncio.Task[None] | None = None
        # Whether the asker has seen anything of the answer yet (typing, a status, a message), and the
        # limits its sign of life is counted as due on until then (`Scheduler.silent`).
        self._signed = False
        self._silent: Limits = ()
        # A first sign of life is on its way (typing, or the tool line posted): no second one meanwhile.
        self._signing = False

    @property
    def started(self) -> bool:
        return bool(self._handles)

    def join(self, asker: str, longest: int) -> float | None:
        """Take a place in the line of answers posting where this one will, for an answer of at most
        `longest` characters. None if taken; otherwise the line is too long (`MAX_BACKLOG`) and this
        says in how many seconds it could take one more."""
        # The line is the channel's: its own allowance comes last in `posts` (Discord: the global one,
        # then the channel's). A bot-wide allowance is no channel's line, and every answer counted at
        # its longest against it would refuse questions in quiet channels too.
        posts = self._limits.posts[-1:]
        owed = math.ceil(longest / self._limits.max_chars)
        wait = self._scheduler.backlog(posts, owed)
        if wait > MAX_BACKLOG:
            return wait - MAX_BACKLOG
        self._place = self._scheduler.join(posts, asker, owed)
        return None

    def leave(self) -> None:
        """Give up the place in line (the answer ended, or never began)."""
        if self._place is not None:
            self._scheduler.leave(self._place)
            self._place = None

    def start_typing(self) -> None:
        """Show the answer is coming: once, then every `typing_interval` seconds, until the first text.

        Only if the first text has not come within `TYPING_DELAY`: nobody sees a sign of life that
        short, and an answer that quick costs no platform call for it."""
        if self._typing is None:
            self._typing = asyncio.get_running_loop().call_later(TYPING_DELAY, self._begin_typing)

    def _begin_typing(self) -> None:
        if not self._signed and not self._silent:
            self._silent = self._limits.typing_limits
            self._scheduler.silent(self._silent)
        self._typing = asyncio.create_task(self._keep_typing())

    def update(self, raw: str | Draft) -> None:
        """The raw answer so far. Never blocks: a background task renders and catches up.

        An `AnswerText` is read only when a post or edit goes out, so fragments cost nothing here.
        """
        # isspace, not strip: no copy of the whole answer so far for every fragment.
        if self._done or not len(raw) or (isinstance(raw, str) and raw.isspace()):
            return
        self._raw = raw
        self._status_changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()

    async def finish(self, text: str) -> None:
        """Show exactly `text` (split as needed) and return once every message shows it."""
        self._desired = text if text.strip() else EMPTY_ANSWER
        self._done = True
        self._completed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._wake.set()
        task = self._task
        deadline = time.monotonic() + self._finish_timeout
        waited = self._waited()
        while not task.done():
            left = deadline + min(self._waited() - waited, LINE_GRACE) - time.monotonic()
            if left <= 0:
                log.warning(
                    "the final text did not go out within %.0fs; posting it anew", self._finish_timeout
                )
                await self._rescue()
                return
            await asyncio.wait({task}, timeout=left)
        task.result()
        if self._next() is not None:
            log.warning("the platform kept refusing an answer's calls; posting the rest anew")
            await self._rescue()
        else:
            self.leave()

    def _waited(self) -> float:
        """Seconds spent waiting in line behind other answers so far."""
        if self._line_since is None:
            return self._in_line
        return self._in_line + time.monotonic() - self._line_since

    async def _wait_turn(self, urgency: Urgency | Callable[[], Urgency], limits: Limits) -> None:
        self._line_since = time.monotonic()
        try:
            await self._scheduler.call(urgency, limits, self._place)
        finally:
            self._in_line = self._waited()
            self._line_since = None

    def _rate_limited(self, limits: Limits, seconds: float) -> float:
        """A 429: the limits wait `seconds`; after too many failures in a row the loop stops (-1)."""
        self._scheduler.penalize(limits, seconds)
        return self._failed_try(seconds)

    def _failed_try(self, wait: float = 0.0) -> float:
        self._failed += 1
        return -1.0 if self._failed >= FAILED_TRIES else wait

    async def fail(self, message: str) -> None:
        """End the answer with a warning, after whatever text had arrived."""
        warning = f"⚠️ {message}"
        shown = self._current().rstrip()
        await self.finish(f"{shown}\n\n{warning}" if shown else warning)

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
        self._release()

    # --- text ------------------------------------------------------------------------------------

    def _current(self) -> str:
        if self._done:
            return self._desired
        raw = self._raw
        version = 0 if isinstance(raw, str) else raw.version
        if raw is not self._rendered_raw or version != self._rendered_version:
            self._rendered_raw, self._rendered_version = raw, version
            self._desired = self._render(raw)
        return self._desired

    def _chunks(self) -> list[str]:
        text = self._current()
        if self._split[0] is not text:
            self._split = (text, split_message(text, self._limits.max_chars, self._limits.measure))
        return self._split[1]

    def _next(self) -> tuple[int, str] | None:
        """The first message that must change: (its index, its text); an index past the last is a post."""
        for index, chunk in enumerate(self._chunks()):
            if index >= len(self._shown) or self._shown[index] != chunk:
                return index, chunk
        return None

    # --- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._failed < FAILED_TRIES:
                step = self._next()
                if step is None:
                    if self._done:
                        return
                    await self._wait_step()
                    continue
                index, _ = step
                if not self._done and self._progress_only():
                    if self._limits.steps_apart:
                        await self._wait_step()
                        continue
                    if not self._handles and self._status_line() is not None:
                        # A tool line alone goes to the status with the sign of life, not into a post
                        # whose first text would then need an edit.
                        if self._typing is None:
                            self._begin_typing()
                        self._wake.clear()
                        await self._wake.wait()
                        continue
                    await self._progress(index)
                    continue
                first_text = not self._text_shown()
                if first_text and not self._done:
                    if self._mode is Mode.UNDECIDED:
                        self._decide()
                    if self._mode is Mode.HOLD:
                        # Looked at again when a final could be pledged (a moment's jitter keeps many
                        # held answers from waking together), or at once if the answer completes.
                        wait = self._scheduler.admission_delay(self._limits.edits)
                        await self._sleep(min(RECHECK, max(wait, HOLD_RECHECK)) * (1 + random.random()))
                        self._reconsider()
                        continue
                if index >= len(self._handles):
                    await self._post()
                elif self._done or index < len(self._handles) - 1:
                    # Freezing an earlier message, or the last edit, may use the reserved slot.
                    await self._final_edit()
                elif first_text:
                    await self._first_edit()
                else:
                    await self._intermediate_edit()
        finally:
            self._stop_typing()
            self._release()
            if self._place is not None and self._done:
                self._owe_rest()

    def _owe_rest(self) -> None:
        if self._place is not None:
            self._scheduler.owe(self._place, max(0, len(self._chunks()) - len(self._handles)))

    def _first_calls(self) -> int:
        """Calls on the edits allowance an answer that streams needs before its intermediate edits: its
        final, and its first text too where that text edits the message a tool line showed in."""
        return 2 if self._handles else 1

    def _decide(self) -> None:
        """Stream by edits if the final edit can be promised; otherwise hold the answer back."""
        edits = self._limits.edits
        if self._scheduler.admits(edits, ADMISSION_WINDOW, self._first_calls()):
            self._mode, self._pledge = Mode.STREAM, edits
        else:
            # Posted once, complete; or, over a tool line already shown, completed by one edit.
            self._mode, self._pledge = Mode.HOLD, edits if self._handles else self._limits.posts
            # Intermediate edits of other answers now leave room for this one's final.
            self._wanting = edits
            self._scheduler.want(edits)
            metrics.ANSWERS_HELD.inc()
        self._scheduler.pledge(self._pledge)

    def _reconsider(self) -> None:
        """A held answer streams after all once its final edit can be promised."""
        edits = self._limits.edits
        if self._done or not self._scheduler.admits(edits, ADMISSION_WINDOW, self._first_calls()):
            return
        self._release()
        self._mode, self._pledge = Mode.STREAM, edits
        self._scheduler.pledge(edits)

    def _release(self) -> None:
        if self._pledge:
            self._scheduler.release(self._pledge)
            self._pledge = ()
        if self._wanting:
            self._scheduler.unwant(self._wanting)
            self._wanting = ()

    def _urgency(self) -> Urgency:
        return Urgency.FINAL if self._done else Urgency.POST

    async def _post(self) -> None:
        # A post still queued when the answer completes goes out as the final text, first in line.
        await self._wait_turn(self._urgency, self._limits.posts)
        await self._posting()

    async def _posting(self, *, progress: bool = False) -> None:
        """Make the post a call on `posts` was granted for (a tool line alone if `progress`)."""
        posts = self._limits.posts
        try:
            step = self._next()  # the text may have grown, or completed, while the post waited
            if step is None or step[0] < len(self._handles) or progress != self._progress_only():
                return
            _, chunk = step
            version = self._text_version()
            # Never waited for: the answer keeps its turn. A status still on its way may land after the
            # post, under the answer, and is cleared once it has (`_clear_status`).
            call = self._status_call
            unsettled = call is not None and not call.done()
            try:
                handle = await self._target.post(chunk)
            finally:
                self._last_call_at = time.monotonic()
        except PlatformRateLimited as limited:
            wait = self._rate_limited(posts, limited.retry_after)
            if wait > 0:
                await asyncio.sleep(wait)
            return
        except PlatformUnsure as error:
            # The target looked for it and it is not there: posted again on the next turn, never blindly.
            log.warning("a post of an answer did not arrive (%s); posting it again", error)
            self._failed_try()
            return
        finally:
            self._scheduler.done(posts)
        self._failed = 0
        self._stop_typing()
        if call is not None and unsettled:
            call.add_done_callback(self._clear_status)
        self._handles.append(handle)
        self._shown.append(chunk)
        self._shown_text_version, self._last_was_progress = version, progress
        self._note_first_text()
        if self._done:
            self._owe_rest()
        elif self._place is not None:
            self._scheduler.owe(self._place, max(0, self._place.owed - 1))

    async def _final_edit(self) -> None:
        wait = self._pacer.delay(final=True)
        if wait > 0:
            await asyncio.sleep(wait)
            return
        await self._wait_turn(Urgency.FINAL, self._limits.edits)
        try:
            step = self._next()
            if step is not None and step[0] < len(self._handles):
                await self._edit(*step)
        finally:
            self._scheduler.done(self._limits.edits)

    def _text_version(self) -> int | None:
        """The draft's count of answer-text changes; None once complete (all of it is text then), or for
        drafts without one."""
        if self._done:
            return None
        version = getattr(self._raw, "text_version", None)
        return version if isinstance(version, int) else None

    def _progress_only(self) -> bool:
        """Whether what changed since the last call is the tool line alone (no answer text at all yet, or
        none new)."""
        version = self._text_version()
        return version is not None and version in (0, self._shown_text_version)

    def _text_shown(self) -> bool:
        """Whether a message shows answer text (not a tool line alone)."""
        return bool(self._handles) and self._shown_text_version != 0

    def _note_first_text(self) -> None:
        if self.first_text_at is None and self._text_shown():
            self.first_text_at = time.monotonic()

    async def _progress(self, index: int) -> None:
        """Show the tool line (a post before any text, else an edit): at most one call a second, and only
        as a call that may be dropped, after every other kind and only once every answer on its limits has
        shown a sign of life, so progress is the first thing to give way. Until the answer has shown
        anything, the tool line is its sign of life, as urgent as typing."""
        posting = index >= len(self._handles)
        limits, urgency, wait = self._progress_call(posting)
        if wait <= 0:
            if self._scheduler.try_call(urgency, limits):
                if posting:
                    signing = urgency is Urgency.TYPING
                    self._signing = self._signing or signing
                    try:
                        await self._posting(progress=True)
                    finally:
                        if signing:
                            self._signing = False
                    return
                try:
                    step = self._next()
                    if step is not None and step[0] < len(self._handles) and self._progress_only():
                        await self._edit(*step)
                finally:
                    self._scheduler.done(limits)
                return
            wait = self._retry_after(urgency, limits)
        await self._until_news(wait)

    def _progress_call(self, posting: bool) -> tuple[Limits, Urgency, float]:
        """A progress call's allowance, urgency, and how long it must wait yet: at most one a second after
        the answer's last call, an edit leaving a spare for the final; as urgent as typing until the answer
        has shown anything."""
        limits = self._limits.posts if posting else self._limits.edits
        urgency = Urgency.PROGRESS if self._signed or self._signing else Urgency.TYPING
        wait = self._last_call_at + PROGRESS_INTERVAL - time.monotonic()
        if not posting:
            wait = max(wait, self._pacer.delay(final=False, spare=1))
        return limits, urgency, wait

    def _retry_after(self, urgency: Urgency, limits: Limits) -> float:
        """When to look again for a progress call the scheduler had no room for (jittered, bounded)."""
        wait = self._scheduler.delay(urgency, limits)
        return min(RECHECK, max(wait, TYPING_SOONEST) * (1 + random.random()))

    async def _until_news(self, wait: float) -> None:
        """Wait `wait` seconds, or less if anything new comes: answer text must not wait out a progress
        call's interval."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    # --- tool steps shown apart (`TargetLimits.steps_apart`) ----------------------------------------

    def _step_line(self) -> str:
        """The tool step running now, as the target is told it ("" for none)."""
        line = getattr(self._raw, "step", None)
        return line if isinstance(line, str) else ""

    async def _wait_step(self) -> None:
        """Nothing of the text to show: show a change of the tool step, if there is one, else wait for
        news. A step's news waits for the text: the loop shows new text first."""
        if self._limits.steps_apart and self._step_line() != self._shown_step:
            await self._show_step()
            return
        self._wake.clear()
        await self._wake.wait()

    async def _show_step(self) -> None:
        """Tell the target the tool step changed, paced as a tool line's edit is (`_progress`): at most
        one call a second, only as a call that may be dropped, and until the answer has shown anything
        as urgent as typing. On the posts allowance before the first message (the target may show the
        step in a message of its own), on the edits allowance after."""
        posting = not self._handles
        limits, urgency, wait = self._progress_call(posting)
        if wait <= 0:
            if self._scheduler.try_call(urgency, limits):
                signing = urgency is Urgency.TYPING
                self._signing = self._signing or signing
                line = self._step_line()
                if not posting:
                    self._pacer.record()
                try:
                    await self._target.status(line)
                except PlatformRateLimited as limited:
                    self._scheduler.penalize(limits, limited.retry_after)
                    return
                except Exception as exc:  # a step is decoration: never retried, never ends an answer
                    log.debug("could not show a tool step: %s", exc)
                finally:
                    self._last_call_at = time.monotonic()
                    if signing:
                        self._signing = False
                    self._scheduler.done(limits)
                self._shown_step = line
                # New text after a step goes at once: the step must not have spent its spacing.
                self._last_was_progress = not posting
                if line and posting:
                    self._stop_typing()  # the step shows: it is the answer's sign of life
                return
            wait = self._retry_after(urgency, limits)
        await self._until_news(wait)

    async def _first_edit(self) -> None:
        """The first answer text, over the tool line the answer's message showed: as urgent as a first post,
        and at once (the tool line's edit must not have spent the spacing)."""
        wait = self._pacer.delay(final=False, spaced=False)
        if wait > 0:
            await self._sleep(wait)
            return
        edits = self._limits.edits
        await self._wait_turn(self._urgency, edits)
        try:
            await self._edit_next()
        finally:
            self._scheduler.done(edits)

    async def _intermediate_edit(self) -> None:
        # New text after a tool line goes at once: the tool line must not have spent its spacing.
        wait = self._pacer.delay(final=False, spaced=not self._last_was_progress)
        if wait <= 0:
            edits = self._limits.edits
            if self._scheduler.try_call(Urgency.EDIT, edits):
                try:
                    await self._edit_next()
                finally:
                    self._scheduler.done(edits)
                return
            # With more answers streaming than the limit holds, intermediate edits wait for others to finish.
            wait = min(max(self._scheduler.delay(Urgency.EDIT, edits), 0.01), RECHECK)
        await self._sleep(wait)

    async def _edit_next(self) -> None:
        """Edit the next message whose text changed, if it has been posted."""
        step = self._next()
        if step is not None and step[0] < len(self._handles):
            await self._edit(*step)

    async def _edit(self, index: int, chunk: str) -> None:
        progress, version = self._progress_only(), self._text_version()
        self._pacer.record()
        try:
            try:
                await self._target.edit(self._handles[index], chunk)
            finally:
                self._last_call_at = time.monotonic()
        except PlatformRateLimited as limited:
            log.info("platform rate limit on edit; retrying in %.2fs", limited.retry_after)
            self._pacer.penalize(limited.retry_after)
            self._rate_limited(self._limits.edits, limited.retry_after)
            return
        except PlatformUnsure as error:
            # It may show, or not: the next edit of the same message makes sure.
            log.info("an edit's outcome is unknown (%s); editing the message again", error)
            self._failed_try()
            return
        except MessageGone:
            # Someone removed the message (a moderator, say): that is their call, not a failure to repeat.
            log.info("a message of an answer was deleted; leaving it out")
        self._failed = 0
        self._shown[index] = chunk
        self._shown_text_version, self._last_was_progress = version, progress
        self._note_first_text()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when the answer completes: the final edit may go sooner."""
        if self._done:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._completed.wait(), seconds)
        except TimeoutError:
            pass

    async def _rescue(self) -> None:
        """Post as new messages whatever of the final text the old ones do not show; if even that fails,
        tell the asker the answer could not be shown whole. An answer is never left silently partial."""
        await self.abort()
        limit = self._limits.max_chars - len(RESCUED) - 2
        chunks = split_message(self._desired, limit, self._limits.measure)
        missing = [c for i, c in enumerate(chunks) if i >= len(self._shown) or self._shown[i] != c]
        self._failed = 0
        try:
            async with asyncio.timeout(RESCUE_TIMEOUT):
                for n, chunk in enumerate(missing):
                    await self._post_anew(f"{RESCUED}\n\n{chunk}" if n == 0 and self._handles else chunk)
        except Exception as error:
            log.warning("could not post the rest of an answer either: %s", error)
            try:
                await self._target.notify("My answer could not be shown in full here; ask again in a moment.")
            except Exception:
                log.exception("could not send a notice")
        finally:
            self.leave()

    async def _post_anew(self, text: str) -> None:
        """A rescue's post: first in line like any final, a 429 waited out a few times."""
        posts = self._limits.posts
        while True:
            await self._wait_turn(Urgency.FINAL, posts)
            try:
                await self._target.post(text)
                return
            except PlatformRateLimited as limited:
                wait = self._rate_limited(posts, limited.retry_after)
                if wait < 0:
                    raise
            except PlatformUnsure:
                wait = self._failed_try()
                if wait < 0:
                    raise
            finally:
                self._scheduler.done(posts)
            await asyncio.sleep(wait)

    # --- sign of life ----------------------------------------------------------------------------

    def _stop_typing(self) -> None:
        """The answer shows (or ends): no sign of life is due any more."""
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None
        self._sign_shown()

    def _sign_shown(self) -> None:
        self._signed = True
        if self._silent:
            self._scheduler.heard(self._silent)
            self._silent = ()

    def _clear_status(self, call: asyncio.Future[None]) -> None:
        """A status call that was still on its way when the first message went out has ended: if it
        worked, it may show under the answer, so it is cleared (one more call, and only then)."""
        if call.cancelled() or call.exception() is not None:
            return
        self._clearing = asyncio.create_task(self._quiet_status(""))

    async def _quiet_status(self, text: str) -> None:
        try:
            await self._target.status(text)
        except Exception as exc:  # a status is decoration
            log.debug("could not clear a status: %s", exc)

    def _status_line(self) -> str | None:
        """The tool line to show as the target's status, cut to its length: only before the first post,
        and only where the target has a status."""
        chars = self._limits.status_chars
        if not chars or self._handles:
            return None
        line = getattr(self._raw, "progress", None)
        if not isinstance(line, str) or not line:
            return None
        return line if len(line) <= chars else line[: chars - 1].rstrip() + "…"

    async def _keep_typing(self) -> None:
        interval = self._limits.typing_interval
        limits = self._limits.typing_limits
        while True:
            if self._signing or not self._scheduler.try_call(Urgency.TYPING, limits):
                # Busy with answers: a sign of life is the first thing to give way, and tries again as
                # soon as it might go (a moment's jitter keeps many waiting answers from waking together).
                wait = TYPING_SOONEST if self._signing else self._scheduler.delay(Urgency.TYPING, limits)
                await asyncio.sleep(min(TYPING_RETRY, max(wait, TYPING_SOONEST) * (1 + random.random())))
                continue
            shown = self._status_line()
            self._signing = True
            try:
                if self._limits.status_chars is None:
                    await self._target.typing()
                else:
                    await self._set_status(shown)
                self._sign_shown()
            except Exception as exc:  # typing is decoration: never let it end an answer
                log.debug("typing indicator failed: %s", exc)
            finally:
                self._signing = False
                self._scheduler.done(limits)
            if self._limits.status_chars is None:
                if interval is None:
                    return
                await asyncio.sleep(interval)
                continue
            await self._next_status(shown, interval)

    async def _set_status(self, shown: str | None) -> None:
        """Show `shown` (None: the plain sign of life) as the status. The call runs to its end even when
        the first post stops the sign of life (see `_clear_status`)."""
        call = asyncio.ensure_future(self._target.typing() if shown is None else self._target.status(shown))
        call.add_done_callback(_retrieved)
        self._status_call = call
        await asyncio.shield(call)

    async def _next_status(self, shown: str | None, interval: float | None) -> None:
        """Wait until the status should show a new tool line (at most one call a second, like a tool
        line's edits) or be shown again (`interval`: Slack clears a status after two minutes). Text
        arriving changes nothing: the line stays until the first post clears it, at no extra call."""
        since = time.monotonic()
        while True:
            self._status_changed.clear()
            line = self._status_line()
            if line is not None and line != shown:
                break
            left = None if interval is None else since + interval - time.monotonic()
            if left is not None and left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_changed.wait(), left)
        await asyncio.sleep(max(0.0, since + PROGRESS_INTERVAL - time.monotonic()))


def _retrieved(call: asyncio.Future[None]) -> None:
    """A sign of life's failure is logged where it is awaited, or not at all once the answer shows."""
    if not call.cancelled():
        call.exception()
