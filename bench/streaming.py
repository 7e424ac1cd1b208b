"""Benchmark 3, streaming through a real adapter against its platform fake: the shared measuring part.

The upstream (`bench.upstream`, own process) sends its first fragment 300 ms after the request, then
150 fragments of 4 characters 20 ms apart. Each run moves the stream's end by 0, 200, … 800 ms (a
pause halfway), so no lucky phase of an edit clock can hide a lag. Measured on the platform fake:

- first-text overhead: platform event → first answer text on the fake, minus the 300 ms;
- completion lag: the upstream's last fragment written → the moment from which the platform shows
  the whole answer, word for word (replayed from the fake's record of every text each message showed);
- every message's size, edit calls, and the fake's 429 count (it answers 429 past the platform's limits).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from bench.report import Row, median, ms
from bench.upstream import Script

FIRST_LATENCY = 0.3
GAP = 0.02
SIZE = 4
FRAGMENTS = 150
LONG_FRAGMENTS = 1500  # 6,000 characters
PAUSES = (0.0, 0.2, 0.4, 0.6, 0.8)
CHANNELS = 10
FOLLOW_UPS = 3


def script(tag: str, pause: float, fragments: int = FRAGMENTS) -> Script:
    return Script(
        tag=tag, latency=FIRST_LATENCY, n=fragments, size=SIZE, gap=GAP, pause=pause, at=fragments // 2
    )


@dataclass
class Asked:
    tag: str
    script: Script
    event_at: float
    where: Any  # the platform's own key for finding the answer


@dataclass
class Seen:
    """An answer as the platform fake shows it."""

    first_at: float | None = None  # the first fragment of the answer showed
    final_at: float | None = None  # from then on the whole answer showed, word for word
    texts: list[str] = field(default_factory=list)  # what the messages show now, oldest first
    edits: int = 0  # changes to a message's text after it was posted
    life_at: float | None = None  # the first sign the answer is coming: a message, a status, typing
    held_back: bool = False  # the first answer text shown was already the whole answer
    progress: list[float] = field(default_factory=list)  # calls that showed only a tool line (bench.flood)


# What one place (a thread, a channel) showed: (when, which message, its text from then on; None: deleted).
Shown = tuple[float, Hashable, str | None]


def follow(changes: Iterable[Shown], answer: str, signs: Iterable[float] = ()) -> Seen:
    """Replay every text the bot's messages in one place showed, in time order, against `answer`."""
    words = answer.split()
    start = answer[:SIZE]
    shown: dict[Hashable, str] = {}  # in posting order
    seen = Seen()
    whole = False
    for at, key, text in sorted(changes, key=lambda c: c[0]):
        if seen.life_at is None:
            seen.life_at = at
        if text is None:
            shown.pop(key, None)
        else:
            seen.edits += key in shown
            shown[key] = text
        now_whole = " ".join(shown.values()).split() == words
        if seen.first_at is None and any(t.lstrip().startswith(start) for t in shown.values()):
            seen.first_at = at
            seen.held_back = now_whole
        if now_whole and not whole:
            seen.final_at = at
        whole = now_whole
    if not whole:
        seen.final_at = None
    seen.texts = list(shown.values())
    seen.life_at = min([*signs, *([seen.life_at] if seen.life_at is not None else [])], default=None)
    return seen


class Platform(Protocol):
    name: str
    edit_interval: float

    async def ask(self, slot: int, script: Script) -> Asked: ...

    def seen(self, asked: Asked) -> Seen: ...

    @property
    def rate_limited(self) -> int: ...


@dataclass
class Result:
    asked: Asked
    seen: Seen
    timing: dict[str, float]

    @property
    def first_overhead(self) -> float:
        assert self.seen.first_at is not None
        return self.seen.first_at - self.asked.event_at - self.asked.script.latency

    @property
    def before_upstream(self) -> float:
        """Event → request at the upstream: the bot's share of the first-text overhead before the wait."""
        return self.timing["arrived"] - self.asked.event_at

    @property
    def lag(self) -> float:
        assert self.seen.final_at is not None
        return self.seen.final_at - self.timing["end"]


def complete(asked: Asked, seen: Seen) -> bool:
    return seen.final_at is not None


async def timings(upstream_url: str) -> dict[str, dict[str, float]]:
    async with aiohttp.ClientSession() as session, session.get(upstream_url + "/timings") as resp:
        found: dict[str, dict[str, float]] = await resp.json()
        return found


async def run(upstream_url: str, asks: Sequence[tuple[Platform, int, Script]], within: float) -> list[Result]:
    """Ask everything at once, wait until every answer shows in full, and time each.

    Times come from the fakes' own records; this only checks for completion, and only from just after
    the scripted end, so the scanning stays out of the process while it is being measured."""
    asked = await asyncio.gather(*(platform.ask(slot, s) for platform, slot, s in asks))
    pairs = list(zip([p for p, _, _ in asks], asked, strict=True))
    await asyncio.sleep(max(a.script.duration for a in asked) + 0.1)
    deadline = time.monotonic() + within
    pending = list(pairs)
    while pending:
        pending = [(p, a) for p, a in pending if not complete(a, p.seen(a))]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(
                f"answers incomplete after {within:.0f} s: {', '.join(a.tag for _, a in pending)}"
            )
        await asyncio.sleep(0.05)
    found = await timings(upstream_url)
    return [Result(a, p.seen(a), found[a.tag]) for p, a in pairs]


async def scenarios(
    upstream_url: str, single: Platform, bursts: Sequence[Platform], longs: Sequence[Platform]
) -> dict[str, Any]:
    """One platform's three scenarios: one channel at a time, ten channels at once (one burst on each
    of `bursts`), and the 6,000-character answer (one on each of `longs`, all at once)."""
    name = single.name
    everyone = list(dict.fromkeys([single, *bursts, *longs]))
    limited = sum(p.rate_limited for p in everyone)
    one: list[Result] = []
    for k, pause in enumerate(PAUSES):
        one += await run(upstream_url, [(single, k, script(f"{name}-1-{k}", pause))], within=15)
    # Follow-ups: each asked the moment the previous answer ends, in the same channel, as a person
    # replying at once would. Only the platform's 429 count is taken from these.
    before = sum(p.rate_limited for p in everyone)
    for k in range(FOLLOW_UPS):
        follow = script(f"{name}-follow-{k}", 0.0)
        await single.ask(50, follow)
        await asyncio.sleep(follow.duration + 0.1)
    await asyncio.sleep(0.5)
    follow_limited = sum(p.rate_limited for p in everyone) - before
    ten: list[Result] = []
    for k, (platform, pause) in enumerate(zip(bursts, PAUSES, strict=True)):
        asks = [
            (platform, 100 + k * CHANNELS + c, script(f"{name}-10-{k}-{c}", pause)) for c in range(CHANNELS)
        ]
        ten += await run(upstream_url, asks, within=30)
    long_asks = [
        (platform, 200 + k, script(f"{name}-long-{k}", pause, LONG_FRAGMENTS))
        for k, (platform, pause) in enumerate(zip(longs, PAUSES, strict=True))
    ]
    long = await run(upstream_url, long_asks, within=60)
    total = sum(p.rate_limited for p in everyone) - limited
    return {
        "single": one,
        "burst": ten,
        "long": long,
        "429": total - follow_limited,
        "429_follow": follow_limited,
    }


def rows(bench: str, found: dict[str, Any], edit_interval: float, competitor: dict[str, str]) -> list[Row]:
    single: list[Result] = found["single"]
    burst: list[Result] = found["burst"]
    long: list[Result] = found["long"]
    interval = ms(edit_interval)

    def spread(values: list[float]) -> str:
        return f"{ms(median(values))} (max {ms(max(values))})"

    def first_note(results: list[Result]) -> str:
        before = median(r.before_upstream for r in results)
        return f"{len(results)} samples; of which event → request at the upstream: {ms(before)} median"

    def lag_row(figure: str, results: list[Result], key: str, note: str) -> Row:
        lags = [r.lag for r in results]
        return Row(
            bench,
            figure,
            spread(lags),
            f"median ≤ 100 ms, max ≤ {interval}",
            median(lags) <= 0.100 and max(lags) <= edit_interval,
            competitor.get(key, ""),
            note,
        )

    one = [r.first_overhead for r in single]
    ten = [r.first_overhead for r in burst]
    sizes = [len(t) for t in long[0].seen.texts]
    return [
        Row(
            bench,
            "first-text overhead, 1 channel",
            spread(one),
            "≤ 20 ms",
            median(one) <= 0.020,
            competitor.get("first1", ""),
            first_note(single),
        ),
        Row(
            bench,
            f"first-text overhead, {CHANNELS} channels at once",
            spread(ten),
            "≤ 40 ms",
            median(ten) <= 0.040,
            competitor.get("first10", ""),
            first_note(burst),
        ),
        lag_row(
            "completion lag, 1 channel",
            single,
            "lag",
            f"{len(single)} answers of 600 characters, stream end moved 0-800 ms",
        ),
        lag_row(
            f"completion lag, {CHANNELS} channels at once",
            burst,
            "lag",
            f"{len(burst)} answers in {len(burst) // CHANNELS} bursts, stream end moved 0-800 ms",
        ),
        lag_row(
            "completion lag, 6,000-char answer",
            long,
            "long_lag",
            f"{len(long)} answers, stream end moved 0-800 ms; 1,500 fragments over 30 s",
        ),
        Row(
            bench,
            "6,000-char answer: message sizes",
            " + ".join(f"{s:,}" for s in sizes) + " chars",
            note=f"edit calls per answer: {', '.join(str(r.seen.edits) for r in long)}",
        ),
        Row(
            bench,
            "platform 429 responses",
            str(found["429"]),
            "0",
            found["429"] == 0,
            note="every answer above",
        ),
        Row(
            bench,
            f"platform 429s, {FOLLOW_UPS} follow-ups in one channel",
            str(found["429_follow"]),
            "0",
            found["429_follow"] == 0,
            note="each question asked as the previous answer ends, in the same channel",
        ),
    ]
