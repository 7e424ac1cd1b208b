"""Admins' controls on Discord end to end: real discord.py against FakeDiscord and FakeUpstream, slash
commands with autocomplete, roles, engaged threads and a restart on the same database (issue 17)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from acechat.bots.discord_bot import INVITE_PERMISSIONS, DiscordAdapter, invite_url
from acechat.bots.discord_settings import DiscordSettings
from acechat.core.chat import ChatCore
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.discord import (
    CREATE_PUBLIC_THREADS,
    EPHEMERAL,
    FakeDiscord,
    FakeInteraction,
    FakeMessage,
    Mention,
)
from tests.fakes.upstream import FakeUpstream

BOT = f"<@{FakeDiscord.BOT_ID}>"


@pytest.fixture(autouse=True)
def restore_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Route, "BASE", Route.BASE)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings, fake: FakeDiscord) -> Settings:
    return Settings(
        upstream=replace(upstream_settings, retries=0),
        platforms={
            "discord": DiscordSettings(
                token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url
            )
        },
        db_path=tmp_path / "acechat.db",
        user_rate=RateLimit(0, 60.0),
        channel_rate=RateLimit(0, 60.0),
        shutdown_grace=5.0,
    )


@asynccontextmanager
async def running(settings: Settings, fake: FakeDiscord) -> AsyncIterator[DiscordAdapter]:
    discord_settings = settings.platform("discord", DiscordSettings)
    assert discord_settings is not None
    core = await ChatCore.open(settings)
    adapter = DiscordAdapter(core, discord_settings, guild_ready_timeout=0.05, connect_timeout=10)
    try:
        await adapter.start()
        await fake.wait_for(lambda: adapter.connected)
        yield adapter
    finally:
        await adapter.close()
        await core.aclose()


async def reply_to(fake: FakeDiscord, record: FakeInteraction) -> str:
    await fake.wait_for(lambda: record.original is not None)
    return record.texts()[0]


async def command(fake: FakeDiscord, name: str, options: dict[str, Any] | None = None, **kw: Any) -> str:
    kw.setdefault("user", fake.admin)
    return await reply_to(fake, await fake.slash(name, options or {}, **kw))


async def mentionable(fake: FakeDiscord, name: str, who: int, *, role: bool, user: Any = None) -> str:
    """`/users allow|deny|remove who:@someone`: a MENTIONABLE option, resolved as Discord sends it."""
    return await command(fake, name, {"who": Mention(who, role=role)}, user=user or fake.admin)


def replies(fake: FakeDiscord, message_id: int) -> list[FakeMessage]:
    return [m for m in fake.bot_messages() if m.reference_id == message_id]


_probes = itertools.count(1)


async def probe(fake: FakeDiscord, bot: DiscordAdapter) -> None:
    """An admin's question, answered whatever the controls say: once it is answered, every message
    posted before it has been handled (refusals and ignored messages leave little else to wait on)."""
    n = next(_probes)
    sent = await fake.post_message(f"{BOT} probe {n}", author=fake.admin, channel_id=fake.OTHER_CHANNEL_ID)
    await fake.wait_for(lambda: any(m.content.endswith(f"probe {n}") for m in replies(fake, sent)), 10)
    # Questions admitted before it may still be answering.
    await fake.wait_for(lambda: bot.core.in_flight == 0, 10)


def asked(fake_upstream: FakeUpstream) -> list[str]:
    """The questions that went upstream, probes left out."""
    return [b["question"] for b in fake_upstream.bodies if b and ": probe " not in b["question"]]


async def test_where_channel_off_and_access_listed_refuse_once_an_hour_then_silence(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream
) -> None:
    async with running(settings, fake) as bot:
        refused = await fake.slash("channel", {"state": "off"}, user=fake.member)
        assert "needs manage channels" in (await reply_to(fake, refused)).lower() and refused.ephemeral
        done = await fake.slash("channel", {"state": "off"}, user=fake.admin)
        assert "turned me off in this channel" in await reply_to(fake, done) and not done.ephemeral

        first = await fake.post_message(f"{BOT} hello?")
        second = await fake.post_message(f"{BOT} hello again?")
        await probe(fake, bot)
        assert asked(fake_upstream) == []
        [notice] = replies(fake, first)
        assert "turned off in this channel" in notice.content
        assert replies(fake, second) == [] and not fake.reactions  # then silence

        assert "`listed`" in await command(fake, "access", {"mode": "listed"})
        other = await fake.post_message(f"{BOT} over here", channel_id=fake.OTHER_CHANNEL_ID)
        await probe(fake, bot)
        assert "only answer in channels an admin has turned on" in replies(fake, other)[0].content
        # Threads follow their channel.
        threaded = await fake.post_message(f"{BOT} in the thread", channel_id=fake.THREAD_ID)
        await probe(fake, bot)
        assert asked(fake_upstream) == [] and replies(fake, threaded) == []  # the notice was said this hour

        status = await command(fake, "status", user=fake.member)
        assert "**Here:** turned off (channel setting; access `listed`, workspace setting)" in status
        assert "Manage Channels" not in status
        # A value outside the choices is not a command.
        assert "not one of the choices" in await command(fake, "channel", {"state": "sideways"})
        # Discord DMs are the operator's: the command says so.
        assert "with ACECHAT_DISCORD_DMS." in await command(fake, "access", {"mode": "dms off"})

    async with running(settings, fake) as bot:  # a restart
        later = await fake.post_message(f"{BOT} after the restart")
        await probe(fake, bot)
        assert asked(fake_upstream) == [] and len(replies(fake, later)) == 1
        assert "turned me on" in await command(fake, "channel", {"state": "on"})
        await fake.post_message(f"{BOT} answered now")
        await probe(fake, bot)
        assert asked(fake_upstream) == ["Max: answered now"]
        audit = await command(fake, "audit")
        assert f"· channel · channel {fake.CHANNEL_ID} · `off` → `on`" in audit


async def test_discord_dms_follow_the_operator_setting(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream
) -> None:
    discord_settings = settings.platform("discord", DiscordSettings)
    assert discord_settings is not None
    closed = replace(settings, platforms={"discord": replace(discord_settings, dms=False)})
    async with running(closed, fake) as bot:
        dm = await fake.post_message("hello in private", channel_id=fake.DM_CHANNEL_ID)
        await probe(fake, bot)
        assert asked(fake_upstream) == []
        assert "Direct messages to me are turned off" in replies(fake, dm)[0].content
        status = await command(fake, "status", user=fake.member, channel_id=fake.DM_CHANNEL_ID)
        assert "**Direct messages:** the operator's setting (ACECHAT_DISCORD_DMS)" in status


async def test_who_roles_and_members_on_the_lists_with_deny_winning(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream
) -> None:
    fake.roles[fake.MEMBER_ID] = [fake.HELPER_ROLE_ID]
    async with running(settings, fake) as bot:
        assert (
            "needs manage server"
            in (
                await mentionable(fake, "users deny", fake.HELPER_ROLE_ID, role=True, user=fake.member)
            ).lower()
        )
        assert "deny list" in await mentionable(fake, "users deny", fake.HELPER_ROLE_ID, role=True)
        first = await fake.post_message(f"{BOT} may I?")
        await probe(fake, bot)
        assert asked(fake_upstream) == []
        assert "not allowed you" in replies(fake, first)[0].content
        # Allowing the member does not beat the deny of their role.
        assert "allow list" in await mentionable(fake, "users allow", fake.MEMBER_ID, role=False)
        await fake.post_message(f"{BOT} and now?")
        await probe(fake, bot)
        assert asked(fake_upstream) == []
        listing = await command(fake, "users list")
        assert f"role `{fake.HELPER_ROLE_ID}`" in listing and f"user `{fake.MEMBER_ID}`" in listing
        assert "off the deny list" in await mentionable(fake, "users remove", fake.HELPER_ROLE_ID, role=True)
        await fake.post_message(f"{BOT} allowed at last")
        await probe(fake, bot)
        assert asked(fake_upstream) == ["Max: allowed at last"]
        # /ask carries the roles too.
        await mentionable(fake, "users deny", fake.HELPER_ROLE_ID, role=True)
        slash = await fake.slash("ask", {"question": "by slash"}, user=fake.member)
        await fake.wait_for(lambda: bool(slash.followups))
        await probe(fake, bot)
        assert asked(fake_upstream) == ["Max: allowed at last"]
        # A slash command's refusal is for the asker alone.
        [refusal] = slash.followups
        assert refusal.flags & EPHEMERAL and "not allowed you" in refusal.content and slash.deleted_original


async def test_quotas_usage_and_autocomplete(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream
) -> None:
    async with running(settings, fake) as bot:
        levels = await fake.autocomplete(
            "quota", {"level": "us", "amount": ""}, focused="level", user=fake.admin
        )
        amounts = await fake.autocomplete("quota", {"level": "user", "amount": "tok"}, focused="amount")
        await fake.wait_for(lambda: bool(levels.callbacks and amounts.callbacks))
        assert [c["value"] for c in levels.choices] == ["user"]
        assert [c["value"] for c in amounts.choices] == ["200000 tokens/day"]

        assert (
            "needs manage server"
            in (await command(fake, "quota", {"level": "user", "amount": "1/day"}, user=fake.member)).lower()
        )
        assert "quota of 1 question a day per user" in await command(
            fake, "quota", {"level": "user", "amount": "1/day"}
        )
        await fake.post_message(f"{BOT} one")
        await probe(fake, bot)
        second = await fake.post_message(f"{BOT} two")
        await probe(fake, bot)
        assert asked(fake_upstream) == ["Max: one"]
        assert replies(fake, second)[0].content.startswith("Your quota of 1 question a day is used up")

    async with running(settings, fake) as bot:  # counted in the database
        third = await fake.post_message(f"{BOT} three")
        await probe(fake, bot)
        assert asked(fake_upstream) == ["Max: one"] and len(replies(fake, third)) == 1
        usage = await command(fake, "usage", {"period": "7d"})
        assert "questions (" in usage and f"`{fake.MEMBER_ID}` 1" in usage
        assert "cleared the user quota" in await command(fake, "quota", {"level": "user", "amount": "off"})


async def test_engaged_threads_answer_people_without_a_mention_and_survive_a_restart(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream
) -> None:
    async with running(settings, fake) as bot:
        await fake.post_message(f"{BOT} first in the thread", channel_id=fake.THREAD_ID)
        await fake.post_message("a follow-up without a mention", channel_id=fake.THREAD_ID)
        await probe(fake, bot)
        assert asked(fake_upstream) == ["Max: first in the thread"]

        assert (
            "needs manage channels"
            in (await command(fake, "engage", {"mode": "thread"}, user=fake.member)).lower()
        )
        assert "`engage thread`" in await command(fake, "engage", {"mode": "thread"})
        await fake.post_message(f"{BOT} engage this thread", channel_id=fake.THREAD_ID)
        await fake.post_message("no mention needed now", channel_id=fake.THREAD_ID)
        # Other bots, and messages for someone else, are left alone.
        await fake.post_message("bot chatter", channel_id=fake.THREAD_ID, author=fake.other_bot)
        await fake.post_message(f"<@{fake.ADMIN_ID}> what do you think?", channel_id=fake.THREAD_ID)
        # Messages in the channel itself still need a mention.
        await fake.post_message("not in a thread")
        await probe(fake, bot)
        assert asked(fake_upstream) == [
            "Max: first in the thread",
            "Max: engage this thread",
            "Max: no mention needed now",
        ]

    async with running(settings, fake) as bot:
        await fake.post_message("after the restart", channel_id=fake.THREAD_ID)
        await probe(fake, bot)
        assert asked(fake_upstream)[-1] == "Max: after the restart"
        assert "`engage mention`" in await command(fake, "engage", {"mode": "mention"})
        await command(fake, "engage", {"mode": "thread"})
        await fake.post_message("the thread was forgotten", channel_id=fake.THREAD_ID)
        await probe(fake, bot)
        assert asked(fake_upstream)[-1] == "Max: after the restart"


async def test_autothread_opens_a_thread_named_from_the_question_and_answers_there(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings, fake) as bot:
        assert (
            "needs manage channels"
            in (await command(fake, "autothread", {"state": "on"}, user=fake.member)).lower()
        )
        assert "turned autothread on" in await command(fake, "autothread", {"state": "on"})
        await command(fake, "engage", {"mode": "thread"})
        question = await fake.post_message(f"{BOT} how do   threads work?\nsecond line")
        await probe(fake, bot)
        [thread] = fake.threads.values()
        assert thread["name"] == "how do threads work?" and int(thread["id"]) == question
        [answer] = fake.bot_messages(question)  # the thread's id is the question's
        assert answer.content == "Answer 1 to: Max: how do   threads work?\nsecond line"
        assert replies(fake, question) == []  # nothing in the channel itself
        # A thread the bot opened is engaged: no mention needed there.
        await fake.post_message("and a follow-up", channel_id=question)
        await probe(fake, bot)
        assert asked(fake_upstream)[-1] == "Max: and a follow-up"
        assert fake.bot_messages(question)[-1].content == "Answer 2 to: Max: and a follow-up"

        # Without Create Public Threads the answer comes in the channel, as before.
        fake.denied_permissions = CREATE_PUBLIC_THREADS
        fallback = await fake.post_message(f"{BOT} no thread for me")
        await probe(fake, bot)
        assert len(fake.threads) == 1
        assert replies(fake, fallback)[0].content.endswith("no thread for me")
        assert "could not open a thread" in caplog.text

    caplog.clear()
    caplog.set_level(logging.INFO, logger="acechat.bots.discord_bot")
    async with running(settings, fake):  # start-up says what is missing
        pass
    assert "autothread is on in #general" in caplog.text and "lacks Create Public Threads" in caplog.text
    assert f"permissions={INVITE_PERMISSIONS.value | CREATE_PUBLIC_THREADS}" in caplog.text
    assert invite_url(1).endswith(f"permissions={INVITE_PERMISSIONS.value}")


async def test_transcripts_off_and_forget_me_by_slash_command(
    settings: Settings, fake: FakeDiscord, fake_upstream: FakeUpstream
) -> None:
    async with running(settings, fake) as bot:
        await fake.post_message(f"{BOT} remember this")
        await probe(fake, bot)
        assert (
            "needs manage server"
            in (await command(fake, "transcripts", {"state": "off"}, user=fake.member)).lower()
        )
        assert "turned transcripts off" in await command(fake, "transcripts", {"state": "off"})
        await fake.post_message(f"{BOT} not this")
        await probe(fake, bot)
        questions = [r[0] for r in await _rows(bot, "SELECT question FROM transcripts")]
        assert "remember this" in questions and "not this" not in questions
        forgot = await fake.slash("forget me", user=fake.member)
        assert (await reply_to(fake, forgot)).startswith(
            "Deleted 1 of your questions and answers and 2 usage"
        )
        assert forgot.ephemeral
        assert [r[0] for r in await _rows(bot, "SELECT author_id FROM transcripts")] == [str(fake.ADMIN_ID)]


async def _rows(bot: DiscordAdapter, sql: str) -> list[tuple[Any, ...]]:
    def read() -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(bot.core.settings.db_path)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    return await asyncio.to_thread(read)
