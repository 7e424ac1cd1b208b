"""Discord under a flood: 200 mentions at once, each in a channel of its own, against a FakeDiscord that
enforces Discord's global limit (50 requests in any 1 s for the bot, over all routes) and its
per-channel buckets (message create, edit and typing, 5 per 5 s each), and sends the buckets'
X-RateLimit headers as Discord does, so discord.py paces each bucket itself (see tests/fakes/discord.py).

The real DiscordAdapter (discord.py) answers; the upstream sends its first fragment after 5 s, then
150 fragments over 3 s. See bench/flood.py for what is measured per answer. Also measured: the bot's
requests against the global budget: the most it made in any 1 s (accepted, and offered: accepted
plus those refused with a global 429) and the mean over the busy period, from the first request
after the flood began to the last one before the bench stopped waiting.

`discord-flood-tools` (`measure_tools`) is the same flood with tool steps and citations before every
answer's text (`bench.flood.with_tools`), and the progress rows.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from acechat.bots.discord_bot import DiscordAdapter
from acechat.bots.discord_settings import DiscordSettings
from acechat.core.chat import ChatCore
from bench.discord_stream import DiscordPlatform, ManyChannels
from bench.flood import (
    Flood,
    answer_part,
    counted_logs,
    flood,
    flood_settings,
    judge,
    lag_row,
    late_script,
    life_rows,
    peak,
    progress_rows,
    with_tools,
)
from bench.procs import server
from bench.report import Row
from bench.streaming import Asked, Seen
from bench.upstream import Script
from tests.fakes.discord import GLOBAL_LIMIT, FakeDiscord, RestCall

NAME = "discord-flood"
FLOOD = 200
LAG = (2.5, 5.0)
RATIO_TARGET = 1.6
HANDFUL = 5


class Channels(DiscordPlatform):
    """The stream bench's channels, plus how many answers Discord shows whole right now."""

    def seen(self, asked: Asked) -> Seen:
        channel, _question = asked.where
        changes = [(c.at, c.id, c.text) for c in self.fake.changes_in(channel)]
        return judge(changes, asked.script, [at for typed, at in self.fake.typing if typed == channel])

    def whole_now(self, asked: Sequence[Asked]) -> int:
        shown: dict[int, list[str]] = {}
        for m in self.fake.bot_messages():
            shown.setdefault(m.channel_id, []).append(m.content)
        return sum(
            " ".join(str(answer_part(t, a.script)) for t in shown.get(a.where[0], [])).split()
            == a.script.text.split()
            for a in asked
        )


@asynccontextmanager
async def discord_bot(upstream_url: str, db_path: Path) -> AsyncIterator[tuple[ChatCore, FakeDiscord]]:
    async with AsyncExitStack() as stack:
        stack.enter_context(counted_logs())  # teardown cuts off what is left: expected, not news
        fake = await stack.enter_async_context(ManyChannels(route_headers=True))
        core = await ChatCore.open(flood_settings(upstream_url, db_path))
        stack.push_async_callback(core.aclose)
        settings = DiscordSettings(token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url)
        adapter = DiscordAdapter(core, settings, guild_ready_timeout=0.05, connect_timeout=10)
        await adapter.start()
        stack.push_async_callback(adapter.close)
        stack.push_async_callback(core.drain)
        await fake.wait_for(lambda: adapter.connected)
        yield core, fake


def budget_row(calls: Sequence[RestCall], since: float, until: float) -> Row:
    counted = [c for c in calls if c.counted and since <= c.time <= until]
    accepted = sorted(c.time for c in counted if c.limit != "global")
    offered = sorted(c.time for c in counted)
    busy = (accepted[-1] - accepted[0]) if len(accepted) > 1 else 0.0
    mean = len(accepted) / busy if busy else float(len(accepted))
    return Row(
        NAME,
        f"{FLOOD} channels at once: requests against the global budget",
        f"peak {peak(accepted)} in any 1 s ({peak(offered)} offered); mean {mean:.1f}/s over {busy:.1f} s",
        note=f"Discord allows {GLOBAL_LIMIT} a second; offered counts the requests refused with a global 429 too",
    )


async def measure() -> list[Row]:
    return await run(lambda script: script)


async def measure_tools() -> list[Row]:
    rows = await run(with_tools)
    return [dataclasses.replace(r, bench=f"{NAME}-tools") for r in rows]


async def run(dress: Callable[[Script], Script]) -> list[Row]:
    questions = [(0.0, [(i, dress(late_script(f"df-{i}"))) for i in range(FLOOD)])]
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            server("bench.upstream") as url,
            discord_bot(url, Path(tmp) / "discord.db") as (core, fake),
        ):
            before = len(fake.calls)
            result = await flood(url, Channels(fake), questions, lambda: core.in_flight)
            calls = fake.calls[before:]
            limited = Counter(c.limit for c in calls if c.limit is not None)
    return rows(result, calls, limited)


def rows(result: Flood, calls: Sequence[RestCall], limited: Counter[str]) -> list[Row]:
    label = f"{FLOOD} channels at once"
    whole = len(result.answers) - result.partial
    after = result.all_final_after
    upstream = late_script("").duration
    ratio = None if after is None else after / upstream
    refusals = sum(limited.values())
    per_route = refusals - limited["global"]
    ends = [c.time for c in calls]
    return [
        Row(
            NAME,
            f"{label}: answers delivered whole",
            f"{whole} of {len(result.answers)}",
            f"{len(result.answers)} of {len(result.answers)}",
            result.partial == 0,
            "llmcord 74-100 of 200",
            "word for word; each mention in a channel of its own",
        ),
        Row(
            NAME,
            f"{label}: platform 429s",
            f"{limited['global']} global, {per_route} per-route",
            f"≤ {HANDFUL}, none lost",
            refusals <= HANDFUL and result.partial == 0,
            note=(
                "by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(limited.items(), key=str))
                if limited
                else "none"
            ),
        ),
        Row(
            NAME,
            f"{label}: all final ÷ upstream time",
            "never (answers left partial)" if ratio is None else f"{ratio:.2f} ({after:.1f} s)",
            f"≤ {RATIO_TARGET:.1f}",
            ratio is not None and ratio <= RATIO_TARGET,
            note=f"first event → last answer whole, ÷ the upstream's {upstream:.2f} s "
            "(first fragment after 5 s, then 150 over 3 s)",
        ),
        lag_row(NAME, f"{label}: completion lag", result, LAG, "model end → whole answer visible"),
        *life_rows(NAME, label, result),
        *progress_rows(NAME, label, result),
        budget_row(calls, result.started, max(ends, default=result.started)),
    ]
