"""The Slack burst served by real `acechat slack` processes in HTTP mode on one PostgreSQL database:
two processes against one (rows of the `burst` benchmark).

Each round starts its processes afresh on the benchmark's database (bench/database.py), with a fresh
FakeSlack workspace in this process and the shared `bench.upstream` in its own, and warms each with
one `/aichat help`. Then the load generator (`bench.slack_load`, its own process) sends the burst at
once: 200 `/aichat` questions and 200 mentions, each in a channel of its own, split between the
processes alternately as a balancer would, plus a re-delivery of every tenth mention (same event id,
`X-Slack-Retry-Num: 1`, as Slack re-sends an event whose acknowledgement it missed) to the other
process, or to the same one when there is only one. The upstream answers at once in one line, so the
time is the processes' own work: throughput = questions ÷ (first request written → last answer
showing in full). The processes then stop (SIGTERM: they finish what they took), and every channel
must show exactly one answer, every question reach the upstream exactly once.

Two processes share this machine's two cores with the fakes, the load generator and PostgreSQL, so
the ratio says what a second process adds here, not on a machine of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from acechat.bots.slack_bot import EVENTS_PATH
from bench import slack_load
from bench.procs import REPO
from bench.report import Row, median
from bench.upstream import Script
from tests.fakes.slack import BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack
from tests.processes import BotProcess, free_port

EACH = 200
RETRY_EVERY = 10
ROUNDS = 5  # of each: one process, two processes
ANSWER_WITHIN = 60.0


def _script(tag: str) -> Script:
    return Script(tag=tag, latency=0.0, n=1, size=60)


ANSWER = _script("").text


@dataclass(frozen=True)
class Round:
    processes: int
    throughput: float  # questions answered per second
    twice: int  # questions answered (or asked upstream) more than once
    lost: int  # questions never answered
    bots_cpu: float  # CPU seconds the bot processes spent on the burst, together
    fakes_cpu: float  # CPU seconds this process (FakeSlack) spent on it
    machine_busy: float  # the share of the machine's CPU time in use meanwhile, whoever used it


def _machine() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux)."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def _cpu(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name, in parentheses, may hold spaces: count fields after it.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _environment(tmp: Path, upstream: str, database: str, fake: FakeSlack, port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp),
        "ACEDATACLOUD_API_TOKEN": "bench-token",
        "ACEDATACLOUD_API_BASE_URL": upstream,
        "ACECHAT_DATABASE_URL": database,
        "ACECHAT_USER_RATE": "0/60",
        "ACECHAT_CHANNEL_RATE": "0/60",
        "ACECHAT_UPSTREAM_RETRIES": "0",
        "ACECHAT_LOG_LEVEL": "WARNING",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.url + "/api",
        "SLACK_PORT": str(port),
    }


def _burst(fake: FakeSlack, tag: str, urls: list[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The load generator's requests, and each question's channel by its upstream tag."""
    requests: list[dict[str, Any]] = []
    channels: dict[str, str] = {}
    for i in range(EACH):
        for kind in ("cmd", "at"):
            channel = f"C{tag}{kind}{i}"
            question = f"{tag}-{kind}-{i}"
            text = f"what streams? {_script(question).marker()}"
            to = urls[len(channels) % len(urls)]
            channels[question] = channel
            if kind == "cmd":
                # Trigger ids are unique on Slack; the fake's restart with each workspace.
                form = fake.command(text, user=f"U{tag}{kind}{i}", channel=channel, trigger_id=f"t{question}")
                body, content_type = urllib.parse.urlencode(form), "application/x-www-form-urlencoded"
                requests.append({"url": to, "body": body, "content_type": content_type})
                continue
            event = fake.mention(
                f"<@{BOT_USER_ID}> {text}", user=f"U{tag}{kind}{i}", channel=channel, event_id=f"Ev{tag}{i}"
            )
            requests.append({"url": to, "body": json.dumps(event), "content_type": "application/json"})
            if i % RETRY_EVERY == 0:
                other = urls[(urls.index(to) + 1) % len(urls)]
                requests.append(
                    {"url": other, "body": json.dumps(event), "content_type": "application/json", "retry": 1}
                )
    return requests, channels


async def _send(requests: list[dict[str, Any]]) -> float:
    """Send the burst from a load generator of its own; when it started."""
    started, _results = await slack_load.from_child({"secret": SIGNING_SECRET, "requests": requests})
    return started


def _whole(text: str) -> bool:
    # A command's answer opens with who asked what.
    return text == ANSWER or text.endswith("\n\n" + ANSWER)


def _answers(fake: FakeSlack, channels: set[str]) -> dict[str, list[float]]:
    """When each answer in those channels first showed in full, by channel."""
    found: dict[str, list[float]] = {}
    for m in fake.messages:
        if m.channel in channels and _whole(m.text):
            at = m.at[next(i for i, v in enumerate(m.versions) if _whole(v))]
            found.setdefault(m.channel, []).append(at)
    return found


async def _upstream_counts(upstream: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(upstream + "/timings") as reply:
        timings: dict[str, dict[str, float]] = await reply.json()
    return {tag: int(record.get("requests", 0)) for tag, record in timings.items()}


async def _round(upstream: str, database: str, tmp: Path, processes: int, tag: str) -> Round:
    async with FakeSlack() as fake:
        bots: list[tuple[BotProcess, str]] = []
        try:
            for n in range(processes):
                port = free_port()
                env = _environment(tmp, upstream, database, fake, port)
                bot = await BotProcess.start(tmp, "slack", env, name=f"{tag}-{n}")
                bots.append((bot, f"http://127.0.0.1:{port}{EVENTS_PATH}"))
                await bot.wait_for_port(port)
            for _, url in bots:
                # Served once before the burst, as in steady state.
                warm = fake.command("help", user="U0", trigger_id=f"t{tag}-warm-{url}")
                await fake.deliver_http(url, warm)
                key = warm["response_url"].rsplit("/", 1)[1]
                await fake.wait_until(lambda k=key: bool(fake.responses_to(k)), 20)
            requests, channels = _burst(fake, tag, [url for _, url in bots])
            cpu = [_cpu(bot.process.pid) for bot, _ in bots]
            own_cpu = time.process_time()
            machine = _machine()
            started = await _send(requests)
            wanted = set(channels.values())
            deadline = time.monotonic() + ANSWER_WITHIN
            # Polled every 20 ms: a wait woken by every call the fake serves would scan in the busy process.
            while len(_answers(fake, wanted)) < len(wanted) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            done = max((at for ats in _answers(fake, wanted).values() for at in ats), default=started)
            bots_cpu = sum(_cpu(bot.process.pid) for bot, _ in bots) - sum(cpu)
            fakes_cpu = time.process_time() - own_cpu
            busy, total = (now - then for now, then in zip(_machine(), machine, strict=True))
            for bot, _ in bots:
                if await bot.stop(signal.SIGTERM) != 0:
                    raise RuntimeError(f"a bot did not stop cleanly:\n{bot.log[-2000:]}")
        finally:
            for bot, _ in bots:
                await bot.kill_if_running()
        answers = _answers(fake, wanted)
    asked = await _upstream_counts(upstream)
    twice = {c for c, ats in answers.items() if len(ats) > 1}
    twice |= {channels[t] for t, n in asked.items() if t in channels and n > 1}
    lost = len(wanted) - len(answers)
    throughput = (len(wanted) - lost) / (done - started)
    return Round(processes, throughput, len(twice), lost, bots_cpu, fakes_cpu, busy / max(total, 1))


async def measure(upstream: str, database: str, tmp: Path) -> list[Round]:
    rounds = []
    for r in range(ROUNDS):
        # Alternating order, so the machine's mood hits both alike.
        for processes in (1, 2) if r % 2 == 0 else (2, 1):
            rounds.append(await _round(upstream, database, tmp, processes, f"r{r}p{processes}"))
    return rounds


def rows(name: str, rounds: list[Round]) -> list[Row]:
    one = [r.throughput for r in rounds if r.processes == 1]
    two = [r.throughput for r in rounds if r.processes == 2]
    ratios = [b / a for a, b in zip(one, two, strict=True)]
    twice = sum(r.twice for r in rounds)
    lost = sum(r.lost for r in rounds)

    def cpu(processes: int) -> str:
        mine = [r for r in rounds if r.processes == processes]
        bots, fakes = median(r.bots_cpu for r in mine), median(r.fakes_cpu for r in mine)
        busy = median(r.machine_busy for r in mine)
        return f"{bots:.2f} s in the bots, {fakes:.2f} s in FakeSlack, the machine {busy:.0%} busy"

    return [
        Row(
            name,
            "Slack HTTP burst on PostgreSQL: 2 processes ÷ 1, throughput",
            f"{median(ratios):.2f} (1: {median(one):,.0f} q/s, 2: {median(two):,.0f} q/s)",
            note=f"median of {len(ratios)} pairs of rounds, ratios {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"{2 * EACH} questions (+{EACH // RETRY_EVERY} re-delivered mentions) split between the "
            "processes; the upstream answers at once, so the time is the processes' work. CPU for a burst "
            f"(medians): 1 process {cpu(1)}; 2 processes {cpu(2)}. Bots, fakes, load generator and "
            f"PostgreSQL share this machine's {os.cpu_count()} cores",
        ),
        Row(
            name,
            "Slack HTTP burst on PostgreSQL: answered twice, lost",
            f"answered twice: {twice}, lost: {lost}",
            "0 and 0",
            twice == 0 and lost == 0,
            note=f"over all {len(rounds)} rounds, one and two processes; every tenth mention also re-delivered "
            "to the other process; counted on FakeSlack and at the upstream after the processes stopped",
        ),
    ]
