"""Connecting to PostgreSQL and closing politely; the URL as shown in messages and logs."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from acechat.core.urlmask import mask_url

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 10.0


def safe_label(url: str) -> str:
    """The URL without its passwords (user info and `?password=`), for messages and logs."""
    return mask_url(url)


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
