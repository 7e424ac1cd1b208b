"""The SQLite store, against real database files in tmp_path."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from storage import SchemaVersionError, Store, StoreClosedError, StoreError, integrity_check
from storage.benchmark import measure
from storage.records import AuditEntry, ConversationRecord, CustomPreset, TranscriptEntry
from storage.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from storage.store import THREAD_NAME

REPO = Path(__file__).resolve().parents[1]
WS = "slack:T1"
NOW = 1_800_000_000.0
DAY = 86400.0


def conversation(key: str = "slack:T1:C1:-", turns: int = 1, at: float = NOW) -> ConversationRecord:
    return ConversationRecord(key, f"up-{turns}", "gpt-4o", "assistant", turns, NOW, at)


def transcript(key: str = "slack:T1:C1:-", at: float = NOW, question: str = "hi") -> TranscriptEntry:
    return TranscriptEntry(key, "up-1", "U1", "ann", question, "hello", "ok", "trace-1", at - 1, at)


def audit(action: str = "set", new: str | None = None, at: float = NOW, ws: str = WS) -> AuditEntry:
    return AuditEntry(ws, f"{ws}:C1:-", "U1", "ann", action, None, new, at)


def preset(name: str = "pirate", prompt: str = "Talk like a pirate.", at: float = NOW) -> CustomPreset:
    return CustomPreset(WS, name, "arr", prompt, "U1", at, at)


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file through a separate connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def db_threads() -> int:
    return sum(t.name == THREAD_NAME for t in threading.enumerate())


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "nested" / "acechat.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_path)
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
    store = await Store.open(db_path)
    assert store.path == db_path
    await store.close()
    assert integrity_check(db_path) == "ok"
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

    store = await Store.open(db_path)
    try:
        assert await store.get_conversation("slack:T1:C1:-") == ConversationRecord(
            "slack:T1:C1:-", "up-7", "gpt-4o", "assistant", 7, 1.0, 2.0
        )
        assert await store.first_sighting("Ev1")
    finally:
        await store.close()
    assert query(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_a_failing_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    def broken(db: Database) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    db = Database(tmp_path / "a.db")
    migrate(db, MIGRATIONS[:1])
    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(db, [*MIGRATIONS, broken])
    assert schema_version(db) == 1
    assert "half_done" not in db.table_names() and "transcripts" not in db.table_names()
    db.close()


async def test_a_file_from_a_newer_version_is_refused(db_path: Path) -> None:
    await (await Store.open(db_path)).close()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    before = db_threads()

    with pytest.raises(SchemaVersionError, match="newer acechat") as caught:
        await Store.open(db_path)

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
        await Store.open(bogus)


async def test_wal_mode_synchronous_normal_and_busy_timeout(store: Store, db_path: Path) -> None:
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    pragmas = await store._worker.submit(
        lambda db: [db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous", "busy_timeout")]
    )
    assert pragmas == [1, 5000]  # 1 is NORMAL


# persistence


async def test_everything_survives_a_restart(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.record_turn(conversation(turns=3), transcript())
    await store.set_setting(WS, "model", "gpt-4o-mini", audit=audit(new="gpt-4o-mini"))
    await store.put_preset(preset(), audit=audit("preset.put"))
    assert await store.first_sighting("Ev1")
    await store.close()

    store = await Store.open(db_path)
    try:
        assert await store.get_conversation("slack:T1:C1:-") == conversation(turns=3)
        assert (await store.get_settings([WS]))[WS].model == "gpt-4o-mini"
        assert await store.get_preset(WS, "pirate") == preset()
        assert [e.action for e in await store.list_audit(WS)] == ["preset.put", "set"]
        assert not await store.first_sighting("Ev1")
    finally:
        await store.close()
    assert query(db_path, "SELECT question, answer FROM transcripts") == [("hi", "hello")]


async def test_committed_writes_survive_sigkill(db_path: Path) -> None:
    script = f"""
import asyncio, sys
from storage import Store
from storage.records import ConversationRecord
async def main():
    store = await Store.open({str(db_path)!r})
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

    store = await Store.open(db_path)
    try:
        assert (await store.get_conversation("k49")) == ConversationRecord(
            "k49", "up", "m", "p", 49, 1.0, 2.0
        )
    finally:
        await store.close()
    assert integrity_check(db_path) == "ok"


# conversations


async def test_conversations_upsert_and_forget(store: Store) -> None:
    assert await store.get_conversation("slack:T1:C1:-") is None
    await store.save_conversation(conversation(turns=1))
    await store.save_conversation(conversation(turns=2, at=NOW + 5))
    assert await store.get_conversation("slack:T1:C1:-") == conversation(turns=2, at=NOW + 5)
    assert await store.forget_conversation("slack:T1:C1:-")
    assert not await store.forget_conversation("slack:T1:C1:-")
    assert await store.get_conversation("slack:T1:C1:-") is None


async def test_record_turn_writes_conversation_and_transcript_together(store: Store, db_path: Path) -> None:
    await store.record_turn(conversation(turns=4), transcript(question="why?"))
    await store.record_turn(conversation(turns=5), None)
    assert await store.get_conversation("slack:T1:C1:-") == conversation(turns=5)
    assert query(db_path, "SELECT question, trace_id FROM transcripts") == [("why?", "trace-1")]


# settings and audit


async def test_set_setting_returns_the_old_value_and_audits_it(store: Store) -> None:
    channel = "slack:T1:C1:-"
    assert await store.get_settings([channel, WS]) == {}
    assert await store.set_setting(channel, "preset", "coder", audit=audit(new="coder", at=NOW)) is None
    assert await store.set_setting(channel, "model", "gpt-4", audit=audit(new="gpt-4", at=NOW + 1)) is None
    assert (
        await store.set_setting(channel, "preset", "pirate", audit=audit(new="pirate", at=NOW + 2)) == "coder"
    )
    settings = await store.get_settings([channel, WS, channel])
    assert list(settings) == [channel]
    assert (settings[channel].preset, settings[channel].model, settings[channel].updated_at) == (
        "pirate",
        "gpt-4",
        NOW + 2,
    )
    assert await store.set_setting(channel, "preset", None, audit=audit(at=NOW + 3)) == "pirate"
    assert (await store.get_settings([channel]))[channel].preset is None
    assert [(e.old, e.new) for e in await store.list_audit(WS)] == [
        ("pirate", None),
        ("coder", "pirate"),
        (None, "gpt-4"),
        (None, "coder"),
    ]
    with pytest.raises(ValueError, match="unknown setting"):
        await store.set_setting(channel, "colour", "red", audit=audit())  # type: ignore[arg-type]


async def test_a_setting_is_not_changed_when_its_audit_cannot_be_written(store: Store, db_path: Path) -> None:
    await store.set_setting(WS, "model", "gpt-4o", audit=audit(new="gpt-4o"))
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
    )
    conn.close()

    with pytest.raises(sqlite3.IntegrityError, match="audit refused"):
        await store.set_setting(WS, "model", "o3-mini", audit=audit(new="o3-mini"))
    with pytest.raises(sqlite3.IntegrityError, match="audit refused"):
        await store.put_preset(preset(), audit=audit("preset.put"))

    assert (await store.get_settings([WS]))[WS].model == "gpt-4o"
    assert await store.get_preset(WS, "pirate") is None
    assert await store.ping()  # no transaction was left open


async def test_list_audit_is_newest_first_limited_and_per_workspace(store: Store) -> None:
    for i in range(30):
        await store.add_audit(audit(f"a{i}"))
    await store.add_audit(audit("elsewhere", ws="discord:G1"))
    recent = await store.list_audit(WS)
    assert [e.action for e in recent] == [f"a{i}" for i in range(29, 9, -1)]
    assert recent[0].id is not None and recent[1].id is not None and recent[0].id > recent[1].id
    assert [e.action for e in await store.list_audit(WS, limit=3)] == ["a29", "a28", "a27"]
    assert [e.action for e in await store.list_audit("discord:G1")] == ["elsewhere"]
    assert await store.list_audit("discord:nobody") == []


# presets


async def test_preset_crud_is_audited(store: Store) -> None:
    assert await store.put_preset(preset("pirate", at=NOW), audit=audit("preset create", "pirate")) is None
    assert await store.put_preset(preset("critic", at=NOW), audit=audit("preset create", "critic")) is None
    old = await store.put_preset(preset("pirate", "Yo ho.", at=NOW + 9), audit=audit("preset edit", "Yo ho."))
    assert old == preset("pirate", at=NOW)

    updated = await store.get_preset(WS, "pirate")
    assert updated is not None
    assert (updated.prompt, updated.created_at, updated.updated_at) == ("Yo ho.", NOW, NOW + 9)
    assert [p.name for p in await store.list_presets(WS)] == ["critic", "pirate"]
    assert await store.count_presets(WS) == 2
    assert await store.list_presets("discord:G1") == [] and await store.count_presets("discord:G1") == 0

    assert await store.delete_preset(WS, "critic", audit=audit("preset delete")) == preset("critic", at=NOW)
    assert await store.delete_preset(WS, "critic", audit=audit("preset delete")) is None
    assert await store.get_preset(WS, "critic") is None
    assert [(e.action, e.new) for e in await store.list_audit(WS)] == [
        ("preset delete", None),
        ("preset edit", "Yo ho."),
        ("preset create", "critic"),
        ("preset create", "pirate"),
    ]


# transcripts, pruning, de-duplication


async def test_transcripts_are_never_stored_when_retention_is_zero(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.add_transcript(transcript(question="kept for now"))
    await store.close()

    store = await Store.open(db_path, transcript_days=0)
    try:
        await store.add_transcript(transcript())
        await store.record_turn(conversation(), transcript())
        assert query(db_path, "SELECT question FROM transcripts") == [("kept for now",)]
        # Turning transcripts off also removes what an earlier run kept.
        assert await store.prune(now=NOW) == 1
        assert await store.get_conversation("slack:T1:C1:-") == conversation()
    finally:
        await store.close()
    assert query(db_path, "SELECT count(*) FROM transcripts") == [(0,)]


async def test_prune_drops_old_transcripts_and_seen_events(tmp_path: Path) -> None:
    path = tmp_path / "acechat.db"
    now = time.time()  # first_sighting stamps events with the real clock
    store = await Store.open(path, transcript_days=7)
    try:
        for age_days, question in [(10, "old"), (8, "older than a week"), (6, "recent"), (0, "new")]:
            await store.add_transcript(transcript(at=now - age_days * DAY, question=question))
        assert await store.first_sighting("Ev1")
        assert await store.prune(now=now) == 2
        assert {q for (q,) in query(path, "SELECT question FROM transcripts")} == {"recent", "new"}

        assert await store.prune(now=now + 8 * DAY) == 3  # both transcripts and the event
        assert await store.first_sighting("Ev1")
    finally:
        await store.close()


async def test_first_sighting_is_true_once_even_across_a_restart(db_path: Path) -> None:
    store = await Store.open(db_path)
    assert await store.first_sighting("T1:Ev1")
    assert not await store.first_sighting("T1:Ev1")
    assert await store.first_sighting("T1:Ev2")
    await store.close()
    store = await Store.open(db_path)
    try:
        assert not await store.first_sighting("T1:Ev1")
    finally:
        await store.close()


# the worker thread, concurrency, lifecycle


async def test_all_sqlite_work_runs_on_the_one_worker_thread(
    db_path: Path, statements: list[tuple[str, str]]
) -> None:
    store = await Store.open(db_path)
    await store.record_turn(conversation(), transcript())
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


async def test_the_connection_cannot_be_used_from_the_event_loop(store: Store) -> None:
    conn = await store._worker.submit(lambda db: db.conn)
    with pytest.raises(sqlite3.ProgrammingError, match="thread"):
        conn.execute("SELECT 1")


async def test_concurrent_calls_from_many_tasks_are_all_applied(store: Store) -> None:
    async def one(i: int) -> bool:
        await store.save_conversation(conversation(f"slack:T1:C{i}:-", turns=i))
        await store.add_audit(audit(f"a{i}"))
        return await store.first_sighting("same-event")

    firsts = await asyncio.gather(*(one(i) for i in range(200)))
    assert firsts.count(True) == 1
    assert len(await store.list_audit(WS, limit=1000)) == 200
    found = await asyncio.gather(*(store.get_conversation(f"slack:T1:C{i}:-") for i in range(200)))
    assert [c.turns if c else None for c in found] == list(range(200))


async def test_close_is_idempotent_and_ends_the_worker_thread(db_path: Path) -> None:
    before = db_threads()
    store = await Store.open(db_path)
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


async def test_a_failing_or_abandoned_call_does_not_disturb_the_others(store: Store) -> None:
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
    opening = asyncio.ensure_future(Store.open(db_path))
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
    store = await Store.open(":memory:")
    try:
        await store.record_turn(conversation(), transcript())
        assert await store.get_conversation("slack:T1:C1:-") == conversation()
    finally:
        await store.close()


def test_integrity_check_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        integrity_check(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


# speed sanity (generous bounds; the real numbers come from `python -m storage.benchmark`)


async def test_a_thousand_turns_are_recorded_quickly(store: Store, db_path: Path) -> None:
    started = time.perf_counter()
    for i in range(1000):
        await store.record_turn(conversation(f"slack:T1:C{i % 50}:-", turns=i), transcript(at=NOW + i))
    assert time.perf_counter() - started < 10
    assert query(db_path, "SELECT count(*) FROM transcripts") == [(1000,)]


async def test_the_micro_benchmark_runs(tmp_path: Path) -> None:
    results = await measure(tmp_path / "bench.db", turns=200, conversations=300, tasks=10)
    assert set(results) == {
        "record_turn_per_s",
        "record_turn_10_tasks_per_s",
        "save_conversation_per_s",
        "get_conversation_per_s",
    }
    assert all(rate > 0 for rate in results.values())
