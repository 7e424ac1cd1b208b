"""The storage layer's in-process parts: per-scope turn order, sliding windows, the recent health probe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acechat.storage.probe import RecentProbe
from acechat.storage.rate_windows import SlidingWindows
from acechat.storage.records import RateCheck, RateVerdict
from acechat.storage.scope_lock import ScopeQueue


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ScopeQueue


async def test_turns_of_a_scope_run_in_arrival_order_and_scopes_in_parallel() -> None:
    queue = ScopeQueue()
    log: list[str] = []
    gates = {name: asyncio.Event() for name in ("a1", "a2", "a3", "b1")}

    async def turn(key: str, name: str) -> None:
        async with queue.turn(key):
            log.append(f"{name}>")
            await gates[name].wait()
            log.append(f"<{name}")

    tasks = [asyncio.create_task(turn(name[0], name)) for name in ("a1", "a2", "a3", "b1")]
    await asyncio.sleep(0)
    assert log == ["a1>", "b1>"]  # b does not wait for a
    assert len(queue) == 2
    for name in ("a3", "a2", "b1", "a1"):  # released out of order, they still run in order
        gates[name].set()
    await asyncio.gather(*tasks)
    assert [e for e in log if "a" in e] == ["a1>", "<a1", "a2>", "<a2", "a3>", "<a3"]
    assert len(queue) == 0  # idle scopes cost nothing


async def test_a_cancelled_waiter_leaves_the_queue_clean() -> None:
    queue = ScopeQueue()
    entered, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with queue.turn("k"):
            entered.set()
            await release.wait()

    held = asyncio.create_task(holder())
    await entered.wait()
    waiter = asyncio.create_task(queue.turn("k").__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await held
    assert len(queue) == 0
    async with queue.turn("k"):
        assert len(queue) == 1


async def test_a_failing_body_still_ends_the_turn() -> None:
    queue = ScopeQueue()
    with pytest.raises(RuntimeError):
        async with queue.turn("k"):
            raise RuntimeError("turn failed")
    async with queue.turn("k"):
        pass
    assert len(queue) == 0


# SlidingWindows


def check(key: str, count: int, per: float) -> RateCheck:
    return RateCheck(key, count, per)


def test_window_allows_count_hits_then_says_how_long_to_wait() -> None:
    windows = SlidingWindows()
    ana = [check("ana", 3, 60.0)]
    assert [windows.take(ana, t) for t in (0.0, 10.0, 20.0)] == [RateVerdict(None)] * 3
    assert windows.take(ana, 30.0) == RateVerdict(0, pytest.approx(30.0))  # the hit at 0 leaves at 60
    assert windows.take([check("bob", 3, 60.0)], 30.0).refused is None  # keys are independent
    assert windows.take(ana, 59.9).wait == pytest.approx(0.1)
    assert windows.take(ana, 60.0).refused is None
    assert windows.take(ana, 61.0).wait == pytest.approx(9.0)


def test_refused_hits_do_not_count() -> None:
    windows = SlidingWindows()
    k = [check("k", 1, 10.0)]
    assert windows.take(k, 0.0).refused is None
    for t in range(1, 10):
        assert windows.take(k, float(t)).wait > 0
    assert windows.take(k, 10.0).refused is None


def test_all_or_nothing_and_the_first_refusal_is_named() -> None:
    windows = SlidingWindows()
    user, channel = check("u", 5, 60.0), check("c", 1, 60.0)
    assert windows.take([user, channel], 0.0).refused is None
    assert windows.take([user, channel], 1.0) == RateVerdict(1, pytest.approx(59.0))
    # The refusal cost the user nothing: four more fit.
    assert all(windows.take([user], 2.0 + i).refused is None for i in range(4))
    assert windows.take([user, channel], 10.0) == RateVerdict(0, pytest.approx(50.0))


def test_a_zero_count_turns_a_check_off() -> None:
    windows = SlidingWindows()
    assert all(windows.take([check("spammer", 0, 60.0)], 0.0).refused is None for _ in range(1000))
    assert len(windows) == 0


def test_windows_use_their_clock_when_no_time_is_given() -> None:
    clock = FakeClock()
    windows = SlidingWindows(clock=clock)
    assert windows.take([check("k", 1, 5.0)]).refused is None
    clock.now += 2
    assert windows.take([check("k", 1, 5.0)]).wait == pytest.approx(3.0)


def test_idle_keys_are_forgotten() -> None:
    windows = SlidingWindows()
    for i in range(100_000):
        windows.take([check(f"user-{i}", 2, 60.0)], i * 0.0001)
    assert len(windows) == 100_000
    windows.take([check("late", 2, 60.0)], 200.0)
    assert len(windows) == 1
    # Keys still inside their window stay, and still count.
    windows.take([check("late", 2, 60.0)], 201.0)
    assert windows.take([check("late", 2, 60.0)], 202.0).wait == pytest.approx(58.0)
    windows.forget_idle(1000.0)
    assert len(windows) == 0


def test_a_lower_limit_than_the_hits_recorded_waits_for_enough_of_them() -> None:
    windows = SlidingWindows()
    for t in (0.0, 1.0, 2.0, 3.0):
        assert windows.take([check("k", 4, 60.0)], t).refused is None
    # The limit was lowered to 2: three of the four hits must leave, the third at 62.
    assert windows.take([check("k", 2, 60.0)], 10.0).wait == pytest.approx(52.0)


@given(
    count=st.integers(1, 5),
    per=st.floats(1.0, 100.0),
    steps=st.lists(st.tuples(st.sampled_from("abc"), st.floats(0.0, 30.0)), max_size=60),
)
def test_window_never_allows_more_than_count_per_window(
    count: int, per: float, steps: list[tuple[str, float]]
) -> None:
    windows = SlidingWindows()
    allowed: dict[str, list[float]] = {}
    now = 0.0
    for key, gap in steps:
        now += gap
        verdict = windows.take([check(key, count, per), check("everyone", count * 2, per)], now)
        recent = [t for t in allowed.get(key, []) if t > now - per]
        everyone = [t for ts in allowed.values() for t in ts if t > now - per]
        if verdict.refused is None:
            assert len(recent) < count and len(everyone) < count * 2
            allowed.setdefault(key, []).append(now)
        elif verdict.refused == 0:
            # Refused only when full, and the wait is exactly until the oldest recent hit expires.
            assert len(recent) == count
            assert verdict.wait == pytest.approx(min(recent) + per - now)
        else:
            assert len(recent) < count and len(everyone) == count * 2
            assert verdict.wait == pytest.approx(min(everyone) + per - now)


# RecentProbe


async def test_a_probe_runs_at_most_once_a_second_however_often_asked() -> None:
    clock = FakeClock()
    runs: list[float] = []
    answer = True

    async def probe() -> bool:
        runs.append(clock.now)
        await asyncio.sleep(0)
        return answer

    recent = RecentProbe(probe, reuse=1.0, clock=clock)
    assert await asyncio.gather(*(recent() for _ in range(100))) == [True] * 100
    assert len(runs) == 1  # concurrent callers share one probe
    clock.now += 0.5
    answer = False
    assert await recent()  # the recent result
    clock.now += 0.6
    assert not await recent()
    assert len(runs) == 2


async def test_a_probe_that_raises_is_a_failed_probe() -> None:
    async def probe() -> bool:
        raise OSError("disk on fire")

    assert not await RecentProbe(probe)()


# the PostgreSQL fixtures, without a server


def run_postgres_tests(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ACECHAT_TEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
        **variables,
    }
    if "ACECHAT_REQUIRE_POSTGRES" not in variables:
        env.pop("ACECHAT_REQUIRE_POSTGRES", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", "tests/test_postgres.py"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_a_server_the_postgresql_tests_skip_saying_how_to_run_them() -> None:
    skipped = run_postgres_tests()
    assert skipped.returncode == 0, skipped.stdout
    summary = skipped.stdout.splitlines()[-1]
    assert "skipped" in summary and "failed" not in summary and "error" not in summary
    assert "start PostgreSQL on 127.0.0.1:5432 or set ACECHAT_TEST_DATABASE_URL" in skipped.stdout


def test_when_postgresql_is_required_its_absence_fails_the_run() -> None:
    failed = run_postgres_tests(ACECHAT_REQUIRE_POSTGRES="1")
    assert failed.returncode == 1
    assert "start PostgreSQL on 127.0.0.1:5432 or set ACECHAT_TEST_DATABASE_URL" in failed.stdout
