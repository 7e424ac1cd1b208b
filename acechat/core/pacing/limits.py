"""A platform's allowances: how many calls it takes per window, one `Limit` per allowance."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from acechat.core.cache import LRU

B = TypeVar("B")

# Float drift must not make a wait of exactly `delay()` come up a hair short.
_EPSILON = 1e-9


class Limit(Protocol):
    """One platform allowance (`TokenBucket`, `InFlightBucket`, `InFlightWindow`)."""

    def try_acquire(self, reserve: int = 0) -> bool:
        """Take one call if more than `reserve` remain; never waits."""
        ...

    def delay(self, reserve: int = 0) -> float:
        """Seconds until `try_acquire(reserve)` could succeed (infinite if it never can)."""
        ...

    def available(self) -> float:
        """Calls that could be made right now."""
        ...

    @property
    def rate(self) -> float:
        """Calls per second the allowance refills at, once spent."""
        ...

    def penalize(self, seconds: float) -> None:
        """The platform said 429: spend nothing for `seconds`."""
        ...

    def finished(self) -> None:
        """A call taken from this limit has ended (its response arrived, or it failed)."""
        ...


Limits = tuple[Limit, ...]


class TokenBucket:
    """A `Limit`: `capacity` calls at once, refilled at `rate` calls per second."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or rate <= 0:
            raise ValueError("a token bucket needs a capacity of at least 1 and a positive rate")
        self._capacity = capacity
        self._rate = rate
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()  # when _tokens was last brought up to date
        self._blocked_until = -math.inf

    def _refill(self) -> float:
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        return now

    def _spare(self) -> float:
        """Tokens a new call may take (once `_refill`ed)."""
        return self._tokens

    def _take(self) -> None:
        self._tokens -= 1

    @property
    def rate(self) -> float:
        return self._rate

    def available(self) -> float:
        now = self._refill()
        return 0.0 if now < self._blocked_until else max(0.0, math.floor(self._spare() + _EPSILON))

    def try_acquire(self, reserve: int = 0) -> bool:
        """Take one call if more than `reserve` remain; never waits."""
        now = self._refill()
        if now < self._blocked_until or self._spare() + _EPSILON < reserve + 1:
            return False
        self._take()
        return True

    def delay(self, reserve: int = 0) -> float:
        """Seconds until `try_acquire(reserve)` can succeed."""
        now = self._refill()
        if reserve + 1 > self._capacity:
            return math.inf
        need = max(0.0, reserve + 1 - self._spare()) / self._rate
        return max(self._blocked_until - now, self._stamp - now + need, 0.0)

    def penalize(self, seconds: float) -> None:
        """The platform said 429: nothing for `seconds`, then one call, then the usual refill."""
        now = self._refill()
        self._blocked_until = max(self._blocked_until, now + seconds)
        self._tokens = 1.0
        self._stamp = max(self._stamp, self._blocked_until)

    def finished(self) -> None:
        """A call counts from when it was taken: nothing changes when it ends."""


class InFlightBucket(TokenBucket):
    """A `TokenBucket` as the platform keeps it where calls arrive: a call holds its token from the moment
    it is taken and spends it only when it `finished`, so the bucket refills from the call's end.

    A call reaches the platform somewhere between being taken and ending, and the network or the event
    loop may hold one back and let the next through at once: two calls taken a refill apart can arrive
    closer than that. Spent at its end, each call counts as late as it could have arrived; holding the
    tokens of calls in flight, the bucket then never lets more calls arrive in any stretch of the
    platform's time than a bucket of the same size and rate there allows. (Take any stretch and the
    last call taken among those that can arrive in it: every other ended within the stretch or later,
    or was still in flight, so each was spent or held when that one was taken, and that one was taken
    only with a token left.) With room for one call, the next goes when the one before has ended and a
    refill's time has passed since. While calls in flight hold the whole capacity, `delay` is the least
    the wait can be: their ends are not known yet (`Scheduler.done` looks again when one comes).
    """

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(capacity, rate, clock)
        self._in_flight = 0

    def _spare(self) -> float:
        return self._tokens - self._in_flight

    def _take(self) -> None:
        self._in_flight += 1

    def finished(self) -> None:
        if self._in_flight:
            self._refill()
            self._in_flight -= 1
            self._tokens -= 1

    def penalize(self, seconds: float) -> None:
        """As `TokenBucket.penalize`; the calls still in flight keep their tokens, to spend as they end."""
        super().penalize(seconds)
        self._tokens = min(self._capacity, 1.0 + self._in_flight)


class InFlightWindow:
    """A `Limit` of at most `count` calls in any `window` seconds as the platform sees them.

    A call is counted from the moment it is taken until `window` seconds after it `finished`: it reached
    the platform somewhere in between. However the event loop or the network bunches requests up on the
    way (a busy loop sends late, a connection pool releases several at once), no window of the
    platform's can then see more than `count` of them, which a window of taking times cannot promise.
    """

    def __init__(self, count: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        if count < 1 or window <= 0:
            raise ValueError("a window budget needs a positive count and window")
        self._count = count
        self._window = window
        self._clock = clock
        self._ended: deque[float] = deque()  # when counted calls finished, oldest first
        self._in_flight = 0
        self._blocked_until = 0.0

    def _used(self) -> tuple[float, int]:
        now = self._clock()
        while self._ended and now - self._ended[0] >= self._window - _EPSILON:
            self._ended.popleft()
        return now, self._in_flight + len(self._ended)

    @property
    def rate(self) -> float:
        return self._count / self._window

    def available(self) -> float:
        now, used = self._used()
        return 0.0 if now < self._blocked_until else float(self._count - used)

    def try_acquire(self, reserve: int = 0) -> bool:
        now, used = self._used()
        if now < self._blocked_until or used + reserve >= self._count:
            return False
        self._in_flight += 1
        return True

    def finished(self) -> None:
        if self._in_flight:
            self._in_flight -= 1
            self._ended.append(self._clock())

    def delay(self, reserve: int = 0) -> float:
        if reserve + 1 > self._count:
            return math.inf
        now, used = self._used()
        excess = used + reserve + 1 - self._count
        if excess <= 0:
            wait = 0.0
        elif excess <= len(self._ended):
            wait = self._ended[excess - 1] + self._window - now
        else:
            # Only calls still in flight could make room; their ends are not known yet.
            wait = self._window
        return max(wait, self._blocked_until - now, 0.0)

    def penalize(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)


class KeyedBudgets(Generic[B]):
    """One budget per key (a channel, a workspace), kept for the keys used most recently."""

    def __init__(self, make: Callable[[], B], capacity: int = 10_000) -> None:
        self._make = make
        self._budgets: LRU[str, B] = LRU(capacity)

    def get(self, key: str) -> B:
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._make()
            self._budgets.put(key, budget)
        return budget
