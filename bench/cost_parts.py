"""What the parts of a question cost on their own, for `python -m bench --profile`.

Each part runs alone, over and over, as the core runs it for one question, and its process and
main-thread CPU time per run are printed: the sum shows where `bench cost`'s figure goes, in real
microseconds rather than in a profiler's inflated ones.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from acechat.core import metrics
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.sanitize import format_answer
from acechat.core.settings import Settings
from acechat.core.streaming import StreamingReply
from acechat.core.upstream import AIChatClient, AnswerText, Turn
from acechat.storage import open_store
from acechat.storage.records import ConversationRecord, RateCheck, TranscriptEntry
from bench.fast_target import FastTarget
from bench.overhead import ACTOR, QUESTION, BareSide

RUNS = 2000
WARM = 200
SCOPES = 300  # keys the store parts cycle through, all cached after the warm-up


async def _cost(part: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """(process, main-thread) CPU seconds per run of `part`."""
    for i in range(WARM):
        await part(i)
    process, thread = time.process_time(), time.thread_time()
    for i in range(RUNS):
        await part(i)
    return (time.process_time() - process) / RUNS, (time.thread_time() - thread) / RUNS


async def parts(settings: Settings, db_path: Path) -> str:
    lines: list[tuple[str, float, float]] = []

    async def measure(name: str, part: Callable[[int], Awaitable[object]]) -> None:
        lines.append((name, *await _cost(part)))

    session = aiohttp.ClientSession()
    client = AIChatClient(settings.upstream)
    store = await open_store(
        database_url=None,
        db_path=db_path,
        transcript_days=settings.transcript_days,
        pool_size=settings.database_pool,
    )
    try:
        bare = BareSide(session, settings)
        await measure(
            "bare aiohttp: one request, its lines read", lambda i: bare.worker(i % SCOPES, 0, once=True)
        )

        ids: dict[int, str | None] = {}

        async def stream(i: int) -> None:
            turn = Turn(
                question=f"{ACTOR.display_name}: {QUESTION}",
                model=settings.default_model,
                preset=BUILTIN_PRESETS[settings.default_preset].prompt,
                conversation_id=ids.get(i % SCOPES),
            )
            chunks = client.stream(turn)
            try:
                async for chunk in chunks:
                    ids[i % SCOPES] = chunk.conversation_id
            finally:
                await chunks.aclose()

        await measure("AIChatClient.stream: the same request", stream)

        target = FastTarget()

        mentions = target.rules.mentions

        def render(raw: str) -> str:
            return format_answer(raw, thinking_mode=settings.thinking, mentions=mentions, streaming=True)

        async def reply(_: int) -> None:
            answer = StreamingReply(target, render=render)
            answer.start_typing()
            text = AnswerText()
            for _ in range(4):
                text.append("stream edit pace")
                answer.update(text)
            await answer.finish(format_answer(str(text), thinking_mode=settings.thinking, mentions=mentions))

        await measure("StreamingReply: 4 fragments, the final text", reply)

        async def timeouts(_: int) -> None:
            # The core bounds the wait for a turn and the answer (the reply bounds its final text itself).
            for seconds in (settings.max_wait, settings.answer_timeout):
                async with asyncio.timeout(seconds):  # noqa: ASYNC100 - the timer's cost, nothing else
                    pass

        await measure("asyncio.timeout: the turn's wait, the answer's", timeouts)

        async def turn(i: int) -> None:
            key = f"bench:w:parts-{i % SCOPES}:-"
            record = ConversationRecord(key, f"upstream-{i % SCOPES}", "m", "assistant", 1, 1.0, 2.0, 0)
            transcript = TranscriptEntry(
                key, record.upstream_id, "U1", "User", QUESTION, "x" * 64, "answered", "t", 1.0, 2.0
            )
            async with store.scope_turn(key):
                await store.get_conversation(key)
                await store.queue_turn(record, transcript)

        await measure("SQLite: the scope's turn, its lookup, its commit", turn)
        events = itertools.count()
        await measure(
            "SQLite: a delivery id recorded (Slack)", lambda _: store.first_sighting(f"e{next(events)}")
        )

        async def rates(i: int) -> None:
            user, channel = settings.user_rate, settings.channel_rate
            await store.take_rate(
                [
                    RateCheck(f"user:bench:w:U{i}", user.count, user.per_seconds),
                    RateCheck(f"channel:bench:w:c{i}:-", channel.count, channel.per_seconds),
                ]
            )

        await measure("rate limits: a user's and a channel's window", rates)
        log = logging.getLogger("acechat.core.chat")

        async def log_line(_: int) -> None:
            log.info(
                "answered",
                extra={
                    "platform": "bench",
                    "channel": "c1",
                    "conversation_id": "u",
                    "trace_id": "t",
                    "chars": 64,
                },
            )

        await measure("the answer's INFO log line", log_line)

        async def counters(_: int) -> None:
            metrics.IN_FLIGHT.inc()
            metrics.IN_FLIGHT.dec()
            metrics.count_question("bench", "answered")
            metrics.UPSTREAM_SECONDS.observe(0.01)
            metrics.FIRST_TEXT_SECONDS.observe(0.01)

        await measure("Prometheus: five updates", counters)
    finally:
        await store.close()
        await client.close()
        await session.close()
    width = max(len(name) for name, _, _ in lines)
    out = [f"the parts of a question alone, CPU per run ({RUNS:,} runs each): process (main thread)"]
    out += [
        f"  {name.ljust(width)}  {process * 1e6:6.1f} µs ({thread * 1e6:6.1f} µs)"
        for name, process, thread in lines
    ]
    return "\n".join(out) + "\n"
