"""Slack's buttons, forms and message shortcut end to end: real slack-bolt against FakeSlack, in HTTP mode
(signed form-encoded `payload`) and Socket Mode (`interactive` envelopes)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from acechat.bots import slack_rules
from acechat.core import notices
from acechat.core.presets import SUGGESTIONS
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.conftest import SLACK_ADMIN as ADMIN
from tests.fakes.slack import APP_TOKEN, BOT_USER_ID, FakeSlack, Message
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_slack import Bot, running, slack_settings, with_slack

SLOW = Behaviour(answer="word " * 600, fragment_size=5, fragment_delay=0.02)
ACK_SECONDS = 3.0


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack) -> Settings:
    served = slack_settings(tmp_path, upstream_settings, slack)
    return replace(served, user_rate=RateLimit(0, 60.0), channel_rate=RateLimit(0, 60.0))


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
        # A forged submission by a member is refused by the core, on the form.
        errors = await submit(slack, bot, view, user="U2", name="pirate2", prompt="x")
        await bot.adapter.transport.idle()
        assert await bot.core.store.get_preset(f"slack:{slack.team_id}", "pirate2") is None
        assert "workspace admin" in errors["name"]
        # One-line creation keeps working; edit without a prompt opens the form filled in.
        await deliver(slack, bot, slack.command("preset edit pirate", user=ADMIN))
        await bot.adapter.transport.idle()
        edit = slack.views[-1]
        assert edit["callback_id"] == "acechat:preset:edit"
        assert edit["blocks"][2]["element"]["initial_value"] == text


async def test_a_used_trigger_is_explained_to_the_user_and_logged(
    settings: Settings, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as bot:
        payload = slack.command("preset create pirate", user=ADMIN)
        await deliver(slack, bot, payload)
        await bot.adapter.transport.idle()
        # The same command again (a retry): its trigger id opened a form already.
        with caplog.at_level(logging.WARNING, logger="acechat"):
            await deliver(slack, bot, payload)
            await bot.adapter.transport.idle()
        assert len(slack.views) == 1
        assert (
            slack.responses[-1].text == "That form was opened already; run the command again for a new one."
        )
        assert any("exchanged_trigger_id" in r.getMessage() for r in caplog.records)


async def test_a_form_opened_after_its_trigger_expired_is_explained_to_the_user_and_logged(
    settings: Settings, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as bot:
        # The app reaches views.open 3.5 s after Slack handed it the trigger id (no real waiting).
        slack.trigger_delay = 3.5
        with caplog.at_level(logging.WARNING, logger="acechat"):
            await deliver(slack, bot, slack.command("preset create pirate", user=ADMIN))
            await bot.adapter.transport.idle()
        assert not slack.views
        assert slack.responses[-1].text == "That form took too long to open; run the command again."
        assert any("expired_trigger_id" in r.getMessage() for r in caplog.records)
        # In time, the same command opens it.
        slack.trigger_delay = 0.0
        await deliver(slack, bot, slack.command("preset create pirate", user=ADMIN))
        await bot.adapter.transport.idle()
        assert len(slack.views) == 1


def form_errors_of(text: str) -> dict[str, str]:
    """The errors a form's acknowledgement shows on its fields ({} for a plain acknowledgement)."""
    if not text:
        return {}
    ack = json.loads(text)
    assert ack["response_action"] == "errors"
    errors = ack["errors"]
    assert isinstance(errors, dict)
    return errors


async def open_preset_form(slack: FakeSlack, bot: Bot, line: str) -> dict[str, object]:
    await deliver(slack, bot, slack.command(line, user=ADMIN))
    await bot.adapter.transport.idle()
    return slack.views[-1]


async def submit(
    slack: FakeSlack, bot: Bot, view: dict[str, object], user: str = ADMIN, **values: str
) -> dict[str, str]:
    delivery = await slack.deliver_http(bot.url, slack.view_submission(view, values, user=user))
    assert delivery.status == 200 and delivery.elapsed < ACK_SECONDS
    return form_errors_of(delivery.body)


async def test_a_preset_form_with_problems_stays_open_with_them_on_its_fields(
    settings: Settings, slack: FakeSlack
) -> None:
    workspace = f"slack:{slack.team_id}"
    async with running(replace(settings, max_preset_chars=40)) as bot:
        view = await open_preset_form(slack, bot, "preset create")
        shown = len(slack.messages)

        errors = await submit(slack, bot, view, name="Pirate Talk!", prompt="Talk like a pirate.")
        assert list(errors) == ["name"] and "not a valid preset name" in errors["name"]
        errors = await submit(slack, bot, view, name="pirate", prompt="x" * 41)
        assert errors == {"prompt": "The prompt is 41 characters long; the limit is 40."}
        errors = await submit(slack, bot, view, name="pirate", prompt=" ")
        assert list(errors) == ["prompt"] and "cannot be empty" in errors["prompt"]
        errors = await submit(slack, bot, view, name="pirate", prompt="Arr.", description="d" * 101)
        assert list(errors) == ["description"]
        # Built-in names are taken; every field's problem shows at once, in plain text.
        errors = await submit(slack, bot, view, name="coder", prompt="")
        assert errors["name"] == "'coder' is a built-in preset; choose another name."
        assert set(errors) == {"name", "prompt"}
        # Nothing was saved, audited or said in the channel.
        await bot.adapter.transport.idle()
        assert await bot.core.store.list_presets(workspace) == []
        assert await bot.core.store.list_audit(workspace) == []
        assert len(slack.messages) == shown and not ephemerals_to(slack, ADMIN)

        # A valid one closes the form (a plain acknowledgement) and is saved and audited.
        assert await submit(slack, bot, view, name="pirate", prompt="Talk like a pirate.") == {}
        await bot.adapter.transport.idle()
        saved = await bot.core.store.get_preset(workspace, "pirate")
        assert saved is not None and saved.prompt == "Talk like a pirate."
        (entry,) = await bot.core.store.list_audit(workspace)
        assert entry.action.value == "preset create" and entry.actor_id == ADMIN
        # Its name is taken now; and a member (or an admin demoted since) may not save at all.
        errors = await submit(slack, bot, view, name="pirate", prompt="Arr.")
        assert list(errors) == ["name"] and "already exists" in errors["name"]
        errors = await submit(slack, bot, view, user="U2", name="parrot", prompt="Squawk.")
        assert list(errors) == ["name"] and "workspace admin" in errors["name"]
        # Editing a preset that was deleted meanwhile says so on the name.
        edit = await open_preset_form(slack, bot, "preset edit pirate")
        await deliver(slack, bot, slack.command("preset delete pirate", user=ADMIN))
        await bot.adapter.transport.idle()
        errors = await submit(slack, bot, edit, name="pirate", prompt="Arr.")
        assert list(errors) == ["name"] and "no custom preset" in errors["name"]


async def test_preset_form_errors_ride_on_the_socket_mode_acknowledgement(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(socket_mode(settings)) as bot:
        await slack.wait_for_ack(await slack.deliver_socket(slack.command("preset create", user=ADMIN)))
        await bot.adapter.transport.idle()
        (view,) = slack.views
        sent = time.monotonic()
        bad = slack.view_submission(view, {"name": "coder", "prompt": "Arr."}, user=ADMIN)
        ack = await slack.wait_for_ack(await slack.deliver_socket(bad))
        assert ack.at - sent < ACK_SECONDS
        assert ack.payload == {
            "response_action": "errors",
            "errors": {"name": "'coder' is a built-in preset; choose another name."},
        }
        good = slack.view_submission(view, {"name": "pirate", "prompt": "Arr."}, user=ADMIN)
        ack = await slack.wait_for_ack(await slack.deliver_socket(good))
        assert not ack.payload
        await bot.adapter.transport.idle()
        assert await bot.core.store.get_preset(f"slack:{slack.team_id}", "pirate") is not None


async def test_a_form_whose_check_is_slow_closes_in_time_and_its_save_says_what_is_wrong(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        view = await open_preset_form(slack, bot, "preset create")
    # Submitted after a restart: who submits is looked up with users.info, which Slack is slow to answer.
    async with running(settings) as bot:
        slack.latency["users.info"] = 2.6
        started = time.monotonic()
        errors = await submit(slack, bot, view, user=ADMIN, name="coder", prompt="Arr.")
        assert errors == {} and time.monotonic() - started < ACK_SECONDS
        slack.latency.clear()
        await bot.adapter.transport.idle()
        assert ephemerals_to(slack, ADMIN) == ["`coder` is a built-in preset; choose another name."]


async def test_the_home_tab_is_republished_when_a_form_saves_a_preset(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        await deliver(slack, bot, slack.app_home_opened(user=ADMIN))
        await bot.adapter.transport.idle()
        assert "pirate" not in json.dumps(slack.homes[ADMIN])
        view = await open_preset_form(slack, bot, "preset create")
        assert (
            await submit(slack, bot, view, name="pirate", prompt="Talk like a pirate.", description="Arr")
            == {}
        )
        await bot.adapter.transport.idle()
        home = json.dumps(slack.homes[ADMIN])
        assert "pirate" in home and "Arr" in home
        # An edit from the form shows too; a form that saved nothing publishes nothing.
        edit = await open_preset_form(slack, bot, "preset edit pirate")
        assert await submit(slack, bot, edit, name="pirate", prompt="Talk.", description="Ahoy") == {}
        await bot.adapter.transport.idle()
        assert "Ahoy" in json.dumps(slack.homes[ADMIN])
        published = [c for c in slack.calls if c.method == "views.publish"]
        assert await submit(slack, bot, edit, name="coder", prompt="x") != {}
        await bot.adapter.transport.idle()
        assert [c for c in slack.calls if c.method == "views.publish"] == published
        # So do the workspace's defaults changed by command; a command that changes nothing there, or
        # is refused, publishes nothing.
        await deliver(slack, bot, slack.command("preset default pirate", user=ADMIN))
        await deliver(slack, bot, slack.command("model default gpt-5.4-mini", user=ADMIN))
        await bot.adapter.transport.idle()
        home = json.dumps(slack.homes[ADMIN])
        assert "preset `pirate`" in home and "Model `gpt-5.4-mini`" in home
        published = [c for c in slack.calls if c.method == "views.publish"]
        await deliver(slack, bot, slack.command("status", user=ADMIN))
        await deliver(slack, bot, slack.command("preset default coder", user="U2"))
        await bot.adapter.transport.idle()
        assert [c for c in slack.calls if c.method == "views.publish"] == published


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


async def test_slack_agent_auto_serves_an_app_as_an_agent_when_its_token_carries_assistant_write(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    # Installed from a manifest without agent_view: no assistant:write, so a direct message is the DM's
    # one conversation and no agent session is made.
    async with running(settings) as bot:
        await deliver(slack, bot, slack.direct_message("hello"))
        await deliver(slack, bot, slack.app_home_opened(tab="messages"))
        await bot.adapter.transport.idle()
        (answer,) = slack.in_channel("D1")
        assert answer.thread_ts is None and not slack.sessions and not slack.suggested
    # Declared an agent: Slack added assistant:write to the token, and SLACK_AGENT=auto follows it.
    slack.bot_scopes += ",assistant:write"
    async with running(settings) as bot:
        dm = slack.direct_message("Summarise the incident report")
        await deliver(slack, bot, dm)
        await deliver(slack, bot, slack.app_home_opened(tab="messages"))
        await bot.adapter.transport.idle()
        thread = dm["event"]["ts"]
        assert slack.in_channel("D1", thread) != []
        assert slack.sessions[("D1", thread)]["title"] == "Summarise the incident report"
        assert slack.suggested["D1"]
    # SLACK_AGENT=false wins over the token.
    async with running(with_slack(settings, agent=False)) as bot:
        dm = slack.direct_message("and again")
        await deliver(slack, bot, dm)
        await bot.adapter.transport.idle()
        assert ("D1", dm["event"]["ts"]) not in slack.sessions


async def test_hostile_preset_names_get_short_errors_on_the_form_and_save_nothing(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        view = await open_preset_form(slack, bot, "preset create")
        shown = len(slack.messages)
        for name in ("<!channel>", "<@U123>", "@here", "&lt;!here&gt;", "x" * 10_000, "<!here>" * 1_000):
            errors = await submit(slack, bot, view, name=name, prompt="Talk like a pirate.")
            assert list(errors) == ["name"], name[:40]
            # Plain text under the field, for the submitter alone (a modal notifies no one): short, the
            # name quoted in part at most.
            assert len(errors["name"]) <= 200
        await bot.adapter.transport.idle()
        assert len(slack.messages) == shown and await bot.core.store.list_presets(f"slack:{slack.team_id}") == []


async def test_hostile_names_typed_with_the_preset_commands_open_a_valid_form_or_say_why(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        for line in ("preset create <!channel>", "preset create " + "x" * 10_000, "preset edit " + "y" * 10_000):
            views = len(slack.views)
            await deliver(slack, bot, slack.command(line, user=ADMIN))
            await bot.adapter.transport.idle()
            if len(slack.views) > views:  # Slack took it: within its limits (the fake checks them)
                name = slack.views[-1]["blocks"][0]["element"].get("initial_value", "")  # type: ignore[index]
                assert len(name) <= 32 and "<!" not in name
            else:
                reply = slack.responses[-1].text
                assert reply and len(reply) < 400 and "<!" not in reply, reply[:200]
