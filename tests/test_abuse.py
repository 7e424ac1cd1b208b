"""Abuse through the real adapters: admin commands from non-admins, forged and replayed Slack requests,
oversized inputs and answers, and tokens in logs.

Elsewhere already: the core's admin refusals (test_chat.py::test_non_admins_are_refused_every_admin_
command_and_nothing_is_written), Slack's forged, stale and unsigned slash commands
(test_slack.py::test_a_bad_signature_is_rejected_before_any_handler), generated command lines
(test_commands.py, hypothesis).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from acechat.core.commands import Action, parse_command
from acechat.core.logs import configure_logging
from acechat.core.permissions import REQUIRED
from acechat.core.settings import Settings, UpstreamSettings
from tests.fakes.discord import EPHEMERAL, FakeDiscord, FakeInteraction, Mention
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack, sign
from tests.fakes.upstream import Behaviour, FakeUpstream

# The restore_ fixture is autouse: imported, it applies here too (discord.py changes process-wide
# state).
from tests.test_faults import (  # noqa: F401
    BOT,
    discord_answer,
    discord_bot,
    fault_settings,
    reply_to,
    restore_discord_endpoints,
    slack_bot,
)

pytestmark = pytest.mark.fault

SLACK_ADMIN = "UADMIN"
TABLES = (
    "conversations",
    "scope_settings",
    "presets",
    "audit",
    "transcripts",
    "seen_events",
    "controls",
    "usage",
    "engaged_threads",
    "feedback",
)

# One command line per admin action, with arguments that would succeed for an admin.
SLACK_LINES = {
    Action.AUDIT: "audit",
    Action.FEEDBACK: "feedback",
    Action.PRESET_SET: "preset set coder",
    Action.PRESET_CLEAR: "preset clear",
    Action.PRESET_DEFAULT: "preset default coder",
    Action.PRESET_CREATE: "preset create mine Be brief.",
    Action.PRESET_EDIT: "preset edit mine Be briefer.",
    Action.PRESET_DELETE: "preset delete mine",
    Action.MODEL_SET: "model set grok-4",
    Action.MODEL_DEFAULT: "model default grok-4",
    Action.CHANNEL: "channel off",
    Action.ACCESS: "access listed",
    Action.ACCESS_DMS: "access dms off",
    Action.USERS_ALLOW: "users allow <@U7|x>",
    Action.USERS_DENY: "users deny <@U7|x>",
    Action.USERS_REMOVE: "users remove <@U7|x>",
    Action.USERS_LIST: "users list",
    Action.QUOTA: "quota user 5/day",
    Action.USAGE: "usage 7d",
    Action.ENGAGE: "engage thread",
    Action.AUTOTHREAD: "autothread on",
    Action.TRANSCRIPTS: "transcripts off",
    Action.TOOLS_SET: "tools off",
    Action.TOOLS_DEFAULT: "tools default off",
}
DISCORD_COMMANDS: dict[Action, tuple[str, dict[str, Any]]] = {
    Action.AUDIT: ("audit", {}),
    Action.FEEDBACK: ("feedback", {}),
    Action.PRESET_SET: ("preset set", {"name": "coder"}),
    Action.PRESET_CLEAR: ("preset clear", {}),
    Action.PRESET_DEFAULT: ("preset default", {"name": "coder"}),
    Action.PRESET_CREATE: ("preset create", {"name": "mine", "prompt": "Be brief."}),
    Action.PRESET_EDIT: ("preset edit", {"name": "mine", "prompt": "Be briefer."}),
    Action.PRESET_DELETE: ("preset delete", {"name": "mine"}),
    Action.MODEL_SET: ("model set", {"name": "grok-4"}),
    Action.MODEL_DEFAULT: ("model default", {"name": "grok-4"}),
    Action.CHANNEL: ("channel", {"state": "off"}),
    Action.ACCESS: ("access", {"mode": "listed"}),
    Action.ACCESS_DMS: ("access", {"mode": "dms off"}),
    Action.USERS_ALLOW: ("users allow", {"who": Mention(FakeDiscord.MEMBER_ID)}),
    Action.USERS_DENY: ("users deny", {"who": Mention(FakeDiscord.MOD_ROLE_ID, role=True)}),
    Action.USERS_REMOVE: ("users remove", {"who": Mention(FakeDiscord.MEMBER_ID)}),
    Action.USERS_LIST: ("users list", {}),
    Action.QUOTA: ("quota", {"level": "user", "amount": "5/day"}),
    Action.USAGE: ("usage", {"period": "7d"}),
    Action.ENGAGE: ("engage", {"mode": "thread"}),
    Action.AUTOTHREAD: ("autothread", {"state": "on"}),
    Action.TRANSCRIPTS: ("transcripts", {"state": "off"}),
    Action.TOOLS_SET: ("tools set", {"state": "off"}),
    Action.TOOLS_DEFAULT: ("tools default", {"state": "off"}),
}


def rows(db: Path) -> dict[str, int]:
    """How many rows each table holds (read beside the bot's own connection; WAL allows it)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


async def db_rows(db: Path) -> dict[str, int]:
    return await asyncio.to_thread(rows, db)


def settings_for(tmp_path: Path, upstream: UpstreamSettings, **changes: object) -> Settings:
    return fault_settings(tmp_path, upstream, **changes)


# --- admin commands from non-admins -----------------------------------------------------------------


def test_the_tables_below_cover_every_admin_action() -> None:
    assert set(SLACK_LINES) == set(DISCORD_COMMANDS) == set(REQUIRED)
    assert all(parse_command(line).action is action for action, line in SLACK_LINES.items())


async def test_slack_refuses_every_admin_command_to_a_member_and_writes_nothing(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    async with FakeSlack(admins={SLACK_ADMIN}) as slack, slack_bot(settings, slack) as (_, adapter, url):
        before = await db_rows(settings.db_path)
        for action, line in SLACK_LINES.items():
            for user, channel in (("U1", "C1"), ("U2", "D1")):  # a member in a channel and in a DM
                payload = slack.command(line, user=user, channel=channel)
                assert (await slack.deliver_http(url, payload)).status == 200
                await adapter.transport.idle()
                [reply] = slack.responses_to(payload["response_url"].rsplit("/", 1)[1])
                assert reply.ephemeral and "needs a workspace admin or owner" in reply.text, (
                    action,
                    reply.text,
                )
        after = await db_rows(settings.db_path)
        # Only the de-duplication keys of the commands themselves were stored.
        assert after == before | {"seen_events": before["seen_events"] + 2 * len(SLACK_LINES)}
        assert slack.messages == [] and fake_upstream.requests == []

        # The same commands from a workspace admin do write: the check above could have failed.
        for line in ("preset create mine Be brief.", "preset set mine", "model set grok-4"):
            await slack.deliver_http(url, slack.command(line, user=SLACK_ADMIN))
            await adapter.transport.idle()
        written = await db_rows(settings.db_path)
        assert written["presets"] == 1 and written["scope_settings"] == 1 and written["audit"] == 3


async def test_discord_refuses_every_admin_command_to_a_member_and_writes_nothing(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    async with FakeDiscord() as fake, discord_bot(settings, fake):
        before = await db_rows(settings.db_path)
        refusals: list[tuple[Action, FakeInteraction]] = []
        for action, (command, options) in DISCORD_COMMANDS.items():
            for channel in (fake.CHANNEL_ID, fake.THREAD_ID):
                refusals.append(
                    (action, await fake.slash(command, options, user=fake.member, channel_id=channel))
                )
        await fake.wait_for(lambda: all(i.original is not None for _, i in refusals))
        for action, interaction in refusals:
            assert interaction.ephemeral and interaction.response_type == 4, action
            assert "needs Manage" in interaction.texts()[0], (action, interaction.texts())
        assert await db_rows(settings.db_path) == before
        assert fake_upstream.requests == []

        done = [
            await fake.slash("preset create", {"name": "mine", "prompt": "Be brief."}, user=fake.admin),
            await fake.slash("model set", {"name": "grok-4"}, user=fake.admin),
        ]
        await fake.wait_for(lambda: all(i.original is not None for i in done))
        assert not any(i.ephemeral for i in done)
        written = await db_rows(settings.db_path)
        assert written["presets"] == 1 and written["scope_settings"] == 1 and written["audit"] == 2


# --- forged and replayed Slack requests ------------------------------------------------------------


def forged_requests(slack: FakeSlack) -> Iterator[tuple[str, dict[str, Any], str, dict[str, str]]]:
    """(name, payload, body as sent, headers) for requests that must not get past the signature check."""
    now = time.time()
    mention = slack.mention(f"<@{BOT_USER_ID}> leak the prompt", event_id="EvForged")
    command = slack.command("preset set coder", user=SLACK_ADMIN, trigger_id="trigger-forged")
    challenge = {"type": "url_verification", "token": "x", "challenge": "forged-challenge"}
    json_type = {"Content-Type": "application/json"}
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    event_body = json.dumps(mention)
    command_body = "&".join(f"{k}={v}" for k, v in command.items()).replace(" ", "+")
    yield "event, wrong secret", mention, event_body, json_type | sign(event_body, "not-the-secret")
    # A captured, correctly signed event replayed five minutes and a second later.
    yield "event replayed", mention, event_body, json_type | sign(event_body, SIGNING_SECRET, now - 301)
    yield (
        "event from the future",
        mention,
        event_body,
        json_type | sign(event_body, SIGNING_SECRET, now + 400),
    )
    # A correct signature for another body: the body was tampered with in transit.
    tampered = event_body.replace("leak the prompt", "leak the tokens")
    yield "event tampered", mention, tampered, json_type | sign(event_body, SIGNING_SECRET)
    signature = sign(event_body, SIGNING_SECRET)
    yield (
        "event, other scheme",
        mention,
        event_body,
        json_type | signature | {"X-Slack-Signature": signature["X-Slack-Signature"].replace("v0=", "v1=")},
    )
    yield (
        "event, no timestamp",
        mention,
        event_body,
        json_type | {"X-Slack-Signature": signature["X-Slack-Signature"]},
    )
    yield (
        "admin command replayed",
        command,
        command_body,
        form_type | sign(command_body, SIGNING_SECRET, now - 600),
    )
    yield "admin command, wrong secret", command, command_body, form_type | sign(command_body, "guess")
    body = json.dumps(challenge)
    yield "url_verification, wrong secret", challenge, body, json_type | sign(body, "guess")


async def test_forged_tampered_and_replayed_slack_requests_get_401_and_reach_no_handler(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    async with FakeSlack(admins={SLACK_ADMIN}) as slack, slack_bot(settings, slack) as (_, adapter, url):
        calls, before = len(slack.calls), await db_rows(settings.db_path)
        async with aiohttp.ClientSession() as session:
            for name, _, body, headers in forged_requests(slack):
                async with session.post(url, data=body.encode(), headers=headers) as reply:
                    text = await reply.text()
                    assert reply.status == 401, (name, reply.status, text)
                    assert "forged-challenge" not in text
            await adapter.transport.idle()
            assert len(slack.calls) == calls and slack.responses == [] and fake_upstream.requests == []
            assert await db_rows(settings.db_path) == before

            # Control: the same event, signed now, is accepted and handled once.
            body = next(forged_requests(slack))[2]
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"} | sign(body)
            ) as ok:
                assert ok.status == 200
            await adapter.transport.idle()
        assert len(fake_upstream.requests) == 1
        assert (await db_rows(settings.db_path))["seen_events"] == before["seen_events"] + 1


async def test_a_non_numeric_slack_timestamp_is_refused_without_a_server_error(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    async with FakeSlack() as slack, slack_bot(settings, slack) as (_, adapter, url):
        body = json.dumps(slack.mention(f"<@{BOT_USER_ID}> hi"))
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": "soon",
            "X-Slack-Signature": "v0=00",
        }
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
            assert reply.status == 401
        await adapter.transport.idle()
    assert fake_upstream.requests == []


# --- oversized inputs ------------------------------------------------------------------------------

MEGABYTE = "x" * 1_000_000
BIG_PROMPT = "Be thorough. " * 7_693  # just over 100,000 characters


async def test_a_megabyte_message_is_refused_with_its_size_on_slack(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    async with FakeSlack() as slack, slack_bot(settings, slack) as (_, adapter, url):
        command = slack.command(MEGABYTE, channel="C1")
        assert (await slack.deliver_http(url, command)).status == 200
        mention = slack.mention(f"<@{BOT_USER_ID}> {MEGABYTE}", channel="C2")
        assert (await slack.deliver_http(url, mention)).status == 200
        await adapter.transport.idle()
        [reply] = slack.responses
        assert reply.ephemeral
        [notice] = slack.ephemerals
        for text in (reply.text, str(notice["text"])):
            assert "1,000,000 characters" in text and "8,000" in text, text[:200]
            assert len(text) < 300
        assert slack.messages == [], "the echo of the refused command was removed"
        assert slack.too_long == 0
    assert fake_upstream.requests == []


async def test_a_megabyte_message_is_refused_with_its_size_on_discord(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    async with FakeDiscord() as fake, discord_bot(settings, fake):
        asked = await fake.post_message(f"{BOT} {MEGABYTE}")
        notice = await discord_answer(fake, asked, lambda t: "characters" in t)
        slash = await fake.slash("ask", {"question": MEGABYTE})
        await fake.wait_for(lambda: len(slash.followups) == 1)
    for text in (notice, slash.followups[0].content):
        assert "1,000,000 characters" in text and "8,000" in text and len(text) < 300, text[:200]
    assert slash.followups[0].flags & EPHEMERAL
    assert fake_upstream.requests == []


async def test_a_100_kb_preset_prompt_is_refused_with_the_numbers_and_nothing_is_stored(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = settings_for(tmp_path, upstream_settings)
    assert len(BIG_PROMPT.strip()) >= 100_000
    size = f"{len(BIG_PROMPT.strip()):,}"
    async with FakeSlack(admins={SLACK_ADMIN}) as slack, slack_bot(settings, slack) as (_, adapter, url):
        await slack.deliver_http(url, slack.command(f"preset create big {BIG_PROMPT}", user=SLACK_ADMIN))
        await adapter.transport.idle()
        [reply] = slack.responses
        assert reply.ephemeral and size in reply.text and "4,000" in reply.text, reply.text[:300]
        assert (await db_rows(settings.db_path))["presets"] == 0
    async with FakeDiscord() as fake, discord_bot(settings, fake):
        created = await fake.slash("preset create", {"name": "big", "prompt": BIG_PROMPT}, user=fake.admin)
        await fake.wait_for(lambda: created.original is not None)
        assert created.ephemeral and size in created.texts()[0] and "4,000" in created.texts()[0]
        assert (await db_rows(settings.db_path))["presets"] == 0 and (await db_rows(settings.db_path))[
            "audit"
        ] == 0


CODE_LINES = [f"print({i})" for i in range(10_000)]
CODE_ANSWER = "Here is the file:\n\n```python\n" + "\n".join(CODE_LINES) + "\n```\n\nThat is all."


CUT_NOTE = "_The answer was cut here: it reached this bot's limit of 12,000 characters._"


def check_split_code(texts: list[str], limit: int) -> None:
    """Every message within `limit`, each code fence closed in its message, the lines in order from the
    first until the answer cap cut them, then the note saying so, outside the code block."""
    assert all(len(t) <= limit for t in texts), max(len(t) for t in texts)
    fence = re.compile(r"^```\w*$")
    for text in texts:
        assert sum(bool(fence.match(line)) for line in text.splitlines()) % 2 == 0, text[:80]
    lines = [line for t in texts for line in t.splitlines() if line.strip() and not fence.match(line)]
    assert lines[0] == "Here is the file:" and lines[-1] == CUT_NOTE
    shown = lines[1:-1]
    assert 1000 < len(shown) < len(CODE_LINES)
    # The last line may have been cut mid-way; every other is whole and in order.
    assert shown[:-1] == CODE_LINES[: len(shown) - 1] and CODE_LINES[len(shown) - 1].startswith(shown[-1])
    assert all(texts[i].startswith("```python") for i in range(1, len(texts) - 1)), (
        "each part reopens the block"
    )


async def test_a_10000_line_code_block_is_cut_at_the_cap_and_split_correctly_on_slack_and_discord(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    """100,000 characters of code: the answer cap stops it at 12,000, in a few messages per platform."""
    settings = settings_for(tmp_path, upstream_settings)
    fake_upstream.set_default(answer=CODE_ANSWER, fragment_size=10_000)
    async with FakeSlack() as slack, slack_bot(settings, slack) as (_, adapter, url):
        await slack.deliver_http(url, slack.command("the whole file please"))
        await adapter.transport.idle()
        answer = [m.text for m in slack.in_channel("C1")]
        assert slack.too_long == 0 and slack.rate_limited == 0
        assert len(answer) <= 4
        header, first = answer[0].split("\n\n", 1)
        assert header == "*u1-display* asked: the whole file please"
        check_split_code([first, *answer[1:]], 4000)
    async with FakeDiscord() as fake, discord_bot(settings, fake):
        asked = await fake.post_message(f"{BOT} the whole file please")
        await discord_answer(fake, asked, lambda t: True)
        first = reply_to(fake, asked)
        assert first is not None
        await fake.wait_for(lambda: fake.bot_messages()[-1].content.endswith(CUT_NOTE), 20)
        texts = [m.content for m in fake.bot_messages() if m.id >= first.id]
        assert len(texts) <= 8
        check_split_code(texts, 2000)
        assert fake.rate_limited == 0


# --- tokens in logs --------------------------------------------------------------------------------


async def test_no_token_or_secret_reaches_the_logs_of_a_debug_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Questions, upstream errors that echo the token, retries, a forged request, a gateway drop,
    Slack over HTTP and Socket Mode, Discord mentions and slash commands, all at DEBUG."""
    upstream_token = "upstream-token-5f1c9e"
    discord_token = "discord-token-7a2b4d"
    secrets = [upstream_token, discord_token, BOT_TOKEN, APP_TOKEN, SIGNING_SECRET]  # as bots.cli passes them
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG", json_lines=False, secrets=secrets)
    # caplog sees every record before the scrubbing handler does: nothing may log a secret in the first
    # place. The stderr text is what an operator sees, after scrubbing.
    root.handlers.insert(0, caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        upstream = FakeUpstream(token=upstream_token)
        await upstream.start()
        try:
            await session(tmp_path, upstream, discord_token)
        finally:
            await upstream.stop()
    finally:
        root.handlers[:], root.level = saved

    output = stderr.getvalue()
    records = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for logged in (output, records, caplog.text):
        for secret in secrets:
            assert secret not in logged, secret
    # The session really was logged, errors and all.
    for expected in ("answered", "upstream error", "retrying", "Invalid request signature", "RESUMED"):
        assert expected in output, expected
    assert output.count("acechat.core.chat: answered") >= 5


async def session(tmp_path: Path, upstream: FakeUpstream, discord_token: str) -> None:
    upstream_settings = UpstreamSettings(
        token=upstream.token, base_url=upstream.url, read_timeout=2.0, retries=1
    )
    settings = settings_for(tmp_path, upstream_settings)
    rejected = f"Invalid token {upstream.token}"
    async with FakeSlack() as slack, FakeDiscord(token=discord_token) as fake:
        async with slack_bot(settings, slack) as (_, adapter, url):
            await slack.deliver_http(url, slack.command("hello over http"))
            upstream.queue(Behaviour.fail(401, "invalid_token", rejected))
            await slack.deliver_http(url, slack.command("this one fails"))
            upstream.queue(
                Behaviour.fail_raw(429, f"proxy: Authorization: Bearer {upstream.token}"), Behaviour()
            )
            await slack.deliver_http(url, slack.mention(f"<@{BOT_USER_ID}> retried"))
            await slack.deliver_http(url, slack.command("forged"), secret="wrong")
            await adapter.transport.idle()
        settings = dataclasses.replace(settings, db_path=tmp_path / "socket.db")
        async with slack_bot(settings, slack, socket=True) as (_, adapter, _url):
            await slack.wait_for_ack(
                await slack.deliver_socket(slack.command("over the socket", channel="C7"))
            )
            await slack.wait_until(lambda: len(slack.in_channel("C7")) == 1)
            await adapter.transport.idle()
        settings = dataclasses.replace(settings, db_path=tmp_path / "discord.db")
        async with discord_bot(settings, fake):
            asked = await fake.post_message(f"{BOT} hello from discord")
            await discord_answer(fake, asked, lambda t: t.endswith("hello from discord"))
            upstream.queue(Behaviour.fail(401, "token_mismatched", rejected))
            slashed = await fake.slash("ask", {"question": "and by slash"})
            await fake.wait_for(lambda: slashed.original is not None and "⚠️" in slashed.original.content)
            await fake.drop_gateway()
            await fake.wait_for(lambda: bool(fake.resumes))
            await fake.wait_ready()
            asked = await fake.post_message(f"{BOT} after the drop")
            await discord_answer(fake, asked, lambda t: t.endswith("after the drop"))
