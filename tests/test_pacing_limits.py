"""Platform limits: the token bucket, and the bucket and the window that count calls until they end."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acechat.core.notices import retry_in_text
from acechat.core.pacing.limits import InFlightBucket, InFlightWindow, Limit, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_bucket_is_a_limit() -> None:
    budget: Limit = TokenBucket(5, 1.0, clock=FakeClock())
    assert budget.try_acquire()


def test_bucket_spends_its_burst_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, 1.0, clock=clock)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.delay() == pytest.approx(1.0)
    clock.now += 0.5
    assert not bucket.try_acquire()
    assert bucket.delay() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_acquire()
    clock.now += 1000
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]  # never above capacity


def test_reserve_keeps_calls_back_for_the_final_edit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(3, 2.0, clock=clock)
    assert bucket.try_acquire(reserve=1)
    assert bucket.try_acquire(reserve=1)
    assert not bucket.try_acquire(reserve=1)
    assert bucket.delay(reserve=1) == pytest.approx(0.5)
    assert bucket.delay() == 0.0
    assert bucket.try_acquire()  # the reserved call
    assert bucket.delay(reserve=3) == math.inf


def test_waiting_exactly_the_delay_always_succeeds() -> None:
    clock = FakeClock(0.1)
    bucket = TokenBucket(2, 3.0, clock=clock)
    for _ in range(200):
        if not bucket.try_acquire(reserve=1):
            wait = bucket.delay(reserve=1)
            assert wait > 0
            clock.now += wait
            assert bucket.try_acquire(reserve=1)


def test_penalty_blocks_everything_then_allows_one_call() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 1.0, clock=clock)
    bucket.penalize(3.0)
    assert not bucket.try_acquire()
    assert bucket.delay() == pytest.approx(3.0)
    clock.now += 2.9
    assert not bucket.try_acquire()
    clock.now += 0.1
    assert bucket.try_acquire()
    assert not bucket.try_acquire()  # no refill was banked during the penalty
    assert bucket.delay() == pytest.approx(1.0)
    bucket.penalize(5.0)
    bucket.penalize(0.5)  # a shorter penalty never shortens a longer one
    assert bucket.delay() == pytest.approx(5.0)
    clock.now += 5.0
    assert bucket.try_acquire()


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)
    with pytest.raises(ValueError):
        TokenBucket(5, 0.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "try again in 1 s"),
        (0.2, "try again in 1 s"),
        (11.01, "try again in 12 s"),
        (12.0, "try again in 12 s"),
        (12.0 + 1e-12, "try again in 12 s"),
        (119.0, "try again in 119 s"),
        (150.0, "try again in 3 min"),
    ],
)
def test_retry_text(seconds: float, text: str) -> None:
    assert retry_in_text(seconds) == text


# --- TokenBucket and InFlightWindow: exact figures --------------------------------------------------------
# Times and rates are binary fractions, so the figures below are exact.


@pytest.mark.parametrize(("capacity", "rate"), [(0, 1.0), (0.5, 1.0), (5, 0.0), (5, -1.0)])
def test_bucket_refuses_a_capacity_below_one_or_a_rate_not_above_zero(capacity: float, rate: float) -> None:
    with pytest.raises(ValueError) as caught:
        TokenBucket(capacity, rate, clock=FakeClock())
    assert str(caught.value) == "a token bucket needs a capacity of at least 1 and a positive rate"


def test_the_smallest_bucket_allows_one_call_per_refill() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(1, 0.5, clock=clock)
    assert bucket.delay() == 0.0
    assert bucket.try_acquire() and not bucket.try_acquire()
    assert bucket.delay() == 2.0
    assert bucket.delay(reserve=1) == math.inf
    clock.now = 1.5
    assert bucket.delay() == 0.5 and not bucket.try_acquire()
    clock.now = 2.0
    assert bucket.try_acquire()


def test_per_spreads_count_calls_over_the_seconds_given() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 0.5, clock=clock)  # 4 at once, then one every 2 s
    assert [bucket.try_acquire() for _ in range(5)] == [True] * 4 + [False]
    assert bucket.delay() == 2.0
    assert bucket.delay(reserve=3) == 8.0
    clock.now += 1.0
    assert bucket.delay() == 1.0
    clock.now += 1.0
    assert bucket.try_acquire() and not bucket.try_acquire()


def test_bucket_reserve_counts_whole_calls() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 1.0, clock=clock)
    assert bucket.delay(reserve=3) == 0.0
    assert bucket.try_acquire(reserve=3)  # 3 left: no more with 3 kept back
    assert not bucket.try_acquire(reserve=3)
    assert bucket.delay(reserve=3) == 1.0
    assert bucket.delay(reserve=2) == 0.0
    assert bucket.try_acquire(reserve=2) and bucket.try_acquire(reserve=1) and bucket.try_acquire()
    assert bucket.delay() == 1.0
    assert bucket.delay(reserve=2) == 3.0
    clock.now += 0.25  # a quarter of a call refilled, and no more
    assert bucket.delay() == 0.75
    assert bucket.delay(reserve=1) == 1.75


def test_a_penalty_counts_from_the_moment_it_is_given() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 1.0, clock=clock)
    assert bucket.try_acquire() and bucket.try_acquire()
    clock.now += 0.5
    bucket.penalize(2.0)
    assert bucket.delay() == 2.0
    clock.now += 1.5
    assert not bucket.try_acquire() and bucket.delay() == 0.5
    clock.now += 0.5
    assert bucket.delay() == 0.0
    assert bucket.try_acquire() and bucket.delay() == 1.0


def test_a_penalty_ends_on_its_last_instant_with_one_call_available() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(3, 1.0, clock=clock)
    bucket.penalize(2.0)
    clock.now = 1.75
    assert bucket.available() == 0
    clock.now = 2.0
    assert bucket.available() == 1 and bucket.delay() == 0.0


def test_a_call_refills_a_hair_early() -> None:
    """So that float drift never makes a wait of exactly `delay()` fall short."""
    clock = FakeClock(0.0)
    bucket = TokenBucket(1, 1.0, clock=clock)
    assert bucket.try_acquire()
    clock.now = 1.0 - 2e-9
    assert not bucket.try_acquire()
    clock.now = 1.0 - 1e-9
    assert bucket.try_acquire()


@pytest.mark.parametrize(("count", "window"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0)])
def test_window_refuses_an_empty_count_or_window(count: int, window: float) -> None:
    with pytest.raises(ValueError) as caught:
        InFlightWindow(count, window, clock=FakeClock())
    assert str(caught.value) == "a window budget needs a positive count and window"


def test_a_call_leaves_the_window_a_hair_early() -> None:
    """So that float drift never makes a wait of exactly `delay()` fall short."""
    clock = FakeClock(0.0)
    budget = InFlightWindow(1, 10.0, clock=clock)
    assert budget.try_acquire()
    budget.finished()
    clock.now = 10.0 - 2e-9
    assert not budget.try_acquire()
    clock.now = 10.0 - 1e-9
    assert budget.try_acquire()


# --- InFlightWindow ------------------------------------------------------------------------------------


def test_in_flight_window_counts_a_call_until_a_window_after_it_ends() -> None:
    clock = FakeClock(0.0)
    limit = InFlightWindow(2, 1.0, clock=clock)
    assert limit.try_acquire() and limit.try_acquire()
    assert not limit.try_acquire() and limit.available() == 0
    # Both still in flight: no end is known, so no wait can be promised short of a window.
    assert limit.delay() == pytest.approx(1.0)
    clock.now = 5.0  # a slow response: time passing alone frees nothing
    assert not limit.try_acquire()
    limit.finished()
    assert limit.delay() == pytest.approx(1.0), "the call that ended counts a window more"
    clock.now = 5.999
    assert not limit.try_acquire()
    clock.now = 6.0
    assert limit.delay() == 0.0 and limit.available() == 1
    assert limit.try_acquire()


def test_in_flight_window_delay_counts_down_to_the_end_that_must_leave() -> None:
    clock = FakeClock(0.0)
    limit = InFlightWindow(2, 8.0, clock=clock)
    assert limit.try_acquire() and limit.try_acquire()
    limit.finished()  # counted till 8.0
    clock.now = 1.0
    limit.finished()  # counted till 9.0
    clock.now = 2.0
    assert limit.delay() == 6.0, "one call's room: the older end leaves at 8.0"
    assert limit.delay(reserve=1) == 7.0, "two calls' room: both ends leave, the later at 9.0"
    clock.now = 8.0
    assert limit.try_acquire() and not limit.try_acquire()


def test_in_flight_window_reserve_and_penalty() -> None:
    clock = FakeClock(0.0)
    limit = InFlightWindow(3, 1.0, clock=clock)
    assert limit.try_acquire()
    limit.finished()
    assert not limit.try_acquire(reserve=2), "two calls are kept back"
    assert limit.delay(reserve=2) == pytest.approx(1.0)
    assert limit.delay(reserve=3) == math.inf
    limit.penalize(4.0)
    assert limit.available() == 0 and limit.delay() == pytest.approx(4.0)
    clock.now = 4.0
    assert limit.try_acquire()
    limit.finished()
    limit.finished()  # an end with nothing in flight changes nothing
    assert limit.available() == 2, "the first call's window is over; the second counts till 5.0"


@given(steps=st.lists(st.tuples(st.floats(0.0, 0.3), st.floats(0.0, 0.5)), min_size=1, max_size=60))
def test_in_flight_window_never_lets_a_platform_see_more_than_count_in_a_window(
    steps: list[tuple[float, float]],
) -> None:
    """Each call reaches the platform at any moment between being taken and ending."""
    clock = FakeClock(0.0)
    limit = InFlightWindow(3, 1.0, clock=clock)
    spans: list[tuple[float, float]] = []
    ends: list[float] = []
    for gap, latency in steps:
        clock.now += gap
        for end in sorted(e for e in ends if e <= clock.now):
            ends.remove(end)
            limit.finished()
        if limit.try_acquire():
            spans.append((clock.now, clock.now + latency))
            ends.append(clock.now + latency)
    # Arrivals anywhere inside their spans: any 1-s window can hold at most `count` of them, because a
    # window holding more would need more calls counted at its end than the limit allows.
    for start, _ in spans:
        inside = [s for s in spans if s[0] < start + 1.0 and s[1] >= start]
        assert len(inside) <= 3


# --- InFlightBucket ------------------------------------------------------------------------------------


def test_in_flight_bucket_refills_from_a_calls_end_not_its_start() -> None:
    """The call before was slow on its way, the next is fast: taken a refill after the first was taken,
    it could reach the platform right behind it. Counted from the end, it waits a refill after that."""
    clock = FakeClock(0.0)
    sent_at_start = TokenBucket(1, 1.0, clock=clock)
    limit = InFlightBucket(1, 1.0, clock=clock)
    assert limit.try_acquire() and sent_at_start.try_acquire()
    clock.now = 1.0
    assert sent_at_start.try_acquire(), "a bucket counting calls when taken sends the next now"
    assert not limit.try_acquire() and limit.available() == 0
    assert limit.delay() == pytest.approx(1.0), "no end known: at least a refill"
    clock.now = 2.5  # the slow call is answered only now: it may have arrived just before
    assert not limit.try_acquire()
    limit.finished()
    assert limit.delay() == pytest.approx(1.0) and not limit.try_acquire()
    clock.now = 3.5
    assert limit.delay() == 0.0 and limit.available() == 1
    assert limit.try_acquire()


def test_in_flight_bucket_burst_is_held_by_calls_in_flight() -> None:
    clock = FakeClock(0.0)
    limit = InFlightBucket(3, 1.0, clock=clock)
    assert [limit.try_acquire() for _ in range(4)] == [True, True, True, False]
    clock.now = 10.0  # a full bucket's worth of time: calls in flight still hold their tokens
    assert limit.available() == 0 and not limit.try_acquire()
    limit.finished()
    limit.finished()
    assert limit.available() == 0, "two spent at their ends, one still held"
    clock.now = 11.0
    assert limit.available() == 1 and limit.delay(reserve=1) == pytest.approx(1.0)
    assert limit.delay(reserve=3) == math.inf
    assert limit.try_acquire()
    limit.finished()
    limit.finished()
    limit.finished()  # an end with nothing in flight changes nothing
    clock.now = 14.0
    assert limit.available() == 3


def test_in_flight_bucket_penalty_leaves_one_call_whatever_ends_meanwhile() -> None:
    clock = FakeClock(0.0)
    limit = InFlightBucket(3, 1.0, clock=clock)
    assert limit.try_acquire() and limit.try_acquire()
    limit.penalize(2.0)  # one of the two got the 429; both end after it
    assert limit.available() == 0 and limit.delay() == pytest.approx(2.0)
    limit.finished()
    limit.finished()
    clock.now = 2.0
    assert limit.try_acquire() and not limit.try_acquire(), "one call, then the usual refill"
    assert limit.delay() == pytest.approx(1.0)


@pytest.mark.parametrize("in_flight", [0, 1])
def test_in_flight_bucket_penalty_leaves_exactly_one_call_beside_those_in_flight(in_flight: int) -> None:
    clock = FakeClock(0.0)
    limit = InFlightBucket(4, 1.0, clock=clock)
    assert all(limit.try_acquire() for _ in range(in_flight))
    limit.penalize(2.0)
    clock.now = 2.0
    assert limit.available() == 1
    assert limit.try_acquire() and not limit.try_acquire()
    assert limit.delay() == 1.0


def test_in_flight_bucket_waiting_exactly_the_delay_succeeds_once_calls_have_ended() -> None:
    clock = FakeClock(0.1)
    limit = InFlightBucket(2, 3.0, clock=clock)
    for _ in range(200):
        if not limit.try_acquire(reserve=1):
            wait = limit.delay(reserve=1)
            assert wait > 0
            clock.now += wait
            assert limit.try_acquire(reserve=1)
        clock.now += 0.05
        limit.finished()


def arrivals_fit_a_bucket(spans: list[tuple[float, float]], capacity: int, rate: float) -> bool:
    """Whether a bucket where calls arrive accepts them wherever in their spans they arrive: no stretch
    [a, b] of its time may see more than `capacity + rate * (b - a)` (the worst case puts every call
    that can arrive in a stretch there)."""
    points = sorted({t for span in spans for t in span})
    for i, a in enumerate(points):
        for b in points[i:]:
            inside = sum(1 for start, end in spans if start <= b and end >= a)
            if inside > capacity + rate * (b - a) + 1e-6:
                return False
    return True


def take(limit: Limit, clock: FakeClock, steps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Calls taken at each step's gap that can be, each in flight for its latency: their spans."""
    spans: list[tuple[float, float]] = []
    ends: list[float] = []
    for gap, latency in steps:
        clock.now += gap
        for end in sorted(e for e in ends if e <= clock.now):
            ends.remove(end)
            now, clock.now = clock.now, end
            limit.finished()
            clock.now = now
        if limit.try_acquire():
            spans.append((clock.now, clock.now + latency))
            ends.append(clock.now + latency)
    return spans


@given(
    steps=st.lists(st.tuples(st.floats(0.0, 0.6), st.floats(0.0, 1.5)), min_size=1, max_size=40),
    capacity=st.integers(1, 3),
)
def test_in_flight_bucket_never_lets_calls_arrive_faster_than_a_bucket_there_allows(
    steps: list[tuple[float, float]], capacity: int
) -> None:
    clock = FakeClock(0.0)
    spans = take(InFlightBucket(capacity, 1.0, clock=clock), clock, steps)
    assert arrivals_fit_a_bucket(spans, capacity, 1.0)


def test_a_bucket_counting_calls_when_taken_lets_a_slow_call_and_a_fast_one_arrive_too_close() -> None:
    """What the property above guards against: the same calls through a `TokenBucket`."""
    steps = [(0.0, 2.0), (1.0, 0.0)]  # the first slow on its way, the next, a refill later, fast
    clock = FakeClock(0.0)
    assert not arrivals_fit_a_bucket(take(TokenBucket(1, 1.0, clock=clock), clock, steps), 1, 1.0)
    clock = FakeClock(0.0)
    assert arrivals_fit_a_bucket(take(InFlightBucket(1, 1.0, clock=clock), clock, steps), 1, 1.0)
