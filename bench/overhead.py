"""Benchmark 1, core overhead: messages/s through ChatCore.ask ÷ messages/s of a bare aiohttp loop.

Both sides send the same request (same question, preset, model, conversation id) to the same
zero-latency fake upstream (`bench.upstream`, in its own process), read the same NDJSON stream to the
end, at the same concurrency (independent scopes, each asking one question after another). They run
one after the other in alternating order, many short rounds, and the figure is the median of the
per-round ratios, so a noisy neighbour slows both sides of a round alike. The CPU time of the
benchmark's main thread per message is reported too: it is what the core costs, whatever the noise.
The core side is everything an adapter gets: validation, per-scope lock, preset and model resolution
(through its caches and SQLite), the real upstream client, streaming onto a target, the SQLite write.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.facts import Actor
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.scope import Scope
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from bench.fast_target import FastTarget
from bench.procs import server
from bench.report import Row, median

NAME = "core"
QUESTION = "how do I rotate a log file without losing lines?"
ACTOR = Actor("U1", "Bench User")
CONCURRENCY = (1, 32)
ROUNDS = 9
SECONDS = 0.6
TARGET = 0.8


def bench_settings(base_url: str, db_path: Path) -> Settings:
    return Settings(
        upstream=UpstreamSettings(token="bench-token", base_url=base_url, retries=0),
        db_path=db_path,
        user_rate=RateLimit(0, 60),
        channel_rate=RateLimit(0, 60),
    )


Worker = Callable[[int, float], Awaitable[int]]


async def _rate(worker: Worker, concurrency: int, seconds: float) -> tuple[float, float]:
    """(messages per second, main-thread CPU seconds per message) of `concurrency` copies of
    `worker`, each asking until the deadline."""
    start = time.perf_counter()
    cpu = time.thread_time()
    deadline = start + seconds
    done = sum(await asyncio.gather(*(worker(i, deadline) for i in range(concurrency))))
    return done / (time.perf_counter() - start), (time.thread_time() - cpu) / done


class CoreSide:
    def __init__(self, core: ChatCore, prefix: str) -> None:
        self.core = core
        self.prefix = prefix
        self.target = FastTarget()

    async def worker(self, index: int, deadline: float) -> int:
        question = Question(Scope.of("bench", "w", f"{self.prefix}-{index}"), ACTOR, QUESTION)
        done = 0
        while time.perf_counter() < deadline:
            outcome = await self.core.ask(question, self.target)
            if outcome is not Outcome.ANSWERED:
                raise RuntimeError(f"the core did not answer: {outcome} {self.target.last!r}")
            done += 1
        return done


class BareSide:
    """What any client must do at least: POST, read the NDJSON lines, keep the conversation id."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.url = settings.upstream.base_url + "/aichat/conversations"
        self.headers = {
            "authorization": f"Bearer {settings.upstream.token}",
            "accept": "application/x-ndjson",
        }
        self.body = {
            "model": settings.default_model,
            "question": f"{ACTOR.display_name}: {QUESTION}",
            "stateful": True,
            "preset": BUILTIN_PRESETS[settings.default_preset].prompt,
        }
        self.conversations: dict[int, str] = {}

    async def worker(self, index: int, deadline: float, *, once: bool = False) -> int:
        done = 0
        while once or time.perf_counter() < deadline:
            once = False
            body = dict(self.body)
            if index in self.conversations:
                body["id"] = self.conversations[index]
            async with self.session.post(self.url, json=body, headers=self.headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"bare request failed: {resp.status}")
                async for line in resp.content:
                    if line.strip():
                        self.conversations[index] = json.loads(line)["id"]
            done += 1
        return done


async def measure(rounds: int = ROUNDS, seconds: float = SECONDS) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            settings = bench_settings(url, Path(tmp) / "bench.db")
            core = await ChatCore.open(settings)
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
            try:
                for concurrency in CONCURRENCY:
                    core_side = CoreSide(core, f"c{concurrency}")
                    bare_side = BareSide(session, settings)
                    # Warm up both: connections, caches, the first conversation of every scope.
                    await _rate(core_side.worker, concurrency, 0.3)
                    await _rate(bare_side.worker, concurrency, 0.3)
                    ratios: list[float] = []
                    core_runs: list[tuple[float, float]] = []
                    bare_runs: list[tuple[float, float]] = []
                    for r in range(rounds):
                        sides = [(core_runs, core_side.worker), (bare_runs, bare_side.worker)]
                        for runs, worker in sides if r % 2 == 0 else reversed(sides):
                            runs.append(await _rate(worker, concurrency, seconds))
                        ratios.append(core_runs[-1][0] / bare_runs[-1][0])
                    ratio = median(ratios)
                    scopes = f"{concurrency} concurrent scope{'s' * (concurrency > 1)}"
                    core_cpu = median(c for _, c in core_runs)
                    bare_cpu = median(c for _, c in bare_runs)
                    rows.append(
                        Row(
                            NAME,
                            f"core ÷ bare aiohttp msg/s, {scopes}",
                            f"{ratio:.2f} ({median(r for r, _ in core_runs):,.0f} vs "
                            f"{median(r for r, _ in bare_runs):,.0f} msg/s)",
                            f"≥ {TARGET:.2f}",
                            ratio >= TARGET,
                            note=f"median of {rounds} alternating rounds of {seconds:g} s; "
                            f"round ratios {', '.join(f'{x:.2f}' for x in ratios)}",
                        )
                    )
                    rows.append(
                        Row(
                            NAME,
                            f"main-thread CPU per message, {scopes}",
                            f"core {core_cpu * 1e6:,.0f} µs vs bare {bare_cpu * 1e6:,.0f} µs",
                            note="medians over the same rounds; the core's SQLite work runs on its own "
                            "thread and is not in these figures",
                        )
                    )
            finally:
                await session.close()
                await core.aclose()
    return rows


async def profile(concurrency: int = 32, seconds: float = 5.0) -> str:
    """cProfile of the core side alone: where a message's CPU time goes (main-thread CPU time, so
    waiting and other processes' noise do not count)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            core = await ChatCore.open(bench_settings(url, Path(tmp) / "bench.db"))
            try:
                side = CoreSide(core, "profile")
                await _rate(side.worker, concurrency, 0.3)
                profiler = cProfile.Profile(time.thread_time)
                profiler.enable()
                rate, _ = await _rate(side.worker, concurrency, seconds)
                profiler.disable()
            finally:
                await core.aclose()
    out = io.StringIO()
    out.write(f"{rate:,.0f} msg/s under the profiler ({concurrency} scopes)\n")
    stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
    stats.print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return out.getvalue()
