"""The installations tables in PostgreSQL (see storage.installations), shared by every process.

A token refresh holds a transaction-level advisory lock on the installation while it runs, so two
processes that both see a token about to expire refresh it once: the second reads the first's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from acechat.storage.errors import StoreError
from acechat.storage.installations import (
    LOG_KEEP,
    ROW_COLUMNS,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    InstallationEvent,
    InstallationRow,
)
from acechat.storage.postgres_connections import CONNECT_TIMEOUT, safe_label

# Its own lock space: the advisory key of "schema" or of an installation, not a scope's.
_SCHEMA_LOCK = "acechat:installations:schema"


def _lock(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


_CREATE = """
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS installations (
    key text PRIMARY KEY, enterprise_id text, team_id text, is_enterprise_install boolean NOT NULL,
    data text NOT NULL, sealed text NOT NULL, expires_at double precision,
    installed_at double precision NOT NULL, updated_at double precision NOT NULL, version bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS installation_log (
    id bigserial PRIMARY KEY, key text NOT NULL, action text NOT NULL, detail text NOT NULL,
    at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS oauth_states (nonce text PRIMARY KEY, expires_at double precision NOT NULL);
"""


def _row(r: asyncpg.Record) -> InstallationRow:
    return InstallationRow(*r)


async def _log(conn: Any, event: InstallationEvent) -> None:
    await conn.execute(
        "INSERT INTO installation_log (key, action, detail, at) VALUES ($1, $2, $3, $4)",
        event.key,
        event.action,
        event.detail,
        event.at,
    )
    await conn.execute(
        "DELETE FROM installation_log WHERE id <= (SELECT max(id) FROM installation_log) - $1", LOG_KEEP
    )


POOL_SIZE = 4
# Refreshes in flight at once: each holds a pooled connection (its lock) while it asks Slack, and needs
# another for its reads and writes, so some must always be left for those.
REFRESHES = POOL_SIZE // 2


class PostgresInstallations:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._refreshes = asyncio.Semaphore(REFRESHES)

    @classmethod
    async def connect(cls, url: str) -> PostgresInstallations:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE, timeout=CONNECT_TIMEOUT)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreError(f"cannot open the database {safe_label(url)}: {exc}") from exc
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide: one process at a time.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock(_SCHEMA_LOCK))
                await conn.execute(_CREATE)
                found = await conn.fetchval("SELECT value FROM meta WHERE key = $1", SCHEMA_KEY)
                if found is not None and int(found) > SCHEMA_VERSION:
                    raise StoreError(
                        f"the installations tables have version {found} but this acechat knows up to "
                        f"{SCHEMA_VERSION}: upgrade acechat"
                    )
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    SCHEMA_KEY,
                    str(SCHEMA_VERSION),
                )
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def get(self, key: str) -> InstallationRow | None:
        found = await self._pool.fetchrow(f"SELECT {ROW_COLUMNS} FROM installations WHERE key = $1", key)
        return _row(found) if found is not None else None

    async def all(self) -> list[InstallationRow]:
        rows = await self._pool.fetch(f"SELECT {ROW_COLUMNS} FROM installations ORDER BY installed_at, key")
        return [_row(r) for r in rows]

    async def put(self, row: InstallationRow, *, event: InstallationEvent) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            version: int = await conn.fetchval(
                f"INSERT INTO installations AS i ({ROW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1) "
                "ON CONFLICT (key) DO UPDATE SET enterprise_id = excluded.enterprise_id, "
                "team_id = excluded.team_id, is_enterprise_install = excluded.is_enterprise_install, "
                "data = excluded.data, sealed = excluded.sealed, expires_at = excluded.expires_at, "
                "updated_at = excluded.updated_at, version = i.version + 1 RETURNING version",
                row.key,
                row.enterprise_id,
                row.team_id,
                row.is_enterprise_install,
                row.data,
                row.sealed,
                row.expires_at,
                row.installed_at,
                row.updated_at,
            )
            await _log(conn, event)
        return version

    async def replace(
        self, key: str, version: int, *, sealed: str, expires_at: float | None, event: InstallationEvent
    ) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE installations SET sealed = $1, expires_at = $2, updated_at = $3, version = version + 1 "
                "WHERE key = $4 AND version = $5",
                sealed,
                expires_at,
                event.at,
                key,
                version,
            )
            changed = status.endswith(" 1")
            if changed:
                await _log(conn, event)
        return changed

    async def delete(self, key: str, *, event: InstallationEvent) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute("DELETE FROM installations WHERE key = $1", key)
            await _log(conn, event)
        return bool(status.endswith(" 1"))

    async def history(self, limit: int = 20) -> list[InstallationEvent]:
        rows = await self._pool.fetch(
            "SELECT key, action, detail, at FROM installation_log ORDER BY id DESC LIMIT $1", limit
        )
        return [InstallationEvent(*r) for r in rows]

    async def consume_state(self, nonce: str, expires_at: float) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM oauth_states WHERE expires_at < $1", time.time())
            status = await conn.execute(
                "INSERT INTO oauth_states (nonce, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                nonce,
                expires_at,
            )
        return bool(status.endswith(" 1"))

    @contextlib.asynccontextmanager
    async def refreshing(self, key: str) -> AsyncIterator[None]:
        async with self._refreshes, self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock(f"acechat:installation:{key}"))
            yield


async def copy_installations(db_path: Path, url: str) -> str:
    """`acechat db copy`'s part for the installations: the SQLite file's into PostgreSQL, the file's
    version winning, running again writing nothing. Returns a line for the operator."""

    def read() -> list[InstallationRow]:
        if not db_path.exists():
            return []
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'installations'"
            ).fetchone():
                return []
            rows = conn.execute(f"SELECT {ROW_COLUMNS} FROM installations ORDER BY key").fetchall()
        finally:
            conn.close()
        return [InstallationRow(k, e, t, bool(org), *rest) for k, e, t, org, *rest in rows]

    try:
        rows = await asyncio.to_thread(read)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the installations in {db_path}: {exc}") from exc
    target = await PostgresInstallations.connect(url)
    written = 0
    try:
        async with target._pool.acquire() as conn, conn.transaction():
            for row in rows:
                status = await conn.execute(
                    f"INSERT INTO installations AS i ({ROW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
                    "ON CONFLICT (key) DO UPDATE SET enterprise_id = excluded.enterprise_id, "
                    "team_id = excluded.team_id, is_enterprise_install = excluded.is_enterprise_install, "
                    "data = excluded.data, sealed = excluded.sealed, expires_at = excluded.expires_at, "
                    "installed_at = excluded.installed_at, updated_at = excluded.updated_at, version = excluded.version "
                    "WHERE (i.data, i.sealed, i.expires_at) IS DISTINCT FROM (excluded.data, excluded.sealed, excluded.expires_at)",
                    *dataclasses.astuple(row),
                )
                written += status.endswith(" 1")
    finally:
        await target.close()
    return f"installations: {len(rows)} in the file, {written} written (tokens stay sealed with ACECHAT_SECRET_KEY)"
