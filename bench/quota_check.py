"""`python -m bench.quota_check`: what admitting one question under a quota costs as a day's usage grows.

Not part of `python -m bench`: a before/after figure for the quota check (issue 17 follow-up). Before,
the check counted the day's usage rows of the workspace (`ROWS_QUERY`, the statement it replaced);
now it reads three per-day counters and the live holds, and takes its hold
(`Store.hold_usage`, then `Store.release_usage` as a refused-later question would). Both are timed on
the same database, one check at a time, with 1,000 and 100,000 answered questions stored today in one
workspace (spread over 200 users and 20 channels); medians in microseconds. PostgreSQL rows use the
database bench/database.py gives.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from acechat.storage import controls_sql as csql
from acechat.storage.postgres import PostgresStore
from acechat.storage.protocol import Store
from acechat.storage.records import UsageHold
from acechat.storage.sqlite import SQLiteStore
from bench.database import bench_database
from bench.report import median

WS = "bench:w"
CHANNEL = f"{WS}:c0:-"
SIZES = (1_000, 100_000)
CHECKS = 300
# The statement the check ran before: every usage row of the workspace since the day began.
ROWS_QUERY = (
    "SELECT count(*) FILTER (WHERE user_id = ? AND outcome = 'answered'), "
    "coalesce(sum(tokens) FILTER (WHERE user_id = ?), 0), "
    "count(*) FILTER (WHERE channel_key = ? AND outcome = 'answered'), "
    "coalesce(sum(tokens) FILTER (WHERE channel_key = ?), 0), "
    "count(*) FILTER (WHERE outcome = 'answered'), coalesce(sum(tokens), 0) "
    "FROM usage WHERE workspace_key = ? AND at >= ?"
)
ROWS_ARGS = ("u0", "u0", CHANNEL, CHANNEL, WS)


def _rows(n: int, day: float) -> list[tuple[object, ...]]:
    return [
        (WS, f"{WS}:c{i % 20}:-", f"u{i % 200}", "m", 100, 1.0, "answered", None, day + 1 + i % 80_000)
        for i in range(n)
    ]


async def _timed(check: Callable[[], Awaitable[object]]) -> float:
    for _ in range(20):  # warm caches and plans
        await check()
    times = []
    for _ in range(CHECKS):
        started = time.perf_counter()
        await check()
        times.append(time.perf_counter() - started)
    return median(times) * 1e6


async def _admission(store: Store, day: float) -> float:
    n = 0

    async def admit() -> None:
        nonlocal n
        n += 1
        now = time.time()
        hold = UsageHold(f"b{n}", WS, CHANNEL, "u0", day, now + 600)
        taken, _ = await store.hold_usage(hold, now, lambda used: used.user_questions < 10**9)
        assert taken
        await store.release_usage(hold)

    return await _timed(admit)


async def sqlite_figures(n: int, day: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.db"
        store = await SQLiteStore.open(path)
        await store.close()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN")  # one commit for the lot, not one per row
        conn.executemany(
            f"INSERT INTO usage ({csql.USAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", _rows(n, day)
        )
        conn.execute("COMMIT")
        conn.execute(csql.backfill_counters(csql.SQLITE_DAY))
        conn.execute("ANALYZE")

        async def rows() -> None:
            await asyncio.to_thread(lambda: conn.execute(ROWS_QUERY, (*ROWS_ARGS, day)).fetchone())

        before = await _timed(rows)
        store = await SQLiteStore.open(path)
        try:
            after = await _admission(store, day)
        finally:
            await store.close()
            conn.close()
        return before, after


async def postgres_figures(url: str, n: int, day: float) -> tuple[float, float]:
    store = await PostgresStore.connect(url, pool_size=2)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM usage; DELETE FROM usage_counts; DELETE FROM usage_holds")
        await conn.copy_records_to_table(
            "usage", records=_rows(n, day), columns=csql.USAGE_COLUMNS.split(", ")
        )
        await conn.execute(csql.backfill_counters(csql.POSTGRES_DAY))
        await conn.execute("ANALYZE")
        query = csql.postgres_sql(ROWS_QUERY)

        async def rows() -> None:
            await conn.fetchrow(query, *ROWS_ARGS, day)

        return await _timed(rows), await _admission(store, day)
    finally:
        await conn.close()
        await store.close()


async def main() -> None:
    day = time.time() - time.time() % 86400
    print(f"{'database':<11}{'rows today':>11}{'before: rows µs':>17}{'after: counters µs':>20}")
    for n in SIZES:
        before, after = await sqlite_figures(n, day)
        print(f"{'SQLite':<11}{n:>11,}{before:>17,.0f}{after:>20,.0f}")
    async with bench_database() as url:
        for n in SIZES:
            before, after = await postgres_figures(url, n, day)
            print(f"{'PostgreSQL':<11}{n:>11,}{before:>17,.0f}{after:>20,.0f}")
    print("(after: a whole admission, counted and held, then released: two transactions)")


if __name__ == "__main__":
    asyncio.run(main())
