"""Storage micro-benchmark: `python -m storage.benchmark [--turns N] [--conversations N] [--path FILE]`.

Measures the hot path (record_turn, sequential and from many tasks) and a large conversations table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from storage.records import ConversationRecord, TranscriptEntry
from storage.store import Store


def _conversation(i: int, now: float) -> ConversationRecord:
    return ConversationRecord(f"bench:w:c{i}:-", f"up-{i}", "gpt-4o", "assistant", i % 50, now, now)


def _transcript(i: int, now: float) -> TranscriptEntry:
    return TranscriptEntry(
        f"bench:w:c{i}:-", f"up-{i}", "U1", "user", "question " * 8, "answer " * 60, "ok", None, now, now
    )


async def measure(path: Path, *, turns: int, conversations: int, tasks: int = 100) -> dict[str, float]:
    """Operations per second for each storage path exercised; `path` must not hold a database yet."""
    results: dict[str, float] = {}
    store = await Store.open(path)
    try:
        now = time.time()
        start = time.perf_counter()
        for i in range(turns):
            await store.record_turn(_conversation(i % 1000, now), _transcript(i, now))
        results["record_turn_per_s"] = turns / (time.perf_counter() - start)

        async def worker(offset: int) -> None:
            for i in range(offset, turns, tasks):
                await store.record_turn(_conversation(i % 1000, now), _transcript(i, now))

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(tasks)))
        results[f"record_turn_{tasks}_tasks_per_s"] = turns / (time.perf_counter() - start)

        start = time.perf_counter()
        for i in range(conversations):
            await store.save_conversation(_conversation(i, now))
        results["save_conversation_per_s"] = conversations / (time.perf_counter() - start)

        lookups = min(conversations, 10_000)
        keys = [_conversation(random.randrange(conversations), now).scope_key for _ in range(lookups)]
        start = time.perf_counter()
        for key in keys:
            await store.get_conversation(key)
        results["get_conversation_per_s"] = lookups / (time.perf_counter() - start)
    finally:
        await store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--path", type=Path, help="a new database file (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "bench.db"
        results = asyncio.run(measure(path, turns=args.turns, conversations=args.conversations))
        results["file_mib"] = path.stat().st_size / 2**20
    for name, value in results.items():
        print(f"{name:32} {value:12,.1f}")


if __name__ == "__main__":
    main()
