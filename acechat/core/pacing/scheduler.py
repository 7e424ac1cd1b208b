"""Platform calls under limits that many answers share, the most urgent first.

Every call granted by `call` or `try_call` is ended with `done`, whatever happened to it.

A platform allows so many calls per window: Discord about 50 a second in all and 5 edits per 5 s per
channel, Slack about 50 `chat.update` a minute per workspace and a post a second per channel. Each such
allowance is a `Limit`. Every call an answer makes names the limits it draws on and how urgent it is
(`Urgency`); the `Scheduler` hands out calls in order of urgency:

- an answer's final text (`FINAL`) before any first post (`POST`), before an intermediate edit (`EDIT`),
  before a typing indicator (`TYPING`), before a live tool line (`PROGRESS`). The three last are dropped,
  not queued, when they would delay the others, and a tool line also waits while any answer on its
  limits has still shown nothing at all (`silent`);
- an answer that streams by edits *pledges* the call its final edit will need, so intermediate edits
  never spend it; a new answer streams only if its final can be pledged (`admits`), and otherwise is
  posted once, complete;
- among the answers posting in one channel, each has a `Place` in line: an answer that has started
  showing goes before one that has not, so answers finish one after another instead of all advancing
  together; answers not started yet take turns by asker (a user's second answer waits behind every
  other user's first), then arrive in order. A place says how many posts its answer may still need,
  so the line's length in seconds (`backlog`) is known before a new answer joins it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from acechat.core.pacing.limits import Limit, Limits


class Urgency(enum.IntEnum):
    """How urgent a platform call is; lower goes first."""

    FINAL = 0
    POST = 1
    EDIT = 2
    TYPING = 3
    PROGRESS = 4


UrgencyOf = Urgency | Callable[[], Urgency]


@dataclass(eq=False)
class Place:
    """One answer's place in the line of answers posting in one channel (see `Scheduler.join`)."""

    line: tuple[int, ...]  # the identities of the posts limits: one line per channel
    asker: str
    round: int  # the asker's answers already in this line when this one joined
    seq: int
    owed: int  # posts the answer may still make
    started: int | None = None  # set when its first call was granted: its order among started answers

    def key(self) -> tuple[int, int, int]:
        if self.started is not None:
            return (0, self.started, 0)
        return (1, self.round, self.seq)


# Calls of no answer's (a notice, a command's reply) rank with answers that have not started, first.
_PLACELESS = (1, 0, -1)


@dataclass(eq=False)
class _Ticket:
    urgency: UrgencyOf
    limits: Limits
    seq: int
    future: asyncio.Future[None] = field(repr=False)
    place: Place | None = None

    def rank(self) -> tuple[tuple[int, int, int], Urgency, int]:
        return (_PLACELESS if self.place is None else self.place.key(), self.level, self.seq)

    @property
    def level(self) -> Urgency:
        return self.urgency if isinstance(self.urgency, Urgency) else self.urgency()


class Scheduler:
    """Hands out calls on shared limits by urgency. One serves a whole platform connection."""

    def __init__(self) -> None:
        self._waiting: list[_Ticket] = []
        # Per limit (by identity): tickets queued on it, and finals pledged on it.
        self._queued: dict[int, int] = {}
        self._pledged: dict[int, int] = {}
        # Answers held back that would stream if a final could be pledged for them, per limit.
        self._wanted: dict[int, int] = {}
        # Answers due to show a sign of life (typing) that have shown nothing yet, per limit.
        self._silent: dict[int, int] = {}
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        # Lines: answers per (line, asker), and posts owed per limit (by identity).
        self._askers: dict[tuple[tuple[int, ...], str], int] = {}
        self._owed: dict[int, int] = {}
        self._starts = itertools.count()

    # --- places in line --------------------------------------------------------------------------

    def backlog(self, posts: Limits, more: int = 0) -> float:
        """Seconds the posts owed on `posts` (and `more`) would take to go out, at the limits' rates."""
        return max(
            (
                max(0.0, (self._owed.get(id(limit), 0) + more - limit.available()) / limit.rate)
                for limit in posts
            ),
            default=0.0,
        )

    def join(self, posts: Limits, asker: str, owed: int) -> Place:
        line = tuple(id(limit) for limit in posts)
        round_ = self._askers.get((line, asker), 0)
        self._askers[(line, asker)] = round_ + 1
        place = Place(line, asker, round_, next(self._seq), 0)
        self.owe(place, owed)
        return place

    def owe(self, place: Place, owed: int) -> None:
        """The posts `place`'s answer may still make, as now known."""
        _count(self._owed, place.line, owed - place.owed)
        place.owed = owed

    def leave(self, place: Place) -> None:
        self.owe(place, 0)
        key = (place.line, place.asker)
        left = self._askers.get(key, 0) - 1
        if left > 0:
            self._askers[key] = left
        else:
            self._askers.pop(key, None)

    @staticmethod
    def _start(place: Place | None, starts: itertools.count[int]) -> None:
        if place is not None and place.started is None:
            place.started = next(starts)

    # --- pledges ---------------------------------------------------------------------------------

    def pledged(self, limit: Limit) -> int:
        return self._pledged.get(id(limit), 0)

    def admits(self, limits: Limits, within: float, calls: int = 1) -> bool:
        """Whether one more final (and `calls - 1` calls before it) could be served on every limit within
        `within` seconds, on top of the finals already pledged there."""
        return all(
            self.pledged(limit) + calls <= limit.available() + limit.rate * within for limit in limits
        )

    def admission_delay(self, limits: Limits) -> float:
        """Seconds until `admits(limits, 0)` could be true, if nothing else changes."""
        return max(
            (max(0.0, (self.pledged(limit) + 1 - limit.available()) / limit.rate) for limit in limits),
            default=0.0,
        )

    def pledge(self, limits: Limits) -> None:
        _count(self._pledged, _ids(limits), 1)

    def want(self, limits: Limits) -> None:
        """An answer waits for a final it could pledge on `limits`: droppable calls leave it room."""
        _count(self._wanted, _ids(limits), 1)

    def unwant(self, limits: Limits) -> None:
        _count(self._wanted, _ids(limits), -1)

    def release(self, limits: Limits) -> None:
        _count(self._pledged, _ids(limits), -1)

    def silent(self, limits: Limits) -> None:
        """An answer waits to show its first sign of life on `limits`: no tool line goes there meanwhile."""
        _count(self._silent, _ids(limits), 1)

    def heard(self, limits: Limits) -> None:
        """The answer `silent` counted has shown something (or ended)."""
        _count(self._silent, _ids(limits), -1)

    # --- calls -----------------------------------------------------------------------------------

    def try_call(self, urgency: Urgency, limits: Limits) -> bool:
        """A call that may be dropped (an intermediate edit, typing): made now only if nothing is queued
        on its limits and each keeps what it owes to pledged finals."""
        if self._held_up(urgency, limits):
            return False
        reserves = [self._reserve(urgency, limit) for limit in limits]
        if any(limit.delay(reserve) > 0 for limit, reserve in zip(limits, reserves, strict=True)):
            return False
        for limit, reserve in zip(limits, reserves, strict=True):
            limit.try_acquire(reserve)
        return True

    def delay(self, urgency: Urgency, limits: Limits) -> float:
        """Seconds until `try_call(urgency, limits)` might succeed (infinite while others hold the limits)."""
        if self._held_up(urgency, limits):
            return math.inf
        return max((limit.delay(self._reserve(urgency, limit)) for limit in limits), default=0.0)

    def _held_up(self, urgency: Urgency, limits: Limits) -> bool:
        """Whether a droppable call must wait for others: calls queued on its limits, or, for a tool line,
        answers there that have shown nothing yet (every asker sees a sign of life before anyone sees
        a tool line move)."""
        if any(self._queued.get(id(limit)) for limit in limits):
            return True
        return urgency >= Urgency.PROGRESS and any(self._silent.get(id(limit)) for limit in limits)

    def _reserve(self, urgency: Urgency, limit: Limit) -> int:
        # A final owes nothing to anyone; droppable calls leave every pledged final its call, and a
        # call for each answer held back until its final can be pledged: a first text shown early is
        # worth more than another intermediate edit.
        if urgency <= Urgency.POST:
            return 0
        return self.pledged(limit) + self._wanted.get(id(limit), 0)

    async def call(self, urgency: UrgencyOf, limits: Limits, place: Place | None = None) -> None:
        """Wait for a call that must be made (a post, a final edit): in order of place in line, then
        urgency, then arrival.

        `urgency` may be a function: a queued first post becomes final when its answer completes."""
        if not limits:
            self._start(place, self._starts)
            return
        if not any(self._queued.get(id(limit)) for limit in limits) and all(
            limit.delay() <= 0 for limit in limits
        ):
            for limit in limits:
                limit.try_acquire()
            self._start(place, self._starts)
            return
        ticket = _Ticket(urgency, limits, next(self._seq), asyncio.get_running_loop().create_future(), place)
        self._waiting.append(ticket)
        _count(self._queued, _ids(limits), 1)
        self._wake_soon(0.0)
        try:
            await ticket.future
        except asyncio.CancelledError:
            if ticket.future.done() and not ticket.future.cancelled():
                # Granted, but cancelled before its caller could make the call: nobody else ends it, and
                # a limit that counts calls until they end would keep counting this one for good.
                self.done(limits)
            raise
        finally:
            if not ticket.future.done() or ticket.future.cancelled():
                self._drop(ticket)

    def done(self, limits: Limits) -> None:
        """A call made through `call` or `try_call` has ended: limits that count until then may free."""
        for limit in limits:
            limit.finished()
        if self._waiting:
            self._wake_soon(0.0)

    def penalize(self, limits: Limits, seconds: float) -> None:
        for limit in limits:
            limit.penalize(seconds)
        if self._waiting:
            self._wake_soon(0.0)

    def _drop(self, ticket: _Ticket) -> None:
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._unqueue(ticket)
        if self._waiting:
            self._wake_soon(0.0)

    def _unqueue(self, ticket: _Ticket) -> None:
        _count(self._queued, _ids(ticket.limits), -1)

    def _wake_soon(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + seconds
        if self._timer is not None:
            if self._timer.when() <= at:
                return
            self._timer.cancel()
        self._timer = loop.call_at(at, self._grant)

    def _grant(self) -> None:
        """Serve every waiting call whose limits are free now, most urgent first; then sleep until the
        earliest of the rest could go."""
        self._timer = None
        waiting = sorted(self._waiting, key=_Ticket.rank)
        later = math.inf
        for ticket in waiting:
            if ticket.future.done():
                continue
            wait = max(limit.delay() for limit in ticket.limits)
            if wait > 0:
                later = min(later, wait)
                continue
            for limit in ticket.limits:
                limit.try_acquire()
            self._waiting.remove(ticket)
            self._unqueue(ticket)
            self._start(ticket.place, self._starts)
            ticket.future.set_result(None)
        if self._waiting:
            # A limit that can never serve a call (none should) is looked at again every second.
            self._wake_soon(min(later, 1.0))


def _ids(limits: Limits) -> Iterator[int]:
    return (id(limit) for limit in limits)


def _count(counts: dict[int, int], keys: Iterable[int], change: int) -> None:
    """Add `change` to each key's count, forgetting counts that reach zero."""
    for key in keys:
        left = counts.get(key, 0) + change
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)
