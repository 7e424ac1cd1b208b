"""Fixtures for the storage tests: a real PostgreSQL database per test run, and each backend behind one
helper so the contract suite runs unchanged against both.

PostgreSQL tests use the server at ACECHAT_TEST_DATABASE_URL (default: postgres on 127.0.0.1:5432, whose
`postgres` database they connect to in order to create their own). Without a server they skip, unless
ACECHAT_REQUIRE_POSTGRES=1, which makes them fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from acechat.storage import postgres_schema, sqlite_schema
from acechat.storage.postgres import PostgresStore
from acechat.storage.postgres_locks import lock_key
from acechat.storage.protocol import Store
from acechat.storage.sqlite import SQLiteStore

ADMIN_URL = os.environ.get("ACECHAT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HOW = "start PostgreSQL on 127.0.0.1:5432 or set ACECHAT_TEST_DATABASE_URL"


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _admin(statement: str) -> None:
    """Run one statement on the server's `postgres` database, from any thread, loop or none."""

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


async def _empty(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a database of its own for this test run, dropped at the end."""
    name = f"acechat_t_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        message = f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}): {HOW}"
        if os.environ.get("ACECHAT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield _with_database(ADMIN_URL, name)
    finally:
        # FORCE ends whatever a failed test left connected.
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def pg_url(pg_database: str) -> AsyncIterator[str]:
    """The run's database, emptied: no tables, no functions, no schema version."""
    await _empty(pg_database)
    yield pg_database


async def scope_locks(url: str, scope_key: str) -> tuple[int, int]:
    """(sessions holding, sessions queued for) the scope's advisory lock in this database: the lock
    table is the server's, shared with other test runs."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) FROM pg_locks "
            "WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((classid::bigint << 32) | objid::bigint) = $1::bigint",
            lock_key(scope_key),
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


class Backend(Protocol):
    name: str

    async def open(self, *, transcript_days: int = 30) -> Store: ...

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL through a connection of its own, as another program would; rows as tuples."""

    async def migrate(self, migrations: Sequence[Any]) -> int: ...

    def migrations(self) -> Sequence[Any]: ...

    def broken_migration(self) -> Any:
        """A migration that creates a table, then fails."""

    def refuse_audit(self) -> list[str]:
        """Statements that make every insert into `audit` fail with 'audit refused'."""


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self, *, transcript_days: int = 30) -> Store:
        return await SQLiteStore.open(self.path, transcript_days=transcript_days)

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def migrate(self, migrations: Sequence[Any]) -> int:
        from sqlite_utils import Database

        def run() -> int:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = Database(self.path)
            try:
                return sqlite_schema.migrate(db, migrations)
            finally:
                db.close()

        return await asyncio.to_thread(run)

    def migrations(self) -> Sequence[Any]:
        return sqlite_schema.MIGRATIONS

    def broken_migration(self) -> Any:
        def broken(db: Any) -> None:
            db.execute("CREATE TABLE half_done (x)")
            raise RuntimeError("migration bug")

        return broken

    def refuse_audit(self) -> list[str]:
        return [
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
        ]


class PostgresBackend:
    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url

    async def open(self, *, transcript_days: int = 30) -> Store:
        return await PostgresStore.connect(self.url, transcript_days=transcript_days, pool_size=4)

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(self.url)
        try:
            if ";" in sql.rstrip().rstrip(";"):
                await conn.execute(sql)
                return []
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def migrate(self, migrations: Sequence[Any]) -> int:
        conn = await asyncpg.connect(self.url)
        try:
            return await postgres_schema.migrate(conn, migrations)
        finally:
            await conn.close()

    def migrations(self) -> Sequence[Any]:
        return postgres_schema.MIGRATIONS

    def broken_migration(self) -> Any:
        return "CREATE TABLE half_done (x integer); SELECT 1 / 0"

    def refuse_audit(self) -> list[str]:
        return [
            "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
            "CREATE TRIGGER no_audit BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION no_audit()",
        ]


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "data" / "acechat.db")
    else:
        url = request.getfixturevalue("pg_database")
        await _empty(url)
        yield PostgresBackend(url)


@pytest_asyncio.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    yield opened
    await opened.close()
