"""Load generator for the Slack burst: `python -m bench.slack_load` reads JSON on stdin
(`{"url", "secret", "requests": [{"body", "content_type"}]}`), signs every request as Slack does,
sends them all at once, and prints JSON: when it started and each request's latency and status.

It runs in its own process so the bot being measured does not also pay for building, signing and
sending 400 requests: Slack's servers are not on the bot's CPU either.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from tests.fakes.slack import sign


async def _send(session: aiohttp.ClientSession, url: str, body: str, headers: dict[str, str]) -> list[float]:
    started = time.monotonic()
    async with session.post(url, data=body.encode(), headers=headers) as reply:
        await reply.read()
        return [started, time.monotonic() - started, float(reply.status)]


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    signed = [
        (r["body"], {"Content-Type": r["content_type"], **sign(r["body"], job["secret"])})
        for r in job["requests"]
    ]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        results = await asyncio.gather(
            *(_send(session, job["url"], body, headers) for body, headers in signed)
        )
    return {"started": started, "results": results}


def main() -> None:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(_main(job))))


if __name__ == "__main__":
    main()
