"""A question the model asks back, answered with Slack buttons and a modal: real block_actions and
view_submission payloads, signed (HTTP mode) or in `interactive` envelopes (Socket Mode), through bolt."""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import pytest

from acechat.core import notices
from acechat.core.settings import Settings
from tests.fakes.slack import APP_TOKEN, BOT_USER_ID, FakeSlack, Message
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.processes import until
from tests.test_slack import Bot, running, with_slack
from tests.test_v2 import ASKED

__all__ = ["bot", "settings"]  # fixtures
from tests.test_slack import bot, settings


async def asked(
    slack: FakeSlack, bot: Bot, fake_upstream: FakeUpstream, user: str = "U1"
) -> tuple[str, Message]:
    """A mention whose answer is a question back; returns its thread and the buttons' message."""
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    mention = slack.mention(f"<@{BOT_USER_ID}> write the report", user=user)
    thread = mention["event"]["ts"]
    await slack.deliver_http(bot.url, mention)
    await bot.adapter.transport.idle()
    buttons = next(m for m in slack.in_channel("C1", thread) if offers_choices(m))
    return thread, buttons


def offers_choices(message: Message) -> bool:
    """A question's buttons, not the answer's own (Stop, votes: issue 18)."""
    return any(a.startswith("acechat:answer:") for a in message.action_ids)


def ids(message: Message) -> list[str]:
    return [e["action_id"] for b in message.blocks or () for e in b.get("elements", ())]


async def test_buttons_answer_the_question_and_only_the_asker_or_an_admin_may_press(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    thread, buttons = await asked(slack, bot, fake_upstream)
    answer, *_ = slack.in_channel("C1", thread)
    assert "Chinese or English?" in answer.text and "1. Chinese" in answer.text
    labels = [e["text"]["text"] for b in buttons.blocks or () for e in b.get("elements", ())]
    assert labels == ["Chinese", "English", "Both", "Other…"]
    assert buttons.blocks[0]["text"]["type"] == "plain_text"  # type: ignore[index]

    # Someone else: told privately, nothing sent upstream, the buttons stay.
    await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[1], user="U7"))
    await bot.adapter.transport.idle()
    assert slack.ephemerals[-1]["user"] == "U7" and notices.NOT_YOUR_QUESTION in slack.ephemerals[-1]["text"]
    assert len(fake_upstream.requests) == 1 and buttons.blocks and len(ids(buttons)) == 4

    # The asker: the answer resumes the paused call and streams in the same thread.
    stale = replace(buttons, blocks=copy.deepcopy(buttons.blocks))
    await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[1]))
    await bot.adapter.transport.idle()
    body = fake_upstream.bodies[-1]
    assert body is not None and body["tool_results"] == [{"tool_use_id": "toolu_ask_1", "output": "English"}]
    assert any(m.text == "Answer 2 to: (answered: English)" for m in slack.in_channel("C1", thread))
    assert buttons.text.startswith("✅") and "answered: English" in buttons.text and ids(buttons) == []

    # A press that was already on its way (a double click): nothing more upstream, the presser is told.
    await slack.deliver_http(bot.url, slack.press(stale, ids(stale)[0]))
    await bot.adapter.transport.idle()
    assert len(fake_upstream.requests) == 2
    assert notices.QUESTION_ANSWERED in slack.ephemerals[-1]["text"]


async def test_other_opens_a_one_field_form_whose_text_is_the_answer(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    thread, buttons = await asked(slack, bot, fake_upstream)
    await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[-1]))
    await bot.adapter.transport.idle()
    (view,) = slack.views
    assert view["type"] == "modal" and view["callback_id"].startswith("acechat:form:")
    assert [b["type"] for b in view["blocks"]] == ["input"]
    assert len(fake_upstream.requests) == 1, "opening the form sends nothing"
    # A stranger pressing Other… gets a private refusal and no form.
    await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[-1], user="U7"))
    await bot.adapter.transport.idle()
    assert len(slack.views) == 1 and notices.NOT_YOUR_QUESTION in slack.ephemerals[-1]["text"]

    await slack.deliver_http(
        bot.url, slack.submit(view, {"answer": {"text": "  Klingon,\n please <!here> "}})
    )
    await bot.adapter.transport.idle()
    body = fake_upstream.bodies[-1]
    assert body is not None and body["tool_results"][0]["output"] == "Klingon, please <!here>"
    assert any(m.text.startswith("Answer 2 to:") for m in slack.in_channel("C1", thread))
    assert "<!here>" not in buttons.text and buttons.text.startswith("✅")


async def test_other_pressed_too_late_for_its_form_says_so_and_leaves_the_buttons(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    _, buttons = await asked(slack, bot, fake_upstream)
    slack.trigger_delay = 5.0  # the press reaches views.open after its trigger's 3 s
    with caplog.at_level(logging.WARNING, logger="acechat"):
        await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[-1]))
        await bot.adapter.transport.idle()
    assert slack.views == []
    assert slack.ephemerals[-1]["user"] == "U1" and "took too long" in slack.ephemerals[-1]["text"]
    assert "expired_trigger_id" in caplog.text
    assert len(ids(buttons)) == 4 and len(fake_upstream.requests) == 1, "the question still waits"


async def test_a_new_question_skips_the_old_buttons(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    thread, buttons = await asked(slack, bot, fake_upstream)
    stale = replace(buttons, blocks=copy.deepcopy(buttons.blocks))
    await slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> something else", thread_ts=thread))
    await bot.adapter.transport.idle()
    # The buttons say so as soon as the new question is asked, without anyone pressing them.
    await slack.wait_until(lambda: buttons.text == notices.SKIPPED_BY_QUESTION, 5)
    assert ids(buttons) == []
    # A press that was on its way: the presser is told, nothing goes upstream.
    await slack.deliver_http(bot.url, slack.press(stale, ids(stale)[0]))
    await bot.adapter.transport.idle()
    assert notices.QUESTION_SKIPPED in slack.ephemerals[-1]["text"]
    assert all("tool_results" not in (b or {}) for b in fake_upstream.bodies)


async def test_presses_arrive_over_socket_mode_too(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    socket_settings = with_slack(settings, app_token=APP_TOKEN, signing_secret=None)
    async with running(socket_settings) as bot:
        fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
        mention = slack.mention(f"<@{BOT_USER_ID}> write the report")
        await slack.wait_for_ack(await slack.deliver_socket(mention))
        thread = mention["event"]["ts"]
        await slack.wait_until(lambda: any(offers_choices(m) for m in slack.in_channel("C1", thread)), 5)
        buttons = next(m for m in slack.in_channel("C1", thread) if offers_choices(m))
        envelope = await slack.deliver_socket(slack.press(buttons, ids(buttons)[2]))
        ack = await slack.wait_for_ack(envelope)
        assert not ack.payload
        await slack.wait_until(lambda: buttons.text.startswith("✅"), 5)
        await bot.adapter.transport.idle()
    assert fake_upstream.bodies[-1]["tool_results"][0]["output"] == "Both"  # type: ignore[index]


async def test_an_aichat_command_offers_buttons_in_the_channel(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    await slack.deliver_http(bot.url, slack.command("write the report"))
    await bot.adapter.transport.idle()
    buttons = next(m for m in slack.in_channel("C1") if offers_choices(m))
    assert buttons.thread_ts is None
    await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[0]))
    await bot.adapter.transport.idle()
    assert fake_upstream.bodies[-1]["tool_results"][0]["output"] == "Chinese"  # type: ignore[index]
    assert buttons.text.startswith("✅")


async def test_a_reset_skips_the_old_buttons_at_once(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    await slack.deliver_http(bot.url, slack.command("write the report"))
    await bot.adapter.transport.idle()
    buttons = next(m for m in slack.in_channel("C1") if offers_choices(m))
    await slack.deliver_http(bot.url, slack.command("reset"))
    await bot.adapter.transport.idle()
    await slack.wait_until(lambda: buttons.text == notices.SKIPPED_BY_RESET, 5)
    assert ids(buttons) == [] and buttons.blocks[0]["text"]["type"] == "plain_text"  # type: ignore[index]
    assert len(fake_upstream.requests) == 1


async def test_buttons_shown_before_a_restart_are_edited_by_the_next_process(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as first:
        thread, buttons = await asked(slack, first, fake_upstream)
    async with running(settings) as second:
        new = slack.mention(f"<@{BOT_USER_ID}> something else", thread_ts=thread)
        await slack.deliver_http(second.url, new)
        await second.adapter.transport.idle()
        await slack.wait_until(lambda: buttons.text == notices.SKIPPED_BY_QUESTION, 5)
    assert ids(buttons) == []


async def test_a_failed_edit_is_logged_and_never_blocks_the_new_question(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    thread, buttons = await asked(slack, bot, fake_upstream)
    slack.messages.remove(buttons)  # someone deleted it: chat.update answers message_not_found
    caplog.set_level(logging.WARNING, logger="acechat.core.chat")
    await slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> something else", thread_ts=thread))
    await bot.adapter.transport.idle()
    assert any(m.text.endswith(": something else") for m in slack.in_channel("C1", thread))
    await until(lambda: any("message_not_found" in r.getMessage() for r in caplog.records), 5, "the log line")
    edits = [c for c in slack.calls_to("chat.update") if c.params.get("ts") == buttons.ts]
    assert [c.reply.get("error") for c in edits] == ["message_not_found"]
