"""Many streamed answers at once through a real adapter against its platform fake: the shared measuring part
of `slack_flood` and `discord_flood`.

Questions go out in bursts (a list of start offsets, each with its questions); each has an upstream
timeline (`bench.upstream.Script`). The bench then waits until every answer shows whole, the core has
nothing left in flight, or `GRACE` seconds have passed since the last scripted end, whichever comes
first; then it replays the fake's record of every text each answer's messages showed
(`bench.streaming.follow`). Per answer:

- first sign of life: the event → the first thing the asker sees of the answer: a message (a
  placeholder or its first text), a status ("is thinking…") or a typing call in its place;
- first-text overhead: the event → the first fragment of the answer on the platform, minus the
  upstream's scripted wait for it (answers held back are left out: their first text is their last);
- held back: the first answer text shown was already the whole answer (posted once, not streamed);
- completion lag: the upstream's record of writing the last fragment → the moment from which the
  platform shows the whole answer, word for word;
- left partial: not whole when the bench stopped waiting.

With tool steps (`with_tools`, the `*-flood-tools` benchmarks) every answer has AI Chat v2's tool steps
and citations before its text, spread over the same wait, so its text goes out when the plain answer's
does. An answer is then whole once its sources show under the whole text, and each call that showed
only a tool line (a progress call: a post or edit, or on Slack a thread status showing the line) is
counted: the most of an answer's in any 1 s (at most one a second), how many there were, how many
answers showed one at all, and how many landed while another answer still showed nothing (progress
gives way first: under load there are fewer, while the answers' own rows keep their targets).

Warnings and errors the bot logs meanwhile are counted by message template, not printed.
Each scenario runs on a core of its own, closed after it with a short shutdown grace, so answers a
scenario leaves behind do not run on into the next one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from acechat.core.settings import Settings
from bench.overhead import bench_settings
from bench.report import Row, median, ms
from bench.streaming import FRAGMENTS, GAP, SIZE, Asked, Seen, Shown, follow, timings
from bench.upstream import Script

GRACE = 20.0
POLL = 0.2
SETTLE = 0.5
LATE_LATENCY = 5.0
TOOL_STEPS = 5
TOOL_CITES = 8
# What only a progress line shows (`acechat.core.answer.progress_line`), and the sources' heading.
PROGRESS_MARKS = ("Searching the web for", "📖 Reading", "🛠️ Using")
SOURCES = "Sources"


def late_script(tag: str) -> Script:
    """The 200-at-once profile: the first fragment after 5 s, then 150 fragments over 3 s."""
    return Script(tag=tag, latency=LATE_LATENCY, n=FRAGMENTS, size=SIZE, gap=GAP)


def with_tools(plain: Script) -> Script:
    """`plain` with TOOL_STEPS tool steps spread over its wait for the first text, and TOOL_CITES
    citations before the text: the text goes out exactly when `plain`'s does."""
    gap = plain.latency / TOOL_STEPS
    return dataclasses.replace(plain, latency=0.0, tools=TOOL_STEPS, tool_gap=gap, cites=TOOL_CITES, early=1)


def text_wait(script: Script) -> float:
    """Seconds from the request to the first text fragment, as scripted."""
    return script.latency + script.tools_time


def answer_part(text: str | None, script: Script) -> str | None:
    """What of a shown `text` is judged against the answer: with citations, the text above the sources,
    and never the whole answer before they show."""
    if text is None or not script.cites:
        return text
    cut = text.rfind(SOURCES)
    return text + " \x00" if cut < 0 else text[:cut].rstrip("*_ \n")


def is_progress(text: str | None, script: Script) -> bool:
    """The text shows a tool line and none of the answer."""
    return text is not None and script.text[:SIZE] not in text and any(m in text for m in PROGRESS_MARKS)


def judge(
    changes: Iterable[Shown], script: Script, signs: Iterable[float] = (), progress: Iterable[float] = ()
) -> Seen:
    """`bench.streaming.follow` for a flood's answer, sources and progress calls included. `signs`: the
    times of calls that showed the answer is coming without a message (typing, a status); `progress`:
    those of calls outside the messages that showed a tool line (a status), both also signs of life."""
    shown = list(changes)
    extra = sorted(progress)
    seen = follow(
        [(at, key, answer_part(text, script)) for at, key, text in shown], script.text, [*signs, *extra]
    )
    seen.progress = sorted([at for at, _, text in shown if is_progress(text, script)] + extra)
    return seen


class Place(Protocol):
    async def ask(self, slot: int, script: Script) -> Asked: ...

    def seen(self, asked: Asked) -> Seen: ...

    def whole_now(self, asked: Sequence[Asked]) -> int:
        """How many of `asked` show their whole answer now (cheap: polled while the bot works)."""
        ...


@dataclass
class Answer:
    asked: Asked
    seen: Seen
    timing: dict[str, float]

    @property
    def lag(self) -> float | None:
        if self.seen.final_at is None or "end" not in self.timing:
            return None
        return self.seen.final_at - self.timing["end"]

    @property
    def life(self) -> float | None:
        return None if self.seen.life_at is None else self.seen.life_at - self.asked.event_at

    @property
    def first_overhead(self) -> float | None:
        if self.seen.first_at is None or self.seen.held_back:
            return None
        return self.seen.first_at - self.asked.event_at - text_wait(self.asked.script)


@dataclass
class Flood:
    answers: list[Answer]
    started: float  # the first event
    in_flight: int  # answers the core was still working on when the bench stopped waiting
    logged: Counter[str]  # warnings and errors the bot logged, by message template

    @property
    def partial(self) -> int:
        return sum(a.seen.final_at is None for a in self.answers)

    @property
    def all_final_after(self) -> float | None:
        """From the first event until the last answer showed whole (None if one never did)."""
        if self.partial:
            return None
        finals = [a.seen.final_at for a in self.answers if a.seen.final_at is not None]
        return max(finals) - self.started


async def flood(
    upstream_url: str,
    place: Place,
    bursts: Sequence[tuple[float, Sequence[tuple[int, Script]]]],
    in_flight: Callable[[], int],
    grace: float = GRACE,
) -> Flood:
    """Ask each burst at its offset (seconds from the start), then wait as described above (`grace`
    seconds at most after the last scripted end)."""
    with counted_logs() as logged:
        started = time.monotonic()
        asked: list[Asked] = []
        for offset, questions in bursts:
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            asked += await asyncio.gather(*(place.ask(slot, script) for slot, script in questions))
        last_end = max(a.event_at + a.script.duration for a in asked)
        await asyncio.sleep(max(0.0, last_end - time.monotonic()))
        deadline = last_end + grace
        # Polling, and only now: a scan per call the fake serves would load the process being measured.
        while place.whole_now(asked) < len(asked) and in_flight() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL)
        working = in_flight()
        await asyncio.sleep(SETTLE)  # let trailing calls (a stopped stream, a cleared status) land
    found = await timings(upstream_url)
    answers = [Answer(a, place.seen(a), found.get(a.tag, {})) for a in asked]
    return Flood(answers, min(a.event_at for a in asked), working, logged)


def flood_settings(upstream_url: str, db_path: Path) -> Settings:
    return dataclasses.replace(bench_settings(upstream_url, db_path), shutdown_grace=1.0)


class _Count(logging.Handler):
    def __init__(self, into: Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self._into = into

    def emit(self, record: logging.LogRecord) -> None:
        self._into[str(record.msg)] += 1


@contextmanager
def counted_logs() -> Iterator[Counter[str]]:
    """Count the warnings and errors logged meanwhile instead of printing them."""
    found: Counter[str] = Counter()
    handler = _Count(found)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield found
    finally:
        root.removeHandler(handler)


def logged_note(result: Flood) -> str:
    if not result.logged:
        return "the bot logged no warning"
    return "the bot logged " + "; ".join(f"{n} × {msg!r}" for msg, n in result.logged.most_common(3))


def spread(values: Sequence[float]) -> str:
    return f"{ms(median(values))} (max {ms(max(values))})" if values else "-"


def lag_row(bench: str, figure: str, result: Flood, median_max: tuple[float, float], note: str) -> Row:
    lags = [lag for a in result.answers if (lag := a.lag) is not None]
    target_median, target_max = median_max
    if result.partial:
        value = f"{ms(median(lags)) if lags else '-'} (max: never, {result.partial} not whole)"
    else:
        value = spread(lags)
    passed = not result.partial and median(lags) <= target_median and max(lags) <= target_max
    return Row(
        bench, figure, value, f"median ≤ {ms(target_median)}, max ≤ {ms(target_max)}", passed, note=note
    )


def life_rows(bench: str, label: str, result: Flood) -> list[Row]:
    """First sign of life, held back and left partial: the same three rows for every flood."""
    lives = [life for a in result.answers if (life := a.life) is not None]
    silent = len(result.answers) - len(lives)
    held = sum(a.seen.held_back for a in result.answers)
    count = len(result.answers)
    return [
        Row(
            bench,
            f"{label}: first sign of life",
            spread(lives),
            note="event → the first message, status or typing call in the answer's place"
            + (f"; {silent} answers showed none" if silent else ""),
        ),
        Row(
            bench,
            f"{label}: answers held back to post once",
            f"{held} of {count}",
            note="the first answer text shown was already the whole answer",
        ),
        Row(
            bench,
            f"{label}: answers left partial",
            f"{result.partial} of {count}",
            "0",
            result.partial == 0,
            note=f"not whole {GRACE:.0f} s after the model finished, or once the core had nothing in flight; "
            f"{result.in_flight} still in flight when the bench stopped waiting; {logged_note(result)}",
        ),
    ]


def peak(times: Sequence[float], window: float = 1.0) -> int:
    """The most of `times` (sorted) in any `window` seconds."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def progress_rows(bench: str, label: str, result: Flood) -> list[Row]:
    """With tool steps: what progress cost, per answer (none without them)."""
    if not any(a.asked.script.tools for a in result.answers):
        return []
    counts = [len(a.seen.progress) for a in result.answers]
    most = max(peak(sorted(a.seen.progress)) for a in result.answers)
    showing = sum(n > 0 for n in counts)
    late = sum(
        at > a.timing["first"] for a in result.answers if "first" in a.timing for at in a.seen.progress
    )
    # Progress that went while some answer still showed nothing, other than that answer's own first sign.
    lives = [a.seen.life_at for a in result.answers]
    all_seen = math.inf if None in lives else max(at for at in lives if at is not None)
    early = sum(at < all_seen and at != a.seen.life_at for a in result.answers for at in a.seen.progress)
    return [
        Row(
            bench,
            f"{label}: progress calls of one answer in any 1 s, most",
            str(most),
            "≤ 1",
            most <= 1,
            note=f"{TOOL_STEPS} tool steps and {TOOL_CITES} citations before each answer's text, spread over "
            "its wait; a progress call is a post or edit that shows only a tool line, or a thread status "
            "showing one",
        ),
        Row(
            bench,
            f"{label}: progress calls per answer",
            f"{median(counts):g} (max {max(counts)}); {showing} of {len(counts)} answers showed one",
            note=f"{sum(counts)} in all; {late} landed after the answer's first text was written upstream; "
            f"{early} landed while another answer still showed nothing, other than as an answer's own first "
            "sign of life (progress gives way: fewer under load, while the answers' own rows keep their "
            "targets)",
        ),
    ]
