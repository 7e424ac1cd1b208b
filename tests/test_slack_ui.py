"""Slack's buttons, forms and message shortcut end to end: real slack-bolt against FakeSlack, in HTTP mode
(signed form-encoded `payload`) and Socket Mode (`interactive` envelopes)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from acechat.bots import slack_rules
from acechat.bots.slack_bot import EVENTS_PATH, SlackAdapter
from acechat.bots.slack_settings import SlackSettings
from acechat.core import notices
from acechat.core.chat import ChatCore
from acechat.core.presets import SUGGESTIONS
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.conftest import SLACK_ADMIN as ADMIN
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack, Message
from tests.fakes.upstream import Behaviour, FakeUpstream

SLOW = Behaviour(answer="word " * 600, fragment_size=5, fragment_delay=0.02)
ACK_SECONDS = 3.0


@dataclass
class Bot:
    core: ChatCore
    adapter: SlackAdapter

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}{EVENTS_PATH}"


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack) -> Settings:
    return Settings(
        upstream=replace(upstream_settings, read_timeout=10.0),
        platforms={
            "slack": SlackSettings(
                bot_token=BOT_TOKEN,
                signing_secret=SIGNING_SECRET,
                api_url=slack.api_url,
                command="/aichat",
                port=0,
            )
        },
        db_path=tmp_path / "acechat.db",
        user_rate=RateLimit(0, 60.0),
        channel_rate=RateLimit(0, 60.0),
        shutdown_grace=5.0,
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Bot]:
    core = await ChatCore.open(settings)
    adapter = SlackAdapter(core, slack_of(settings), host="127.0.0.1")
    await adapter.start()
    try:
        yield Bot(core, adapter)
    finally:
        await adapter.close()
        await core.aclose()


def slack_of(settings: Settings) -> SlackSettings:
    found = settings.platforms["slack"]
    assert isinstance(found, SlackSettings)
    return found


def with_slack(settings: Settings, **changes: object) -> Settings:
    return replace(settings, platforms={"slack": replace(slack_of(settings), **changes)})  # type: ignore[arg-type]


def socket_mode(settings: Settings) -> Settings:
    return with_slack(settings, app_token=APP_TOKEN, signing_secret=None)


async def deliver(slack: FakeSlack, bot: Bot, payload: dict[str, object]) -> None:
    """An interaction over HTTP, acknowledged within Slack's 3 s."""
    delivery = await slack.deliver_http(bot.url, payload)
    assert delivery.status == 200 and delivery.elapsed < ACK_SECONDS


def ephemerals_to(slack: FakeSlack, user: str) -> list[str]:
    return [str(e["text"]) for e in slack.ephemerals if e.get("user") == user]


async def start_slow_answer(slack: FakeSlack, bot: Bot, fake_upstream: FakeUpstream) -> tuple[Message, str]:
    fake_upstream.queue(SLOW)
    mention = slack.mention(f"<@{BOT_USER_ID}> tell me a long story")
    await deliver(slack, bot, mention)
    thread = mention["event"]["ts"]
    await slack.wait_until(lambda: any(m.action_ids for m in slack.in_channel("C1", thread)))
    (answer,) = slack.in_channel("C1", thread)
    (stop,) = answer.action_ids
    assert stop.startswith("acechat:stop:")
    return answer, stop


async def test_the_asker_stops_an_answer_others_are_told_they_cannot(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        answer, stop = await start_slow_answer(slack, bot, fake_upstream)
        answer_id = stop.rsplit(":", 1)[1]

        await deliver(slack, bot, slack.block_action(answer, stop, answer_id, user="U2"))
        await slack.wait_until(lambda: ephemerals_to(slack, "U2"))
        assert ephemerals_to(slack, "U2") == [notices.ONLY_ASKER_STOPS]
        assert fake_upstream.active == 1

        await deliver(slack, bot, slack.block_action(answer, stop, answer_id))
        await slack.wait_until(
            lambda: answer.text.endswith("_(stopped)_") and not any("stop" in a for a in answer.action_ids)
        )
        assert fake_upstream.active == 0
        # The text the blocks show says so too, and the vote replaced the Stop.
        assert answer.blocks[-2]["text"]["text"].endswith("_(stopped)_")
        assert answer.action_ids == [f"acechat:vote:{answer_id}"]
        assert answer.blocks[-1]["type"] == "context_actions"

        # A double press, and one after the end: acknowledged, nothing changes, nobody is told anything.
        shown = list(answer.versions)
        await deliver(slack, bot, slack.block_action(answer, stop, answer_id))
        await bot.adapter.transport.idle()
        assert answer.versions == shown and not ephemerals_to(slack, "U1")


async def test_an_admin_stops_an_answer_over_socket_mode(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(socket_mode(settings)):
        fake_upstream.queue(SLOW)
        mention = slack.mention(f"<@{BOT_USER_ID}> tell me a long story")
        await slack.wait_for_ack(await slack.deliver_socket(mention))
        thread = mention["event"]["ts"]
        await slack.wait_until(lambda: any(m.action_ids for m in slack.in_channel("C1", thread)))
        (answer,) = slack.in_channel("C1", thread)
        (stop,) = answer.action_ids
        sent = time.monotonic()
        envelope = await slack.deliver_socket(
            slack.block_action(answer, stop, stop.rsplit(":", 1)[1], user=ADMIN)
        )
        ack = await slack.wait_for_ack(envelope)
        assert ack.at - sent < ACK_SECONDS
        await slack.wait_until(lambda: answer.text.endswith("_(stopped)_"))


async def test_feedback_buttons_record_one_changeable_vote_per_person(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        payload = slack.command("hello there")
        await deliver(slack, bot, payload)
        await slack.wait_until(
            lambda: (
                any(m.action_ids for m in slack.in_channel("C1"))
                and not any("stop" in a for m in slack.in_channel("C1") for a in m.action_ids)
            )
        )
        await bot.adapter.transport.idle()
        (answer,) = slack.in_channel("C1")
        (vote,) = answer.action_ids
        assert answer.text.startswith("*u1-display* asked: hello there")
        assert answer.blocks[0]["text"]["text"].startswith("*u1-display* asked: hello there")
        await deliver(slack, bot, slack.block_action(answer, vote, "up"))
        await deliver(slack, bot, slack.block_action(answer, vote, "down"))
        await deliver(slack, bot, slack.block_action(answer, vote, "down", user="U3"))
        await bot.adapter.transport.idle()
        assert ephemerals_to(slack, "U1") == [
            notices.voted(True, changed=False),
            notices.voted(False, changed=True),
        ]
        (tally,) = await bot.core.store.feedback(f"slack:{slack.team_id}", 0)
        assert (tally.up, tally.down) == (0, 2)


async def test_preset_create_opens_a_form_through_views_open_and_its_submission_works_after_a_restart(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        await deliver(slack, bot, slack.command("preset create pirate"))  # a member: refused, no form
        await bot.adapter.transport.idle()
        assert not slack.views and "workspace admin" in slack.responses[-1].text
        await deliver(slack, bot, slack.command("preset create pirate", user=ADMIN))
        await bot.adapter.transport.idle()
        (view,) = slack.views
        assert view["callback_id"] == "acechat:preset:create"
        name, _description, prompt = view["blocks"]
        assert name["element"]["initial_value"] == "pirate"
        assert prompt["element"]["multiline"] and prompt["element"]["max_length"] == 3000
    # The bot restarted while the form was open.
    async with running(settings) as bot:
        text = "Talk like a pirate.\nAlways."
        await deliver(
            slack,
            bot,
            slack.view_submission(view, {"name": "pirate", "prompt": text, "description": "Arr"}, user=ADMIN),
        )
        await bot.adapter.transport.idle()
        saved = await bot.core.store.get_preset(f"slack:{slack.team_id}", "pirate")
        assert saved is not None and saved.prompt == text and saved.description == "Arr"
        assert any("created the preset `pirate`" in m.text for m in slack.in_channel("C1"))
        # A forged submission by a member is refused by the core.
        await deliver(slack, bot, slack.view_submission(view, {"name": "pirate2", "prompt": "x"}, user="U2"))
        await bot.adapter.transport.idle()
        assert await bot.core.store.get_preset(f"slack:{slack.team_id}", "pirate2") is None
        assert any("workspace admin" in t for t in ephemerals_to(slack, "U2"))
        # One-line creation keeps working; edit without a prompt opens the form filled in.
        await deliver(slack, bot, slack.command("preset edit pirate", user=ADMIN))
        await bot.adapter.transport.idle()
        edit = slack.views[-1]
        assert edit["callback_id"] == "acechat:preset:edit"
        assert edit["blocks"][2]["element"]["initial_value"] == text


async def test_an_expired_trigger_is_explained(settings: Settings, slack: FakeSlack) -> None:
    async with running(settings) as bot:
        payload = slack.command("preset create pirate", user=ADMIN)
        # The trigger id was used already (Slack answers exchanged_trigger_id).
        await slack.deliver_http(bot.url, payload)
        await bot.adapter.transport.idle()
        await deliver(slack, bot, payload | {"trigger_id": payload["trigger_id"]})
        await bot.adapter.transport.idle()
        assert len(slack.views) == 1
        assert "could not open" in slack.responses[-1].text


async def test_ask_about_a_message_answers_in_its_thread_with_its_text(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        shortcut = slack.message_shortcut("ask_acechat", text="Deploys freeze on Fridays &amp; holidays.")
        await deliver(slack, bot, shortcut)
        await bot.adapter.transport.idle()
        (view,) = slack.views
        assert view["callback_id"] == "acechat:ask:"
        await deliver(slack, bot, slack.view_submission(view, {"question": "Does that include hotfixes?"}))
        await bot.adapter.transport.idle()
        ts = shortcut["message"]["ts"]
        (answer,) = slack.in_channel("C1", ts)
        assert answer.text
        body = fake_upstream.bodies[-1]
        assert body is not None
        question = str(body["question"])
        assert question.index("> Deploys freeze on Fridays & holidays.") < question.index("hotfixes?")
        # An empty question is refused like any other.
        await deliver(slack, bot, slack.view_submission(view | {"id": "V2"}, {"question": " "}))
        await bot.adapter.transport.idle()
        assert notices.empty_question(slack_rules.RULES) in ephemerals_to(slack, "U1")


async def test_the_home_tab_shows_presets_and_defaults_and_admins_get_forms_audit_and_ratings(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        await deliver(slack, bot, slack.command('preset create pirate "Arr" Talk like a pirate.', user=ADMIN))
        # The command is acknowledged before it runs: the preset exists once the work is done.
        await bot.adapter.transport.idle()
        await deliver(slack, bot, slack.app_home_opened(user="U1"))
        await deliver(slack, bot, slack.app_home_opened(user=ADMIN))
        await deliver(slack, bot, slack.app_home_opened(user="U2", tab="messages"))
        await bot.adapter.transport.idle()
        assert set(slack.homes) == {"U1", ADMIN}
        member = json.dumps(slack.homes["U1"])
        admin = json.dumps(slack.homes[ADMIN])
        for home in (member, admin):
            assert "pirate" in home and "defaults" in home
        assert "Talk like a pirate" not in member, "prompts are folded"
        assert "acechat:open:create" not in member and "Recent changes" not in member
        assert "acechat:open:create" in admin and "acechat:open:edit" in admin
        assert "rated" in admin and "No questions went to the AI service the last 7 days" in admin

        # The Home tab's buttons open the forms; their notices go to the app's DM.
        (actions,) = [b for b in slack.homes[ADMIN]["blocks"] if b["type"] == "actions"]
        assert [e["type"] for e in actions["elements"]] == ["button", "static_select"]
        home_press = {
            "type": "block_actions",
            "user": {"id": ADMIN, "username": "admin", "team_id": slack.team_id},
            "api_app_id": "A0001",
            "container": {"type": "view", "view_id": slack.homes[ADMIN]["id"]},
            "trigger_id": slack.trigger(),
            "team": {"id": slack.team_id, "domain": "fake"},
            "view": slack.homes[ADMIN],
            "actions": [
                {
                    "action_id": "acechat:open:edit",
                    "block_id": "b1",
                    "type": "static_select",
                    "selected_option": {"text": {"type": "plain_text", "text": "pirate"}, "value": "pirate"},
                    "action_ts": "1.2",
                }
            ],
        }
        await deliver(slack, bot, home_press)
        await bot.adapter.transport.idle()
        assert slack.views[-1]["callback_id"] == "acechat:preset:edit"
        assert slack.views[-1]["blocks"][2]["element"]["initial_value"] == "Talk like a pirate."
        forged = home_press | {"user": {"id": "U2", "username": "u2", "team_id": slack.team_id}}
        forged["trigger_id"] = slack.trigger()
        await deliver(slack, bot, forged)
        await bot.adapter.transport.idle()
        (dm,) = [m for m in slack.messages if m.channel == "U2"]
        assert "workspace admin" in dm.text


async def test_as_an_agent_threads_are_sessions_stopped_by_slacks_own_stop(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    agent = with_slack(settings, agent=True)
    async with running(agent) as bot:
        # Opening the Messages tab suggests first questions that suit the workspace's preset.
        await deliver(slack, bot, slack.app_home_opened(tab="messages"))
        await bot.adapter.transport.idle()
        assert [p["title"] for p in slack.suggested["D1"]] == [t for t, _ in SUGGESTIONS["assistant"]]
        # The Messages tab: a direct message starts a thread of its own, a session titled by the question.
        fake_upstream.queue(SLOW)
        dm = slack.direct_message("Summarise the incident report")
        await deliver(slack, bot, dm)
        thread = dm["event"]["ts"]
        await slack.wait_until(lambda: slack.in_channel("D1", thread) != [])
        session = slack.sessions[("D1", thread)]
        assert session == {"title": "Summarise the incident report", "status": "processing"}
        (answer,) = slack.in_channel("D1", thread)
        assert not any("stop" in a for a in answer.action_ids), "Slack shows its own Stop"

        # Someone else's Stop (in a DM only the asker could, but the check is the core's) changes nothing.
        await deliver(slack, bot, slack.agent_session_stopped("D1", thread, user="U2"))
        await slack.wait_until(lambda: ephemerals_to(slack, "U2") != [])
        assert session["status"] == "processing" and fake_upstream.active == 1

        await deliver(slack, bot, slack.agent_session_stopped("D1", thread))
        await slack.wait_until(lambda: answer.text.endswith("_(stopped)_") and session["status"] == "active")
        assert fake_upstream.active == 0
        assert answer.action_ids == [a for a in answer.action_ids if a.startswith("acechat:vote:")] != []

        # The next message in that thread continues the same conversation and keeps the session's title.
        follow = slack.direct_message("and the root cause?", thread_ts=thread)
        await deliver(slack, bot, follow)
        await bot.adapter.transport.idle()
        assert session["title"] == "Summarise the incident report" and session["status"] == "active"
        assert len(slack.in_channel("D1", thread)) == 2
        # A Stop after the end: acknowledged, the session is moved off "processing" all the same.
        await deliver(slack, bot, slack.agent_session_stopped("D1", thread))
        await bot.adapter.transport.idle()
        assert session["status"] == "active"


async def test_a_command_answer_outside_threads_is_stopped_with_its_button(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        fake_upstream.queue(SLOW)
        await deliver(slack, bot, slack.command("a long story please"))
        await slack.wait_until(lambda: any(m.action_ids for m in slack.in_channel("C1")))
        (answer,) = slack.in_channel("C1")
        (stop,) = answer.action_ids
        await deliver(slack, bot, slack.block_action(answer, stop, stop.rsplit(":", 1)[1], user="U2"))
        await deliver(slack, bot, slack.block_action(answer, stop, stop.rsplit(":", 1)[1]))
        await slack.wait_until(lambda: answer.text.endswith("_(stopped)_"))
        await bot.adapter.transport.idle()
        assert answer.text.startswith("*u1-display* asked: a long story please")
        assert ephemerals_to(slack, "U2") == [notices.ONLY_ASKER_STOPS]
        assert [a.split(":")[1] for a in answer.action_ids] == ["vote"]
