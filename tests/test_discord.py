"""The Discord adapter end to end: real discord.py over loopback against FakeDiscord and FakeUpstream."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import discord
import pytest
import pytest_asyncio
from discord.gateway import DiscordWebSocket
from discord.http import Route

from acechat.bots.discord_bot import DiscordAdapter, DiscordStartupError, invite_url
from acechat.bots.discord_commands import _choices, build_tree
from acechat.bots.discord_settings import DiscordSettings
from acechat.core.chat import ChatCore
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.discord import (
    EPHEMERAL,
    MANAGE_CHANNELS,
    FakeDiscord,
    FakeInteraction,
    FakeMessage,
    RestCall,
    attachment_payload,
)
from tests.fakes.upstream import Behaviour, FakeUpstream

BOT = f"<@{FakeDiscord.BOT_ID}>"


@pytest.fixture(autouse=True)
def restore_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter points discord.py's process-wide endpoints at the fake; put them back afterwards."""
    monkeypatch.setattr(Route, "BASE", Route.BASE)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings) -> Settings:
    return Settings(
        # No retries: a scripted upstream error reaches the user at once.
        upstream=replace(upstream_settings, retries=0),
        db_path=tmp_path / "acechat.db",
        user_rate=RateLimit(0, 60.0),
        channel_rate=RateLimit(0, 60.0),
        shutdown_grace=5.0,
    )


def discord_settings(fake: FakeDiscord, **changes: object) -> DiscordSettings:
    base = DiscordSettings(token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def bot(fake: FakeDiscord, core: ChatCore) -> AsyncIterator[DiscordAdapter]:
    adapter = DiscordAdapter(core, discord_settings(fake), guild_ready_timeout=0.05, connect_timeout=10)
    await adapter.start()
    await fake.wait_for(lambda: adapter.connected)
    try:
        yield adapter
    finally:
        await adapter.close()


async def answer_to(
    fake: FakeDiscord, message_id: int, final: str, seconds: float = 5.0
) -> list[FakeMessage]:
    """The bot's messages answering `message_id` (the reply, then its continuations), once the last ends
    with `final`."""

    def thread() -> list[FakeMessage]:
        replies = [m for m in fake.bot_messages() if m.reference_id == message_id]
        if not replies:
            return []
        first = replies[0]
        later = fake.bot_messages(first.channel_id)
        return [first, *(m for m in later if m.id > first.id and m.reference_id is None)]

    await fake.wait_for(lambda: bool(thread()) and thread()[-1].content.endswith(final), seconds)
    return thread()


def expected(question: str, turn: int = 1, author: str = "Max") -> str:
    """The fake upstream's default answer to the n-th turn of a conversation."""
    return f"Answer {turn} to: {author}: {question}"


# --- mentions and streaming -------------------------------------------------------------------------


async def test_mention_streams_a_reply_that_continues_past_2000_characters(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    paragraphs = [f"Paragraph {i}: " + "log rotation keeps disks from filling up. " * 8 for i in range(12)]
    code = "```python\n" + "\n".join(f"print('line {i}')" for i in range(60)) + "\n```"
    answer = "\n\n".join([*paragraphs[:5], code, *paragraphs[5:]])
    assert len(answer) > 4000
    # The model thinks a moment first: long enough for the bot to show it is typing.
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=120, fragment_delay=0.03, latency=0.3))

    asked = await fake.post_message(f"{BOT} how do I rotate a log file?")
    messages = await answer_to(fake, asked, paragraphs[-1].strip(), seconds=15)

    body = fake_upstream.bodies[0]
    assert body is not None and body["question"] == "Max: how do I rotate a log file?"
    assert len(messages) >= 3
    first = messages[0]
    assert first.reference_id == asked  # a reply to the question
    assert first.edits >= 1 and len(first.versions[0]) < len(first.content)  # streamed, not posted whole
    assert all(len(m.content) <= 2000 for m in messages)
    assert all(m.content.count("```") % 2 == 0 for m in messages)  # every code block closed in its message

    def words(text: str) -> list[str]:
        return [w for line in text.splitlines() if not line.startswith("```") for w in line.split()]

    assert words("\n".join(m.content for m in messages)) == words(answer)
    assert fake.rate_limited == 0
    assert any(channel == fake.CHANNEL_ID for channel, _ in fake.typing)


async def test_follow_up_mentions_reuse_the_upstream_conversation(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    first = await fake.post_message(f"{BOT} hello")
    await answer_to(fake, first, expected("hello"))
    second = await fake.post_message(f"{BOT}   and again?")
    await answer_to(fake, second, expected("and again?", turn=2))

    one, two = fake_upstream.bodies
    assert one is not None and two is not None
    assert "id" not in one or one["id"] is None
    assert two["id"] == next(iter(fake_upstream.conversations))


async def test_a_reply_to_the_bot_counts_as_addressing_it(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    first = await fake.post_message(f"{BOT} hello")
    [answer] = await answer_to(fake, first, expected("hello"))
    follow = await fake.post_message("tell me more", reply_to=answer.id, ping_reply=False)
    await answer_to(fake, follow, expected("tell me more", turn=2))


async def test_a_mention_with_no_text_gets_a_short_help_line(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    asked = await fake.post_message(BOT)
    await fake.wait_for(lambda: any(m.reference_id == asked for m in fake.bot_messages()))
    [notice] = [m for m in fake.bot_messages() if m.reference_id == asked]
    assert 0 < len(notice.content) < 300
    assert fake_upstream.requests == []


async def test_bots_itself_and_everyone_alone_are_ignored(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    await fake.post_message(f"{BOT} from a bot", author=fake.other_bot)
    await fake.post_message("@everyone is anyone there?")
    await fake.post_message("@here hello")
    await fake.post_message("no mention at all")
    last = await fake.post_message(f"{BOT} only this one")
    await answer_to(fake, last, expected("only this one"))
    # The bot's own answer comes back over the gateway too, before this: it must trigger nothing.
    after = await fake.post_message(f"{BOT} and this")
    await answer_to(fake, after, expected("and this", turn=2))
    assert [b["question"] for b in fake_upstream.bodies if b] == ["Max: only this one", "Max: and this"]


async def test_a_thread_is_its_own_conversation_with_the_parent_channels_preset(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    created = await fake.slash(
        "preset create", {"name": "pirate", "prompt": "Talk like a pirate."}, user=fake.admin
    )
    await fake.wait_for(lambda: bool(created.callbacks))
    chosen = await fake.slash("preset set", {"name": "pirate"}, user=fake.admin)
    await fake.wait_for(lambda: bool(chosen.callbacks))

    in_channel = await fake.post_message(f"{BOT} ahoy")
    await answer_to(fake, in_channel, expected("ahoy"))
    in_thread = await fake.post_message(f"{BOT} ahoy in a thread", channel_id=fake.THREAD_ID)
    [reply] = await answer_to(fake, in_thread, expected("ahoy in a thread"))
    assert reply.channel_id == fake.THREAD_ID

    channel_body, thread_body = fake_upstream.bodies
    assert channel_body is not None and thread_body is not None
    assert channel_body["preset"] == thread_body["preset"] == "Talk like a pirate."
    assert thread_body.get("id") is None  # a new conversation, not the channel's
    assert len(fake_upstream.conversations) == 2


async def test_direct_messages_need_no_mention(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    asked = await fake.post_message("what is a DM?", channel_id=fake.DM_CHANNEL_ID)
    [reply] = await answer_to(fake, asked, expected("what is a DM?"))
    assert reply.channel_id == fake.DM_CHANNEL_ID


async def test_two_mentions_at_once_are_answered_in_order(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(gate=gate))
    first = await fake.post_message(f"{BOT} first")
    second = await fake.post_message(f"{BOT} second")
    await fake_upstream.wait_for_requests(1)
    scope = f"discord:{fake.GUILD_ID}:{fake.CHANNEL_ID}:-"
    await fake.wait_for(lambda: bot.client.core._queued.get(scope) == 2)
    assert len(fake_upstream.requests) == 1  # the second question waits for the first answer
    gate.set()
    [one] = await answer_to(fake, first, expected("first"))
    [two] = await answer_to(fake, second, expected("second", turn=2))
    assert one.id < two.id
    assert [b["question"] for b in fake_upstream.bodies if b] == ["Max: first", "Max: second"]


# --- what the bot sends ---------------------------------------------------------------------------


async def test_nothing_the_model_writes_pings_anyone(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(
        Behaviour(answer=f"@everyone @here look at <@123> and <@&456> and <@{fake.ADMIN_ID}>")
    )
    asked = await fake.post_message(f"{BOT} ping people please")
    [reply] = await answer_to(fake, asked, f"{fake.ADMIN_ID}>")
    assert reply.pings() == set()
    for body in reply.bodies:  # the post and every edit
        allowed = body["allowed_mentions"]
        assert allowed["parse"] == [] and not allowed.get("users") and not allowed.get("roles")
        assert allowed.get("replied_user", False) is False


async def test_attachments_go_upstream_as_message_blocks_in_order(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    image = attachment_payload(901, "diagram.png", content_type="image/png")
    binary = attachment_payload(902, "tool.exe", content_type="application/octet-stream")
    asked = await fake.post_message(f"{BOT} what is in these?", attachments=[image, binary])
    [reply] = await answer_to(fake, asked, "._")
    assert "tool.exe" in reply.content  # the answer says what was skipped

    earlier = await fake.post_message(
        "here is a screenshot",
        attachments=[
            attachment_payload(903, "shot.jpg"),
            attachment_payload(905, "spec.pdf", content_type="application/pdf"),
        ],
    )
    own = attachment_payload(904, "notes.txt", content_type="text/plain")
    follow = await fake.post_message(
        f"{BOT} and this one?", reply_to=earlier, ping_reply=False, attachments=[own]
    )
    await answer_to(fake, follow, expected("and this one?", turn=2))

    first, second = fake_upstream.bodies
    assert first is not None and second is not None
    assert "references" not in first and "question" not in first
    assert first["message"] == [
        {"type": "text", "text": "Max: what is in these?"},
        {"type": "image_url", "image_url": {"url": image["url"]}},
    ]
    # The question's own files first, then those of the message it replies to, each in its order.
    assert [block["type"] for block in second["message"]] == ["text", "file_url", "image_url", "file_url"]
    assert second["message"][2] == {
        "type": "image_url",
        "image_url": {"url": "https://cdn.discordapp.com/attachments/1/903/shot.jpg"},
    }


async def test_upstream_403_and_429_give_clear_messages_and_the_bot_keeps_serving(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(Behaviour.fail(403, "used_up"), Behaviour.fail(429, "too_many_requests"))
    used_up = await fake.post_message(f"{BOT} one")
    await fake.wait_for(lambda: any(m.reference_id == used_up for m in fake.bot_messages()))
    busy = await fake.post_message(f"{BOT} two")
    await fake.wait_for(lambda: any(m.reference_id == busy for m in fake.bot_messages()))
    fine = await fake.post_message(f"{BOT} three")
    await answer_to(fake, fine, expected("three"))

    for asked in (used_up, busy):
        [notice] = [m for m in fake.bot_messages() if m.reference_id == asked]
        assert "⚠️" in notice.content
        assert "Traceback" not in notice.content and "fake-trace" not in notice.content
    texts = [m.content for m in fake.bot_messages() if m.reference_id in (used_up, busy)]
    assert texts[0] != texts[1]  # each failure has its own explanation


# --- slash commands --------------------------------------------------------------------------------


async def test_slash_commands_are_synced_on_start_with_the_admin_hint(
    fake: FakeDiscord, bot: DiscordAdapter
) -> None:
    synced = {c["name"]: c for c in fake.commands["global"]}
    controls = {
        "channel",
        "access",
        "users",
        "quota",
        "usage",
        "engage",
        "autothread",
        "transcripts",
        "forget",
    }
    assert set(synced) == {
        "ask",
        "reset",
        "status",
        "audit",
        "preset",
        "model",
        "tools",
        "feedback",
        "Ask acechat",
        *controls,
    }
    assert synced["Ask acechat"]["type"] == 3  # a message menu
    assert str(synced["preset"]["default_member_permissions"]) == "32"  # Manage Server
    assert str(synced["model"]["default_member_permissions"]) == "32"
    assert synced["ask"].get("default_member_permissions") is None
    subcommands = {o["name"] for o in synced["preset"]["options"]}
    assert {"list", "show", "set", "clear", "create", "edit", "delete"} <= subcommands
    assert bot.connected


async def test_a_dev_guild_gets_the_commands_instead(fake: FakeDiscord, core: ChatCore) -> None:
    adapter = DiscordAdapter(
        core, discord_settings(fake, dev_guild_id=fake.GUILD_ID), guild_ready_timeout=0.05
    )
    await adapter.start()
    try:
        assert {c["name"] for c in fake.commands[str(fake.GUILD_ID)]} >= {"ask", "preset"}
    finally:
        await adapter.close()


async def test_preset_set_is_refused_to_a_member_and_works_for_an_admin(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    created = await fake.slash(
        "preset create", {"name": "haiku", "prompt": "Answer in haiku."}, user=fake.admin
    )
    await fake.wait_for(lambda: bool(created.callbacks))
    refused = await fake.slash("preset set", {"name": "haiku"}, user=fake.member)
    await fake.wait_for(lambda: refused.original is not None)
    assert refused.ephemeral and refused.response_type == 4
    assert "needs manage" in refused.texts()[0].lower()

    done = await fake.slash("preset set", {"name": "haiku"}, user=fake.admin)
    await fake.wait_for(lambda: done.original is not None)
    assert not done.ephemeral  # a change the channel should see
    assert "haiku" in done.texts()[0]

    asked = await fake.post_message(f"{BOT} the sea?")
    await answer_to(fake, asked, expected("the sea?"))
    body = fake_upstream.bodies[-1]
    assert body is not None and body["preset"] == "Answer in haiku."


async def test_a_model_outside_the_allow_list_is_refused(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter, settings: Settings
) -> None:
    refused = await fake.slash("model set", {"name": "gpt-9-ultra"}, user=fake.admin)
    await fake.wait_for(lambda: refused.original is not None)
    assert refused.ephemeral
    allowed = await fake.slash("model set", {"name": "gpt-5.4-mini"}, user=fake.admin)
    await fake.wait_for(lambda: allowed.original is not None)
    assert not allowed.ephemeral

    asked = await fake.post_message(f"{BOT} which model?")
    await answer_to(fake, asked, expected("which model?"))
    body = fake_upstream.bodies[-1]
    assert body is not None and body["model"] == "gpt-5.4-mini"


async def test_names_autocomplete(fake: FakeDiscord, bot: DiscordAdapter) -> None:
    created = await fake.slash("preset create", {"name": "pirate", "prompt": "Arr."}, user=fake.admin)
    await fake.wait_for(lambda: bool(created.callbacks))
    presets = await fake.autocomplete("preset set", {"name": "pir"}, focused="name", user=fake.admin)
    models = await fake.autocomplete("model set", {"name": "mini"}, focused="name", user=fake.admin)
    await fake.wait_for(lambda: bool(presets.callbacks and models.callbacks))
    assert [c["value"] for c in presets.choices] == ["pirate"]
    assert {c["value"] for c in models.choices} == {"gpt-5.4-mini", "gemini-3.1-pro"}


async def test_slash_ask_streams_a_public_answer(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(Behaviour(answer="word " * 900, fragment_size=300, fragment_delay=0.02))
    asked = await fake.slash("ask", {"question": "say a lot"})
    await fake.wait_for(lambda: len(asked.texts()) == 3 and asked.texts()[-1].endswith("word"))
    assert asked.response_type == 5 and not asked.ephemeral  # deferred, public
    assert " ".join(asked.texts()).split() == ["word"] * 900
    assert all(m.bodies[-1]["allowed_mentions"]["parse"] == [] for m in asked.followups)
    body = fake_upstream.bodies[0]
    assert body is not None and body["question"] == "Max: say a lot"


async def test_status_answers_and_a_slash_refusal_is_ephemeral(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    status = await fake.slash("status")
    audit = await fake.slash("audit", user=fake.member)
    await fake.wait_for(lambda: status.original is not None and audit.original is not None)
    assert "claude-sonnet-4-6" in status.texts()[0]
    assert audit.ephemeral and "needs manage server" in audit.texts()[0].lower()


async def test_a_slash_ask_refused_by_the_core_is_shown_only_to_the_asker(
    fake: FakeDiscord, core: ChatCore, bot: DiscordAdapter
) -> None:
    asked = await fake.slash("ask", {"question": "x" * (core.settings.max_question_chars + 1)})
    await fake.wait_for(lambda: len(asked.followups) == 1)
    assert asked.deleted_original  # the public "thinking…" placeholder is gone
    assert asked.followups[0].flags & EPHEMERAL


# --- lifecycle --------------------------------------------------------------------------------------


async def test_without_the_message_content_intent_the_bot_still_answers_mentions(
    core: ChatCore, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeDiscord(privileged_intents=False) as fake:
        adapter = DiscordAdapter(core, discord_settings(fake), guild_ready_timeout=0.05)
        await adapter.start()
        try:
            assert not adapter.client.intents.message_content
            [line] = [r.getMessage() for r in caplog.records if "Message Content intent" in r.getMessage()]
            assert "replies that do not ping the bot" in line
            asked = await fake.post_message(f"{BOT} still there?")
            await answer_to(fake, asked, expected("still there?"))
        finally:
            await adapter.close()


async def test_an_invalid_token_is_one_clear_error(core: ChatCore) -> None:
    async with FakeDiscord(token="the-real-token") as fake:
        adapter = DiscordAdapter(
            core, replace(discord_settings(fake), token="wrong"), guild_ready_timeout=0.05
        )
        with pytest.raises(DiscordStartupError, match="DISCORD_BOT_TOKEN") as raised:
            await adapter.start()
        assert "wrong" not in str(raised.value)


def test_the_invite_url_asks_only_for_what_the_bot_needs() -> None:
    url = invite_url(42)
    assert "client_id=42" in url
    assert re.search(r"scope=bot(\+|%20)applications.commands", url)
    permissions = int(re.search(r"permissions=(\d+)", url).group(1))  # type: ignore[union-attr]
    # View Channel, Send Messages, Read Message History, Send Messages in Threads, Add Reactions.
    assert permissions == (1 << 10) | (1 << 11) | (1 << 16) | (1 << 38) | (1 << 6)


async def test_shards_follow_the_settings(fake: FakeDiscord, core: ChatCore) -> None:
    adapter = DiscordAdapter(
        core, discord_settings(fake, shard_count=2, shard_ids=(0, 1)), guild_ready_timeout=0.05
    )

    async def identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s between shards' IDENTIFYs, Discord's default pace; the fake needs none."""

    adapter.client.before_identify_hook = identify_at_once  # type: ignore[method-assign]
    await adapter.start()
    try:
        await fake.wait_for(lambda: adapter.connected)
        assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
        asked = await fake.post_message(f"{BOT} sharded?")
        await answer_to(fake, asked, expected("sharded?"))
    finally:
        await adapter.close()


async def test_the_bot_resumes_after_the_gateway_drops(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    await fake.drop_gateway()
    await fake.wait_for(lambda: len(fake.resumes) == 1)
    await fake.wait_ready()
    asked = await fake.post_message(f"{BOT} still there?")
    await answer_to(fake, asked, expected("still there?"))
    assert len(fake.identifies) == 1


async def test_shutdown_lets_an_answer_in_flight_finish_then_disconnects(
    fake: FakeDiscord, fake_upstream: FakeUpstream, core: ChatCore, bot: DiscordAdapter
) -> None:
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(gate=gate))
    asked = await fake.post_message(f"{BOT} slow one")
    await fake_upstream.wait_for_requests(1)

    draining = asyncio.create_task(core.drain())  # what bots.runtime does on SIGTERM, before close()
    late = await fake.post_message(f"{BOT} too late")
    await fake.wait_for(lambda: any(m.reference_id == late for m in fake.bot_messages()))
    assert not draining.done()
    gate.set()
    await asyncio.wait_for(draining, 5)
    await answer_to(fake, asked, expected("slow one"), seconds=0.5)

    await bot.close()
    assert not bot.connected
    assert len(fake_upstream.requests) == 1  # the late question was turned away, not asked


# --- hostile use ------------------------------------------------------------------------------------

CHANNEL_MANAGER_ROLE = 810000000000000042


async def test_manage_channels_changes_a_channel_but_never_the_server(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    """Manage Channels used to count as server admin: anyone trusted with one channel ran every command."""
    fake.role_permissions[CHANNEL_MANAGER_ROLE] = MANAGE_CHANNELS
    fake.roles[fake.MEMBER_ID] = [CHANNEL_MANAGER_ROLE]
    allowed = [
        ("preset set", {"name": "coder"}),
        ("model set", {"name": "grok-4"}),
        ("preset clear", {}),
    ]
    refused = [
        ("preset default", {"name": "coder"}),
        ("model default", {"name": "grok-4"}),
        ("preset create", {"name": "mine", "prompt": "Be brief."}),
        ("preset delete", {"name": "mine"}),
        ("audit", {}),
    ]
    runs = [(c, o, await fake.slash(c, o, user=fake.member)) for c, o in allowed + refused]
    await fake.wait_for(lambda: all(i.original is not None for _, _, i in runs))
    for command, _, interaction in runs[: len(allowed)]:
        assert "needs" not in interaction.texts()[0], (command, interaction.texts())
    for command, _, interaction in runs[len(allowed) :]:
        assert interaction.ephemeral, command
        assert "needs Manage Server or Administrator" in interaction.texts()[0], interaction.texts()


async def test_an_interaction_from_a_channel_discord_did_not_name_is_refused(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    """Without a channel id such a command used to land on a scope "0" shared by every such event."""
    payload = fake.interaction_payload("ask", {"question": "which channel?"}, user=fake.admin)
    payload["channel_id"] = "0"
    payload.pop("channel")
    record = FakeInteraction(int(payload["id"]), payload["token"], payload)
    fake.interactions[record.token] = record
    await fake.dispatch("INTERACTION_CREATE", payload)
    await fake.wait_for(lambda: record.original is not None)
    assert record.ephemeral and "can't tell which channel" in record.texts()[0]
    assert fake_upstream.requests == []


async def test_repeated_refusals_in_a_channel_become_a_reaction(
    fake: FakeDiscord, fake_upstream: FakeUpstream, settings: Settings
) -> None:
    """A refusal is a public reply on Discord: one per user per window, then only a reaction."""
    chat = await ChatCore.open(replace(settings, user_rate=RateLimit(1, 60.0)))
    adapter = DiscordAdapter(chat, discord_settings(fake), guild_ready_timeout=0.05)
    await adapter.start()
    try:
        first = await fake.post_message(f"{BOT} one")
        await answer_to(fake, first, expected("one"))
        asked = [await fake.post_message(f"{BOT} again {i}") for i in range(4)]
        await fake.wait_for(lambda: len(fake.reactions) == 3)
        replies = [m for m in fake.bot_messages() if m.reference_id in asked]
        assert len(replies) == 1 and "faster than this bot allows" in replies[0].content
        assert [message for _, message, _ in fake.reactions] == asked[1:]
        assert {emoji for _, _, emoji in fake.reactions} == {"⏳"}
        assert len(fake_upstream.requests) == 1
    finally:
        await adapter.close()
        await chat.aclose()


def test_every_slash_command_option_is_described() -> None:
    tree = build_tree(discord.Client(intents=discord.Intents.none()), cast(ChatCore, None))
    commands = [
        c
        for top in tree.get_commands(type=discord.AppCommandType.chat_input)
        for c in (top.commands if hasattr(top, "commands") else [top])
    ]
    assert len(commands) >= 16
    for command in commands:
        assert command.description and command.description != "…", command.qualified_name
        for parameter in command.parameters:
            # discord.py shows "…" where an option has no description of its own.
            assert parameter.description and parameter.description != "…", (
                command.qualified_name,
                parameter.name,
            )


def test_autocomplete_choices_fit_discords_limits() -> None:
    names = [f"preset-{i}" for i in range(40)] + ["x" * 150]
    choices = _choices(names, "")
    assert len(choices) == 25
    assert all(len(c.name) <= 100 and len(c.value) <= 100 for c in choices)


async def test_a_mentioned_name_that_looks_like_a_regex_group_is_just_a_name(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    """A display name is used as replacement text: `\\1` once broke the question with a regex error."""
    fake.admin["global_name"] = r"\1 \g<0> Ada"
    asked = await fake.post_message(f"{BOT} ask <@{fake.ADMIN_ID}> about it")
    await answer_to(fake, asked, expected(r"ask @\1 \g<0> Ada about it"))


# --- sends with an unknown outcome ---------------------------------------------------------------------


async def test_a_create_that_got_a_502_after_delivery_is_not_posted_twice(
    fake: FakeDiscord, fake_upstream: FakeUpstream, core: ChatCore, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(Behaviour(answer="Shown once."))
    fake.fail_after_delivery = 1  # discord.py sends the create again, 1 s later, as after any 502
    asked = await fake.post_message(f"{BOT} hello")
    await answer_to(fake, asked, "Shown once.")

    def creates() -> list[RestCall]:
        return [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]

    await fake.wait_for(lambda: len(creates()) == 2 and core.in_flight == 0, 10)
    creates = creates()
    assert len(creates) == 2 and creates[0].json["nonce"] == creates[1].json["nonce"]
    assert all(c.json["enforce_nonce"] is True for c in creates)
    assert [m.content for m in fake.bot_messages(fake.CHANNEL_ID)] == ["Shown once."]


async def test_a_create_whose_connection_broke_after_delivery_is_sent_again_with_its_nonce(
    fake: FakeDiscord, fake_upstream: FakeUpstream, core: ChatCore, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(Behaviour(answer="Still shown once."))
    fake.drop_after_delivery = 1
    asked = await fake.post_message(f"{BOT} hello")
    await answer_to(fake, asked, "Still shown once.")
    await fake.wait_for(lambda: core.in_flight == 0, 10)
    creates = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert len(creates) == 2 and creates[0].json["nonce"] == creates[1].json["nonce"]
    assert [m.content for m in fake.bot_messages(fake.CHANNEL_ID)] == ["Still shown once."]
