"""Benchmark 2, concurrency: 1,000 channels each ask one question of an upstream that takes 1 s.

The figure is wall time ÷ 1 s (ideal: 1.0; every answer's second overlaps the others). The same burst
of bare aiohttp requests (the same 1,000 requests, no core), alternating with the core's bursts, shows
the floor the HTTP client alone sets on this machine. Memory is the peak resident set during the
core's first burst minus the resident set just before it. The fake upstream (`bench.upstream`) runs in
its own process with a fixed 1 s latency before its status line.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.fast_target import FastTarget
from bench.overhead import ACTOR, QUESTION, BareSide, bench_settings
from bench.procs import peak_rss, reset_peak_rss, rss, server
from bench.report import Row, median, mib
from core.chat import ChatCore, Outcome, Question
from core.scope import Scope

NAME = "concurrency"
CHANNELS = 1000
LATENCY = 1.0
ROUNDS = 3
TARGET = 1.10


async def _burst(core: ChatCore, round_: int) -> tuple[float, int, int]:
    """(wall seconds, answered, peak RSS growth in bytes) for one burst of CHANNELS questions."""
    targets = [FastTarget() for _ in range(CHANNELS)]
    questions = [
        Question(Scope.of("bench", "w", f"r{round_}-c{i}"), ACTOR, QUESTION) for i in range(CHANNELS)
    ]
    tracked = reset_peak_rss()
    before = rss()
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(core.ask(q, t) for q, t in zip(questions, targets, strict=True)))
    wall = time.perf_counter() - start
    grown = (peak_rss() if tracked else rss()) - before
    return wall, sum(o is Outcome.ANSWERED for o in outcomes), grown


async def _bare_burst(bare: BareSide) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(bare.worker(i, 0.0, once=True) for i in range(CHANNELS)))
    return time.perf_counter() - start


async def measure(rounds: int = ROUNDS) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream", "--latency", str(LATENCY)) as url:
            settings = bench_settings(url, Path(tmp) / "bench.db")
            core = await ChatCore.open(settings)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=settings.upstream.max_connections)
            )
            try:
                results, bare_walls = [], []
                for r in range(rounds):
                    results.append(await _burst(core, r))
                    bare_walls.append(await _bare_burst(BareSide(session, settings)) / LATENCY)
            finally:
                await session.close()
                await core.aclose()
    walls = [wall / LATENCY for wall, _, _ in results]
    floor = median(bare_walls)
    answered = min(a for _, a, _ in results)
    ratio = median(walls)
    first_growth = results[0][2]
    return [
        Row(
            NAME,
            f"wall ÷ upstream time, {CHANNELS:,} channels at once",
            f"{ratio:.3f} (rounds {', '.join(f'{w:.3f}' for w in walls)})",
            f"≤ {TARGET:.2f}",
            ratio <= TARGET and answered == CHANNELS,
            note=f"median of {rounds} bursts; {answered:,} of {CHANNELS:,} answered in the worst burst; "
            "the first burst also opens 1,000 new upstream connections",
        ),
        Row(
            NAME,
            f"bare aiohttp, same {CHANNELS:,} requests: wall ÷ upstream time",
            f"{floor:.3f} (core ÷ bare {ratio / floor:.2f})",
            note="the floor the HTTP client alone sets here: what no core on this machine can beat; "
            f"rounds {', '.join(f'{w:.3f}' for w in bare_walls)}",
        ),
        Row(
            NAME,
            f"peak memory growth during the first burst of {CHANNELS:,}",
            f"{mib(first_growth)} ({first_growth / CHANNELS / 1024:.0f} KiB per answer in flight)",
            note="peak RSS (VmHWM, reset before the burst) minus RSS before it; "
            f"later bursts: {', '.join(mib(g) for _, _, g in results[1:])}",
        ),
    ]
