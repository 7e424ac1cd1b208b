"""What only the SQLite store does, against real database files in tmp_path (the behaviour both
backends share is in test_store_contract.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from acechat.storage import SchemaVersionError, StoreClosedError, StoreError, check_database
from acechat.storage.records import AuditAction, AuditEntry, ConversationRecord, TranscriptEntry
from acechat.storage.sqlite import THREAD_NAME, SQLiteStore
from acechat.storage.sqlite_schema import MIGRATIONS, SCHEMA_VERSION, migrate

REPO = Path(__file__).resolve().parents[1]
WS = "slack:T1"
NOW = 1_800_000_000.0
DAY = 86400.0


def conversation(
    key: str = "slack:T1:C1:-", turns: int = 1, at: float = NOW, epoch: int = 0
) -> ConversationRecord:
    return ConversationRecord(key, f"up-{turns}", "gpt-4o", "assistant", turns, NOW, at, epoch)


def transcript(key: str = "slack:T1:C1:-", at: float = NOW, question: str = "hi") -> TranscriptEntry:
    return TranscriptEntry(key, "up-1", "U1", "ann", question, "hello", "ok", "trace-1", at - 1, at)


def audit(new: str | None = None, at: float = NOW, ws: str = WS) -> AuditEntry:
    return AuditEntry(ws, f"{ws}:C1:-", "U1", "ann", AuditAction.MODEL_SET, None, new, at)


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file through a separate connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def damage_an_index(path: Path) -> None:
    """Damage the file as a bad disk would, leaving it readable: the audit index now claims to order
    entries the other way than it does, so `PRAGMA integrity_check` finds every row "missing" from it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = 'CREATE INDEX audit_workspace ON audit (workspace_key, id DESC)' "
            "WHERE name = 'audit_workspace'"
        )
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.close()


def db_threads() -> int:
    return sum(t.name == THREAD_NAME for t in threading.enumerate())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "nested" / "acechat.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(db_path)
    yield s
    await s.close()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every SQL statement any new connection runs, with the name of the thread that ran it."""
    seen: list[tuple[str, str]] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        seen.append((threading.current_thread().name, "<connect>"))
        conn.set_trace_callback(lambda sql: seen.append((threading.current_thread().name, sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    yield seen


# schema and migrations


async def test_first_start_creates_the_file_with_the_current_schema(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.close()
    await check_database(database_url=None, db_path=db_path)  # raises unless PRAGMA integrity_check is ok
    assert query(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    tables = {name for (name,) in query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"conversations", "scope_settings", "presets", "audit", "transcripts", "seen_events"} <= tables
    indexes = {name for (name,) in query(db_path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"audit_workspace", "transcripts_answered_at"} <= indexes


async def test_a_v1_file_is_migrated_and_keeps_its_data(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    old = Database(db_path)
    assert migrate(old, MIGRATIONS[:1]) == 1
    old.execute(
        "INSERT INTO conversations VALUES ('slack:T1:C1:-', 'up-7', 'gpt-4o', 'assistant', 7, 1.0, 2.0)"
    )
    old.close()
    assert "seen_events" not in {n for (n,) in query(db_path, "SELECT name FROM sqlite_master")}

    store = await SQLiteStore.open(db_path)
    try:
        assert await store.get_conversation("slack:T1:C1:-") == ConversationRecord(
            "slack:T1:C1:-", "up-7", "gpt-4o", "assistant", 7, 1.0, 2.0
        )
        assert await store.first_sighting("Ev1")
    finally:
        await store.close()
    assert query(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


async def test_a_file_from_a_newer_version_is_refused(db_path: Path) -> None:
    await (await SQLiteStore.open(db_path)).close()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    before = db_threads()

    with pytest.raises(SchemaVersionError, match="newer acechat") as caught:
        await SQLiteStore.open(db_path)

    assert str(db_path) in str(caught.value) and f"version {SCHEMA_VERSION + 1}" in str(caught.value)
    assert query(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION + 1),)
    ]
    await asyncio.sleep(0.01)
    assert db_threads() == before  # the worker thread of the failed open has ended


async def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "acechat.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        await SQLiteStore.open(bogus)


async def test_wal_mode_synchronous_normal_and_busy_timeout(store: SQLiteStore, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    pragmas = await store._worker.submit(
        lambda db: [db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous", "busy_timeout")]
    )
    assert pragmas == [1, 5000]  # 1 is NORMAL


# persistence


async def test_committed_writes_survive_sigkill(db_path: Path) -> None:
    script = f"""
import asyncio, sys
from acechat.storage.sqlite import SQLiteStore
from acechat.storage.records import ConversationRecord
async def main():
    store = await SQLiteStore.open({str(db_path)!r})
    for i in range(50):
        await store.save_conversation(ConversationRecord(f"k{{i}}", "up", "m", "p", i, 1.0, 2.0))
    print("ready", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = await SQLiteStore.open(db_path)
    try:
        assert (await store.get_conversation("k49")) == ConversationRecord(
            "k49", "up", "m", "p", 49, 1.0, 2.0
        )
    finally:
        await store.close()
    await check_database(database_url=None, db_path=db_path)  # raises unless PRAGMA integrity_check is ok


# files and modes


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_data_directory_is_0700_and_the_database_files_0600(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "data" / "acechat.db"
    store = await SQLiteStore.open(path)
    try:
        await store.queue_turn(conversation(), transcript())
        files = {p.name: mode(p) for p in path.parent.iterdir()}
        assert files == {"acechat.db": 0o600, "acechat.db-wal": 0o600, "acechat.db-shm": 0o600}
        assert mode(path.parent) == 0o700
    finally:
        await store.close()


async def test_in_an_existing_directory_only_the_files_we_create_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)  # whatever the umask made of it
    store = await SQLiteStore.open(data / "acechat.db")
    try:
        await store.save_conversation(conversation())
        assert mode(data) == 0o755  # not ours to change
        assert {p.name: mode(p) for p in data.iterdir()} == {
            "acechat.db": 0o600,
            "acechat.db-wal": 0o600,
            "acechat.db-shm": 0o600,
        }
    finally:
        await store.close()

    # A file that was there before keeps its mode.
    shared = tmp_path / "shared.db"
    await (await SQLiteStore.open(shared)).close()
    os.chmod(shared, 0o640)
    await (await SQLiteStore.open(shared)).close()
    assert mode(shared) == 0o640


# conversations: the write-through cache


def selects(statements: list[tuple[str, str]]) -> int:
    """How many times a conversation was read from the file."""
    return sum(sql.startswith("SELECT scope_key, upstream_id") for _, sql in statements)


async def test_a_cached_conversation_is_read_without_the_database(
    db_path: Path, statements: list[tuple[str, str]]
) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        assert await store.get_conversation("slack:T1:C1:-") is None  # read, and the absence cached
        assert await store.get_conversation("slack:T1:C1:-") is None
        assert selects(statements) == 1
        await store.queue_turn(conversation(turns=1), transcript())
        assert await store.get_conversation("slack:T1:C1:-") == conversation(turns=1)
        assert await store.reset_conversation("slack:T1:C1:-")
        reset = await store.get_conversation("slack:T1:C1:-")
        assert selects(statements) == 1  # every state after a write was known without reading
        assert not await store.save_conversation(conversation(turns=2))  # the old epoch: refused
        assert await store.get_conversation("slack:T1:C1:-") == reset
    finally:
        await store.close()
    # What the cache said is what the file holds.
    check = await SQLiteStore.open(db_path, cache_size=0)
    try:
        assert await check.get_conversation("slack:T1:C1:-") == reset
    finally:
        await check.close()


async def test_a_read_that_a_write_overtook_is_not_cached(store: SQLiteStore, db_path: Path) -> None:
    await store.save_conversation(conversation(turns=1))
    uncached = await SQLiteStore.open(db_path, cache_size=0)
    await uncached.close()
    store._cache.clear()  # as after many other scopes pushed it out
    read = asyncio.ensure_future(store.get_conversation("slack:T1:C1:-"))
    await asyncio.sleep(0)  # the read is queued...
    written = store.queue_turn(conversation(turns=2), None)  # ...then a write, while it is in flight
    assert await read == conversation(turns=1)  # what was stored when the read ran
    assert await written
    assert await store.get_conversation("slack:T1:C1:-") == conversation(turns=2)


async def test_a_failed_write_leaves_nothing_wrong_in_the_cache(store: SQLiteStore) -> None:
    await store.save_conversation(conversation(turns=1))
    await store._worker.submit(
        lambda db: db.execute(
            "CREATE TRIGGER no_turns BEFORE UPDATE ON conversations BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    )
    with pytest.raises(sqlite3.IntegrityError, match="full"):
        await store.queue_turn(conversation(turns=2), None)
    assert await store.get_conversation("slack:T1:C1:-") == conversation(turns=1)


async def test_the_cache_keeps_the_most_recently_used_scopes(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path, cache_size=3)
    try:
        for i in range(6):
            await store.get_conversation(f"k{i}")  # reads fill the cache; writes keep it true
        await store.get_conversation("k3")
        assert await store.save_conversation(conversation("k4"))
        assert list(store._cache) == ["k5", "k3", "k4"]
    finally:
        await store.close()


# group commits


async def test_turns_queued_together_share_one_commit(
    db_path: Path, statements: list[tuple[str, str]]
) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        blocker = threading.Event()
        # Hold the worker so the turns below queue up behind one job, as under load.
        held = store._worker.submit(lambda db: blocker.wait(10))
        turns = [
            store.queue_turn(conversation(f"slack:T1:C{i}:-", turns=i), transcript(f"slack:T1:C{i}:-"))
            for i in range(10)
        ]
        statements.clear()
        blocker.set()
        await held
        assert await asyncio.gather(*turns) == [True] * 10
        sql = [s for _, s in statements]
        assert sql.count("COMMIT") == 1 and sql.count("BEGIN IMMEDIATE") == 1
        assert sum(s.startswith("INSERT INTO transcripts") for s in sql) == 10
    finally:
        await store.close()
    assert query(db_path, "SELECT count(*) FROM transcripts") == [(10,)]


async def test_a_failing_turn_in_a_group_fails_alone(store: SQLiteStore, db_path: Path) -> None:
    await store._worker.submit(
        lambda db: db.execute(
            "CREATE TRIGGER no_c3 BEFORE INSERT ON transcripts WHEN new.scope_key = 'slack:T1:C3:-' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    )
    blocker = threading.Event()
    held = store._worker.submit(lambda db: blocker.wait(10))
    turns = [
        store.queue_turn(conversation(f"slack:T1:C{i}:-"), transcript(f"slack:T1:C{i}:-")) for i in range(6)
    ]
    blocker.set()
    await held
    outcomes = await asyncio.gather(*turns, return_exceptions=True)
    assert [o is True for o in outcomes] == [True, True, True, False, True, True]
    assert isinstance(outcomes[3], sqlite3.IntegrityError)
    # The failed turn wrote nothing, its conversation included; the others are all there.
    assert query(db_path, "SELECT scope_key FROM conversations ORDER BY scope_key") == [
        (f"slack:T1:C{i}:-",) for i in (0, 1, 2, 4, 5)
    ]
    assert await store.get_conversation("slack:T1:C3:-") is None


async def test_health_probes_touch_the_file_at_most_once_a_second(
    db_path: Path, statements: list[tuple[str, str]]
) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        statements.clear()
        assert all(await asyncio.gather(*(store.ping() for _ in range(50))))
        assert all([await store.ping() for _ in range(50)])
        assert sum("last_ping" in sql for _, sql in statements) == 1
    finally:
        await store.close()


# the worker thread, concurrency, lifecycle


async def test_all_sqlite_work_runs_on_the_one_worker_thread(
    db_path: Path, statements: list[tuple[str, str]]
) -> None:
    store = await SQLiteStore.open(db_path, cache_size=0)
    await store.queue_turn(conversation(), transcript())
    await store.get_conversation("slack:T1:C1:-")
    await store.set_setting(WS, "preset", "coder", audit=audit())
    await store.list_audit(WS)
    await store.first_sighting("Ev1")
    await store.prune()
    await store.ping()
    await store.close()

    assert len(statements) > 20
    assert {thread for thread, _ in statements} == {THREAD_NAME}
    assert threading.current_thread().name != THREAD_NAME
    assert any(sql.startswith("INSERT INTO transcripts") for _, sql in statements)


async def test_the_connection_cannot_be_used_from_the_event_loop(store: SQLiteStore) -> None:
    conn = await store._worker.submit(lambda db: db.conn)
    with pytest.raises(sqlite3.ProgrammingError, match="thread"):
        conn.execute("SELECT 1")


async def test_close_is_idempotent_and_ends_the_worker_thread(db_path: Path) -> None:
    before = db_threads()
    store = await SQLiteStore.open(db_path)
    assert db_threads() == before + 1
    assert await store.ping()
    pending = asyncio.ensure_future(store.save_conversation(conversation(turns=9)))
    await asyncio.sleep(0)  # the write is queued before close is asked for
    await asyncio.gather(store.close(), store.close())
    await store.close()
    await pending
    assert db_threads() == before
    assert not await store.ping()
    with pytest.raises(StoreClosedError):
        await store.get_conversation("slack:T1:C1:-")
    assert query(db_path, "SELECT turns FROM conversations") == [(9,)]


async def test_a_failing_or_abandoned_call_does_not_disturb_the_others(store: SQLiteStore) -> None:
    def broken(db: Database) -> None:
        db.execute("SELECT * FROM no_such_table")

    abandoned = asyncio.ensure_future(store.save_conversation(conversation("slack:T1:C0:-")))
    await asyncio.sleep(0)
    abandoned.cancel()
    outcomes = await asyncio.gather(
        *(store.save_conversation(conversation(f"slack:T1:C{i}:-", turns=i)) for i in range(1, 4)),
        store._worker.submit(broken),
        store.get_conversation("slack:T1:C2:-"),
        return_exceptions=True,
    )
    assert outcomes[:3] == [True, True, True]
    assert isinstance(outcomes[3], sqlite3.OperationalError)
    assert outcomes[4] == conversation("slack:T1:C2:-", turns=2)
    # A call already queued still runs when its caller stops waiting.
    assert await store.get_conversation("slack:T1:C0:-") == conversation("slack:T1:C0:-")


async def test_an_abandoned_open_leaves_no_thread_behind(db_path: Path) -> None:
    before = db_threads()
    opening = asyncio.ensure_future(SQLiteStore.open(db_path))
    await asyncio.sleep(0)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    for _ in range(200):
        if db_threads() == before:
            break
        await asyncio.sleep(0.01)
    assert db_threads() == before


async def test_an_in_memory_store_works_for_tools_and_tests() -> None:
    store = await SQLiteStore.open(":memory:")
    try:
        assert await store.queue_turn(conversation(), transcript())
        assert await store.get_conversation("slack:T1:C1:-") == conversation()
    finally:
        await store.close()


async def test_the_check_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    status = await check_database(database_url=None, db_path=tmp_path / "missing.db")
    assert (status.version, status.current) == (0, SCHEMA_VERSION)
    assert not (tmp_path / "missing.db").exists()


async def test_the_check_finds_a_damaged_file_that_still_opens(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    try:
        for n in range(20):  # entries for the damaged index to lose
            await store.set_setting(WS, "model", f"m{n}", audit=audit(f"m{n}"))
    finally:
        await store.close()
    damage_an_index(db_path)
    with pytest.raises(StoreError, match=r"^the database .* is damaged \(.*audit_workspace.*\): restore it"):
        await check_database(database_url=None, db_path=db_path)
