"""`acechat db copy`: every table of the SQLite file into a PostgreSQL database, safe to run again.

The target's schema is created or migrated first. All of the copy is one transaction. Rows with a key
(conversations, settings, presets, event ids) are upserted, the file's version winning; audit entries and
transcripts have no key of their own, so a row equal to one already in the target is skipped: a second
run inserts nothing new. Rate-limit counters are not in the file (SQLite keeps them in memory).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acechat.storage import controls_sql as csql
from acechat.storage import sqlite_schema
from acechat.storage.errors import StoreError
from acechat.storage.postgres import PostgresStore
from acechat.storage.postgres_connections import safe_label
from acechat.storage.postgres_notify import CHANNEL
from acechat.storage.postgres_schema import MIGRATION_LOCK
from acechat.storage.records import EVERYTHING

BATCH = 5_000


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    in_file: int
    inserted: int
    updated: int

    def describe(self) -> str:
        return f"{self.table}: {self.in_file} in the file, {self.inserted} new, {self.updated} updated"


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    # INSERT ... SELECT from the staging table `src`, returning one row per row written, with
    # `inserted` true for a new row.
    merge: str


def _upsert(name: str, columns: tuple[str, ...], key: tuple[str, ...]) -> _Table:
    cols = ", ".join(columns)
    rest = [c for c in columns if c not in key]
    changed = ", ".join(f"t.{c}" for c in rest)
    incoming = ", ".join(f"excluded.{c}" for c in rest)
    return _Table(
        name,
        columns,
        f"INSERT INTO {name} AS t ({cols}) SELECT {cols} FROM src ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in rest)
        + f" WHERE ({changed}) IS DISTINCT FROM ({incoming}) RETURNING (xmax = 0) AS inserted",
    )


def _append(name: str, columns: tuple[str, ...], same: tuple[str, ...]) -> _Table:
    cols = ", ".join(columns)
    match = " AND ".join(f"t.{c} IS NOT DISTINCT FROM s.{c}" for c in same)
    return _Table(
        name,
        columns,
        f"INSERT INTO {name} ({cols}) SELECT {', '.join(f's.{c}' for c in columns)} FROM src s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {name} t WHERE {match}) ORDER BY s.source_id "
        "RETURNING true AS inserted",
    )


_CONVERSATION = ("scope_key", "upstream_id", "model", "preset", "turns", "created_at", "updated_at", "epoch")
_SETTINGS = ("key", "preset", "model", "updated_at")
_PRESETS = ("workspace_key", "name", "description", "prompt", "author_id", "created_at", "updated_at")
_AUDIT = ("workspace_key", "scope_key", "actor_id", "actor_name", "action", "old", "new", "at")
_TRANSCRIPTS = (
    "scope_key",
    "conversation_id",
    "author_id",
    "author_name",
    "question",
    "answer",
    "outcome",
    "trace_id",
    "asked_at",
    "answered_at",
)
_USAGE = (
    "workspace_key",
    "channel_key",
    "user_id",
    "model",
    "answer_chars",
    "upstream_seconds",
    "outcome",
    "tokens",
    "at",
    "forgotten",
)
TABLES = (
    _upsert("conversations", _CONVERSATION, ("scope_key",)),
    _upsert("scope_settings", _SETTINGS, ("key",)),
    _upsert("presets", _PRESETS, ("workspace_key", "name")),
    # Audit and transcripts keep the file's order (its ids), so "newest first" stays true.
    _append("audit", _AUDIT, _AUDIT),
    _append("transcripts", _TRANSCRIPTS, ("answered_at", "scope_key", "asked_at", "author_id", "question")),
    _upsert("seen_events", ("key", "seen_at"), ("key",)),
    # admins' controls, usage and engaged threads (issue 17)
    _upsert("controls", ("key", "name", "value", "updated_at"), ("key", "name")),
    _append("usage", _USAGE, _USAGE),
    _upsert("engaged_threads", ("thread_key", "channel_key", "at"), ("thread_key",)),
)
_ORDERED = {"audit", "transcripts", "usage"}


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"no SQLite database at {path} (set ACECHAT_DB_PATH to the file to copy)")
    # Brought to the current schema first, as the bot would on start, so every column exists.
    from sqlite_utils import Database

    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        sqlite_schema.migrate(Database(conn, execute_plugins=False), label=str(path))
    except BaseException:
        conn.close()
        raise
    return conn


async def copy_to_postgres(db_path: Path, url: str) -> list[TableCopy]:
    """Copy every table of the SQLite file at `db_path` into the PostgreSQL database at `url`."""
    try:
        source = await asyncio.to_thread(_open_source, db_path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {db_path}: {exc}") from exc
    try:
        target = await PostgresStore.connect(url, pool_size=1, listen=False)
        try:
            async with target._pool.acquire() as conn, conn.transaction():
                # One copy at a time, and none during a migration.
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *MIGRATION_LOCK)
                results = [await _copy_table(source, conn, table) for table in TABLES]
                # The quotas' day counters, rebuilt from the usage rows now there (holds are questions
                # in flight: not copied).
                await conn.execute("DELETE FROM usage_counts")
                await conn.execute(csql.backfill_counters(csql.POSTGRES_DAY))
                # Processes already running on the target drop whatever they cached.
                for kind in ("setting", "preset", "control"):
                    payload = json.dumps({"origin": "copy", "kind": kind, "key": EVERYTHING})
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        finally:
            await target.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {db_path}: {exc}") from exc
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot copy into {safe_label(url)}: {exc}") from exc
    finally:
        source.close()
    return results


async def _copy_table(source: sqlite3.Connection, conn: Any, table: _Table) -> TableCopy:
    ordered = table.name in _ORDERED
    columns = (*table.columns, "source_id") if ordered else table.columns
    select = f"SELECT {', '.join(table.columns)}{', id' if ordered else ''} FROM {table.name}"
    await conn.execute(
        f"CREATE TEMP TABLE src AS SELECT {', '.join(table.columns)}"
        f"{', 0::bigint AS source_id' if ordered else ''} FROM {table.name} WITH NO DATA"
    )
    cursor = source.execute(select)
    in_file = 0
    while rows := await asyncio.to_thread(cursor.fetchmany, BATCH):
        in_file += len(rows)
        await conn.copy_records_to_table("src", records=rows, columns=list(columns))
    written = await conn.fetch(table.merge)
    await conn.execute("DROP TABLE src")
    inserted = sum(1 for row in written if row["inserted"])
    return TableCopy(table.name, in_file, inserted, len(written) - inserted)
