"""Benchmark 3 on Slack: mentions answered in threads by the real SlackAdapter (slack-bolt, Socket Mode)
against FakeSlack, which enforces chat.update's per-workspace rate limit with 429s.

The one-channel runs share one workspace. Each ten-channel burst comes to a workspace of its own, as
a burst after a quiet spell would: ten answers at once take ten of the workspace's chat.update
allowance (about 45 a minute), which then takes 13 s to refill. The five long answers run at once,
each in a workspace of its own, so each meets Slack's limit as a lone long answer would. All the
fakes and adapters share one core. Each question comes from a different user, so every
one pays the bot's users.info lookup. See bench/streaming.py for what is measured.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from acechat.bots.slack_bot import SlackAdapter
from acechat.bots.slack_settings import SlackSettings
from acechat.bots.slack_targets import EDIT_BURST, EDIT_WINDOW
from acechat.core.chat import ChatCore
from bench.overhead import bench_settings
from bench.procs import server
from bench.report import Row
from bench.streaming import Asked, Seen, follow, scenarios
from bench.streaming import rows as stream_rows
from bench.upstream import Script
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, FakeSlack

NAME = "slack"
EDIT_INTERVAL = EDIT_WINDOW / max(1, EDIT_BURST - 1)
COMPETITOR = {
    "first1": "~400 ms",
    "first10": "half wait ~3.8 s",
    "updates": "76",
}


class SlackPlatform:
    name = NAME
    edit_interval = EDIT_INTERVAL

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake

    @property
    def rate_limited(self) -> int:
        return self.fake.rate_limited

    async def ask(self, slot: int, script: Script) -> Asked:
        payload = self.fake.mention(
            f"<@{BOT_USER_ID}> what streams? {script.marker()}",
            user=f"U{slot:05d}",
            channel=f"C{slot:05d}",
            # Slack's event ids are unique; each fake counts from 1, and the bot de-duplicates by id.
            event_id=f"Ev-{script.tag}",
        )
        event = payload["event"]
        event_at = time.monotonic()
        await self.fake.deliver_socket(payload)
        return Asked(script.tag, script, event_at, (event["channel"], event["ts"]))

    def seen(self, asked: Asked) -> Seen:
        channel, thread = asked.where
        changes = [(c.at, c.ts, c.text) for c in self.fake.changes_in(channel, thread)]
        statuses = [s.at for s in self.fake.statuses_in(channel, thread)]
        return follow(changes, asked.script.text, statuses)


@asynccontextmanager
async def slack_bots(upstream_url: str, db_path: Path, workspaces: int) -> AsyncIterator[list[SlackPlatform]]:
    """`workspaces` Slack apps (one fake each) in Socket Mode, all on one core."""
    async with AsyncExitStack() as stack:
        core = await ChatCore.open(bench_settings(upstream_url, db_path))
        stack.push_async_callback(core.aclose)
        platforms = []
        for k in range(workspaces):
            fake = await stack.enter_async_context(FakeSlack(team_id=f"T{k:04d}"))
            settings = SlackSettings(bot_token=BOT_TOKEN, app_token=APP_TOKEN, api_url=fake.api_url)
            adapter = SlackAdapter(core, settings, host="127.0.0.1")
            await adapter.start()
            stack.push_async_callback(adapter.close)
            await fake.wait_for_socket()
            platforms.append(SlackPlatform(fake))
        stack.push_async_callback(core.drain)
        yield platforms


async def measure() -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url, slack_bots(url, Path(tmp) / "slack.db", 11) as platforms:
            found = await scenarios(url, platforms[0], platforms[1:6], platforms[6:])
    out = stream_rows(NAME, found, EDIT_INTERVAL, COMPETITOR)
    updates = sorted(r.seen.edits for r in found["long"])
    out.insert(
        -2,
        Row(
            NAME,
            "edit calls (chat.update, appendStream) for one 6,000-char answer",
            f"{updates[len(updates) // 2]} (median)",
            "< 76, no 429",
            updates[len(updates) // 2] < 76 and found["429"] == 0,
            COMPETITOR["updates"],
            f"all five: {', '.join(map(str, updates))}; Slack allows about 50 a minute per workspace",
        ),
    )
    return out
