"""Slack under a flood: many streamed answers at once in one workspace, against a FakeSlack that enforces
Slack's limits (chat.update and the other Tier 3 methods per workspace, about one chat.postMessage a
second per channel, the streaming methods' tiers; see tests/fakes/slack.py).

The real SlackAdapter (slack-bolt, Socket Mode) answers mentions, each in a thread. Scenarios, each in
a fresh workspace (a FakeSlack, an adapter and a core of its own):

- 10 at once: 10 mentions, each in a channel of its own, at the same moment, the streamed profile
  (first fragment at 300 ms, then 150 fragments of 4 characters over 3 s);
- 10 at once, 6 bursts a second apart: 60 mentions, each in a channel of its own, the same profile;
- 10 in one channel (information): 10 people mention the bot in the same channel at once;
- 200 at once: 200 mentions, each in a channel of its own, first fragment after 5 s, then 150
  fragments over 3 s.

Every question comes from a different user. See bench/flood.py for what is measured per answer.
`slack-flood-tools` (`measure_tools`) runs the same scenarios with tool steps and citations before every
answer's text (`bench.flood.with_tools`), and adds the progress rows.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from acechat.bots.slack_bot import SlackAdapter
from acechat.bots.slack_settings import SlackSettings
from acechat.bots.slack_targets import STATUS
from acechat.core.chat import ChatCore
from acechat.core.settings import Settings
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
    progress_rows,
    spread,
    text_wait,
    with_tools,
)
from bench.procs import server
from bench.report import Row, median, ms
from bench.streaming import Asked, Seen, script
from bench.upstream import Script
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, FakeSlack

NAME = "slack-flood"
BURSTS = 6
BURST_SIZE = 10
BURST_GAP = 1.0
FLOOD = 200
LAG = (0.100, 1.0)
FIRST_TEXT_TARGET = 0.040
RATIO_TARGET = 1.2
ONE_CHANNEL = "C-ONE"


class Workspace:
    """One FakeSlack and the adapter serving it."""

    def __init__(self, fake: FakeSlack, one_channel: bool = False) -> None:
        self.fake = fake
        self.one_channel = one_channel

    async def ask(self, slot: int, script: Script) -> Asked:
        channel = ONE_CHANNEL if self.one_channel else f"C{slot:05d}"
        payload = self.fake.mention(
            f"<@{BOT_USER_ID}> what streams? {script.marker()}",
            user=f"U{slot:05d}",
            channel=channel,
            event_id=f"Ev-{script.tag}",
        )
        event_at = time.monotonic()
        await self.fake.deliver_socket(payload)
        return Asked(script.tag, script, event_at, (channel, payload["event"]["ts"]))

    def seen(self, asked: Asked) -> Seen:
        channel, thread = asked.where
        changes = [(c.at, c.ts, c.text) for c in self.fake.changes_in(channel, thread)]
        # "is thinking…" is a sign of life; a status showing a tool line is a progress call too; clearing
        # a status shows nothing.
        statuses = [s for s in self.fake.statuses_in(channel, thread) if s.status]
        thinking = [s.at for s in statuses if s.status == STATUS]
        tool_lines = [s.at for s in statuses if s.status != STATUS]
        return judge(changes, asked.script, thinking, tool_lines)

    def whole_now(self, asked: Sequence[Asked]) -> int:
        shown: defaultdict[tuple[str, str | None], list[str]] = defaultdict(list)
        for m in self.fake.messages:
            shown[(m.channel, m.thread_ts)].append(m.text)
        return sum(
            " ".join(str(answer_part(t, a.script)) for t in shown[a.where]).split() == a.script.text.split()
            for a in asked
        )


@asynccontextmanager
async def workspace(
    upstream_url: str, db_path: Path, team: str, settings: Settings | None = None
) -> AsyncIterator[tuple[ChatCore, FakeSlack]]:
    """A fresh core (on `settings`, else the flood's), and a FakeSlack served by a Socket Mode adapter."""
    async with AsyncExitStack() as stack:
        # Teardown cuts off what a scenario left running; its log lines are expected, not news.
        stack.enter_context(counted_logs())
        core = await ChatCore.open(settings or flood_settings(upstream_url, db_path))
        stack.push_async_callback(core.aclose)
        fake = await stack.enter_async_context(FakeSlack(team_id=team))
        slack = SlackSettings(bot_token=BOT_TOKEN, app_token=APP_TOKEN, api_url=fake.api_url)
        adapter = SlackAdapter(core, slack, host="127.0.0.1")
        await adapter.start()
        stack.push_async_callback(adapter.close)
        stack.push_async_callback(core.drain)
        await fake.wait_for_socket()
        yield core, fake


def by_method(fake: FakeSlack) -> str:
    if not fake.limited:
        return "none"
    return "by method: " + ", ".join(f"{m} {n}" for m, n in sorted(fake.limited.items()))


def overhead_row(label: str, result: Flood) -> Row:
    firsts = [f for a in result.answers if (f := a.first_overhead) is not None]
    streamed = len(firsts)
    passed = bool(firsts) and median(firsts) <= FIRST_TEXT_TARGET
    return Row(
        NAME,
        f"{label}: first-text overhead",
        spread(firsts),
        f"median ≤ {ms(FIRST_TEXT_TARGET)}",
        passed,
        note=f"{streamed} answers that streamed (held back ones show their first text at the end); "
        "event → first fragment on the platform, minus the upstream's 300 ms",
    )


async def measure() -> list[Row]:
    return await run(lambda script: script)


async def measure_tools() -> list[Row]:
    rows = await run(with_tools)
    return [dataclasses.replace(r, bench=f"{NAME}-tools") for r in rows]


async def run(dress: Callable[[Script], Script]) -> list[Row]:
    ten_bursts = [
        (
            k * BURST_GAP,
            [(k * BURST_SIZE + c, dress(script(f"sf-burst-{k}-{c}", 0.0))) for c in range(BURST_SIZE)],
        )
        for k in range(BURSTS)
    ]
    one_channel = [(0.0, [(500 + c, dress(script(f"sf-one-{c}", 0.0))) for c in range(BURST_SIZE)])]
    ten = [(0.0, [(2000 + c, dress(script(f"sf-ten-{c}", 0.0))) for c in range(BURST_SIZE)])]
    two_hundred = [(0.0, [(1000 + i, dress(late_script(f"sf-flood-{i}"))) for i in range(FLOOD)])]
    results: list[tuple[Flood, FakeSlack]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with server("bench.upstream") as url:
            for k, (bursts, one) in enumerate(
                [(ten, False), (ten_bursts, False), (one_channel, True), (two_hundred, False)]
            ):
                async with workspace(url, Path(tmp) / f"slack-{k}.db", f"T{k:04d}") as (core, fake):
                    found = await flood(url, Workspace(fake, one_channel=one), bursts, lambda: core.in_flight)
                results.append((found, fake))
    return rows(results)


def rows(results: list[tuple[Flood, FakeSlack]]) -> list[Row]:
    (ten, _), (tens, _), (one_channel, one_fake), (flooded, _) = results
    fakes = [fake for _, fake in results]
    label10 = f"{BURST_SIZE} at once, {BURSTS} bursts {BURST_GAP:g} s apart"
    label200 = f"{FLOOD} at once"
    after = flooded.all_final_after
    upstream = late_script("").duration
    ratio = None if after is None else after / upstream
    out = [
        first_text_row(f"{BURST_SIZE} at once", ten, FIRST_TEXT_TARGET),
        lag_row(
            NAME,
            f"{BURST_SIZE} at once: completion lag",
            ten,
            LAG,
            f"{BURST_SIZE} mentions at the same moment, each in a channel of its own, a fresh workspace",
        ),
        *life_rows(NAME, f"{BURST_SIZE} at once", ten),
        *progress_rows(NAME, f"{BURST_SIZE} at once", ten),
        _limited(f"{BURST_SIZE} at once: platform 429s", fakes[0]),
        lag_row(
            NAME,
            f"{label10}: completion lag",
            tens,
            LAG,
            f"{len(tens.answers)} answers, each in a channel of its own, one workspace; "
            "model end → whole answer visible",
        ),
        overhead_row(label10, tens),
        first_text_row(label10, tens, None),
        *life_rows(NAME, label10, tens),
        *progress_rows(NAME, label10, tens),
        _limited(f"{label10}: platform 429s", fakes[1]),
        Row(
            NAME,
            f"{label200}: all final ÷ upstream time",
            "never (answers left partial)" if ratio is None else f"{ratio:.2f} ({after:.1f} s)",
            f"≤ {RATIO_TARGET:.1f}",
            ratio is not None and ratio <= RATIO_TARGET,
            "322 s (64×)",
            f"first event → last answer whole, ÷ the upstream's {upstream:.2f} s "
            "(first fragment after 5 s, then 150 over 3 s)",
        ),
        lag_row(
            NAME,
            f"{label200}: completion lag",
            flooded,
            LAG,
            f"{FLOOD} mentions, each in a channel of its own, one workspace",
        ),
        *life_rows(NAME, label200, flooded),
        *progress_rows(NAME, label200, flooded),
        _limited(f"{label200}: platform 429s", fakes[3]),
    ]
    lags = [lag for a in one_channel.answers if (lag := a.lag) is not None]
    out += [
        Row(
            NAME,
            f"{BURST_SIZE} in one channel: completion lag",
            spread(lags) + (f"; {one_channel.partial} not whole" if one_channel.partial else ""),
            note="information: 10 people mention the bot in one channel at once, answered in 10 threads",
        ),
        Row(
            NAME,
            f"{BURST_SIZE} in one channel: platform 429s",
            str(one_fake.rate_limited),
            note=by_method(one_fake),
        ),
    ]
    return out


def first_text_row(label: str, result: Flood, target: float | None) -> Row:
    """Event → the answer's first text on the platform, minus the upstream's 300 ms, for every answer:
    one held back shows its first text when it is posted whole."""
    firsts = [
        a.seen.first_at - a.asked.event_at - text_wait(a.asked.script)
        for a in result.answers
        if a.seen.first_at is not None
    ]
    return Row(
        NAME,
        f"{label}: first text, held answers included",
        spread(firsts),
        "-" if target is None else f"median ≤ {ms(target)}",
        None if target is None else bool(firsts) and median(firsts) <= target,
        note="event → first fragment on the platform, minus the upstream's 300 ms; an answer held back "
        "shows its first text when it is posted whole",
    )


def _limited(figure: str, fake: FakeSlack) -> Row:
    return Row(NAME, figure, str(fake.rate_limited), "0", fake.rate_limited == 0, note=by_method(fake))
