"""Two Discord shard processes on one bot token, flooded past Discord's global limit (50 requests a
second per token): with one PostgreSQL database they share the limit (each takes half), with a SQLite
file each they pace only themselves. Figures: global 429s the fake Discord answered, and the busiest
second of the two together (tests/discord_shards.py runs the processes; the fake upstream streams each
answer over about 5 s).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.database import UNAVAILABLE, bench_database, not_measured
from bench.report import Row
from tests.discord_shards import Outcome, two_shards
from tests.fakes.discord import GLOBAL_LIMIT
from tests.fakes.upstream import FakeUpstream

NAME = "discord-shards"
PER_GUILD = 30


def _value(o: Outcome) -> str:
    return (
        f"{o.global_429s} global 429s; busiest 1 s: {o.peak_accepted} accepted "
        f"({o.peak_offered} offered); {o.answered} of {o.asked} whole in {o.seconds:.1f} s"
    )


async def _run(database_url: str | None) -> Outcome:
    upstream = FakeUpstream()
    await upstream.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return await two_shards(Path(tmp), upstream, database_url, per_guild=PER_GUILD)
    finally:
        await upstream.stop()


async def measure() -> list[Row]:
    label = f"2 shard processes, {2 * PER_GUILD} channels at once"
    rows = []
    try:
        async with bench_database() as url:
            shared = await _run(url)
        rows.append(
            Row(
                NAME,
                f"{label}, one PostgreSQL: shared global limit",
                _value(shared),
                "0 global 429s",
                shared.global_429s == 0 and shared.answered == shared.asked,
                note=f"Discord allows {GLOBAL_LIMIT} a second per token; each process takes 24",
            )
        )
    except UNAVAILABLE as error:
        rows.append(Row(NAME, f"{label}, one PostgreSQL", "not measured", note=not_measured(error)))
    alone = await _run(None)
    rows.append(
        Row(
            NAME,
            f"{label}, a SQLite file each: no shared limit",
            _value(alone),
            note="for comparison: each process paces only itself (49 a second)",
        )
    )
    return rows
