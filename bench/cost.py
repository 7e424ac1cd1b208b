"""Benchmark: what a large deployment pays per question and per channel.

CPU per answered question: questions go through `ChatCore.ask` with the production settings (rate
limits on, caches at their production sizes): admission, the scope's turn, preset and model
resolution, the conversation lookup, the real upstream client, streaming onto a target (rendering and
splitting the text), the SQLite write, the log line. The fake upstream (`bench.upstream`) runs in its own process
and answers at once; the target is `FastTarget`, whose calls cost next to nothing and are counted
against the core. The figure is the process's CPU time (`time.process_time`: every thread, the SQLite
worker's included) around each question asked alone, median over a run; the same at 32 scopes at once
is the process CPU of a round ÷ its questions, median over rounds. A bare aiohttp client sending the
same requests gives the floor any client pays here.

Memory per channel: a fresh core, warmed up on 1,000 channels, then 10,000 other channels each asked
one question (each by a user of its own, 100 at a time); the growth of the process's resident set and
of the Python heap (tracemalloc) after a full collection, ÷ 10,000. Everything a channel that has
spoken leaves behind is in it: cache entries, rate-limit windows still open, SQLite's page cache.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import logging
import os
import pstats
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from acechat.bots.cli import configure_platform_logging
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.facts import Actor
from acechat.core.scope import Scope
from acechat.core.settings import Settings, UpstreamSettings
from bench.cost_parts import parts
from bench.fast_target import FastTarget
from bench.overhead import QUESTION, BareSide
from bench.procs import rss, server
from bench.report import Row, median

NAME = "cost"
CPU_BUDGET = 200e-6  # seconds of CPU per answered question
MEMORY_BUDGET = 4096  # bytes per channel that has spoken once
# Questions asked one at a time, spread over this many channels and users, so no rate limit refuses:
# each channel is asked again and again, as a busy deployment's channels are (conversations go on).
SERIAL_QUESTIONS = 3000
SERIAL_CHANNELS = 600
CONCURRENCY = 32
ROUNDS = 7
ROUND_QUESTIONS = 640  # per round at CONCURRENCY scopes: 20 each
WARM_CHANNELS = 1000
CHANNELS = 10_000
MEMORY_CONCURRENCY = 100


def production_settings(base_url: str, db_path: Path) -> Settings:
    """The defaults a deployment runs with (rate limits on, a log line per answer); only the upstream
    is the local fake, and the log goes to /dev/null."""
    settings = Settings(
        upstream=UpstreamSettings(token="bench-token", base_url=base_url, retries=0), db_path=db_path
    )
    configure_platform_logging(settings.log_level, settings)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))
    return settings


def _question(prefix: str, channel: int, user: int, delivery: str | None = None) -> Question:
    return Question(
        Scope.of("bench", "w", f"{prefix}-{channel}"),
        Actor(f"U{prefix}{user}", f"User {user}"),
        QUESTION,
        delivery=delivery,
    )


async def _ask(core: ChatCore, question: Question, target: FastTarget) -> None:
    outcome = await core.ask(question, target)
    if outcome is not Outcome.ANSWERED:
        raise RuntimeError(f"the core did not answer: {outcome} {target.last!r}")


async def serial_cpu(
    core: ChatCore, bare: BareSide, prefix: str, questions: int, *, delivered: bool = False
) -> tuple[list[float], list[float]]:
    """Process CPU seconds of each question asked alone, through the core and through bare aiohttp,
    one after the other, so a busy machine weighs on both alike. `delivered`: each question carries a
    delivery id, as Slack's events do, which the core records to drop re-deliveries."""
    target = FastTarget()
    core_spent: list[float] = []
    bare_spent: list[float] = []
    clock = time.process_time
    for i in range(questions):
        channel = i % SERIAL_CHANNELS
        question = _question(prefix, channel, channel, f"{prefix}-event-{i}" if delivered else None)
        before = clock()
        await _ask(core, question, target)
        middle = clock()
        await bare.worker(channel, 0.0, once=True)
        core_spent.append(middle - before)
        bare_spent.append(clock() - middle)
    return core_spent, bare_spent


async def _round(ask: Callable[[int], Awaitable[None]], total: int, concurrency: int) -> float:
    """Process CPU seconds per question of `total` questions, `concurrency` at a time."""
    each = total // concurrency

    async def worker(w: int) -> None:
        for n in range(each):
            await ask(w * each + n)

    before = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return (time.process_time() - before) / (each * concurrency)


async def concurrent_cpu(
    core: ChatCore, session: aiohttp.ClientSession, settings: Settings
) -> tuple[list[float], list[float]]:
    """Per round, CPU per question through the core and through bare aiohttp, rounds alternating."""
    target = FastTarget()
    bare = BareSide(session, settings)

    def core_ask(prefix: str) -> Callable[[int], Awaitable[None]]:
        # Worker w asks in channel w: each of the 32 scopes asks one question after another.
        return lambda i: _ask(core, _question(prefix, i // (ROUND_QUESTIONS // CONCURRENCY), i), target)

    async def bare_ask(i: int) -> None:
        await bare.worker(i // (ROUND_QUESTIONS // CONCURRENCY), 0.0, once=True)

    core_runs: list[float] = []
    bare_runs: list[float] = []
    await _round(core_ask("warm32"), ROUND_QUESTIONS, CONCURRENCY)
    await _round(bare_ask, ROUND_QUESTIONS, CONCURRENCY)
    for r in range(ROUNDS):
        # A channel asks at most 20 questions in a round and a user one: no rate limit refuses.
        sides = [(core_runs, core_ask(f"r{r}")), (bare_runs, bare_ask)]
        for runs, ask in sides if r % 2 == 0 else sides[::-1]:
            runs.append(await _round(ask, ROUND_QUESTIONS, CONCURRENCY))
    return core_runs, bare_runs


async def memory_per_channel(url: str, db_path: Path, *, top: int = 0) -> tuple[float, float, str]:
    """(RSS bytes, Python heap bytes) per channel that spoke once, at CHANNELS; with `top`, the
    heap's largest growth by line."""
    core = await ChatCore.open(production_settings(url, db_path))
    try:

        async def speak(prefix: str, channels: int) -> None:
            target = FastTarget()
            queue = iter(range(channels))

            async def worker() -> None:
                for i in queue:
                    await _ask(core, _question(prefix, i, i), target)

            await asyncio.gather(*(worker() for _ in range(MEMORY_CONCURRENCY)))

        # Warm: connections open, code paths run, lazily built state made.
        await speak("warm", WARM_CHANNELS)
        tracemalloc.start()
        gc.collect()
        heap_before = tracemalloc.take_snapshot() if top else None
        traced_before = tracemalloc.get_traced_memory()[0]
        rss_before = rss()
        await speak("mem", CHANNELS)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        grown = rss() - rss_before
        report = ""
        if heap_before is not None:
            stats = tracemalloc.take_snapshot().compare_to(heap_before, "lineno")
            report = "\n".join(str(s) for s in stats[:top])
        tracemalloc.stop()
    finally:
        await core.aclose()
    return grown / CHANNELS, traced / CHANNELS, report


def _owner(filename: str) -> str:
    """Who a profiled function belongs to: an acechat module, a library, or the standard library."""
    path = Path(filename)
    if "acechat" in path.parts:
        return "acechat." + ".".join(path.parts[path.parts.index("acechat") + 1 :]).removesuffix(".py")
    if path.parent.name == "bench":
        return "bench." + path.stem
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].removesuffix(".py")
    if filename.startswith("<") or filename == "~":
        return "builtins (C functions, whoever calls them)"
    package = path.parent.name
    if package.startswith("python3"):
        return "stdlib " + path.stem
    return "stdlib " + (package if path.stem == "__init__" else f"{package}.{path.stem}")


def shares(stats: pstats.Stats) -> str:
    """The profile's own time by owner, largest first, as shares of the whole."""
    owners: dict[str, float] = {}
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, own, _, _) in table.items():
        owners[_owner(filename)] = owners.get(_owner(filename), 0.0) + own
    total = sum(owners.values()) or 1.0
    lines = [f"{share / total:6.1%}  {owner}" for owner, share in sorted(owners.items(), key=lambda o: -o[1])]
    summed = {
        prefix: sum(share for owner, share in owners.items() if owner.startswith(prefix))
        for prefix in ("acechat.", "stdlib asyncio.", "aiohttp")
    }
    together = ", ".join(f"{prefix.rstrip('.')} {share / total:.1%}" for prefix, share in summed.items())
    return f"own time by owner (main thread); all modules of {together}:\n" + "\n".join(lines[:25]) + "\n\n"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


async def measure() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            settings = production_settings(url, Path(tmp) / "cpu.db")
            core = await ChatCore.open(settings)
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
            try:
                bare = BareSide(session, settings)
                await serial_cpu(core, bare, "warm", SERIAL_CHANNELS)
                core_serial, bare_serial = await serial_cpu(core, bare, "serial", SERIAL_QUESTIONS)
                core_slack, bare_slack = await serial_cpu(
                    core, bare, "slack", SERIAL_QUESTIONS, delivered=True
                )
                core_runs, bare_runs = await concurrent_cpu(core, session, settings)
            finally:
                await session.close()
                await core.aclose()
            per_rss, per_heap, _ = await memory_per_channel(url, Path(tmp) / "memory.db")
    serial, bare_one = median(core_serial), median(bare_serial)
    slack, bare_slack_one = median(core_slack), median(bare_slack)
    concurrent, bare_many = median(core_runs), median(bare_runs)
    rows += [
        Row(
            NAME,
            "CPU per answered question, one at a time",
            f"{_us(serial)} ({serial / CPU_BUDGET:.2f} of budget; bare aiohttp {_us(bare_one)})",
            f"≤ {_us(CPU_BUDGET)}",
            serial <= CPU_BUDGET,
            note=f"median over {SERIAL_QUESTIONS:,} questions in {SERIAL_CHANNELS} channels, process CPU "
            "(all threads) around each; each followed by the same request made by bare aiohttp; no "
            "delivery id, as Discord's questions",
        ),
        Row(
            NAME,
            "CPU per answered question, one at a time, Slack (delivery id)",
            f"{_us(slack)} ({slack / CPU_BUDGET:.2f} of budget; bare aiohttp {_us(bare_slack_one)})",
            f"≤ {_us(CPU_BUDGET)}",
            slack <= CPU_BUDGET,
            note="as above, each question with an event id of its own, which the core records (one more "
            "database write) so a re-delivered event is dropped",
        ),
        Row(
            NAME,
            f"CPU per answered question, {CONCURRENCY} scopes at once",
            f"{_us(concurrent)} ({concurrent / CPU_BUDGET:.2f} of budget; bare aiohttp {_us(bare_many)})",
            f"≤ {_us(CPU_BUDGET)}",
            concurrent <= CPU_BUDGET,
            note=f"median of {ROUNDS} rounds of {ROUND_QUESTIONS} questions, process CPU ÷ questions; "
            f"rounds {', '.join(_us(c) for c in core_runs)}; bare aiohttp in alternating rounds: "
            f"{', '.join(_us(c) for c in bare_runs)}",
        ),
        Row(
            NAME,
            f"memory per channel that spoke once, at {CHANNELS:,} channels",
            f"{per_rss:,.0f} B RSS ({per_rss / MEMORY_BUDGET:.2f} of budget); {per_heap:,.0f} B Python heap",
            f"≤ {MEMORY_BUDGET / 1024:.0f} KiB",
            per_rss <= MEMORY_BUDGET,
            note=f"growth after {CHANNELS:,} channels each asked once by a user of its own, "
            f"{MEMORY_CONCURRENCY} at a time, on a core warmed on {WARM_CHANNELS:,} others; after a full "
            "collection; heap by tracemalloc",
        ),
    ]
    return rows


async def profile(seconds: float = 5.0) -> str:
    """Where a question's CPU goes (cProfile of the main thread, 32 scopes at once, then the parts of a
    question timed alone) and what a channel leaves in memory (tracemalloc's largest growth by line)."""
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            settings = production_settings(url, Path(tmp) / "cpu.db")
            core = await ChatCore.open(settings)
            try:
                target = FastTarget()
                counter = iter(range(10**9))
                asked = [0] * CONCURRENCY

                async def worker(w: int, deadline: float) -> int:
                    done = 0
                    while time.perf_counter() < deadline:
                        # A channel asks 20 questions, each from a user of its own: no rate limit refuses.
                        channel = w * 10**6 + asked[w] // 20
                        await _ask(core, _question("profile", channel, next(counter)), target)
                        asked[w] += 1
                        done += 1
                    return done

                await asyncio.gather(*(worker(w, time.perf_counter() + 0.3) for w in range(CONCURRENCY)))
                profiler = cProfile.Profile(time.thread_time)
                process, thread = time.process_time(), time.thread_time()
                profiler.enable()
                deadline = time.perf_counter() + seconds
                done = sum(await asyncio.gather(*(worker(w, deadline) for w in range(CONCURRENCY))))
                profiler.disable()
                process, thread = time.process_time() - process, time.thread_time() - thread
            finally:
                await core.aclose()
            out.write(
                f"{done:,} questions under the profiler ({CONCURRENCY} scopes); per question: process CPU "
                f"{_us(process / done)}, main thread {_us(thread / done)} (profiler included)\n"
            )
            stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
            out.write(shares(stats))
            stats.print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
            out.write(await parts(settings, Path(tmp) / "parts.db"))
            per_rss, per_heap, top = await memory_per_channel(url, Path(tmp) / "memory.db", top=25)
    out.write(
        f"\nmemory per channel: {per_rss:,.0f} B RSS, {per_heap:,.0f} B Python heap; heap growth by line:\n"
    )
    out.write(top + "\n")
    return out.getvalue()
