"""`acechat db copy`, `acechat check` on each backend, and the database settings."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from acechat.core.settings import DEFAULT_DATABASE_POOL, SettingsError, parse_settings
from acechat.storage import check_database, postgres_schema, sqlite_schema
from acechat.storage.copy import CopyMode, TargetNotEmpty, copy_to_postgres
from acechat.storage.errors import StoreError
from acechat.storage.postgres import PostgresStore
from acechat.storage.records import (
    AnswerRecord,
    AuditAction,
    AuditEntry,
    ConversationRecord,
    CustomPreset,
    PendingDelete,
    PendingQuestion,
    TranscriptEntry,
    UsageCount,
    UsageRecord,
)
from acechat.storage.sqlite import SQLiteStore
from tests.fakes.discord import TOKEN as DISCORD_TOKEN
from tests.store_backends import pg_database, pg_url

__all__ = ["pg_database", "pg_url"]  # fixtures

ROOT = Path(__file__).resolve().parents[1]
WS = "slack:T1"


async def populate(path: Path) -> None:
    store = await SQLiteStore.open(path)
    try:
        for i in range(3):
            key = f"{WS}:C{i}:-"
            await store.queue_turn(
                ConversationRecord(key, f"up-{i}", "gpt-4o", "assistant", i + 1, 1.0, 2.0),
                TranscriptEntry(
                    key, f"up-{i}", "U1", "ann", f"question {i}", "answer", "answered", None, 1.5, 2.0
                ),
            )
        await store.reset_conversation(f"{WS}:C0:-")
        for i, model in enumerate(("gpt-4", "o3-mini")):
            entry = AuditEntry(WS, f"{WS}:C1:-", "U1", "ann", AuditAction.MODEL_SET, None, model, 10.0 + i)
            await store.set_setting(f"{WS}:C1:-", "model", model, audit=entry)
        create = AuditEntry(WS, WS, "U1", "ann", AuditAction.PRESET_CREATE, None, "Yo ho.", 20.0)
        await store.put_preset(CustomPreset(WS, "pirate", "arr", "Yo ho.", "U1", 5.0, 5.0), audit=create)
        assert await store.first_sighting("T1:Ev1")
        off = AuditEntry(WS, f"{WS}:C1:-", "U1", "ann", AuditAction.CHANNEL, None, "off", 30.0)
        await store.set_control(f"{WS}:C1:-", "channel", "off", audit=off)
        await store.record_usage(UsageRecord(WS, f"{WS}:C1:-", "U1", "gpt-4o", 6, 0.5, "answered", 2.0, 42))
        await store.engage_thread(f"{WS}:C1:7.1", f"{WS}:C1:-", 2.0)
        answer = AnswerRecord("ab12", f"{WS}:C1:-", WS, "U1", "gpt-4o", "assistant", 30.0)
        await store.end_answer(replace(answer, state="answered"))
        await store.vote(answer, "U2", -1, 31.0)
        await store.queue_delete(PendingDelete("up-old", "gpt-4o", 2, 99.0))
        await store.save_question(QUESTION)
    finally:
        await store.close()


QUESTION = PendingQuestion("q1", f"{WS}:C1:-", "up-1", 2, "toolu_1", "Which?", ("A", "B"), "U1", 31.0)


async def test_copy_moves_every_table_and_a_second_run_adds_nothing(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "acechat.db"
    await populate(path)
    first = {t.table: (t.in_file, t.inserted, t.updated) for t in await copy_to_postgres(path, pg_url)}
    assert first == {
        "conversations": (3, 3, 0),
        "scope_settings": (1, 1, 0),
        "presets": (1, 1, 0),
        "audit": (4, 4, 0),
        "transcripts": (3, 3, 0),
        "seen_events": (1, 1, 0),
        "controls": (1, 1, 0),
        "usage": (1, 1, 0),
        "engaged_threads": (1, 1, 0),
        "answers": (1, 1, 0),
        "feedback": (1, 1, 0),
        "upstream_deletes": (1, 1, 0),
        "pending_questions": (1, 1, 0),
    }
    again = await copy_to_postgres(path, pg_url, mode=CopyMode.MERGE)
    assert {(t.inserted, t.updated) for t in again} == {(0, 0)}

    store = await PostgresStore.connect(pg_url, pool_size=1)
    try:
        reset = await store.get_conversation(f"{WS}:C0:-")
        assert reset is not None and (reset.upstream_id, reset.epoch) == (None, 1)
        assert await store.get_conversation(f"{WS}:C2:-") == ConversationRecord(
            f"{WS}:C2:-", "up-2", "gpt-4o", "assistant", 3, 1.0, 2.0
        )
        assert (await store.get_settings([f"{WS}:C1:-"]))[f"{WS}:C1:-"].model == "o3-mini"
        moved = await store.get_answer("ab12")
        assert moved is not None and moved.state == "answered" and moved.asker_id == "U1"
        assert [(t.up, t.down) for t in await store.feedback(WS, 0)] == [(0, 1)]
        assert await store.get_preset(WS, "pirate") == CustomPreset(
            WS, "pirate", "arr", "Yo ho.", "U1", 5.0, 5.0
        )
        assert [(e.action, e.new) for e in await store.list_audit(WS, 10)] == [
            (AuditAction.DATABASE_COPY, f"merge from {path}"),
            (AuditAction.DATABASE_COPY, f"copy from {path}"),
            (AuditAction.CHANNEL, "off"),
            (AuditAction.PRESET_CREATE, "Yo ho."),
            (AuditAction.MODEL_SET, "o3-mini"),
            (AuditAction.MODEL_SET, "gpt-4"),
        ]
        assert not await store.first_sighting("T1:Ev1")
        assert [(c.name, c.value) for c in await store.get_controls([f"{WS}:C1:-"])] == [("channel", "off")]
        # The day counters are rebuilt from the usage rows there: copied twice, counted once.
        assert await store.count_usage(WS, f"{WS}:C1:-", "U1", 0.0, 2.0) == UsageCount(1, 42, 1, 42, 1, 42)
        assert await store.is_engaged(f"{WS}:C1:7.1")
        assert await store.get_question("q1") == QUESTION
        assert await store.due_deletes(100.0) == [PendingDelete("up-old", "gpt-4o", 2, 99.0)]
        # The copy continues where the file left off: the reset's epoch holds.
        assert not await store.save_conversation(
            ConversationRecord(f"{WS}:C0:-", "old", "m", "p", 1, 1.0, 2.0)
        )
    finally:
        await store.close()

    # A row changed in the file since is brought over again; nothing else is.
    sqlite = await SQLiteStore.open(path)
    try:
        await sqlite.queue_turn(
            ConversationRecord(f"{WS}:C2:-", "up-2", "gpt-4o", "assistant", 4, 1.0, 3.0), None
        )
    finally:
        await sqlite.close()
    third = {
        t.table: (t.inserted, t.updated) for t in await copy_to_postgres(path, pg_url, mode=CopyMode.MERGE)
    }
    assert third["conversations"] == (0, 1) and third["audit"] == (0, 0)


async def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_a_target_holding_data_is_refused_unless_told_to_merge_or_replace(
    tmp_path: Path, pg_url: str
) -> None:
    path = tmp_path / "acechat.db"
    await populate(path)
    await copy_to_postgres(path, pg_url)
    # The bot runs on PostgreSQL for a while: newer settings, an edited prompt, a reset, a new channel.
    store = await PostgresStore.connect(pg_url, pool_size=1, listen=False)
    try:
        change = AuditEntry(WS, f"{WS}:C1:-", "U2", "bo", AuditAction.MODEL_SET, "o3-mini", "gpt-5", 3e9)
        await store.set_setting(f"{WS}:C1:-", "model", "gpt-5", audit=change)
        edit = AuditEntry(WS, WS, "U2", "bo", AuditAction.PRESET_EDIT, "Yo ho.", "Avast.", 3e9)
        await store.put_preset(CustomPreset(WS, "pirate", "arr", "Avast.", "U1", 5.0, 3e9), audit=edit)
        await store.reset_conversation(f"{WS}:C2:-")
        await store.queue_turn(
            ConversationRecord(f"{WS}:C9:-", "up-9", "gpt-4o", "assistant", 1, 1.0, 2.0), None
        )
    finally:
        await store.close()
    # Meanwhile the file moved on too, for one conversation only.
    sqlite = await SQLiteStore.open(path)
    try:
        await sqlite.queue_turn(
            ConversationRecord(f"{WS}:C0:-", "up-0b", "gpt-4o", "assistant", 5, 1.0, 4e9, epoch=1), None
        )
    finally:
        await sqlite.close()
    before = await rows(pg_url, "SELECT * FROM conversations ORDER BY scope_key")

    with pytest.raises(
        TargetNotEmpty, match=r"already holds acechat data \(4 conversations, .*--merge.*--replace"
    ):
        await copy_to_postgres(path, pg_url)
    assert await rows(pg_url, "SELECT * FROM conversations ORDER BY scope_key") == before

    heard: list[str] = []
    dry = await copy_to_postgres(path, pg_url, mode=CopyMode.MERGE, dry_run=True, announce=heard.append)
    [said] = heard
    assert said.startswith(f"{pg_url} holds 4 conversations, 1 scope_settings, 1 presets, 7 audit, ")
    assert said.endswith(
        "; merging: for a row in both, the newer by its own time is kept, and audit entries, "
        "transcripts and usage not there yet are added"
    )
    assert {t.table: t.updated for t in dry}["conversations"] == 1
    assert await rows(pg_url, "SELECT * FROM conversations ORDER BY scope_key") == before

    await copy_to_postgres(path, pg_url, mode=CopyMode.MERGE)
    store = await PostgresStore.connect(pg_url, pool_size=1, listen=False)
    try:
        assert (await store.get_settings([f"{WS}:C1:-"]))[f"{WS}:C1:-"].model == "gpt-5"  # newer there
        preset = await store.get_preset(WS, "pirate")
        assert preset is not None and preset.prompt == "Avast."
        newer_in_file = await store.get_conversation(f"{WS}:C0:-")
        assert newer_in_file is not None and (newer_in_file.upstream_id, newer_in_file.epoch) == ("up-0b", 1)
        reset_there = await store.get_conversation(f"{WS}:C2:-")
        assert reset_there is not None and (reset_there.upstream_id, reset_there.epoch) == (None, 1)
        assert await store.get_conversation(f"{WS}:C9:-") is not None
        [latest, *_] = await store.list_audit(WS, 10)
        assert (latest.action, latest.actor_id, latest.old, latest.new) == (
            AuditAction.DATABASE_COPY,
            "acechat db copy",
            "24 rows",  # the file's rows: its answer and vote, its pending delete and question among them
            f"merge from {path}",
        )
    finally:
        await store.close()

    replaced = await copy_to_postgres(path, pg_url, mode=CopyMode.REPLACE)
    assert {t.table: t.inserted for t in replaced}["conversations"] == 3
    keys = await rows(pg_url, "SELECT scope_key, upstream_id FROM conversations ORDER BY scope_key")
    assert keys == [(f"{WS}:C0:-", "up-0b"), (f"{WS}:C1:-", "up-1"), (f"{WS}:C2:-", "up-2")]
    assert await rows(pg_url, "SELECT model FROM scope_settings") == [("o3-mini",)]
    audit = await rows(pg_url, "SELECT action, new FROM audit ORDER BY id DESC LIMIT 1")
    assert audit == [("database copy", f"replace from {path}")]


async def test_copy_needs_an_existing_file(tmp_path: Path, pg_url: str) -> None:
    with pytest.raises(StoreError, match="no SQLite database at"):
        await copy_to_postgres(tmp_path / "missing.db", pg_url)
    assert not (tmp_path / "missing.db").exists()


def acechat(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "ACEDATACLOUD_API_TOKEN": "tok-123456",
        "ACECHAT_DB_PATH": str(tmp_path / "acechat.db"),
        **variables,
    }
    command = [sys.executable, "-m", "acechat.bots.cli", *args]
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_db_copy_command_reports_counts_per_table(tmp_path: Path, pg_url: str) -> None:
    await populate(tmp_path / "acechat.db")
    first = acechat(tmp_path, "db", "copy", "--to", pg_url)
    assert first.returncode == 0, first.stderr
    assert "acechat: conversations: 3 in the file, 3 new, 0 updated\n" in first.stdout
    assert "acechat: audit: 4 in the file, 4 new, 0 updated\n" in first.stdout
    assert first.stdout.startswith(f"acechat: {pg_url} holds no acechat data; copying ")
    refused = acechat(tmp_path, "db", "copy", "--to", pg_url)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and not refused.stdout
    assert "already holds acechat data" in refused.stderr and "--merge" in refused.stderr
    dry = acechat(tmp_path, "db", "copy", "--to", pg_url, "--replace", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"acechat: {pg_url} holds 3 conversations, ") and "replacing:" in dry.stdout
    assert dry.stdout.endswith("acechat: dry run: nothing was changed\n")
    second = acechat(tmp_path, "db", "copy", "--to", pg_url, "--merge")
    assert second.returncode == 0, second.stderr
    assert "acechat: transcripts: 3 in the file, 0 new, 0 updated\n" in second.stdout
    assert "conversations: 3 in the file, 0 new, 0 updated, 3 kept as they were" in second.stdout
    both = acechat(tmp_path, "db", "copy", "--to", pg_url, "--merge", "--replace")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr

    bad = acechat(tmp_path, "db", "copy", "--to", "mysql://root:hunter22@db/acechat")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--to is invalid" in bad.stderr and "hunter22" not in bad.stderr


async def test_check_reports_the_database_it_will_use(tmp_path: Path, pg_url: str) -> None:
    sqlite = acechat(tmp_path, "check")
    assert sqlite.returncode == 0, sqlite.stderr
    assert sqlite.stdout.rstrip().endswith(
        f"(no schema yet; schema {sqlite_schema.SCHEMA_VERSION} is created on start)"
    )
    assert not (tmp_path / "acechat.db").exists()  # checking creates nothing

    fresh = acechat(tmp_path, "check", ACECHAT_DATABASE_URL=pg_url)
    assert fresh.returncode == 0, fresh.stderr
    assert f"database: postgresql {pg_url} (no schema yet" in fresh.stdout
    await (await PostgresStore.connect(pg_url, pool_size=1, listen=False)).close()
    current = acechat(tmp_path, "check", ACECHAT_DATABASE_URL=pg_url)
    assert current.stdout.rstrip().endswith(
        f"database: postgresql {pg_url} (schema {postgres_schema.SCHEMA_VERSION}, current)"
    )

    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    finally:
        await conn.close()
    newer = acechat(tmp_path, "check", ACECHAT_DATABASE_URL=pg_url)
    assert newer.returncode == 2 and newer.stderr.count("\n") == 1
    assert "has schema version 99" in newer.stderr and "newer acechat" in newer.stderr

    unreachable = acechat(
        tmp_path, "check", ACECHAT_DATABASE_URL="postgresql://bot:hunter22@127.0.0.1:1/acechat"
    )
    assert unreachable.returncode == 2 and unreachable.stderr.count("\n") == 1
    assert "cannot open the database" in unreachable.stderr and "hunter22" not in unreachable.stderr


async def test_one_schema_version_means_the_same_tables_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    assert sqlite_schema.SCHEMA_VERSION == postgres_schema.SCHEMA_VERSION
    await (await SQLiteStore.open(tmp_path / "acechat.db")).close()
    await (await PostgresStore.connect(pg_url, pool_size=1, listen=False)).close()
    with sqlite3.connect(tmp_path / "acechat.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        in_file = {
            table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for table in tables
            if not table.startswith("sqlite_")
        }
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        )
    finally:
        await conn.close()
    in_postgres: dict[str, set[str]] = {}
    for row in rows:
        in_postgres.setdefault(row["table_name"], set()).add(row["column_name"])
    # Rate-limit windows live only in PostgreSQL: SQLite keeps them in memory.
    del in_postgres["rate_windows"]
    assert in_postgres == in_file

    both = acechat(tmp_path, "check"), acechat(tmp_path, "check", ACECHAT_DATABASE_URL=pg_url)
    for result in both:
        assert result.stdout.rstrip().endswith(f"(schema {sqlite_schema.SCHEMA_VERSION}, current)"), result


async def test_a_postgresql_schema_numbered_on_its_own_reads_as_the_shared_version(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        # A database at shared version 4, as an acechat before shared versions recorded it: its own 2
        # (and its own 1 for the version before, SQLite's 3).
        await postgres_schema.migrate(conn, postgres_schema.MIGRATIONS[:2])
        await conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        assert await postgres_schema.schema_version(conn) == 4
        status = await check_database(database_url=pg_url, db_path=Path("unused.db"))
        current = sqlite_schema.SCHEMA_VERSION
        assert current == postgres_schema.SCHEMA_VERSION > 4
        assert status.describe().endswith(f"(schema 4; migrated to {current} on start)")
        await (await PostgresStore.connect(pg_url, pool_size=1, listen=False)).close()
        assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == str(current)
        await conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        assert await postgres_schema.schema_version(conn) == 3
    finally:
        await conn.close()


async def test_check_and_db_copy_never_show_a_database_password(tmp_path: Path, pg_url: str) -> None:
    # The server trusts local connections, so any password is accepted; two of a few characters each.
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(netloc=f"postgres:pw@{parts.hostname}:{parts.port}", query="password=k9"))
    checked = acechat(tmp_path, "check", ACECHAT_DATABASE_URL=url, ACECHAT_LOG_LEVEL="DEBUG")
    assert checked.returncode == 0, checked.stderr
    assert "postgres:***@" in checked.stdout and "?password=***" in checked.stdout
    await populate(tmp_path / "acechat.db")
    copied = acechat(tmp_path, "db", "copy", "--to", url, "--merge", ACECHAT_LOG_LEVEL="DEBUG")
    assert copied.returncode == 0, copied.stderr
    for shown in (checked, copied):
        assert ":pw@" not in shown.stdout + shown.stderr and "k9" not in shown.stdout + shown.stderr
    for command in ("check", "run"):
        unreachable = acechat(
            tmp_path,
            command,
            ACECHAT_DATABASE_URL="postgresql://bot:pw@127.0.0.1:1/acechat?password=k9",
            DISCORD_BOT_TOKEN=DISCORD_TOKEN,
            ACECHAT_LOG_LEVEL="DEBUG",
        )
        assert unreachable.returncode == 2, unreachable.stderr
        assert (
            "cannot open the database postgresql://bot:***@127.0.0.1:1/acechat?password=***"
            in unreachable.stderr
        )
        assert "k9" not in unreachable.stderr and ":pw@" not in unreachable.stderr


# settings


def test_without_a_database_url_the_sqlite_file_is_used() -> None:
    settings = parse_settings({"ACEDATACLOUD_API_TOKEN": "tok-123456"})
    assert settings.database_url is None and settings.database_pool == DEFAULT_DATABASE_POOL == 10


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://acechat:s3cret@db.example:5432/acechat",
        "postgres://acechat@localhost/acechat",
        "postgresql:///acechat",
    ],
)
def test_postgresql_urls_are_accepted(url: str) -> None:
    settings = parse_settings({"ACEDATACLOUD_API_TOKEN": "tok-123456", "ACECHAT_DATABASE_URL": url})
    assert settings.database_url == url


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:hunter22@db/acechat",
        "sqlite:///data/acechat.db",
        "postgresql://",
        "postgresql://user:hunter22@db:notaport/acechat",
        "postgresql://[::1/acechat",
        "data/acechat.db",
    ],
)
def test_other_database_urls_are_refused_in_one_line_without_the_password(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({"ACEDATACLOUD_API_TOKEN": "tok-123456", "ACECHAT_DATABASE_URL": url})
    message = str(caught.value)
    assert message.startswith("ACECHAT_DATABASE_URL is invalid") and "hunter22" not in message


def test_the_database_password_is_a_secret_logs_never_show() -> None:
    settings = parse_settings(
        {
            "ACEDATACLOUD_API_TOKEN": "tok-123456",
            "ACECHAT_DATABASE_URL": "postgresql://bot:p%40ss-word@db/acechat",
        }
    )
    assert {"p%40ss-word", "p@ss-word"} <= set(settings.secrets)
    assert "bot" not in settings.secrets
    as_parameter = parse_settings(
        {
            "ACEDATACLOUD_API_TOKEN": "tok-123456",
            "ACECHAT_DATABASE_URL": "postgresql://bot@db/acechat?sslmode=require&password=a%2Bb&sslpassword=k",
        }
    )
    assert {"a%2Bb", "a+b", "k"} <= set(as_parameter.secrets)


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("25", 25), ("1000", 1000)])
def test_the_pool_size_is_read(value: str, expected: int) -> None:
    env = {"ACEDATACLOUD_API_TOKEN": "tok-123456", "ACECHAT_DATABASE_POOL": value}
    assert parse_settings(env).database_pool == expected


@pytest.mark.parametrize("value", ["0", "-3", "ten", "1001"])
def test_a_bad_pool_size_names_the_setting(value: str) -> None:
    with pytest.raises(SettingsError, match="ACECHAT_DATABASE_POOL"):
        parse_settings({"ACEDATACLOUD_API_TOKEN": "tok-123456", "ACECHAT_DATABASE_POOL": value})
