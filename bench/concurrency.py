"""Benchmark 2, concurrency: 1,000 channels each ask one question of an upstream that takes 1 s.

The figure is the core's wall time ÷ that of the same burst of bare aiohttp requests (the same 1,000
requests, no core): what the core adds over the floor the HTTP client alone sets on this machine.
Also reported: wall time ÷ 1 s (ideal: 1.0; every answer's second overlaps the others), for the core
on SQLite and on PostgreSQL, and their ratio. Each round runs the three bursts one after another, in
reversed order every other round; each figure is the median over the rounds. Memory is the peak
resident set during the SQLite core's first burst minus the resident set just before it. The fake upstream (`bench.upstream`) runs in its own process with a fixed
1 s latency before its status line. PostgreSQL: see bench/database.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.scope import Scope
from bench.database import UNAVAILABLE, bench_database, not_measured
from bench.fast_target import FastTarget
from bench.overhead import ACTOR, QUESTION, BareSide, bench_settings
from bench.procs import peak_rss, reset_peak_rss, rss, server
from bench.report import Row, median, mib

NAME = "concurrency"
CHANNELS = 1000
LATENCY = 1.0
ROUNDS = 5
TARGET = 1.2  # the core's wall time ÷ bare aiohttp's, same requests, same run
POSTGRES_TARGET = 1.2  # ÷ the SQLite figure of the same run


async def _burst(core: ChatCore, prefix: str) -> tuple[float, int, int]:
    """(wall seconds, answered, peak RSS growth in bytes) for one burst of CHANNELS questions."""
    targets = [FastTarget() for _ in range(CHANNELS)]
    questions = [Question(Scope.of("bench", "w", f"{prefix}-c{i}"), ACTOR, QUESTION) for i in range(CHANNELS)]
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
    # Scopes of this run only: a database given in ACECHAT_BENCH_DATABASE_URL may hold earlier runs'.
    run = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            server("bench.upstream", "--latency", str(LATENCY)) as url,
            contextlib.AsyncExitStack() as stack,
        ):
            settings = bench_settings(url, Path(tmp) / "bench.db")
            core = await ChatCore.open(settings)
            stack.push_async_callback(core.aclose)
            postgres: ChatCore | None = None
            try:
                database = await stack.enter_async_context(bench_database())
                postgres = await ChatCore.open(dataclasses.replace(settings, database_url=database))
                stack.push_async_callback(postgres.aclose)
                why_not = ""
            except UNAVAILABLE as error:
                why_not = not_measured(error)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=settings.upstream.max_connections)
            )
            stack.push_async_callback(session.close)
            sqlite_results: list[tuple[float, int, int]] = []
            postgres_results: list[tuple[float, int, int]] = []
            bare_walls: list[float] = []
            for r in range(rounds):
                bursts: list[tuple[str, ChatCore | None, list[tuple[float, int, int]]]] = [
                    ("sqlite", core, sqlite_results)
                ]
                if postgres is not None:
                    bursts.append(("postgres", postgres, postgres_results))
                bursts.append(("bare", None, []))
                # The SQLite core goes first in the first round: its first burst is the memory figure.
                # Reversed every other round, so a machine growing busier or quieter weighs on all alike.
                for label, side, results in bursts if r % 2 == 0 else bursts[::-1]:
                    if side is None:
                        bare_walls.append(await _bare_burst(BareSide(session, settings)) / LATENCY)
                    else:
                        results.append(await _burst(side, f"{run}-r{r}-{label}"))
    walls = [wall / LATENCY for wall, _, _ in sqlite_results]
    floor = median(bare_walls)
    answered = min(a for _, a, _ in sqlite_results)
    ratio = median(walls)
    first_growth = sqlite_results[0][2]
    versus_bare = median(w / b for w, b in zip(walls, bare_walls, strict=True))
    rows = [
        Row(
            NAME,
            f"core ÷ bare aiohttp, wall time of {CHANNELS:,} channels at once",
            f"{versus_bare:.2f}",
            f"≤ {TARGET:.1f}",
            versus_bare <= TARGET and answered == CHANNELS,
            note="SQLite core; median of the per-round ratios, each round's core burst against its bare "
            f"burst (after the cores, then before them); {answered:,} of {CHANNELS:,} answered in "
            "the worst burst",
        ),
        Row(
            NAME,
            f"wall ÷ upstream time, {CHANNELS:,} channels at once",
            f"{ratio:.3f} (rounds {', '.join(f'{w:.3f}' for w in walls)})",
            note=f"SQLite; median of {rounds} bursts; the first burst also opens 1,000 new upstream connections",
        ),
    ]
    if postgres_results:
        pg_walls = [wall / LATENCY for wall, _, _ in postgres_results]
        pg_answered = min(a for _, a, _ in postgres_results)
        pg_ratio = median(pg_walls)
        # Per round, the two cores measured side by side; the median of those ratios.
        versus = median(p / s for p, s in zip(pg_walls, walls, strict=True))
        rows += [
            Row(
                NAME,
                f"wall ÷ upstream time, {CHANNELS:,} channels at once, PostgreSQL",
                f"{pg_ratio:.3f} (rounds {', '.join(f'{w:.3f}' for w in pg_walls)})",
                note=f"median of {rounds} bursts; {pg_answered:,} of {CHANNELS:,} answered in the worst burst; "
                f"pool of {settings.database_pool}, local server",
            ),
            Row(
                NAME,
                f"PostgreSQL ÷ SQLite, {CHANNELS:,} channels at once",
                f"{versus:.2f}",
                f"≤ {POSTGRES_TARGET:.1f}",
                versus <= POSTGRES_TARGET and pg_answered == CHANNELS,
                note="median of the per-round ratios, the two cores' bursts back to back in alternating order",
            ),
        ]
    else:
        rows.append(Row(NAME, f"PostgreSQL, {CHANNELS:,} channels at once", "not measured", note=why_not))
    rows += [
        Row(
            NAME,
            f"bare aiohttp, same {CHANNELS:,} requests: wall ÷ upstream time",
            f"{floor:.3f}",
            note="the floor the HTTP client alone sets here: what no core on this machine can beat; "
            f"rounds {', '.join(f'{w:.3f}' for w in bare_walls)}",
        ),
        Row(
            NAME,
            f"peak memory growth during the first burst of {CHANNELS:,}",
            f"{mib(first_growth)} ({first_growth / CHANNELS / 1024:.0f} KiB per answer in flight)",
            note="SQLite core; peak RSS (VmHWM, reset before the burst) minus RSS before it; "
            f"later bursts: {', '.join(mib(g) for _, _, g in sqlite_results[1:])}",
        ),
    ]
    return rows
