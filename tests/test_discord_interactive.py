"""A question the model asks back, answered with Discord buttons and a modal: real INTERACTION_CREATE
payloads (component type 3, modal submit type 5) through discord.py's dispatch, against the fake."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from acechat.bots.discord_bot import DiscordAdapter
from acechat.core import notices
from acechat.core.chat import ChatCore
from acechat.core.settings import Settings
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_discord import BOT, bot, discord_settings, fake, restore_endpoints, settings
from tests.test_v2 import ASKED

__all__ = ["bot", "fake", "restore_endpoints", "settings"]  # fixtures


async def asked(fake: FakeDiscord, fake_upstream: FakeUpstream) -> FakeMessage:
    """A mention whose answer is a question back; returns the message with its buttons."""
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    await fake.post_message(f"{BOT} write the report", author=fake.member)
    await fake.wait_for(lambda: any(offers_choices(fake, m) for m in fake.bot_messages()))
    return next(m for m in fake.bot_messages() if offers_choices(fake, m))


def offers_choices(fake: FakeDiscord, message: FakeMessage) -> bool:
    """A question's buttons, not the answer's own (Stop, 👍/👎: issue 18)."""
    return any(i.startswith("acechat:answer:") for i in fake.custom_ids(message))


async def test_buttons_answer_the_question_only_for_the_asker_or_an_admin(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    buttons = await asked(fake, fake_upstream)
    ids = fake.custom_ids(buttons)
    assert [i.rsplit(":", 1)[-1] for i in ids[:3]] == ["0", "1", "2"] and ids[3].startswith("acechat:other:")
    labels = [c["label"] for row in buttons.payload["components"] for c in row["components"]]
    assert labels == ["Chinese", "English", "Both", "Other…"]

    stranger = fake.member | {"id": str(FakeDiscord.MEMBER_ID + 99), "username": "kim"}
    refused = await fake.press(buttons, ids[0], user=stranger)
    await fake.wait_for(lambda: len(refused.followups) == 1)
    (refusal,) = refused.followups
    assert refusal.bodies[0]["flags"] & 64, "the refusal is for the presser alone"
    assert notices.NOT_YOUR_QUESTION in refusal.content
    assert len(fake_upstream.requests) == 1

    stale = replace(buttons, payload=copy.deepcopy(buttons.payload))  # a press already on its way
    pressed = await fake.press(buttons, ids[1])
    await fake.wait_for(lambda: buttons.content.startswith("✅"))
    assert pressed.response_type == 6, "a press is acknowledged at once, with a deferred update"
    body = fake_upstream.bodies[-1]
    assert body is not None and body["tool_results"] == [{"tool_use_id": "toolu_ask_1", "output": "English"}]
    assert any(m.content == "Answer 2 to: (answered: English)" for m in fake.bot_messages())
    assert fake.custom_ids(buttons) == [] and "answered: English" in buttons.content

    # A press of the old button that was already on its way: answered once, the presser told.
    again = await fake.press(stale, ids[0])
    await fake.wait_for(lambda: len(again.followups) == 1)
    assert notices.QUESTION_ANSWERED in again.followups[0].content
    assert len(fake_upstream.requests) == 2


async def test_other_opens_a_modal_whose_text_answers(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    buttons = await asked(fake, fake_upstream)
    other = fake.custom_ids(buttons)[-1]
    opened = await fake.press(buttons, other)
    await fake.wait_for(lambda: bool(opened.callbacks))
    modal = opened.callbacks[0]
    assert modal["type"] == 9 and modal["data"]["custom_id"].startswith("acechat:form:")
    assert len(fake_upstream.requests) == 1

    submitted = await fake.submit_modal(buttons, modal["data"]["custom_id"], {"text": "Klingon <@&1> please"})
    await fake.wait_for(lambda: buttons.content.startswith("✅"))
    assert submitted.response_type == 6
    assert fake_upstream.bodies[-1]["tool_results"][0]["output"] == "Klingon <@&1> please"  # type: ignore[index]
    assert all(b["allowed_mentions"]["parse"] == [] for b in buttons.bodies[1:])


async def test_a_new_question_skips_the_old_buttons(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    buttons = await asked(fake, fake_upstream)
    stale = replace(buttons, payload=copy.deepcopy(buttons.payload))
    await fake.post_message(f"{BOT} something else", author=fake.member)
    # The buttons say so as soon as the new question is asked, without anyone pressing them.
    await fake.wait_for(lambda: buttons.content == notices.SKIPPED_BY_QUESTION and not fake.custom_ids(buttons))
    await fake.wait_for(lambda: any(m.content.startswith("Answer ") for m in fake.bot_messages()))
    late = await fake.press(stale, fake.custom_ids(stale)[0])
    await fake.wait_for(lambda: len(late.followups) == 1)
    assert notices.QUESTION_SKIPPED in late.followups[0].content
    assert all("tool_results" not in (b or {}) for b in fake_upstream.bodies)


async def test_a_reset_skips_the_old_buttons_at_once(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    buttons = await asked(fake, fake_upstream)
    await fake.slash("reset", user=fake.member)
    await fake.wait_for(lambda: buttons.content == notices.SKIPPED_BY_RESET and not fake.custom_ids(buttons))
    assert buttons.bodies[-1]["allowed_mentions"]["parse"] == []
    assert len(fake_upstream.requests) == 1


async def test_a_failed_edit_is_logged_and_never_blocks_the_new_question(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    buttons = await asked(fake, fake_upstream)
    del fake.messages[buttons.id]  # someone deleted it: the edit gets 404 Unknown Message
    caplog.set_level(logging.WARNING, logger="acechat.core.chat")
    await fake.post_message(f"{BOT} something else", author=fake.member)
    await fake.wait_for(lambda: any(m.content.endswith(": something else") for m in fake.bot_messages()))
    await fake.wait_for(lambda: any("Unknown Message" in r.getMessage() for r in caplog.records))


@asynccontextmanager
async def process(fake: FakeDiscord, settings: Settings) -> AsyncIterator[DiscordAdapter]:
    """The core and the adapter as `acechat discord` runs them, stopped at the end (a restart)."""
    core = await ChatCore.open(settings)
    adapter = DiscordAdapter(core, discord_settings(fake), guild_ready_timeout=0.05, connect_timeout=10)
    await adapter.start()
    try:
        await fake.wait_for(lambda: adapter.connected)
        yield adapter
    finally:
        await adapter.close()
        await core.aclose()


async def test_buttons_shown_before_a_restart_are_edited_by_the_next_process(
    fake: FakeDiscord, fake_upstream: FakeUpstream, settings: Settings
) -> None:
    async with process(fake, settings):
        buttons = await asked(fake, fake_upstream)
    async with process(fake, settings):
        await fake.post_message(f"{BOT} something else", author=fake.member)
        await fake.wait_for(lambda: buttons.content == notices.SKIPPED_BY_QUESTION)
    assert not fake.custom_ids(buttons)


async def test_hostile_options_fit_discords_buttons_and_ping_no_one(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    pings = "@everyone @here <@123> <@!123> <@&456> <!here> "
    hostile = {
        **ASKED,
        "question": pings * 100,
        "options": [pings + str(n) + "a" * 1000 for n in range(12)] + ["@everyone", {"label": "<@&456>"}],
    }
    fake_upstream.queue(Behaviour(answer="", before=(hostile,), terminal_reason="awaiting_user_input"))
    await fake.post_message(f"{BOT} write the report", author=fake.member)
    await fake.wait_for(lambda: any(offers_choices(fake, m) for m in fake.bot_messages()))
    buttons = next(m for m in fake.bot_messages() if offers_choices(fake, m))
    rows = buttons.payload["components"]
    labels = [c["label"] for row in rows for c in row["components"]]
    assert len(rows) <= 5 and all(len(row["components"]) <= 5 for row in rows)
    assert labels[-1] == "Other…" and all(0 < len(label) <= 80 for label in labels)
    for message in fake.bot_messages():
        assert len(message.content) <= 2000
        assert all(b.get("allowed_mentions", {}).get("parse") == [] for b in message.bodies if "content" in b)
        assert not re.search(r"@(everyone|here)|<@[!&]?\d", message.content), message.content[:200]
    # Pressing a hostile option: the buttons give way to a line that names it and pings no one.
    pressed = await fake.press(buttons, fake.custom_ids(buttons)[0])
    await fake.wait_for(lambda: buttons.content.startswith("✅"))
    assert pressed.response_type == 6 and not re.search(r"@(everyone|here)|<@[!&]?\d", buttons.content)


async def test_a_huge_unbroken_hostile_word_is_split_within_discords_limit_and_pings_no_one(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    word = "".join(chr(0x61 + n % 26) for n in range(100_000))
    answer = "@everyone<@123>" + word + "<@&456>@here end"
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=997, fragment_delay=0.001))
    await fake.post_message(f"{BOT} go", author=fake.member)
    # Cut at the answer's cap, with a note, in messages Discord takes (the fake refuses longer ones).
    await fake.wait_for(lambda: any("cut" in m.content for m in fake.bot_messages()), 20)
    messages = fake.bot_messages()
    assert len(messages) >= 6 and all(len(m.content) <= 2000 for m in messages)
    for message in messages:
        assert not re.search(r"@(everyone|here)|<@[!&]?\d", message.content), message.content[:100]
    shown = "".join("".join(m.content.split()) for m in messages)
    assert word[:10_000] in shown
