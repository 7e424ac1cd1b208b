"""Benchmark 5, storage: 100,000 stored conversations, their size, and looking a scope up among them;
and what a finished turn's write costs, on SQLite and (when a server is reachable) PostgreSQL.

Each conversation is stored the way an answered question stores it (`Store.queue_turn`: the
conversation row and one transcript of a 600-character answer). Lookups are timed one at a time, for
scopes picked at random: through `Store.get_conversation` on a store without its conversation cache
(one trip to the database thread), and through the core's path for a question (`ScopeState.resolve`
then `ScopeState.conversation`), cold (on a core just opened: nothing in its caches) and warm. The
same lookups on a 1,000-conversation database in the same run give the ratio that shows how lookups
scale.

Turn writes are timed one at a time (the latency a scope's next turn waits for) and 100 scopes at once
(throughput; SQLite commits the turns queued together in one transaction). PostgreSQL rows use the
database bench/database.py gives (ACECHAT_BENCH_DATABASE_URL, or a throwaway one on the local server).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from acechat.core.chat import ChatCore
from acechat.core.scope import Scope
from acechat.storage import ConversationRecord, Store, StoreError, TranscriptEntry
from acechat.storage.postgres import PostgresStore
from acechat.storage.sqlite import SQLiteStore
from bench.database import UNAVAILABLE, bench_database, not_measured
from bench.overhead import bench_settings
from bench.procs import rss
from bench.report import Row, median, mib, percentile

NAME = "storage"
CONVERSATIONS = 100_000
SMALL = 1_000
LOOKUPS = 2_000
BATCH = 50
WRITES = 1_000
UNUSED_URL = "http://127.0.0.1:9"  # the upstream: never called, only the store and the caches are exercised
ANSWER = "stored answer text " * 31 + "end"  # about 600 characters


def _scope(i: int, workspace: str = "w") -> Scope:
    return Scope.of("bench", workspace, f"c{i}")


def _turn(i: int, now: float, workspace: str) -> tuple[ConversationRecord, TranscriptEntry]:
    key = _scope(i, workspace).key
    return (
        ConversationRecord(key, f"up-{i}", "gpt-4o", "assistant", 1, now, now),
        TranscriptEntry(
            key, f"up-{i}", "U1", "user", "how do I rotate logs?", ANSWER, "answered", f"t-{i}", now, now
        ),
    )


async def _populate(store: Store, count: int, first: int = 0, workspace: str = "w") -> None:
    """Store `count` turns, a thousand queued at once (SQLite commits the ones queued together as one)."""
    now = time.time()
    for chunk in range(first, first + count, 1_000):
        last = min(chunk + 1_000, first + count)
        await asyncio.gather(*(store.queue_turn(*_turn(i, now, workspace)) for i in range(chunk, last)))


async def _write_figures(store: Store, first: int, workspace: str = "w") -> tuple[list[float], float]:
    """(latencies of turns written one after another, turns per second 100 scopes at a time)."""
    now = time.time()
    latencies = []
    for i in range(first, first + WRITES):
        start = time.perf_counter()
        await store.queue_turn(*_turn(i, now, workspace))
        latencies.append(time.perf_counter() - start)
    first += WRITES
    start = time.perf_counter()
    for chunk in range(first, first + 2_000, 100):
        await asyncio.gather(
            *(store.queue_turn(*_turn(i, now, workspace)) for i in range(chunk, chunk + 100))
        )
    return latencies, 2_000 / (time.perf_counter() - start)


async def _postgres_writes() -> tuple[list[float], float] | str:
    """The write figures on PostgreSQL (bench/database.py); or why there are none."""
    # Scopes of this run only: a database given in ACECHAT_BENCH_DATABASE_URL may hold earlier runs'.
    workspace = f"w-{uuid.uuid4().hex[:8]}"
    try:
        async with bench_database() as url:
            store = await PostgresStore.connect(url, pool_size=10, listen=False)
            try:
                await _populate(store, 1_000, workspace=workspace)
                return await _write_figures(store, 1_000, workspace)
            finally:
                await store.close()
    except StoreError as error:
        return str(error)
    except UNAVAILABLE as error:
        return not_measured(error)


async def _timed(lookup: Callable[[int], Awaitable[object]], keys: list[int]) -> list[float]:
    times = []
    for i in keys:
        start = time.perf_counter()
        found = await lookup(i)
        times.append(time.perf_counter() - start)
        if found is None:
            raise RuntimeError(f"conversation {i} not found")
    return times


async def _store_lookups(big: Store, small: Store, round_: int) -> tuple[list[float], list[float]]:
    """Per-lookup time in the big and the small database, from batches of lookups made at once, one
    batch in each database in turn (the first of each pair alternating). A single lookup's time is
    mostly the hop to the database thread, which varies with how busy the machine is; a batch makes
    the hop once, so what is left is the database's own work, the thing that could grow with its size."""
    rng = random.Random(round_)
    big_times: list[float] = []
    small_times: list[float] = []
    pair = ((big, CONVERSATIONS, big_times), (small, SMALL, small_times))
    for n in range(LOOKUPS // BATCH):
        for store, count, times in pair if n % 2 else pair[::-1]:
            keys = [_scope(rng.randrange(count)).key for _ in range(BATCH)]
            start = time.perf_counter()
            found = await asyncio.gather(*(store.get_conversation(key) for key in keys))
            times.append((time.perf_counter() - start) / BATCH)
            if None in found:
                raise RuntimeError("a stored conversation was not found")
    return big_times, small_times


async def _lookups(path: Path, count: int, round_: int) -> dict[str, list[float]]:
    rng = random.Random(count * 10 + round_)
    cold = rng.sample(range(count), min(LOOKUPS, count))

    async def core_lookup(i: int) -> object:
        return await _core_lookup(core, i)

    results: dict[str, list[float]] = {}
    # A core opened now has nothing cached: its first lookups are cold.
    core = await ChatCore.open(bench_settings(UNUSED_URL, path))
    try:
        results["core_cold"] = await _timed(core_lookup, cold)
        results["core_warm"] = await _timed(core_lookup, cold[:200] * 5)
    finally:
        await core.aclose()
    return results


async def _core_lookup(core: ChatCore, i: int) -> object:
    """What the core reads before asking upstream: the scope's settings lineage, then its conversation."""
    scope = _scope(i)
    await core.state.resolve(scope)
    return await core.state.conversation(scope)


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        big_path, small_path = Path(tmp) / "big.db", Path(tmp) / "small.db"
        big = await ChatCore.open(bench_settings(UNUSED_URL, big_path))
        small = await ChatCore.open(bench_settings(UNUSED_URL, small_path))
        try:
            await _populate(big.store, CONVERSATIONS - WRITES - 2_000)
            sqlite_writes = await _write_figures(big.store, CONVERSATIONS - WRITES - 2_000)
            await _populate(small.store, SMALL)
        finally:
            await big.aclose()
            await small.aclose()
        size = _db_bytes(big_path)

        # The database's own lookup, without the store's conversation cache in front of it.
        big_db = await SQLiteStore.open(big_path, cache_size=0)
        small_db = await SQLiteStore.open(small_path, cache_size=0)
        try:
            # Alternate the two databases so noise hits both alike.
            big_times: dict[str, list[float]] = {}
            small_times: dict[str, list[float]] = {}
            for round_ in range(2):
                big_store, small_store = await _store_lookups(big_db, small_db, round_)
                big_times.setdefault("store", []).extend(big_store)
                small_times.setdefault("store", []).extend(small_store)
                for path, count, times in (
                    (big_path, CONVERSATIONS, big_times),
                    (small_path, SMALL, small_times),
                ):
                    for kind, samples in (await _lookups(path, count, round_)).items():
                        times.setdefault(kind, []).extend(samples)
            # Fill a new core's caches to capacity, as a long-running bot's would be, counting what
            # Python allocates for them (SQLite's page cache is in the RSS figure only).
            before = rss()
            filled = await ChatCore.open(bench_settings(UNUSED_URL, big_path))
            try:
                tracemalloc.start()
                for first in range(0, 12_000, 1_000):
                    await asyncio.gather(*(_core_lookup(filled, i) for i in range(first, first + 1_000)))
                caches, _ = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                grown = rss() - before
            finally:
                await filled.aclose()
        finally:
            await asyncio.gather(big_db.close(), small_db.close())
    postgres_writes = await _postgres_writes()

    def p50(samples: list[float]) -> str:
        return f"{median(samples) * 1e6:,.0f} µs (p99 {percentile(samples, 99) * 1e6:,.0f} µs)"

    def write_rows(backend: str, figures: tuple[list[float], float] | str) -> list[Row]:
        if isinstance(figures, str):
            return [Row(NAME, f"turn write, {backend}", "not measured", note=figures)]
        latencies, rate = figures
        return [
            Row(
                NAME,
                f"turn write latency, {backend}",
                p50(latencies),
                note=f"{WRITES:,} turns one after another (conversation + transcript), each committed",
            ),
            Row(
                NAME,
                f"turn writes, 100 scopes at once, {backend}",
                f"{rate:,.0f} turns/s",
                note="2,000 turns, 100 queued at a time"
                + ("; the turns queued together share a commit" if backend == "SQLite" else "; pool of 10"),
            ),
        ]

    scale = median(big_times["store"]) / median(small_times["store"])
    return [
        Row(
            NAME,
            f"database size, {CONVERSATIONS:,} conversations",
            f"{mib(size)} ({size / CONVERSATIONS:,.0f} B each)",
            note="conversation row + one 600-character transcript each, WAL included",
        ),
        *write_rows("SQLite", sqlite_writes),
        *write_rows("PostgreSQL", postgres_writes),
        Row(
            NAME,
            f"memory of the core on {CONVERSATIONS:,} conversations, caches full",
            f"{mib(grown)} RSS; caches {mib(caches)} of Python heap",
            note="RSS after opening a core on it and 12,000 lookups, minus RSS before opening; the heap "
            "figure is tracemalloc's count for filling the caches (10,000 scopes each) from empty",
        ),
        Row(
            NAME,
            "Store.get_conversation among 100,000",
            p50(big_times["store"]),
            note="no cache in front; per lookup, in batches of 50 made at once",
        ),
        Row(
            NAME,
            "core lookup, cold (resolve + conversation)",
            p50(big_times["core_cold"]),
            note="two database trips: scope settings for the lineage, then the conversation",
        ),
        Row(NAME, "core lookup, warm (cached scope)", p50(big_times["core_warm"])),
        Row(
            NAME,
            f"lookup at 100,000 ÷ lookup at {SMALL:,}",
            f"{scale:.2f}",
            "≤ 1.5 (ours)",
            scale <= 1.5,
            note="Store.get_conversation, per lookup in batches of 50 made at once, a batch in each database in turn",
        ),
    ]
