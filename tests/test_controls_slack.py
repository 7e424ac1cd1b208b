"""Admins' controls on Slack end to end: real slack-bolt against FakeSlack and FakeUpstream, signed
requests, a restart on the same database (issue 17)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from acechat.bots.slack_settings import SlackSettings
from acechat.core.settings import Settings, UpstreamSettings
from tests.conftest import SLACK_ADMIN as ADMIN
from tests.fakes.slack import BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack
from tests.fakes.upstream import FakeUpstream
from tests.test_slack import Bot, running, with_slack

MENTION = f"<@{BOT_USER_ID}>"


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack) -> Settings:
    return Settings(
        upstream=replace(upstream_settings, read_timeout=10.0),
        platforms={
            "slack": SlackSettings(
                bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=slack.api_url, port=0
            )
        },
        db_path=tmp_path / "acechat.db",
        shutdown_grace=5.0,
    )


async def command(slack: FakeSlack, bot: Bot, text: str, *, user: str = ADMIN, channel: str = "C1") -> str:
    """`/aichat TEXT`; returns the text of the one reply."""
    payload = slack.command(text, user=user, channel=channel)
    assert (await slack.deliver_http(bot.url, payload)).status == 200
    await bot.adapter.transport.idle()
    replies = slack.responses_to(payload["response_url"].rsplit("/", 1)[1])
    return "\n".join(r.text for r in replies)


async def mention(
    slack: FakeSlack,
    bot: Bot,
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    thread_ts: str | None = None,
) -> dict[str, Any]:
    payload = slack.mention(f"{MENTION} {text}", user=user, channel=channel, thread_ts=thread_ts)
    await slack.deliver_http(bot.url, payload)
    await bot.adapter.transport.idle()
    return payload


async def thread_message(
    slack: FakeSlack,
    bot: Bot,
    text: str,
    thread_ts: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    **extra: Any,
) -> dict[str, Any]:
    """A reply in a thread, as the `message.channels` subscription delivers it."""
    ts = slack.next_ts()
    event = {
        "type": "message",
        "channel_type": "channel",
        "user": user,
        "text": text,
        "ts": ts,
        "thread_ts": thread_ts,
        "channel": channel,
        "event_ts": ts,
        "team": slack.team_id,
        **extra,
    }
    payload = slack.event(event)
    await slack.deliver_http(bot.url, payload)
    await bot.adapter.transport.idle()
    return payload


def ephemerals_to(slack: FakeSlack, user: str) -> list[str]:
    return [str(e["text"]) for e in slack.ephemerals if e.get("user") == user]


async def test_where_channel_off_access_listed_and_dms_refuse_privately_and_survive_a_restart(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        # A member cannot turn the bot off; an admin can, and the channel hears it.
        assert "needs" in await command(slack, bot, "channel off", user="U1")
        assert "turned me off in this channel" in await command(slack, bot, "channel off")
        await mention(slack, bot, "are you there?")
        assert len(fake_upstream.requests) == 0
        [refusal] = ephemerals_to(slack, "U1")
        assert "turned off in this channel" in refusal
        # Admins are never refused.
        await mention(slack, bot, "admin question", user=ADMIN)
        assert len(fake_upstream.requests) == 1

        assert "`listed`" in await command(slack, bot, "access listed")
        await mention(slack, bot, "in another channel", channel="C2")
        assert len(fake_upstream.requests) == 1
        assert "only answer in channels an admin has turned on" in ephemerals_to(slack, "U1")[-1]

        assert "off" in await command(slack, bot, "access dms off")
        await slack.deliver_http(bot.url, slack.direct_message("hi in private"))
        await bot.adapter.transport.idle()
        assert len(fake_upstream.requests) == 1
        assert "Direct messages to me are turned off" in ephemerals_to(slack, "U1")[-1]
        # A command typed in a DM channel is a direct message too.
        await command(slack, bot, "a question in a DM", user="U1", channel="D1")
        assert len(fake_upstream.requests) == 1

        status = await command(slack, bot, "status", user="U1")
        assert "*Here:* turned off (channel setting; access `listed`, workspace setting)" in status

    async with running(settings) as bot:  # a restart: the controls are in the database
        await mention(slack, bot, "after the restart", channel="C2")
        assert len(fake_upstream.requests) == 1
        assert "turned me on" in await command(slack, bot, "channel on", channel="C2")
        await mention(slack, bot, "now?", channel="C2")
        assert len(fake_upstream.requests) == 2
        audit = await command(slack, bot, "audit")
        assert "· channel · channel C2 · — → `on`" in audit
        assert "· channel · channel C1 · — → `off`" in audit
        assert "· access · channel C1 · — → `listed`" in audit


async def test_who_deny_wins_allow_lists_and_remove(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    assert "needs" in await command(slack, bot, "users deny <@U2|bob>", user="U1")
    assert "put user `U2` on the deny list" in await command(slack, bot, "users deny <@U2|bob>")
    await mention(slack, bot, "let me in", user="U2")
    assert len(fake_upstream.requests) == 0
    assert "not allowed you" in ephemerals_to(slack, "U2")[-1]
    await mention(slack, bot, "anyone else may ask", user="U1")
    assert len(fake_upstream.requests) == 1

    # With an allow list only those on it (and admins) may ask; allowing lifts a deny.
    assert "on the allow list" in await command(slack, bot, "users allow <@U3|cy>")
    await mention(slack, bot, "and me?", user="U1")
    assert len(fake_upstream.requests) == 1
    assert "Only people an admin has allowed" in ephemerals_to(slack, "U1")[-1]
    assert "lifting the deny" in await command(slack, bot, "users allow <@U2>")
    await mention(slack, bot, "allowed now", user="U2")
    assert len(fake_upstream.requests) == 2

    listing = await command(slack, bot, "users list")
    assert "*Allowed*" in listing and "user `U2`" in listing and "user `U3`" in listing
    assert "off the allow list" in await command(slack, bot, "users remove U2")
    assert "on neither list" in await command(slack, bot, "users remove U2")
    audit = await command(slack, bot, "audit")
    assert "· users · channel C1 · `allow` → `user:U2 removed`" in audit
    assert "· users · channel C1 · `deny` → `user:U2 allow`" in audit


@pytest.fixture
async def bot(settings: Settings) -> Any:
    async with running(settings) as b:
        yield b


async def test_quotas_refuse_past_the_limit_until_the_utc_day_ends_and_usage_shows_it(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        assert "needs" in await command(slack, bot, "quota user 1/day", user="U1")
        assert "quota of 1 question a day per user" in await command(slack, bot, "quota user 1/day")
        await mention(slack, bot, "first")
        await mention(slack, bot, "second")
        assert len(fake_upstream.requests) == 1
        [refusal] = ephemerals_to(slack, "U1")
        assert refusal.startswith("Your quota of 1 question a day is used up; it resets at 00:00 UTC")
        await mention(slack, bot, "another user", user="U2")
        assert len(fake_upstream.requests) == 2

    async with running(settings) as bot:  # the count is in the database
        await mention(slack, bot, "third")
        assert len(fake_upstream.requests) == 2
        assert "quota of 2 questions a day" in await command(slack, bot, "quota channel 2/day")
        await mention(slack, bot, "from U3", user="U3")
        assert len(fake_upstream.requests) == 2
        assert "This channel's quota" in ephemerals_to(slack, "U3")[-1]
        usage = await command(slack, bot, "usage")
        assert "*Usage today (UTC):* 2 questions (2 answered)" in usage
        assert "`U1` 1" in usage and "`U2` 1" in usage and "`C1` 2" in usage
        assert "cleared the channel quota" in await command(slack, bot, "quota channel off")
        assert "cleared the user quota" in await command(slack, bot, "quota user off")
        await mention(slack, bot, "fourth")
        assert len(fake_upstream.requests) == 3
        assert "needs" in await command(slack, bot, "usage 7d", user="U1")


async def test_engaged_threads_answer_without_a_mention_once_and_survive_a_restart(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        asked = await mention(slack, bot, "start a thread")
        thread = asked["event"]["ts"]
        # engage mention (the default): thread replies without a mention are not for the bot.
        await thread_message(slack, bot, "follow-up", thread)
        assert len(fake_upstream.requests) == 1

        assert "needs" in await command(slack, bot, "engage thread", user="U1")
        assert "`engage thread`" in await command(slack, bot, "engage thread")
        asked = await mention(slack, bot, "a new thread")
        thread = asked["event"]["ts"]
        await thread_message(slack, bot, "and a follow-up without a mention", thread, user="U2")
        assert len(fake_upstream.requests) == 3
        # Another bot, or a message for someone else, is left alone.
        await thread_message(slack, bot, "bot talk", thread, user="U9", bot_id="B9")
        await thread_message(slack, bot, "<@U5> what do you think?", thread)
        assert len(fake_upstream.requests) == 3
        # A mention in the thread arrives as app_mention and as message: answered once.
        both = await mention(slack, bot, "with a mention", thread_ts=thread)
        await thread_message(slack, bot, both["event"]["text"], thread, ts=both["event"]["ts"])
        assert len(fake_upstream.requests) == 4
        # A thread in a channel that never engaged: not answered, and its author not even looked up.
        await thread_message(slack, bot, "elsewhere", "999.1", channel="C2", user="U8")
        assert len(fake_upstream.requests) == 4
        assert not [c for c in slack.calls_to("users.info") if c.params.get("user") == "U8"]

    async with running(settings) as bot:  # engaged threads are in the database
        await thread_message(slack, bot, "after the restart", thread)
        assert len(fake_upstream.requests) == 5
        assert "`engage mention`" in await command(slack, bot, "engage mention")
        await thread_message(slack, bot, "no longer engaged", thread)
        assert len(fake_upstream.requests) == 5
        await command(slack, bot, "engage thread")
        await thread_message(slack, bot, "engaged threads were forgotten", thread)
        assert len(fake_upstream.requests) == 5


async def test_transcripts_off_keeps_no_text_and_forget_me_deletes_a_users_rows(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    await mention(slack, bot, "kept question")
    assert "needs" in await command(slack, bot, "transcripts off", user="U1")
    assert "turned transcripts off" in await command(slack, bot, "transcripts off")
    await mention(slack, bot, "private question")
    assert _query(bot, "SELECT question FROM transcripts") == [("kept question",)]
    assert (await bot.core.store.usage_totals(f"slack:{slack.team_id}", 0.0)).questions == 2
    reply = await command(slack, bot, "forget me", user="U1")
    assert reply.startswith("Deleted 1 of your questions and answers and 2 usage records here.")
    assert _query(bot, "SELECT question FROM transcripts") == []
    assert "`forget me`" not in reply
    # The audit says how many rows went, never what they held.
    audit = await command(slack, bot, "audit")
    assert "· forget me · channel C1 · — → `deleted 1 transcripts, 0 usage rows; 2 today's unnamed`" in audit
    assert "kept question" not in audit


async def test_a_channels_own_settings_typed_in_a_direct_message_are_refused_not_stored(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    for line in ("channel off", "engage thread", "engage mention"):
        reply = await command(slack, bot, line, channel="D1")
        assert "applies to channels: type it in the channel it should change" in reply, reply
        # A member hears first that the command is not theirs (tests/test_abuse.py).
        assert "needs" in await command(slack, bot, line, user="U1", channel="D1")
    assert "follow the workspace's `access dms on|off`" in await command(
        slack, bot, "channel off", channel="D1"
    )
    assert _query(bot, "SELECT key, name FROM controls") == []
    assert "No admin changes yet." in await command(slack, bot, "audit", channel="D1")
    # The workspace's own settings still work from a DM: they hold everywhere in it.
    assert "turned direct messages to me off" in await command(slack, bot, "access dms off", channel="D1")
    assert _query(bot, "SELECT name, value FROM controls") == [("dms", "off")]
    # In a channel, the same command is a change.
    assert "turned me off in this channel" in await command(slack, bot, "channel off")


def _query(bot: Bot, sql: str) -> list[tuple[Any, ...]]:
    """Read the bot's SQLite file beside it (WAL: readers never block the bot)."""
    conn = sqlite3.connect(bot.core.settings.db_path)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


async def test_the_channel_creator_and_the_admin_group_hold_channel_level_rights(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    grouped = with_slack(settings, admin_group="@ai-admins")
    slack.creators["C5"] = "U5"
    slack.usergroups["S1"] = ("ai-admins", ["U6"])
    async with running(grouped) as bot:
        # The creator may change their channel, and only at channel level, and only there.
        assert "turned me off in this channel" in await command(
            slack, bot, "channel off", user="U5", channel="C5"
        )
        assert "the channel's creator" in await command(slack, bot, "channel off", user="U5", channel="C1")
        assert "needs a workspace admin or owner" in await command(
            slack, bot, "access listed", user="U5", channel="C5"
        )
        # Admins are never refused by the channel switch; a member is.
        await mention(slack, bot, "creator asks", user="U5", channel="C5")
        await mention(slack, bot, "member asks", user="U1", channel="C5")
        assert [b["question"] for b in fake_upstream.bodies if b] == ["u5-display: creator asks"]
        # The operator's group holds channel rights in every channel.
        assert "`engage thread`" in await command(slack, bot, "engage thread", user="U6", channel="C1")
        assert "preset" in await command(slack, bot, "preset set coder", user="U6", channel="C1")
        assert "needs" in await command(slack, bot, "preset default coder", user="U6", channel="C1")
        status = await command(slack, bot, "status", user="U6", channel="C1")
        assert "never refuse you" in status
    assert {c.method for c in slack.calls} >= {
        "conversations.info",
        "usergroups.list",
        "usergroups.users.list",
    }
