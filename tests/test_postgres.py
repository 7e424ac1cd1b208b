"""What only PostgreSQL does: two stores on one database stand for two acechat processes."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from acechat.storage import StoreError, check_database, open_store
from acechat.storage.postgres import PostgresStore
from acechat.storage.postgres_schema import SCHEMA_VERSION
from acechat.storage.records import (
    EVERYTHING,
    AuditAction,
    AuditEntry,
    Change,
    ConversationRecord,
    CustomPreset,
    RateCheck,
)
from tests.store_backends import pg_database, pg_url, scope_locks

__all__ = ["pg_database", "pg_url"]  # fixtures

REPO = Path(__file__).resolve().parents[1]
WS = "slack:T1"
KEY = "slack:T1:C1:-"


def audit(new: str) -> AuditEntry:
    return AuditEntry(WS, KEY, "U1", "ann", AuditAction.MODEL_SET, None, new, 1.0)


@pytest.fixture
async def two(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a = await PostgresStore.connect(pg_url, pool_size=3)
    b = await PostgresStore.connect(pg_url, pool_size=3)
    yield a, b
    await asyncio.gather(a.close(), b.close())


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a state of the server's lock table, which announces nothing: polled, every 10 ms."""
    async with asyncio.timeout(10):
        for _ in itertools.count():
            if await condition():
                return
            await asyncio.sleep(0.01)


async def lock_waiters(url: str, scope_key: str) -> int:
    """Sessions queued for the scope's advisory lock, not holding it yet."""
    return (await scope_locks(url, scope_key))[1]


async def terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


class Holder:
    """A turn of one scope held open until released."""

    def __init__(
        self, store: PostgresStore, key: str = KEY, log: list[str] | None = None, name: str = ""
    ) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.log = log if log is not None else []
        self.name = name
        self.task = asyncio.create_task(self._run(store, key))

    async def _run(self, store: PostgresStore, key: str) -> None:
        async with store.scope_turn(key):
            self.log.append(f"{self.name}>")
            self.entered.set()
            await self.release.wait()
            self.log.append(f"<{self.name}")

    async def done(self) -> None:
        self.release.set()
        await self.task


# order and locks across processes


async def test_turns_of_a_scope_run_in_order_across_two_processes(
    pg_url: str, two: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = two
    log: list[str] = []
    a1 = Holder(a, log=log, name="a1")
    await a1.entered.wait()
    b1 = Holder(b, log=log, name="b1")
    await until(lambda: _equals(lock_waiters(pg_url, KEY), 1))  # b1 is queued in PostgreSQL
    a2 = Holder(a, log=log, name="a2")  # then a2 arrives, on the first process
    await a1.done()
    await b1.entered.wait()
    await until(lambda: _equals(lock_waiters(pg_url, KEY), 1))  # a2 is queued in PostgreSQL
    b2 = Holder(b, log=log, name="b2")  # then b2, on the second
    await b1.done()
    await a2.entered.wait()
    await a2.done()
    await b2.done()
    assert log == ["a1>", "<a1", "b1>", "<b1", "a2>", "<a2", "b2>", "<b2"]


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_different_scopes_never_wait_and_turns_in_flight_exceed_the_pool(pg_url: str) -> None:
    store = await PostgresStore.connect(pg_url, pool_size=2)
    try:
        holders = [Holder(store, f"slack:T1:C{i}:-") for i in range(200)]
        async with asyncio.timeout(30):
            await asyncio.gather(*(h.entered.wait() for h in holders))
        # 200 turns in flight at once, every one holding its scope's lock, on a pool of 2.
        assert await store.get_conversation(KEY) is None  # and queries still run
        conn = await asyncpg.connect(pg_url)
        try:
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await conn.close()
        assert held == 200
        await asyncio.gather(*(h.done() for h in holders))
    finally:
        await store.close()


async def test_contended_turns_past_the_wait_connections_still_all_run(pg_url: str) -> None:
    a = await PostgresStore.connect(pg_url, pool_size=4)
    b = await PostgresStore.connect(pg_url, pool_size=2)  # at most 2 wait connections
    try:
        keys = [f"slack:T1:C{i}:-" for i in range(6)]
        logs: dict[str, list[str]] = {key: [] for key in keys}
        held = [Holder(a, key, logs[key], "a") for key in keys]
        await asyncio.gather(*(h.entered.wait() for h in held))
        waiting = [Holder(b, key, logs[key], "b") for key in keys]
        await asyncio.gather(*(h.done() for h in held))
        async with asyncio.timeout(30):
            await asyncio.gather(*(w.entered.wait() for w in waiting))
        await asyncio.gather(*(w.done() for w in waiting))
        assert all(log == ["a>", "<a", "b>", "<b"] for log in logs.values())
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_dead_lock_connection_frees_its_scopes_at_once(
    pg_url: str, two: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = two
    held = Holder(a)
    await held.entered.wait()
    waiting = Holder(b)
    await until(lambda: _equals(lock_waiters(pg_url, KEY), 1))
    conn = a._locks._conn
    assert conn is not None
    await terminate(pg_url, conn.get_server_pid())
    async with asyncio.timeout(10):
        await waiting.entered.wait()
    await waiting.done()
    await held.done()  # the holder ends quietly: its lock is already gone
    # The first process takes the scope again, on a new lock connection.
    async with asyncio.timeout(10), a.scope_turn(KEY):
        pass


async def test_a_killed_process_frees_its_scope_at_once(pg_url: str) -> None:
    script = f"""
import asyncio
from acechat.storage.postgres import PostgresStore
async def main():
    store = await PostgresStore.connect({pg_url!r}, pool_size=1)
    async with store.scope_turn({KEY!r}):
        print("holding", flush=True)
        await asyncio.sleep(120)
asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    store = await PostgresStore.connect(pg_url, pool_size=2)
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"holding\n"
        waiting = Holder(store)
        await until(lambda: _equals(lock_waiters(pg_url, KEY), 1))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        async with asyncio.timeout(10):
            await waiting.entered.wait()  # no lease to expire: the server freed the lock with the socket
        await waiting.done()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()


async def test_a_turn_abandoned_while_queued_in_the_database_frees_everything(
    pg_url: str, two: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = two
    held = Holder(a)
    await held.entered.wait()
    waiting = asyncio.create_task(b.scope_turn(KEY).__aenter__())
    await until(lambda: _equals(lock_waiters(pg_url, KEY), 1))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await until(lambda: _equals(lock_waiters(pg_url, KEY), 0))
    await held.done()
    async with asyncio.timeout(10), b.scope_turn(KEY):
        pass
    async with asyncio.timeout(10), a.scope_turn(KEY):
        pass


# shared state


async def test_a_change_on_one_process_reaches_the_other_s_listeners(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    seen_by_a: list[Change] = []
    seen_by_b: list[Change] = []
    arrived = asyncio.Event()

    def on_b(change: Change) -> None:
        seen_by_b.append(change)
        arrived.set()

    a.on_change(seen_by_a.append)
    b.on_change(on_b)
    await a.set_setting(KEY, "model", "gpt-4", audit=audit("gpt-4"))
    async with asyncio.timeout(5):  # pushed by NOTIFY at commit; the contract allows 1 s
        await arrived.wait()
    assert seen_by_b == [Change("setting", KEY)]
    assert seen_by_a == [Change("setting", KEY)]  # its own, once: not again from NOTIFY
    arrived.clear()
    await a.delete_preset(WS, "absent", audit=audit("x"))  # nothing deleted: nothing announced
    await a.put_preset(CustomPreset(WS, "pirate", "arr", "Yo ho.", "U1", 1.0, 1.0), audit=audit("pirate"))
    async with asyncio.timeout(5):
        await arrived.wait()
    assert seen_by_b == [Change("setting", KEY), Change("preset", WS)]


async def test_after_a_lost_listener_connection_every_cache_is_dropped(
    pg_url: str, two: tuple[PostgresStore, PostgresStore]
) -> None:
    a, b = two
    seen: list[Change] = []
    event = asyncio.Event()

    def listener(change: Change) -> None:
        seen.append(change)
        event.set()

    b.on_change(listener)
    conn = b._listener._conn if b._listener is not None else None
    assert conn is not None
    await terminate(pg_url, conn.get_server_pid())
    async with asyncio.timeout(10):
        await event.wait()
    assert set(seen) == {
        Change("setting", EVERYTHING),
        Change("preset", EVERYTHING),
        Change("control", EVERYTHING),
    }
    seen.clear()
    event.clear()
    await a.set_setting(WS, "preset", "coder", audit=audit("coder"))
    async with asyncio.timeout(5):
        await event.wait()
    assert seen == [Change("setting", WS)]


async def test_an_event_delivered_to_both_processes_is_answered_once(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    firsts = await asyncio.gather(*(store.first_sighting("T1:Ev1") for store in (a, b) * 20))
    assert firsts.count(True) == 1


async def test_rate_limits_count_across_processes(two: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = two
    user = [RateCheck("user:U1", 2, 60.0)]
    assert (await a.take_rate(user)).refused is None
    assert (await b.take_rate(user)).refused is None
    third = await a.take_rate(user)
    assert third.refused == 0 and 0 < third.wait <= 60.0
    assert (await b.take_rate(user)).refused == 0
    verdicts = await asyncio.gather(*(s.take_rate([RateCheck("user:U2", 5, 60.0)]) for s in (a, b) * 10))
    assert sum(v.refused is None for v in verdicts) == 5


async def test_a_conversation_written_by_one_process_is_continued_by_the_other(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    assert await a.queue_turn(ConversationRecord(KEY, "up-1", "m", "p", 1, 1.0, 1.0), None)
    seen = await b.get_conversation(KEY)  # no cache: what a wrote
    assert seen is not None and seen.upstream_id == "up-1"
    assert await b.reset_conversation(KEY)
    assert not await a.save_conversation(ConversationRecord(KEY, "up-1", "m", "p", 2, 1.0, 2.0))
    after = await a.get_conversation(KEY)
    assert after is not None and after.upstream_id is None and after.epoch == 1


async def test_prune_drops_finished_rate_windows(
    pg_url: str, two: tuple[PostgresStore, PostgresStore]
) -> None:
    a, _ = two
    assert (await a.take_rate([RateCheck("user:U1", 1, 60.0), RateCheck("user:U2", 1, 60.0)])).refused is None
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM rate_windows") == 2
        await a.prune()  # still inside their window on the server's clock
        assert await conn.fetchval("SELECT count(*) FROM rate_windows") == 2
        await a.prune(now=time.time() + 120)
        assert await conn.fetchval("SELECT count(*) FROM rate_windows") == 0
    finally:
        await conn.close()
    assert (await a.take_rate([RateCheck("user:U1", 1, 60.0)])).refused is None  # a new window


# start-up


async def test_two_processes_starting_at_once_migrate_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.connect(pg_url, pool_size=1) for _ in range(4)))
    await asyncio.gather(*(s.close() for s in stores))
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == str(
            SCHEMA_VERSION
        )
    finally:
        await conn.close()


async def test_with_a_database_url_no_sqlite_file_is_made(pg_url: str, tmp_path: Path) -> None:
    db_path = tmp_path / "data" / "acechat.db"
    store = await open_store(database_url=pg_url, db_path=db_path, transcript_days=30, pool_size=2)
    try:
        assert store.backend == "postgresql"
        assert await store.ping()
    finally:
        await store.close()
    assert not (tmp_path / "data").exists()
    status = await check_database(database_url=pg_url, db_path=db_path)
    assert (status.backend, status.version, status.current) == ("postgresql", SCHEMA_VERSION, SCHEMA_VERSION)
    assert "postgresql" in status.describe() and "current" in status.describe()


async def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    url = "postgresql://acechat:sekrit-pass@127.0.0.1:1/acechat"
    with pytest.raises(StoreError) as caught:
        await PostgresStore.connect(url)
    message = str(caught.value)
    assert "sekrit-pass" not in message and "\n" not in message
    assert "cannot open the database postgresql://acechat:***@127.0.0.1:1/acechat" in message
    with pytest.raises(StoreError) as checked:
        await check_database(database_url=url, db_path=Path("unused.db"))
    assert "sekrit-pass" not in str(checked.value)
