"""Connecting to PostgreSQL and closing politely; the URL as shown in messages and logs."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

import asyncpg

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0


def safe_label(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the PostgreSQL database"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


async def close_connection(conn: asyncpg.Connection) -> None:
    """Close politely if the server answers in time; otherwise drop the socket."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT)
    if not conn.is_closed():
        conn.terminate()


async def close_pools(*pools: asyncpg.Pool | None) -> None:
    for pool in pools:
        if pool is None:
            continue
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except (TimeoutError, Exception):
            pool.terminate()
