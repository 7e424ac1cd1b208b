"""The PostgreSQL database benchmarks write to.

`ACECHAT_BENCH_DATABASE_URL` if set (a database the benchmarks may write into; what they write stays
there, under keys of their own run). Otherwise a throwaway database on the local server
(`postgres` on 127.0.0.1:5432, which every machine of the project runs), created for the benchmark
and dropped after it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# What a missing or refusing server raises; the benchmarks report the row as not measured.
UNAVAILABLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    """Yield the URL of the database to use; raises one of UNAVAILABLE without a server."""
    given = os.environ.get("ACECHAT_BENCH_DATABASE_URL")
    if given:
        yield given
        return
    name = f"acechat_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(LOCAL_SERVER, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield LOCAL_SERVER.rsplit("/", 1)[0] + f"/{name}"
        finally:
            # FORCE: a benchmark that failed half way may have left connections open.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def not_measured(error: BaseException) -> str:
    # Not the URL itself: it may hold a password.
    where = "ACECHAT_BENCH_DATABASE_URL" if os.environ.get("ACECHAT_BENCH_DATABASE_URL") else LOCAL_SERVER
    return f"no PostgreSQL at {where} ({error}); start it or set ACECHAT_BENCH_DATABASE_URL"
