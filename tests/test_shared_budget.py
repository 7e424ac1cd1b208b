"""Discord's global limit shared by processes that use one bot token, through PostgreSQL: the share each
takes, how members are counted, and two real shard processes flooded past the limit."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from acechat.bots.discord_budget import SETTLE
from acechat.core.pacing.shared_window import SharedWindow
from acechat.storage.shared_budget import SharedBudget, budget_name
from tests.discord_shards import shares_logged, two_shards
from tests.fakes.upstream import FakeUpstream
from tests.store_backends import pg_database, pg_url

__all__ = ["pg_database", "pg_url"]  # fixtures


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_share_is_closed_until_joined_then_an_equal_part_of_the_limit() -> None:
    clock = Clock()
    limit = SharedWindow(49, 1.0, clock)
    assert not limit.try_acquire() and limit.available() == 0 and limit.delay() > 0
    limit.share(1, settle=0.0)
    assert limit.available() == 49 and limit.rate == 49
    limit.share(2)
    assert limit.available() == 24 and limit.rate == 24
    taken = sum(limit.try_acquire() for _ in range(30))
    assert taken == 24
    for _ in range(taken):
        limit.finished()
    clock.now += 1.0
    assert limit.available() == 24


def test_a_newcomer_waits_for_the_others_to_see_it_and_a_lost_member_spends_nothing() -> None:
    clock = Clock()
    limit = SharedWindow(49, 1.0, clock)
    limit.share(3, settle=SETTLE)
    assert not limit.try_acquire() and math.isclose(limit.delay(), 1.0)  # looked at again each second
    clock.now += SETTLE
    assert limit.try_acquire() and limit.available() == 16 - 1
    limit.close()
    assert not limit.try_acquire() and limit.available() == 0


async def test_members_of_one_budget_count_each_other_and_a_leaver_is_dropped(pg_url: str) -> None:
    seen: dict[str, list[tuple[int, bool]]] = {"a": [], "b": []}
    told = asyncio.Event()
    name = budget_name("discord", "token-1")
    assert "token-1" not in name

    def member(key: str) -> SharedBudget:
        def hear(count: int, joined: bool) -> None:
            seen[key].append((count, joined))
            told.set()

        return SharedBudget(pg_url, name, hear, lambda: None)

    async def until_a_counts(members: int) -> None:
        async with asyncio.timeout(5):
            while seen["a"][-1][0] != members:
                told.clear()
                await told.wait()

    a, b = member("a"), member("b")
    other = SharedBudget(pg_url, budget_name("discord", "token-2"), lambda n, j: None, lambda: None)
    await a.start()
    await other.start()
    assert seen["a"] == [(1, True)]
    await b.start()
    assert seen["b"] == [(2, True)]
    await until_a_counts(2)
    await b.close()
    await until_a_counts(1)
    await a.close()
    await other.close()
    assert all(n in (1, 2) for n, _ in seen["a"])


@pytest.mark.fault
async def test_two_shard_processes_on_one_token_stay_under_the_global_limit_together(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str
) -> None:
    outcome = await two_shards(tmp_path, fake_upstream, pg_url)
    assert outcome.answered == outcome.asked
    assert outcome.global_429s == 0
    # Both drew on the limit at once: their busiest second holds more than one process's share (24),
    # and never more than Discord's limit of 50 (48 on an idle machine, by the shares; a request
    # counted until a second after its response can still land in the fake's window beside 49 others).
    assert 24 < outcome.peak_accepted <= 50, outcome
    for log in outcome.logs:
        assert 2 in shares_logged(log), log
        assert "Traceback" not in log
