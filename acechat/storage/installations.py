"""Installations of the app in many workspaces (Slack's OAuth distribution), in the same database as
the rest of acechat's state, but in tables of their own and through a connection of their own.

A row holds what the platform said about the install in plain JSON (`data`: names, ids, scopes) and
its tokens only sealed (`sealed`, see core.secret_box): the database never holds a token in plain text.
Each row has a `version`, bumped by every write, so a token refresh or a re-seal can be written only
over the row it read (compare and set). Installs, refreshes and removals are logged in
`installation_log`. Used OAuth `state` nonces are kept for their lifetime, so each is accepted once.

`open_installations` opens the SQLite file's tables (own worker thread and connection) or, with a
database URL, PostgreSQL's (`storage.installations_postgres`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlite_utils import Database

from acechat.storage.errors import StoreError
from acechat.storage.sqlite_schema import write_transaction
from acechat.storage.worker import DatabaseThread

T = TypeVar("T")

SCHEMA_KEY = "installations_schema_version"
SCHEMA_VERSION = 1
LOG_KEEP = 10_000  # log lines kept per database, newest first


@dataclass(frozen=True, slots=True)
class InstallationRow:
    key: str  # the enterprise id for an org-wide install, else the workspace (team) id
    enterprise_id: str | None
    team_id: str | None
    is_enterprise_install: bool
    data: str  # JSON: what the install says in the open
    sealed: str  # the sealed JSON of its tokens
    expires_at: float | None  # when the bot token expires (token rotation), else None
    installed_at: float
    updated_at: float
    version: int = 0


@dataclass(frozen=True, slots=True)
class InstallationEvent:
    key: str
    action: str  # installed, refreshed, uninstalled, tokens_revoked, removed, resealed
    detail: str
    at: float


def installation_key(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool) -> str:
    if is_enterprise_install and enterprise_id:
        return enterprise_id
    return team_id or enterprise_id or ""


def describe(row: InstallationRow) -> str:
    """The installation for operators: kind, ids and names, never a token."""
    data = json.loads(row.data)
    if row.is_enterprise_install:
        where = f"org-wide in {row.enterprise_id} ({data.get('enterprise_name') or '?'})"
    else:
        where = f"workspace {row.team_id} ({data.get('team_name') or '?'})"
        if row.enterprise_id:
            where += f" of {row.enterprise_id}"
    return where


class Installations(Protocol):
    """The installations table, shared by every process on the database."""

    async def close(self) -> None: ...

    async def get(self, key: str) -> InstallationRow | None: ...

    async def all(self) -> list[InstallationRow]:
        """Every installation, oldest first."""

    async def put(self, row: InstallationRow, *, event: InstallationEvent) -> int:
        """Create or replace the installation (keeping its first `installed_at`) and log `event`;
        returns the new version."""

    async def replace(
        self, key: str, version: int, *, sealed: str, expires_at: float | None, event: InstallationEvent
    ) -> bool:
        """Write new tokens only if the row is still at `version` (compare and set); logs `event`."""

    async def delete(self, key: str, *, event: InstallationEvent) -> bool:
        """Delete the installation's row (its tokens with it); logs `event` either way."""

    async def history(self, limit: int = 20) -> list[InstallationEvent]:
        """The log, newest first."""

    async def consume_state(self, nonce: str, expires_at: float) -> bool:
        """Record an OAuth state nonce as used; True only the first time, whichever process asks."""

    def refreshing(self, key: str) -> AbstractAsyncContextManager[None]:
        """Held while one process refreshes the installation's tokens; others wait for it (PostgreSQL:
        across processes)."""


async def open_installations(*, database_url: str | None, db_path: Path) -> Installations:
    if database_url:
        from acechat.storage.installations_postgres import PostgresInstallations

        return await PostgresInstallations.connect(database_url)
    return await SQLiteInstallations.open(db_path)


# --- SQLite ------------------------------------------------------------------------------------

ROW_COLUMNS = "key, enterprise_id, team_id, is_enterprise_install, data, sealed, expires_at, installed_at, updated_at, version"


def _migrate(db: Database) -> None:
    with write_transaction(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
        )
        row = db.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_KEY,)).fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the installations tables have version {found} but this acechat knows up to {SCHEMA_VERSION}: "
                "upgrade acechat"
            )
        if found < 1:
            db.execute(
                """CREATE TABLE installations (
                    key TEXT PRIMARY KEY, enterprise_id TEXT, team_id TEXT,
                    is_enterprise_install INTEGER NOT NULL, data TEXT NOT NULL, sealed TEXT NOT NULL,
                    expires_at REAL, installed_at REAL NOT NULL, updated_at REAL NOT NULL,
                    version INTEGER NOT NULL
                ) WITHOUT ROWID"""
            )
            db.execute(
                """CREATE TABLE installation_log (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, action TEXT NOT NULL,
                    detail TEXT NOT NULL, at REAL NOT NULL
                )"""
            )
            db.execute(
                "CREATE TABLE oauth_states (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
            )
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (SCHEMA_KEY, str(SCHEMA_VERSION)),
        )


def _row(values: Any) -> InstallationRow:
    key, enterprise_id, team_id, org, data, sealed, expires_at, installed_at, updated_at, version = values
    return InstallationRow(
        key, enterprise_id, team_id, bool(org), data, sealed, expires_at, installed_at, updated_at, version
    )


def _log(db: Database, event: InstallationEvent) -> None:
    db.execute(
        "INSERT INTO installation_log (key, action, detail, at) VALUES (?, ?, ?, ?)",
        (event.key, event.action, event.detail, event.at),
    )
    db.execute(
        "DELETE FROM installation_log WHERE id <= (SELECT max(id) FROM installation_log) - ?", (LOG_KEEP,)
    )


class SQLiteInstallations:
    """The SQLite file's installations, on a worker thread and connection of their own."""

    def __init__(self, worker: DatabaseThread) -> None:
        self._worker = worker
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    async def open(cls, path: Path) -> SQLiteInstallations:
        worker = DatabaseThread("acechat-db-installs")

        def connect() -> Database:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None)
            try:
                db = Database(conn, execute_plugins=False)
                db.execute("PRAGMA busy_timeout = 5000")
                db.enable_wal()
                _migrate(db)
            except BaseException:
                conn.close()
                raise
            return db

        try:
            await worker.start(connect)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the installations in {path}: {exc}") from exc
        return cls(worker)

    async def close(self) -> None:
        await self._worker.stop(Database.close)

    async def _run(self, fn: Callable[[Database], T]) -> T:
        return await self._worker.submit(fn)

    async def get(self, key: str) -> InstallationRow | None:
        def run(db: Database) -> InstallationRow | None:
            found = db.execute(f"SELECT {ROW_COLUMNS} FROM installations WHERE key = ?", (key,)).fetchone()
            return _row(found) if found else None

        return await self._run(run)

    async def all(self) -> list[InstallationRow]:
        return await self._run(
            lambda db: [
                _row(r)
                for r in db.execute(f"SELECT {ROW_COLUMNS} FROM installations ORDER BY installed_at, key")
            ]
        )

    async def put(self, row: InstallationRow, *, event: InstallationEvent) -> int:
        def run(db: Database) -> int:
            with write_transaction(db):
                version: int = db.execute(
                    f"INSERT INTO installations ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
                    "ON CONFLICT (key) DO UPDATE SET enterprise_id = excluded.enterprise_id, "
                    "team_id = excluded.team_id, is_enterprise_install = excluded.is_enterprise_install, "
                    "data = excluded.data, sealed = excluded.sealed, expires_at = excluded.expires_at, "
                    "updated_at = excluded.updated_at, version = installations.version + 1 "
                    "RETURNING version",
                    (
                        row.key,
                        row.enterprise_id,
                        row.team_id,
                        int(row.is_enterprise_install),
                        row.data,
                        row.sealed,
                        row.expires_at,
                        row.installed_at,
                        row.updated_at,
                    ),
                ).fetchone()[0]
                _log(db, event)
            return version

        return await self._run(run)

    async def replace(
        self, key: str, version: int, *, sealed: str, expires_at: float | None, event: InstallationEvent
    ) -> bool:
        def run(db: Database) -> bool:
            with write_transaction(db):
                changed = db.execute(
                    "UPDATE installations SET sealed = ?, expires_at = ?, updated_at = ?, version = version + 1 "
                    "WHERE key = ? AND version = ?",
                    (sealed, expires_at, event.at, key, version),
                ).rowcount
                if changed:
                    _log(db, event)
            return bool(changed)

        return await self._run(run)

    async def delete(self, key: str, *, event: InstallationEvent) -> bool:
        def run(db: Database) -> bool:
            with write_transaction(db):
                deleted = db.execute("DELETE FROM installations WHERE key = ?", (key,)).rowcount
                _log(db, event)
            return bool(deleted)

        return await self._run(run)

    async def history(self, limit: int = 20) -> list[InstallationEvent]:
        return await self._run(
            lambda db: [
                InstallationEvent(*r)
                for r in db.execute(
                    "SELECT key, action, detail, at FROM installation_log ORDER BY id DESC LIMIT ?", (limit,)
                )
            ]
        )

    async def consume_state(self, nonce: str, expires_at: float) -> bool:
        def run(db: Database) -> bool:
            with write_transaction(db):
                db.execute("DELETE FROM oauth_states WHERE expires_at < ?", (time.time(),))
                inserted = db.execute(
                    "INSERT INTO oauth_states (nonce, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (nonce, expires_at),
                ).rowcount
            return bool(inserted)

        return await self._run(run)

    def refreshing(self, key: str) -> AbstractAsyncContextManager[None]:
        # One process per SQLite file: a lock in memory is enough.
        return self._held(self._locks.setdefault(key, asyncio.Lock()))

    @staticmethod
    @asynccontextmanager
    async def _held(lock: asyncio.Lock) -> AsyncIterator[None]:
        async with lock:
            yield
