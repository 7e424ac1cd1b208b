"""Benchmark 4, Slack under a burst: 200 `/aichat` commands and 200 mentions at once, against an
upstream that takes 5 s to start answering, in HTTP mode and in Socket Mode.

Figures: the time to the acknowledgement (HTTP: the response to Slack's POST, timed by a load
generator in its own process from the moment each request was written on a connection opened
beforehand; Socket Mode: the ack envelope, timed by the fake from the push), and, as a concurrency
figure only, the time from the first request until every one-line answer shows in full, ÷ the
upstream's 5 s. The answers come in one line, so no answer is ever edited: the headline burst with
streamed answers is `slack-flood`.

Then the same burst served by real `acechat slack` processes on one PostgreSQL database, two against
one (bench/slack_replicas.py): the throughput ratio, and how many questions were answered twice or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from acechat.bots.slack_bot import EVENTS_PATH, SlackAdapter
from acechat.bots.slack_settings import SlackSettings
from acechat.core.chat import ChatCore
from bench import slack_load, slack_replicas
from bench.database import UNAVAILABLE, bench_database, not_measured
from bench.overhead import bench_settings
from bench.procs import server
from bench.report import Row, ms, percentile
from bench.upstream import Script
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack

NAME = "burst"
EACH = 200
LATENCY = 5.0
ACK_TARGET = 0.100
COMPLETE_TARGET = 1.2
COMPETITOR = {"ack": "~600 ms p99", "complete": "322 s (64×)"}


def answer_script(tag: str) -> Script:
    """Nothing, then a short answer in one line: the burst measures concurrency, not chat.update's limit."""
    return Script(tag=tag, latency=LATENCY, n=1, size=60)


@asynccontextmanager
async def slack_bot(
    upstream_url: str, db_path: Path, socket: bool
) -> AsyncIterator[tuple[FakeSlack, SlackAdapter]]:
    async with FakeSlack() as fake:
        slack = SlackSettings(
            bot_token=BOT_TOKEN,
            app_token=APP_TOKEN if socket else None,
            signing_secret=None if socket else SIGNING_SECRET,
            api_url=fake.api_url,
            port=0,
        )
        core = await ChatCore.open(replace(bench_settings(upstream_url, db_path), platforms={"slack": slack}))
        adapter = SlackAdapter(core, slack, host="127.0.0.1")
        await adapter.start()
        try:
            if socket:
                await fake.wait_for_socket()
            yield fake, adapter
        finally:
            await core.drain()
            await adapter.close()
            await core.aclose()


def payloads(fake: FakeSlack, mode: str) -> list[dict[str, Any]]:
    commands = [
        fake.command(
            f"what streams? {answer_script(f'{mode}-cmd-{i}').marker()}",
            user=f"U1{i:04d}",
            channel=f"C1{i:04d}",
        )
        for i in range(EACH)
    ]
    mentions = [
        fake.mention(
            f"<@{BOT_USER_ID}> what streams? {answer_script(f'{mode}-at-{i}').marker()}",
            user=f"U2{i:04d}",
            channel=f"C2{i:04d}",
            event_id=f"Ev-{mode}-{i}",
        )
        for i in range(EACH)
    ]
    return [p for pair in zip(commands, mentions, strict=True) for p in pair]


async def warm_up(fake: FakeSlack, adapter: SlackAdapter, socket: bool) -> None:
    """One `/aichat help` first: the burst meets a bot that has served before, as in steady state
    (bolt checks the token with auth.test on its first request, and caches it)."""
    help_command = fake.command("help", user="U0")
    if socket:
        await fake.deliver_socket(help_command)
    else:
        await fake.deliver_http(f"http://127.0.0.1:{adapter.port}{EVENTS_PATH}", help_command)
    key = help_command["response_url"].rsplit("/", 1)[1]
    await fake.wait_until(lambda: bool(fake.responses_to(key)), 10)


async def http_acks(url: str, bodies: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Send every request at once from a child process; (when it started, each ack's latency)."""
    requests = [
        {"body": urllib.parse.urlencode(p), "content_type": "application/x-www-form-urlencoded"}
        if "command" in p
        else {"body": json.dumps(p), "content_type": "application/json"}
        for p in bodies
    ]
    started, results = await slack_load.from_child(
        {"url": url, "secret": SIGNING_SECRET, "requests": requests}
    )
    return started, [latency for _, latency, _ in results]


async def socket_acks(fake: FakeSlack, bodies: list[dict[str, Any]]) -> tuple[float, list[float]]:
    pushed: dict[str, float] = {}
    started = time.monotonic()
    for body in bodies:
        at = time.monotonic()
        pushed[await fake.deliver_socket(body)] = at
    await poll(lambda: all(e in fake.acks for e in pushed), 30)
    return started, [fake.acks[e].at - at for e, at in pushed.items()]


async def poll(predicate: Callable[[], bool], within: float) -> None:
    """Check every 20 ms (FakeSlack.wait_until checks after every call it serves, which would put an
    O(n) scan per request into the very process being measured)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def all_answered(fake: FakeSlack, count: int, within: float) -> float:
    """When the last of `count` answers showed in full (however it got there: a post, an edit, a stream)."""
    answer = answer_script("").text

    def whole(text: str) -> bool:
        # A command's answer opens with who asked what.
        return text == answer or text.endswith("\n\n" + answer)

    await poll(lambda: sum(whole(m.text) for m in fake.messages) >= count, within)
    return max(
        m.at[next(i for i, v in enumerate(m.versions) if whole(v))] for m in fake.messages if whole(m.text)
    )


async def one_mode(upstream_url: str, tmp: Path, socket: bool) -> tuple[list[float], float, int]:
    mode = "socket" if socket else "http"
    async with slack_bot(upstream_url, tmp / f"{mode}.db", socket) as (fake, adapter):
        await warm_up(fake, adapter, socket)
        bodies = payloads(fake, mode)
        if socket:
            started, acks = await socket_acks(fake, bodies)
        else:
            started, acks = await http_acks(f"http://127.0.0.1:{adapter.port}{EVENTS_PATH}", bodies)
        done = await all_answered(fake, len(bodies), within=120)
        return acks, (done - started) / LATENCY, fake.rate_limited


async def measure() -> list[Row]:
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            for socket in (False, True):
                acks, ratio, limited = await one_mode(url, Path(tmp), socket)
                mode = "Socket Mode" if socket else "HTTP"
                p99 = percentile(acks, 99)
                out += [
                    Row(
                        NAME,
                        f"{mode}: time to ack, p50 / p99",
                        f"{ms(percentile(acks, 50))} / {ms(p99)}",
                        f"p99 < {ms(ACK_TARGET)}",
                        p99 < ACK_TARGET,
                        COMPETITOR["ack"],
                        f"{len(acks)} requests ({EACH} commands + {EACH} mentions, interleaved) at once"
                        + (
                            "; timed by a load generator in its own process, from each request written "
                            "(connections opened before) to its status line"
                            if not socket
                            else "; timed by the fake from each push to its ack"
                        ),
                    ),
                    Row(
                        NAME,
                        f"one-line answers, {mode}: all complete ÷ upstream time",
                        f"{ratio:.2f} ({ratio * LATENCY:.1f} s)",
                        f"≤ {COMPLETE_TARGET:.1f}",
                        ratio <= COMPLETE_TARGET,
                        COMPETITOR["complete"],
                        f"upstream: {LATENCY:g} s of silence, then a 60-character answer; {limited} platform 429s",
                    ),
                ]
            async with contextlib.AsyncExitStack() as stack:
                try:
                    database = await stack.enter_async_context(bench_database())
                except UNAVAILABLE as error:
                    out.append(
                        Row(NAME, "Slack HTTP burst on PostgreSQL", "not measured", note=not_measured(error))
                    )
                else:
                    out += slack_replicas.rows(NAME, await slack_replicas.measure(url, database, Path(tmp)))
    return out
