"""Benchmark 3 on Discord: mentions answered by the real DiscordAdapter (discord.py) against FakeDiscord.

Every run asks in a channel of its own, so one answer's edits never count against the next one's
per-channel limit. See bench/streaming.py for what is measured.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from acechat.bots.discord_bot import DiscordAdapter
from acechat.bots.discord_settings import DiscordSettings
from acechat.bots.discord_targets import EDIT_WINDOW, EDITS_PER_WINDOW
from acechat.core.chat import ChatCore
from bench.overhead import bench_settings
from bench.procs import server
from bench.report import Row
from bench.streaming import Asked, Seen, follow, scenarios
from bench.streaming import rows as stream_rows
from bench.upstream import Script
from tests.fakes.discord import FakeDiscord

NAME = "discord"
EXTRA_CHANNELS = 256
FIRST_EXTRA = 810000000000100000
EDIT_INTERVAL = EDIT_WINDOW / max(1, EDITS_PER_WINDOW - 1)
COMPETITOR = {
    "first1": "50 ms",
    "first10": "~400 ms",
    "lag": "~450 ms median",
    "long_lag": "up to 1 s at splits",
}


class ManyChannels(FakeDiscord):
    """The fake guild with enough text channels for every run to have its own."""

    def guild_payload(self) -> dict[str, Any]:
        payload = super().guild_payload()
        template = payload["channels"][0]
        payload["channels"] += [
            {**template, "id": str(FIRST_EXTRA + i), "name": f"bench-{i}", "position": 10 + i}
            for i in range(EXTRA_CHANNELS)
        ]
        return payload


class DiscordPlatform:
    name = NAME
    edit_interval = EDIT_INTERVAL

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    @property
    def rate_limited(self) -> int:
        return self.fake.rate_limited

    async def ask(self, slot: int, script: Script) -> Asked:
        channel = FIRST_EXTRA + slot
        content = f"<@{FakeDiscord.BOT_ID}> what streams? {script.marker()}"
        event_at = time.monotonic()
        question = await self.fake.post_message(content, channel_id=channel)
        return Asked(script.tag, script, event_at, (channel, question))

    def seen(self, asked: Asked) -> Seen:
        channel, _question = asked.where
        changes = [(c.at, c.id, c.text) for c in self.fake.changes_in(channel)]
        typing = [at for typed, at in self.fake.typing if typed == channel]
        return follow(changes, asked.script.text, typing)


@asynccontextmanager
async def discord_bot(upstream_url: str, db_path: Path) -> AsyncIterator[DiscordPlatform]:
    async with ManyChannels(route_headers=True) as fake:
        core = await ChatCore.open(bench_settings(upstream_url, db_path))
        settings = DiscordSettings(token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url)
        adapter = DiscordAdapter(core, settings, guild_ready_timeout=0.05, connect_timeout=10)
        await adapter.start()
        await fake.wait_for(lambda: adapter.connected)
        try:
            yield DiscordPlatform(fake)
        finally:
            await core.drain()
            await adapter.close()
            await core.aclose()


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url, discord_bot(url, Path(tmp) / "discord.db") as platform:
            found = await scenarios(url, platform, [platform] * 5, [platform] * 5)
    return stream_rows(NAME, found, EDIT_INTERVAL, COMPETITOR)
