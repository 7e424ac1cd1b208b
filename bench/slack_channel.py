"""Many long answers in one Slack channel: two users mention the bot ten times each within a second,
each answer about 12,000 characters (the default answer cap), at the default limits, against a
FakeSlack that enforces Slack's per-channel post rate (3 at once, then one a second).

A channel can show only so many messages a second, so the figures are about order and honesty:
every answer whole, or refused up front with a clear message (an ephemeral notice in its thread),
none cut; no 429; the last final within 1.2 × (posts needed ÷ the per-channel rate + the upstream's
time); and the second user's first answer final soon after the first user's (askers take turns).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from acechat.core.settings import Settings
from bench.flood import flood, flood_settings, logged_note
from bench.procs import server
from bench.report import Row
from bench.slack_flood import Workspace, workspace
from bench.streaming import Asked
from bench.upstream import Script
from tests.fakes.slack import BOT_USER_ID, POST_PER_SECOND

NAME = "slack-channel"
ASKERS = 2
PER_ASKER = 10
SPREAD = 1.0  # seconds over which the mentions arrive
# 595 fragments of 20 characters 10 ms apart: 11,900 characters over 6 s, just under the cap.
FRAGMENTS = 595
SIZE = 20
GAP = 0.01
LATENCY = 0.3
RATIO_TARGET = 1.2
TURN_TARGET = 10.0
GRACE = 150.0
CHANNEL = "C-LONG"


class Channel(Workspace):
    """Every mention in one channel, from two users taking turns."""

    async def ask(self, slot: int, script: Script) -> Asked:
        payload = self.fake.mention(
            f"<@{BOT_USER_ID}> write at length {script.marker()}",
            user=f"U-ASKER-{slot % ASKERS}",
            channel=CHANNEL,
            event_id=f"Ev-{script.tag}",
        )
        event_at = time.monotonic()
        await self.fake.deliver_socket(payload)
        return Asked(script.tag, script, event_at, (CHANNEL, payload["event"]["ts"]))


def channel_settings(upstream_url: str, db_path: Path) -> Settings:
    # The default limits: ten questions a minute per user, thirty per channel.
    defaults = Settings(upstream=flood_settings(upstream_url, db_path).upstream)
    return dataclasses.replace(
        flood_settings(upstream_url, db_path),
        user_rate=defaults.user_rate,
        channel_rate=defaults.channel_rate,
    )


async def measure() -> list[Row]:
    count = ASKERS * PER_ASKER
    bursts = [
        (k * SPREAD / count, [(k, Script(f"sc-{k}", latency=LATENCY, n=FRAGMENTS, size=SIZE, gap=GAP))])
        for k in range(count)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            settings = channel_settings(url, Path(tmp) / "channel.db")
            async with workspace(url, Path(tmp) / "channel.db", "T-LONG", settings) as (core, fake):
                place = Channel(fake)
                found = await flood(url, place, bursts, lambda: core.in_flight, grace=GRACE)
    refused_in = {str(e.get("thread_ts")) for e in fake.ephemerals if "in time" in str(e.get("text", ""))}
    whole = [a for a in found.answers if a.seen.final_at is not None]
    refused = [a for a in found.answers if a.seen.final_at is None and a.asked.where[1] in refused_in]
    cut = len(found.answers) - len(whole) - len(refused)
    posts = sum(1 for c in fake.calls_to("chat.postMessage") if c.ok)
    upstream = bursts[-1][1][0][1].duration + SPREAD
    floor = posts / POST_PER_SECOND + upstream
    last = max((a.seen.final_at for a in whole if a.seen.final_at is not None), default=None)
    after = None if last is None else last - found.started
    ratio = None if after is None else after / floor
    firsts = [next((a for a in found.answers if a.asked.tag == f"sc-{k}"), None) for k in range(ASKERS)]
    finals = [a.seen.final_at for a in firsts if a is not None]
    turn = None if len(finals) < ASKERS or None in finals else max(finals) - min(finals)  # type: ignore[operator]
    label = f"{ASKERS} users × {PER_ASKER} answers of 11,900 chars in one channel"
    return [
        Row(
            NAME,
            f"{label}: whole / refused up front / cut",
            f"{len(whole)} / {len(refused)} / {cut}",
            "none cut",
            cut == 0,
            "6 of 20 whole, 14 cut",
            f"refused: an ephemeral notice saying why, before the answer began; {logged_note(found)}",
        ),
        Row(
            NAME,
            f"{label}: platform 429s",
            str(fake.rate_limited),
            "0",
            fake.rate_limited == 0,
            "14",
        ),
        Row(
            NAME,
            f"{label}: last final ÷ (posts ÷ rate + upstream)",
            "never" if ratio is None else f"{ratio:.2f} ({after:.1f} s; {posts} posts)",
            f"≤ {RATIO_TARGET}",
            ratio is not None and ratio <= RATIO_TARGET,
            note=f"first event → last whole answer, ÷ ({posts} posts at {POST_PER_SECOND:g} a second "
            f"+ the upstream's {upstream:.1f} s, arrivals included)",
        ),
        Row(
            NAME,
            f"{label}: second user's first answer after the first user's",
            "never" if turn is None else f"{turn:.1f} s",
            f"≤ {TURN_TARGET:.0f} s",
            turn is not None and turn <= TURN_TARGET,
            "22 s (at 6,000 chars)",
            "between the two users' first answers becoming whole",
        ),
    ]
