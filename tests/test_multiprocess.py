"""Two acechat processes on one PostgreSQL database behave as one bot.

Every test starts two real processes on a database of its own (the run's, emptied), against one
FakeUpstream and one FakeSlack or FakeDiscord in this process. Slack sends each request to one
process, as a load balancer in front of HTTP-mode replicas would; the test picks which. The tests
wait on what is recorded (the fakes' records, the processes' /metrics and JSON logs, PostgreSQL's lock
table), never on time passing.

The Slack processes run `acechat run`: the Slack adapter as `acechat slack` runs it, plus /metrics,
whose `acechat_in_flight` says when a process has taken a question in (it counts the questions that
hold or wait for their channel's turn), and what docker-compose.yml runs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from acechat.core import notices
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.scope import Scope
from tests.conftest import SLACK_ADMIN
from tests.fakes.discord import TOKEN, FakeDiscord
from tests.fakes.slack import BOT_USER_ID, TEAM_ID, FakeSlack, Message
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.processes import BotProcess, bot_environment, free_port, get, samples, slack_url, until
from tests.store_backends import pg_database, pg_url, scope_locks
from tests.test_v2 import ASKED

__all__ = ["pg_database", "pg_url"]  # fixtures

pytestmark = pytest.mark.fault

WITHIN = 20.0  # generous: two bots, the fakes and PostgreSQL share two busy cores


@dataclass
class Replica:
    """One acechat process of the pair."""

    name: str
    bot: BotProcess
    env: dict[str, str]

    @property
    def health(self) -> str:
        return f"http://127.0.0.1:{self.env['ACECHAT_HEALTH_PORT']}"

    async def deliver(self, slack: FakeSlack, payload: dict[str, Any], **options: Any) -> None:
        """Slack sends this request to this process."""
        delivery = await slack.deliver_http(slack_url(self.env), payload, **options)
        assert delivery.status == 200, delivery

    async def metrics(self) -> dict[str, float]:
        status, text = await get(f"{self.health}/metrics")
        assert status == 200, text
        return samples(text)

    def entries(self) -> list[dict[str, Any]]:
        """Its JSON log, one object a line."""
        return [json.loads(line) for line in self.bot.log.splitlines() if line.startswith("{")]

    def answered(self, channel: str) -> int:
        return sum(1 for e in self.entries() if e["message"] == "answered" and e.get("channel") == channel)

    def logged(self, message: str) -> bool:
        return any(e["message"] == message for e in self.entries())


@asynccontextmanager
async def replicas(
    tmp_path: Path, upstream: FakeUpstream, slack: FakeSlack, database: str, **variables: str
) -> AsyncIterator[tuple[Replica, Replica]]:
    """Processes `a` and `b` (Slack in HTTP mode, each on its own port) on one database; stopped with
    SIGTERM at the end, each of them cleanly."""
    pair: list[Replica] = []
    try:
        for name in ("a", "b"):
            env = bot_environment(
                tmp_path,
                upstream,
                slack,
                ACECHAT_DATABASE_URL=database,
                ACECHAT_HEALTH_PORT=str(free_port()),
                ACECHAT_LOG_JSON="true",
                **variables,
            )
            pair.append(Replica(name, await BotProcess.start(tmp_path, "run", env, name=name), env))
        # /healthz listens once the Slack adapter has started.
        await asyncio.gather(*(r.bot.wait_for_port(int(r.env["ACECHAT_HEALTH_PORT"])) for r in pair))
        yield pair[0], pair[1]
        for replica in pair:
            if replica.bot.process.returncode is None:
                assert await replica.bot.stop(signal.SIGTERM) == 0, replica.bot.log
    finally:
        for replica in pair:
            await replica.bot.kill_if_running()
    for replica in pair:
        assert "Traceback" not in replica.bot.log, replica.bot.log
    # With a database URL all state is in PostgreSQL: no SQLite file appears.
    assert not (tmp_path / "acechat.db").exists()


async def until_true(check: Callable[[], Awaitable[bool]], what: str, within: float = WITHIN) -> None:
    """Poll a condition that needs a round trip (a process's /metrics, the database) every 10 ms."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def key_of(channel: str) -> str:
    return Scope.of("slack", TEAM_ID, channel).key


def asked(upstream: FakeUpstream, tag: str) -> list[dict[str, Any]]:
    """The request bodies whose question ends with `tag` (the bot prefixes the asker's name)."""
    return [b for b in upstream.bodies if b is not None and b["question"].endswith(tag)]


def answers(slack: FakeSlack, channel: str, thread_ts: str | None = None) -> list[Message]:
    """The bot's answers there, as they read now (a command's answer opens with who asked)."""
    return [m for m in slack.in_channel(channel, thread_ts) if "Answer " in m.text]


async def in_flight(replica: Replica, count: int) -> None:
    async def check() -> bool:
        return (await replica.metrics())["acechat_in_flight"] == count

    await until_true(check, f"{count} questions in process {replica.name}")


async def locks(url: str, channel: str, *, held: int, waiting: int) -> None:
    async def check() -> bool:
        return await scope_locks(url, key_of(channel)) == (held, waiting)

    await until_true(check, f"{channel}'s lock held by {held} and awaited by {waiting}")


async def conversation(url: str, channel: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchrow(
            "SELECT upstream_id, turns FROM conversations WHERE scope_key = $1", key_of(channel)
        )
    finally:
        await conn.close()


async def test_turns_of_a_channel_run_one_at_a_time_in_arrival_order_across_processes(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack, pg_url: str
) -> None:
    # One fragment per answer: one chat.postMessage, no edits to pace.
    fake_upstream.set_default(fragment_size=10_000)
    gates = [asyncio.Event() for _ in range(6)]
    async with replicas(tmp_path, fake_upstream, slack, pg_url) as (a, b):
        takers = [a, b, a, b, a, b]

        def c1() -> list[dict[str, Any]]:
            return [body for body in fake_upstream.bodies if body and "q-C1-" in body["question"]]

        # The first question holds the channel: its answer waits at the upstream.
        fake_upstream.queue(Behaviour(gate=gates[0]))
        await a.deliver(slack, slack.command("q-C1-1", user="U1", channel="C1"))
        await until(lambda: len(c1()) == 1, WITHIN, "the first question upstream")
        # The rest arrive one by one, alternately at b and a. B's first waits in PostgreSQL's lock queue;
        # each later one waits in its own process's queue behind the one that process took before.
        for n in range(2, 7):
            taker = takers[n - 1]
            await taker.deliver(slack, slack.command(f"q-C1-{n}", user=f"U{n}", channel="C1"))
            await in_flight(taker, (n + 1) // 2)
        await locks(pg_url, "C1", held=1, waiting=1)

        # Other channels do not wait for C1, on either process.
        await b.deliver(slack, slack.command("q-C2-1", user="U7", channel="C2"))
        await a.deliver(slack, slack.command("q-C3-1", user="U8", channel="C3"))
        await until(lambda: bool(answers(slack, "C2") and answers(slack, "C3")), WITHIN, "C2 and C3 answered")
        assert len(c1()) == 1 and not answers(slack, "C1")

        for k in range(6):
            if k < 5:
                fake_upstream.queue(Behaviour(gate=gates[k + 1]))
                # The other process's next question moves from its own queue to PostgreSQL's a round trip
                # after its previous turn ended; a real answer takes longer than that, so let this one too.
                await locks(pg_url, "C1", held=1, waiting=1)
            assert len(c1()) == k + 1, "a question went upstream while its channel's turn was held"
            gates[k].set()
            if k < 5:
                await until(lambda n=k + 2: len(c1()) == n, WITHIN, f"question {k + 2} upstream")
        await until(lambda: len(answers(slack, "C1")) == 6, WITHIN, "six answers in C1")

    bodies = c1()
    assert [body["question"].rsplit(" ", 1)[-1] for body in bodies] == [f"q-C1-{n}" for n in range(1, 7)]
    [conversation_id] = [cid for cid, turns in fake_upstream.conversations.items() if len(turns) == 6]
    assert "id" not in bodies[0]
    assert all(body["id"] == conversation_id for body in bodies[1:]), "each turn continues the stored one"
    # The upstream numbers each answer by the turns its conversation had.
    shown = sorted(m.text.partition("\n\n")[2] for m in answers(slack, "C1"))
    assert shown == sorted(f"Answer {n} to: u{n}-display: q-C1-{n}" for n in range(1, 7))
    assert (a.answered("C1"), b.answered("C1")) == (3, 3)
    assert (a.answered("C3"), b.answered("C2")) == (1, 1)
    stored = await conversation(pg_url, "C1")
    assert stored is not None and tuple(stored) == (conversation_id, 6)


async def test_a_crash_frees_the_channel_at_once_for_the_other_process(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack, pg_url: str
) -> None:
    async with replicas(tmp_path, fake_upstream, slack, pg_url) as (a, b):
        # A's answer starts (its conversation id is stored at once), then stalls for a minute.
        fake_upstream.queue(Behaviour(answer="the start of an answer that never ends", fragment_delay=60))
        await a.deliver(slack, slack.command("q-1", user="U1", channel="C1"))

        async def started() -> bool:
            return await conversation(pg_url, "C1") is not None

        await until_true(started, "A's answer under way")
        # A question for the same channel at the other process waits for A's turn.
        await b.deliver(slack, slack.command("q-2", user="U2", channel="C1"))
        await locks(pg_url, "C1", held=1, waiting=1)
        assert len(fake_upstream.requests) == 1

        killed = time.monotonic()
        assert await a.bot.stop(signal.SIGKILL) == -signal.SIGKILL
        await until(lambda: len(fake_upstream.requests) == 2, WITHIN, "the waiting question upstream")
        freed_after = time.monotonic() - killed
        # And one sent after the crash goes straight through.
        await b.deliver(slack, slack.command("q-3", user="U3", channel="C1"))
        await until(lambda: len(answers(slack, "C1")) == 2, WITHIN, "both answered")

    # No lease to expire: the connection holding A's lock died with A, and PostgreSQL freed the lock.
    assert freed_after < 5.0, f"the channel was freed {freed_after:.2f}s after the kill"
    [first, second, third] = fake_upstream.bodies
    assert first is not None and second is not None and third is not None
    assert second["question"].endswith("q-2") and third["question"].endswith("q-3")
    [conversation_id] = fake_upstream.conversations
    assert second["id"] == third["id"] == conversation_id, "B continues the conversation A began"
    stored = await conversation(pg_url, "C1")
    # A's turn never finished: the conversation counts B's two.
    assert stored is not None and tuple(stored) == (conversation_id, 2)


async def test_an_admin_change_on_one_process_is_in_force_for_the_next_question_on_the_other(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack, pg_url: str
) -> None:
    async with replicas(tmp_path, fake_upstream, slack, pg_url) as (a, b):
        # B answers in C1 first, so it has C1's settings (none: the default preset) in its caches.
        await b.deliver(slack, slack.command("q-before", user="U1", channel="C1"))
        await until(lambda: bool(answers(slack, "C1")), WITHIN, "the first answer")

        change = slack.command("preset set coder", user=SLACK_ADMIN, channel="C1")
        await a.deliver(slack, change)
        key = change["response_url"].rsplit("/", 1)[1]
        await until(lambda: bool(slack.responses_to(key)), WITHIN, "the change acknowledged")
        # The next question, sent to B the moment A acknowledged the change, already uses it.
        await b.deliver(slack, slack.command("q-after", user="U1", channel="C1"))
        await until(lambda: len(fake_upstream.requests) == 2, WITHIN, "the next question upstream")

    [reply] = slack.responses_to(key)
    assert not reply.ephemeral and "coder" in reply.text
    [before] = asked(fake_upstream, "q-before")
    [after] = asked(fake_upstream, "q-after")
    assert before["preset"] == BUILTIN_PRESETS["assistant"].prompt
    assert after["preset"] == BUILTIN_PRESETS["coder"].prompt
    # A preset change starts the conversation afresh.
    assert "id" not in after
    assert b.answered("C1") == 2 and a.answered("C1") == 0


async def test_a_slack_event_delivered_to_both_processes_is_answered_once(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack, pg_url: str
) -> None:
    async with replicas(tmp_path, fake_upstream, slack, pg_url) as (a, b):
        # Slack re-sends an event it thinks was not acknowledged; the balancer sends it to the other process.
        first = slack.mention(f"<@{BOT_USER_ID}> q-once", channel="C1", event_id="Ev-multi-1")
        await a.deliver(slack, first)
        await until(lambda: bool(answers(slack, "C1", first["event"]["ts"])), WITHIN, "the answer")
        await b.deliver(slack, first, retry_num=1)
        await until(
            lambda: b.logged("ignoring a re-delivered event slack:event:Ev-multi-1"), WITHIN, "B drops it"
        )

        # The original and the retry arrive at the same moment, one at each process.
        second = slack.mention(f"<@{BOT_USER_ID}> q-at-once", channel="C2", event_id="Ev-multi-2")
        await asyncio.gather(a.deliver(slack, second), b.deliver(slack, second, retry_num=1))

        def decided() -> bool:
            dropped = "ignoring a re-delivered event slack:event:Ev-multi-2"
            return (a.logged(dropped) or b.logged(dropped)) and bool(
                answers(slack, "C2", second["event"]["ts"])
            )

        await until(decided, WITHIN, "one process answers, the other drops it")

    assert len(asked(fake_upstream, "q-once")) == 1
    assert len(asked(fake_upstream, "q-at-once")) == 1
    assert len(slack.in_channel("C1", first["event"]["ts"])) == 1
    assert len(slack.in_channel("C2", second["event"]["ts"])) == 1
    assert a.answered("C1") + b.answered("C1") == 1 and a.answered("C2") + b.answered("C2") == 1


async def test_buttons_one_process_showed_are_edited_by_the_other_when_it_skips_their_question(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack, pg_url: str
) -> None:
    def buttons(thread_ts: str | None = None) -> list[Message]:
        shown = slack.in_channel("C1", thread_ts)
        return [m for m in shown if any(a.startswith("acechat:answer:") for a in m.action_ids)]

    async with replicas(tmp_path, fake_upstream, slack, pg_url) as (a, b):
        # A shows two questions back: one in a mention's thread, one in the channel (/aichat).
        for _ in range(2):
            fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
        mention = slack.mention(f"<@{BOT_USER_ID}> write the report", channel="C1")
        thread = mention["event"]["ts"]
        await a.deliver(slack, mention)
        await until(lambda: bool(buttons(thread)), WITHIN, "the thread's buttons")
        await a.deliver(slack, slack.command("write the summary", user="U1", channel="C1"))
        await until(lambda: len(buttons()) == 1, WITHIN, "the channel's buttons")
        in_thread, in_channel = buttons(thread)[0], buttons()[0]
        # A is gone: only B can say the questions were skipped.
        assert await a.bot.stop(signal.SIGTERM) == 0, a.bot.log

        new = slack.mention(f"<@{BOT_USER_ID}> something else", channel="C1", thread_ts=thread)
        await b.deliver(slack, new)
        await until(lambda: in_thread.text == notices.SKIPPED_BY_QUESTION, WITHIN, "the thread's buttons")
        await b.deliver(slack, slack.command("reset", user="U1", channel="C1"))
        await until(lambda: in_channel.text == notices.SKIPPED_BY_RESET, WITHIN, "the channel's buttons")

    assert not in_thread.action_ids and not in_channel.action_ids
    assert all("tool_results" not in (body or {}) for body in fake_upstream.bodies)


async def test_rate_limits_count_across_processes(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack, pg_url: str
) -> None:
    async with replicas(tmp_path, fake_upstream, slack, pg_url, ACECHAT_USER_RATE="2/60") as (a, b):
        # Two users, each asking three times within the minute, alternately at the two processes:
        # the third is refused by whichever process gets it.
        refusals: dict[str, str] = {}
        for user, order in (("U1", (a, b, a)), ("U2", (b, a, b))):
            for n, replica in enumerate(order, 1):
                tag = f"q-{user}-{n}"
                command = slack.command(tag, user=user, channel=f"C{user}")
                await replica.deliver(slack, command)
                if n < 3:
                    await until(lambda t=tag: bool(asked(fake_upstream, t)), WITHIN, f"{tag} upstream")
                else:
                    key = command["response_url"].rsplit("/", 1)[1]
                    await until(lambda k=key: bool(slack.responses_to(k)), WITHIN, f"{tag} refused")
                    refusals[user] = slack.responses_to(key)[0].text
        limited = [(await r.metrics()).get('acechat_rate_limited_total{limit="user"}') for r in (a, b)]

    assert all("faster than this bot allows" in text for text in refusals.values()), refusals
    assert [asked(fake_upstream, f"q-{user}-3") for user in ("U1", "U2")] == [[], []]
    assert len(fake_upstream.requests) == 4
    assert limited == [1.0, 1.0]  # a refused U1's third question, b U2's


async def test_two_discord_processes_serve_one_shard_each_and_answer_every_mention_once(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str
) -> None:
    bots: list[BotProcess] = []
    async with FakeDiscord(
        token=TOKEN.replace("fake-signature", "shards-signature"), second_guild=True
    ) as discord:
        try:
            for shard in (0, 1):
                env = bot_environment(
                    tmp_path,
                    fake_upstream,
                    DISCORD_BOT_TOKEN=discord.token,
                    DISCORD_API_BASE_URL=discord.api_base,
                    DISCORD_GATEWAY_URL=discord.gateway_url,
                    DISCORD_SHARD_COUNT="2",
                    DISCORD_SHARD_IDS=str(shard),
                    ACECHAT_DATABASE_URL=pg_url,
                    ACECHAT_LOG_JSON="true",
                )
                bots.append(await BotProcess.start(tmp_path, "discord", env, name=f"shard{shard}"))

            def ready(bot: BotProcess, shard: int) -> bool:
                bot.alive()
                return f'"Discord shard {shard} is ready"' in bot.log

            await until(lambda: ready(bots[0], 0) and ready(bots[1], 1), WITHIN, "both shards ready")
            # Shard 0 has the first guild and DMs, shard 1 the second guild.
            here = await discord.post_message(f"<@{discord.BOT_ID}> q-first-guild")
            there = await discord.post_message(
                f"<@{discord.BOT_ID}> q-second-guild", channel_id=discord.SECOND_CHANNEL_ID
            )
            direct = await discord.post_message("q-direct", channel_id=discord.DM_CHANNEL_ID)

            def replies(asked_id: int) -> list[Any]:
                return [m for m in discord.bot_messages() if m.reference_id == asked_id]

            await until(lambda: all(replies(m) for m in (here, there, direct)), WITHIN, "three answers")
            for bot in bots:
                assert await bot.stop(signal.SIGTERM) == 0, bot.log
        finally:
            for bot in bots:
                await bot.kill_if_running()

    assert sorted(tuple(i["shard"]) for i in discord.identifies) == [(0, 2), (1, 2)]
    assert [len(replies(m)) for m in (here, there, direct)] == [1, 1, 1]
    assert len(fake_upstream.requests) == 3

    def answered(bot: BotProcess) -> set[str]:
        entries = [json.loads(line) for line in bot.log.splitlines() if line.startswith("{")]
        return {e["channel"] for e in entries if e["message"] == "answered"}

    assert answered(bots[0]) == {str(discord.CHANNEL_ID), str(discord.DM_CHANNEL_ID)}
    assert answered(bots[1]) == {str(discord.SECOND_CHANNEL_ID)}
    conn = await asyncpg.connect(pg_url)
    try:
        keys = {row[0] for row in await conn.fetch("SELECT scope_key FROM conversations")}
    finally:
        await conn.close()
    assert keys == {
        Scope.of("discord", str(discord.GUILD_ID), str(discord.CHANNEL_ID)).key,
        Scope.of("discord", str(discord.SECOND_GUILD_ID), str(discord.SECOND_CHANNEL_ID)).key,
        Scope.of("discord", None, str(discord.DM_CHANNEL_ID)).key,
    }
    for bot in bots:
        assert "Traceback" not in bot.log, bot.log
    assert not (tmp_path / "acechat.db").exists()
