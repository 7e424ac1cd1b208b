"""Discord's buttons, forms and message menu end to end: real discord.py against FakeDiscord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from discord.gateway import DiscordWebSocket
from discord.http import Route

from acechat.bots import discord_rules
from acechat.bots.discord_bot import DiscordAdapter
from acechat.bots.discord_settings import DiscordSettings
from acechat.core import notices
from acechat.core.chat import ChatCore
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.discord import EPHEMERAL, FakeDiscord, FakeInteraction, FakeMessage, attachment_payload
from tests.fakes.upstream import Behaviour, FakeUpstream

BOT = f"<@{FakeDiscord.BOT_ID}>"
SLOW = Behaviour(answer="word " * 600, fragment_size=5, fragment_delay=0.02)
# Discord drops an interaction not answered within this long.
ACK_SECONDS = 3.0


@pytest.fixture(autouse=True)
def restore_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Route, "BASE", Route.BASE)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings) -> Settings:
    return Settings(
        upstream=replace(upstream_settings, retries=0),
        db_path=tmp_path / "acechat.db",
        user_rate=RateLimit(0, 60.0),
        channel_rate=RateLimit(0, 60.0),
        shutdown_grace=5.0,
    )


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


async def start(fake: FakeDiscord, core: ChatCore) -> DiscordAdapter:
    settings = DiscordSettings(token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url)
    adapter = DiscordAdapter(core, settings, guild_ready_timeout=0.05, connect_timeout=10)
    await adapter.start()
    await fake.wait_for(lambda: adapter.connected)
    return adapter


@pytest_asyncio.fixture
async def bot(fake: FakeDiscord, core: ChatCore) -> AsyncIterator[DiscordAdapter]:
    adapter = await start(fake, core)
    try:
        yield adapter
    finally:
        await adapter.close()


def buttons(message: FakeMessage) -> list[str]:
    return [c["custom_id"] for row in message.payload.get("components") or [] for c in row["components"]]


def reply_to(fake: FakeDiscord, message_id: int) -> FakeMessage | None:
    return next((m for m in fake.bot_messages() if m.reference_id == message_id), None)


def ephemeral_followups(record: FakeInteraction) -> list[str]:
    return [m.content for m in record.followups if m.flags & EPHEMERAL]


async def acked(fake: FakeDiscord, record: FakeInteraction, kind: int) -> None:
    await fake.wait_for(lambda: record.response_type is not None)
    assert record.response_type == kind
    assert record.ack_seconds is not None and record.ack_seconds < ACK_SECONDS


async def test_the_asker_stops_an_answer_with_its_button_others_cannot(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(SLOW)
    asked = await fake.post_message(f"{BOT} tell me a long story")
    await fake.wait_for(lambda: (m := reply_to(fake, asked)) is not None and bool(buttons(m)))
    answer = reply_to(fake, asked)
    assert answer is not None
    (stop,) = buttons(answer)
    assert stop.startswith("acechat:stop:")

    # Someone else presses: a deferred update acknowledges it, a private line explains, nothing stops.
    wrong = await fake.press(answer, stop, user=fake.admin | {"id": str(fake.OTHER_BOT_ID + 1)})
    await acked(fake, wrong, 6)
    await fake.wait_for(lambda: bool(wrong.followups))
    assert ephemeral_followups(wrong) == [notices.ONLY_ASKER_STOPS]
    assert fake_upstream.active == 1

    pressed = await fake.press(answer, stop)  # the asker (the fake's member)
    await acked(fake, pressed, 6)
    await fake.wait_for(
        lambda: answer.content.endswith(notices.STOPPED) and "vote" in " ".join(buttons(answer))
    )
    assert fake_upstream.active == 0, "the upstream request was cancelled"
    assert not pressed.followups, "the message itself says it stopped"
    assert all(b.startswith("acechat:vote:") for b in buttons(answer)) and len(buttons(answer)) == 2

    # A double press and a press after the end: acknowledged, nothing changes.
    shown = list(answer.versions)
    again = await fake.press(answer, stop)
    await acked(fake, again, 6)
    await asyncio.sleep(0.1)  # time for a wrong edit or notice to show, were there one
    assert answer.versions == shown and not again.followups


async def test_votes_are_acknowledged_privately_and_can_change(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter, core: ChatCore
) -> None:
    asked = await fake.post_message(f"{BOT} hello")
    await fake.wait_for(lambda: (m := reply_to(fake, asked)) is not None and len(buttons(m)) == 2)
    answer = reply_to(fake, asked)
    assert answer is not None
    up, down = buttons(answer)
    assert up.endswith(":up") and down.endswith(":down")
    first = await fake.press(answer, up)
    await acked(fake, first, 6)
    await fake.wait_for(lambda: bool(first.followups))
    assert ephemeral_followups(first) == [notices.voted(True, changed=False)]
    second = await fake.press(answer, down)
    await fake.wait_for(lambda: bool(second.followups))
    assert ephemeral_followups(second) == [notices.voted(False, changed=True)]
    (tally,) = await core.store.feedback(f"discord:{fake.GUILD_ID}", 0)
    assert (tally.up, tally.down) == (0, 1)


async def test_preset_create_without_a_prompt_opens_a_form_that_works_after_a_restart(
    fake: FakeDiscord, core: ChatCore
) -> None:
    adapter = await start(fake, core)
    try:
        refused = await fake.slash("preset create", {"name": "pirate"})
        await acked(fake, refused, 4)
        assert refused.modal is None and refused.ephemeral
        opened = await fake.slash("preset create", {"name": "pirate"}, user=fake.admin)
        await acked(fake, opened, 9)
        assert opened.modal is not None and opened.modal["custom_id"] == "acechat:preset:create"
        fields = [c["components"][0] for c in opened.modal["components"]]
        assert [f["custom_id"] for f in fields] == ["name", "description", "prompt"]
        assert fields[0]["value"] == "pirate" and fields[2]["style"] == 2  # a multi-line field
        assert fields[2]["max_length"] == core.settings.max_preset_chars
    finally:
        await adapter.close()
    # The bot restarts while the form is open; the submission still lands.
    adapter = await start(fake, core)
    try:
        prompt = "Talk like a pirate.\nAlways.\n\nEven in code reviews."
        submitted = await fake.submit_form(
            "acechat:preset:create",
            {"name": "pirate", "description": "Arr", "prompt": prompt},
            user=fake.admin,
        )
        await fake.wait_for(lambda: bool(submitted.texts()))
        assert submitted.ack_seconds is not None and submitted.ack_seconds < ACK_SECONDS
        saved = await core.store.get_preset(f"discord:{fake.GUILD_ID}", "pirate")
        assert saved is not None and saved.prompt == prompt and saved.description == "Arr"
        # A member's forged submission is refused by the core, whatever the form.
        forged = await fake.submit_form("acechat:preset:edit", {"name": "pirate", "prompt": "x"})
        await fake.wait_for(lambda: bool(forged.texts()))
        assert forged.ephemeral and "Manage Server" in forged.texts()[0]
    finally:
        await adapter.close()


async def test_preset_edit_opens_its_form_filled_in(
    fake: FakeDiscord, core: ChatCore, bot: DiscordAdapter
) -> None:
    created = await fake.slash("preset create", {"name": "pirate", "prompt": "Arr."}, user=fake.admin)
    await fake.wait_for(lambda: bool(created.texts()))
    opened = await fake.slash("preset edit", {"name": "pirate"}, user=fake.admin)
    await acked(fake, opened, 9)
    assert opened.modal is not None and opened.modal["custom_id"] == "acechat:preset:edit"
    assert opened.modal["components"][2]["components"][0]["value"] == "Arr."
    missing = await fake.slash("preset edit", {"name": "nothing"}, user=fake.admin)
    await acked(fake, missing, 4)
    assert missing.modal is None


async def test_a_hostile_name_given_to_preset_create_still_opens_its_form(
    fake: FakeDiscord, core: ChatCore, bot: DiscordAdapter
) -> None:
    # Discord lets a slash command's text option hold 6,000 characters; the form's name field takes 32.
    opened = await fake.slash("preset create", {"name": "@everyone " + "x" * 500}, user=fake.admin)
    await acked(fake, opened, 9)
    assert opened.modal is not None
    name = opened.modal["components"][0]["components"][0]
    assert len(name.get("value") or "") <= name["max_length"] == 32


def question_of(body: Mapping[str, Any]) -> str:
    """The question's text: v1's `question`, or the text blocks of v2's `message` when files came too."""
    if "question" in body:
        return str(body["question"])
    return "".join(str(b.get("text", "")) for b in body.get("message") or [] if b.get("type") == "text")


async def test_ask_about_a_message_answers_in_reply_with_its_text_and_files(
    fake: FakeDiscord, fake_upstream: FakeUpstream, core: ChatCore
) -> None:
    picture = attachment_payload(555, "chart.png")
    adapter = await start(fake, core)
    try:
        about = await fake.post_message(
            "Q3 revenue grew 12% while costs fell.", author=fake.admin, attachments=[picture]
        )
        menu = await fake.message_menu("Ask acechat", about)
        await acked(fake, menu, 9)
        assert menu.modal is not None and menu.modal["custom_id"] == f"acechat:ask:{about}"
        submitted = await fake.submit_form(menu.modal["custom_id"], {"question": "Is that good?"})
        await acked(fake, submitted, 4)
        assert submitted.ephemeral
        await fake.wait_for(lambda: reply_to(fake, about) is not None)
    finally:
        await adapter.close()
    body = fake_upstream.bodies[-1]
    assert body is not None
    question = question_of(body)
    assert question.index("> Q3 revenue grew 12%") < question.index("Is that good?")
    # v2 (the default) sends files as blocks of the message, beside the question's text.
    assert [b for b in body.get("message") or [] if "chart.png" in str(b)]

    # After a restart the form still works: the message is fetched again.
    adapter = await start(fake, core)
    try:
        again = await fake.submit_form(f"acechat:ask:{about}", {"question": "And costs?"})
        await acked(fake, again, 4)
        await fake.wait_for(lambda: len([m for m in fake.bot_messages() if m.reference_id == about]) == 2)
        assert "> Q3 revenue" in question_of(fake_upstream.bodies[-1] or {})
    finally:
        await adapter.close()


async def test_a_slash_command_answer_has_its_stop_and_vote_too(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: DiscordAdapter
) -> None:
    fake_upstream.queue(SLOW)
    asked = await fake.slash("ask", {"question": "a long story please"})
    await fake.wait_for(lambda: asked.original is not None and bool(buttons(asked.original)))
    answer = asked.original
    assert answer is not None
    (stop,) = buttons(answer)
    pressed = await fake.press(answer, stop)
    await acked(fake, pressed, 6)
    await fake.wait_for(lambda: answer.content.endswith(notices.STOPPED) and len(buttons(answer)) == 2)
    assert all(b.startswith("acechat:vote:") for b in buttons(answer))


async def test_an_empty_question_about_a_message_is_refused_privately(
    fake: FakeDiscord, core: ChatCore, bot: DiscordAdapter
) -> None:
    about = await fake.post_message("something", author=fake.admin)
    submitted = await fake.submit_form(f"acechat:ask:{about}", {"question": "   "})
    await fake.wait_for(lambda: len(submitted.followups) == 1)
    assert ephemeral_followups(submitted) == [notices.empty_question(discord_rules.RULES)]
    assert reply_to(fake, about) is None
