"""Benchmark 5, storage: 100,000 stored conversations, their size, and looking a scope up among them.

Each conversation is stored the way an answered question stores it (`Store.record_turn`: the
conversation row and one transcript of a 600-character answer). Lookups are timed one at a time, for
scopes picked at random: through `Store.get_conversation` (one trip to the database thread), and
through the core's path for a question (`ChatCore.resolve` then `ChatCore.conversation`), cold (the
scope is not in the core's caches) and warm. The same lookups on a 1,000-conversation database in the
same run give the ratio that shows how lookups scale.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bench.overhead import bench_settings
from bench.procs import rss
from bench.report import Row, median, mib, percentile
from core.chat import ChatCore
from core.scope import Scope
from storage.records import ConversationRecord, TranscriptEntry
from storage.schema import write_transaction
from storage.store import _INSERT_TRANSCRIPT, _UPSERT_CONVERSATION, _conversation_row, _transcript_row

NAME = "storage"
CONVERSATIONS = 100_000
SMALL = 1_000
LOOKUPS = 2_000
ANSWER = "stored answer text " * 31 + "end"  # about 600 characters


def _scope(i: int) -> Scope:
    return Scope.of("bench", "w", f"c{i}")


def _turn(i: int, now: float) -> tuple[ConversationRecord, TranscriptEntry]:
    key = _scope(i).key
    return (
        ConversationRecord(key, f"up-{i}", "gpt-4o", "assistant", 1, now, now),
        TranscriptEntry(
            key, f"up-{i}", "U1", "user", "how do I rotate logs?", ANSWER, "answered", f"t-{i}", now, now
        ),
    )


async def _populate(core: ChatCore, count: int) -> None:
    """Store `count` conversations with the store's own statements, in big transactions on its thread
    (record_turn would take minutes: it commits every turn, as it must)."""
    now = time.time()
    for first in range(0, count, 10_000):
        rows = [_turn(i, now) for i in range(first, min(first + 10_000, count))]
        conversations = [_conversation_row(c) for c, _ in rows]
        transcripts = [_transcript_row(t) for _, t in rows]

        def insert(
            db: Database, conversations: list[Any] = conversations, transcripts: list[Any] = transcripts
        ) -> None:
            with write_transaction(db):
                db.conn.executemany(_UPSERT_CONVERSATION, conversations)
                db.conn.executemany(_INSERT_TRANSCRIPT, transcripts)

        await core.store._worker.submit(insert)


async def _record_turn_rate(core: ChatCore, first: int, count: int = 2_000) -> float:
    """Turns per second through Store.record_turn, 100 at a time (one commit each)."""
    now = time.time()
    start = time.perf_counter()
    for chunk in range(first, first + count, 100):
        await asyncio.gather(*(core.store.record_turn(*_turn(i, now)) for i in range(chunk, chunk + 100)))
    return count / (time.perf_counter() - start)


async def _timed(lookup: Callable[[int], Awaitable[object]], keys: list[int]) -> list[float]:
    times = []
    for i in keys:
        start = time.perf_counter()
        found = await lookup(i)
        times.append(time.perf_counter() - start)
        if found is None:
            raise RuntimeError(f"conversation {i} not found")
    return times


async def _lookups(core: ChatCore, count: int) -> dict[str, list[float]]:
    rng = random.Random(count)
    picks = rng.sample(range(count), min(LOOKUPS, count))
    cold = rng.sample(range(count), min(LOOKUPS, count))

    async def store_lookup(i: int) -> object:
        return await core.store.get_conversation(_scope(i).key)

    async def core_lookup(i: int) -> object:
        return await _core_lookup(core, i)

    results = {"store": await _timed(store_lookup, picks)}
    core._settings_cache.clear()
    core._conversations.clear()
    results["core_cold"] = await _timed(core_lookup, cold)
    results["core_warm"] = await _timed(core_lookup, cold[:200] * 5)
    return results


async def _core_lookup(core: ChatCore, i: int) -> object:
    """What the core reads before asking upstream: the scope's settings lineage, then its conversation."""
    scope = _scope(i)
    await core.resolve(scope)
    return await core.conversation(scope)


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        url = "http://127.0.0.1:9"  # never called: only the store and the caches are exercised
        big_path, small_path = Path(tmp) / "big.db", Path(tmp) / "small.db"
        big = await ChatCore.open(bench_settings(url, big_path))
        small = await ChatCore.open(bench_settings(url, small_path))
        try:
            await _populate(big, CONVERSATIONS - 2_000)
            turns_per_second = await _record_turn_rate(big, CONVERSATIONS - 2_000)
            await _populate(small, SMALL)
        finally:
            await big.aclose()
            await small.aclose()
        size = _db_bytes(big_path)

        before = rss()
        big = await ChatCore.open(bench_settings(url, big_path))
        small = await ChatCore.open(bench_settings(url, small_path))
        try:
            # Alternate the two databases so noise hits both alike.
            big_times: dict[str, list[float]] = {}
            small_times: dict[str, list[float]] = {}
            for _ in range(2):
                for core, count, times in ((big, CONVERSATIONS, big_times), (small, SMALL, small_times)):
                    for kind, samples in (await _lookups(core, count)).items():
                        times.setdefault(kind, []).extend(samples)
            # Fill the core's caches to capacity, as a long-running bot's would be, counting what
            # Python allocates for them (SQLite's page cache is in the RSS figure only).
            big._settings_cache.clear()
            big._conversations.clear()
            tracemalloc.start()
            for first in range(0, 12_000, 1_000):
                await asyncio.gather(*(_core_lookup(big, i) for i in range(first, first + 1_000)))
            caches, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            grown = rss() - before
        finally:
            await big.aclose()
            await small.aclose()

    def p50(samples: list[float]) -> str:
        return f"{median(samples) * 1e6:,.0f} µs (p99 {percentile(samples, 99) * 1e6:,.0f} µs)"

    scale = median(big_times["store"]) / median(small_times["store"])
    return [
        Row(
            NAME,
            f"database size, {CONVERSATIONS:,} conversations",
            f"{mib(size)} ({size / CONVERSATIONS:,.0f} B each)",
            note="conversation row + one 600-character transcript each, WAL included",
        ),
        Row(
            NAME,
            "Store.record_turn into it",
            f"{turns_per_second:,.0f} turns/s",
            note="the last 2,000 conversations, 100 at a time; one transaction and commit per turn",
        ),
        Row(
            NAME,
            f"memory of the core on {CONVERSATIONS:,} conversations, caches full",
            f"{mib(grown)} RSS; caches {mib(caches)} of Python heap",
            note="RSS after opening both stores and 20,000 lookups, minus RSS before opening; the heap "
            "figure is tracemalloc's count for filling the caches (10,000 scopes each) from empty",
        ),
        Row(NAME, "Store.get_conversation among 100,000", p50(big_times["store"])),
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
            note="Store.get_conversation medians, both databases in the same run, alternating",
        ),
    ]
