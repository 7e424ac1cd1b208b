"""Choosing the backend: PostgreSQL when a database URL is set, else the SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from acechat.storage import postgres_schema, sqlite_schema
from acechat.storage.errors import StoreError
from acechat.storage.protocol import Backend, Store


async def open_store(
    *, database_url: str | None, db_path: Path, transcript_days: int, pool_size: int
) -> Store:
    """Open (creating or migrating its schema) the store the settings name. With a database URL, no
    SQLite file is created."""
    if database_url:
        from acechat.storage.postgres import PostgresStore

        return await PostgresStore.connect(database_url, transcript_days=transcript_days, pool_size=pool_size)
    from acechat.storage.sqlite import SQLiteStore

    return await SQLiteStore.open(db_path, transcript_days=transcript_days)


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    backend: Backend
    where: str
    version: int  # the schema version found; 0 for none yet
    current: int  # the version this acechat writes

    def describe(self) -> str:
        if self.version == self.current:
            state = f"schema {self.version}, current"
        elif self.version == 0:
            state = f"no schema yet; schema {self.current} is created on start"
        else:
            state = f"schema {self.version}; migrated to {self.current} on start"
        return f"{self.backend} {self.where} ({state})"


async def check_database(*, database_url: str | None, db_path: Path) -> DatabaseStatus:
    """Reach the database the settings name and read its schema version, changing nothing; an SQLite
    file must also pass `PRAGMA integrity_check` (PostgreSQL checks its own pages as it reads them).

    Raises StoreError (SchemaVersionError for a schema newer than this acechat) with a one-line message."""
    if database_url:
        return await _check_postgres(database_url)
    return await asyncio.to_thread(_check_sqlite, db_path)


async def _check_postgres(url: str) -> DatabaseStatus:
    import asyncpg

    from acechat.storage.postgres_connections import CONNECT_TIMEOUT, safe_label

    label = safe_label(url)
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise StoreError(f"cannot open the database {label}: {exc}") from exc
    try:
        found = await postgres_schema.schema_version(conn)
    finally:
        await conn.close()
    if found > postgres_schema.SCHEMA_VERSION:
        raise postgres_schema.newer_schema(label, found, postgres_schema.SCHEMA_VERSION)
    return DatabaseStatus("postgresql", label, found, postgres_schema.SCHEMA_VERSION)


def _check_sqlite(path: Path) -> DatabaseStatus:
    if not path.exists():
        return DatabaseStatus("sqlite", str(path), 0, sqlite_schema.SCHEMA_VERSION)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            row = (
                conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if has_meta
                else None
            )
            # Reads every page: a file a crash or a bad disk damaged is found before the bot uses it.
            problems = [str(problem) for (problem,) in conn.execute("PRAGMA integrity_check(3)")]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    if problems != ["ok"]:
        raise StoreError(f"the database {path} is damaged ({'; '.join(problems)}): restore it from a backup")
    found = int(row[0]) if row else 0
    if found > sqlite_schema.SCHEMA_VERSION:
        raise sqlite_schema.newer_schema(str(path), found, sqlite_schema.SCHEMA_VERSION)
    return DatabaseStatus("sqlite", str(path), found, sqlite_schema.SCHEMA_VERSION)
