"""AI Chat v2's tool-heavy answer on Discord: 10 tool steps, 8 citations and a question back per answer.

The upstream (`bench.upstream`, own process) waits 300 ms, sends 10 tool steps (`tool_use`, then
`tool_result`) 100 ms apart, then 150 text fragments of 4 characters 20 ms apart, then 8 citations, an
`ask_user_question` and `done`. The same answers without tool steps, sources or question are the
baseline. Measured on the Discord fake, per answer, each in a channel of its own:

- first text: the first text fragment written upstream → the answer's text first showing on the platform;
- completion lag: the upstream's last event written → the platform showing the whole answer with its
  sources and question (for the baseline: the whole text);
- progress cost: the platform calls (posts and edits) made while only tool steps had arrived: the shortest
  gap between two of them (the target, at most one call a second, is a gap of at least 1 s) and their
  number per second of that phase (from the request).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.discord_stream import FIRST_EXTRA, DiscordPlatform, discord_bot
from bench.procs import server
from bench.report import Row, median, ms
from bench.upstream import Script

NAME = "tools"
RUNS = 5
TOOLS = 10
TOOL_GAP = 0.1
CITES = 8


def script(tag: str, heavy: bool) -> Script:
    extra = {"tools": TOOLS, "tool_gap": TOOL_GAP, "cites": CITES, "ask": 1} if heavy else {}
    return Script(tag=tag, latency=0.3, n=150, size=4, gap=0.02, **extra)  # type: ignore[arg-type]


def complete(text: str, expected: str, heavy: bool) -> bool:
    if not text.startswith(expected):
        return False
    return not heavy or ("**Sources**" in text and "Which one?" in text and f"{CITES}. [Source" in text)


async def one(
    platform: DiscordPlatform, url: str, slot: int, heavy: bool
) -> tuple[float, float, float | None]:
    """(first-text lag, completion lag, progress calls per second) of one answer."""
    tag = f"{'heavy' if heavy else 'plain'}-{slot}"
    answer = script(tag, heavy)
    await platform.ask(slot, answer)
    channel = FIRST_EXTRA + slot
    fake = platform.fake
    expected = answer.text

    def whole() -> float | None:
        return next(
            (
                c.at
                for c in fake.changes_in(channel)
                if c.text is not None and complete(c.text, expected, heavy)
            ),
            None,
        )

    async with asyncio.timeout(30):
        while whole() is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    async with aiohttp.ClientSession() as http, http.get(url + "/timings") as resp:
        timings = (await resp.json())[tag]
    changes = fake.changes_in(channel)
    first_shown = next(c.at for c in changes if c.text is not None and c.text.startswith(expected[:4]))
    final = whole()
    assert final is not None
    progress = None
    if heavy:
        during = [c.at for c in changes if c.at < first_shown]
        phase = max(first_shown - timings["arrived"], 1e-3)
        gaps = [b - a for a, b in itertools.pairwise(during)]
        progress = (len(during) / phase, min(gaps, default=float("inf")))
    return first_shown - timings["first"], final - timings["end"], progress


async def measure() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url, discord_bot(url, Path(tmp) / "tools.db") as platform:
            found: dict[bool, list[tuple[float, float, tuple[float, float] | None]]] = {False: [], True: []}
            for slot in range(RUNS * 2):
                heavy = slot % 2 == 1
                found[heavy].append(await one(platform, url, slot, heavy))
            rate_limited = platform.rate_limited
    plain, heavy = found[False], found[True]
    rows.append(Row(NAME, "first text, plain answer (baseline)", ms(median(r[0] for r in plain))))
    rows.append(
        Row(
            NAME,
            "first text, tool-heavy answer",
            ms(median(r[0] for r in heavy)),
            "≤ baseline + 100 ms",
            median(r[0] for r in heavy) <= median(r[0] for r in plain) + 0.1,
        )
    )
    rows.append(Row(NAME, "completion lag, plain answer (baseline)", ms(median(r[1] for r in plain))))
    rows.append(
        Row(
            NAME,
            "completion lag, tool-heavy answer",
            f"{ms(median(r[1] for r in heavy))} (max {ms(max(r[1] for r in heavy))})",
            "median ≤ 100 ms, max ≤ 1250 ms",
            median(r[1] for r in heavy) <= 0.1 and max(r[1] for r in heavy) <= 1.25,
        )
    )
    rates = [r[2][0] for r in heavy if r[2] is not None]
    gaps = [r[2][1] for r in heavy if r[2] is not None]
    rows.append(
        Row(
            NAME,
            "progress: platform calls per second of the tool phase",
            f"{median(rates):.2f} (max {max(rates):.2f})",
        )
    )
    rows.append(
        Row(
            NAME,
            "progress: shortest gap between two progress calls",
            "none (one call)" if min(gaps) == float("inf") else f"{min(gaps):.2f} s",
            "≥ 1 s (at most one call a second)",
            min(gaps) >= 0.99,
            note=f"{RUNS} answers of {TOOLS} tool steps {int(TOOL_GAP * 1000)} ms apart, {CITES} citations, "
            "one question back; each in a channel of its own",
        )
    )
    rows.append(Row(NAME, "platform 429 responses", str(rate_limited), "0", rate_limited == 0))
    return rows


if __name__ == "__main__":
    started = time.perf_counter()
    print(asyncio.run(measure()))
    print(f"{time.perf_counter() - started:.1f}s")
