"""Load generator for the Slack burst: `python -m bench.slack_load` reads JSON on stdin
(`{"url", "secret", "requests": [{"body", "content_type"}]}`; a request may name its own `url`, and a
`retry` number to send as `X-Slack-Retry-Num`), signs every request as Slack does, sends them all at
once, and prints JSON: when it started and each request's latency and status.

It runs in its own process so the bot being measured does not also pay for building, signing and
sending 400 requests: Slack's servers are not on the bot's CPU either. Every connection is open before
the clock starts, and each request's time runs from the moment its last byte was handed to the kernel
to the moment its status line came back: the figure is the bot's time to acknowledge, not the time
this process took to connect or to get round to writing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from typing import Any

from bench.procs import REPO
from tests.fakes.slack import sign


def _request(url: str, body: str, headers: dict[str, str]) -> bytes:
    parts = urllib.parse.urlsplit(url)
    data = body.encode()
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def _send(
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
) -> tuple[float, float, float]:
    reader, writer = streams
    writer.write(request)
    await writer.drain()
    written = time.monotonic()
    status_line = await reader.readline()
    answered = time.monotonic()
    await reader.read()  # the rest of the reply, up to the server's close
    writer.close()
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/") else 0
    return written, answered - written, float(status)


def _headers(request: dict[str, Any], secret: str) -> dict[str, str]:
    headers = {"Content-Type": request["content_type"], **sign(request["body"], secret)}
    if request.get("retry"):
        headers |= {"X-Slack-Retry-Num": str(request["retry"]), "X-Slack-Retry-Reason": "http_timeout"}
    return headers


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    urls = [r.get("url", job.get("url")) for r in job["requests"]]
    requests = [
        _request(url, r["body"], _headers(r, job["secret"]))
        for url, r in zip(urls, job["requests"], strict=True)
    ]
    streams = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        streams.append(await asyncio.open_connection(parts.hostname, parts.port))
    started = time.monotonic()
    results = await asyncio.gather(*(_send(s, r) for s, r in zip(streams, requests, strict=True)))
    return {"started": started, "results": results}


async def from_child(job: dict[str, Any]) -> tuple[float, list[tuple[float, float, float]]]:
    """Run `job` in a load generator of its own: (when it started, each request's result); every
    request must have been acknowledged with 200."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.slack_load",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate(json.dumps(job).encode())
    found = json.loads(out)
    bad = [status for _, _, status in found["results"] if status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests were not acknowledged with 200: {sorted(set(bad))}")
    return float(found["started"]), found["results"]


def main() -> None:
    job = json.load(sys.stdin)
    print(json.dumps(asyncio.run(_main(job))))


if __name__ == "__main__":
    main()
