"""The Slack adapter end to end: real slack-bolt over loopback against FakeSlack and FakeUpstream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from acechat.bots.adapter import StartupError
from acechat.bots.slack_bot import EVENTS_PATH, SlackAdapter
from acechat.bots.slack_settings import SlackSettings
from acechat.bots.slack_targets import STATUS
from acechat.core.chat import ChatCore
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from acechat.core.upstream import USED_UP
from tests.conftest import SLACK_ADMIN as ADMIN
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SIGNING_SECRET, FakeSlack
from tests.fakes.upstream import Behaviour, FakeUpstream


@dataclass
class Bot:
    core: ChatCore
    adapter: SlackAdapter

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}{EVENTS_PATH}"


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack) -> Settings:
    return slack_settings(tmp_path, upstream_settings, slack)


def slack_settings(tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack) -> Settings:
    """HTTP mode against the fake, a database in `tmp_path`: what most Slack tests run on."""
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
        shutdown_grace=5.0,
    )


def slack_of(settings: Settings) -> SlackSettings:
    found = settings.platform("slack", SlackSettings)
    assert found is not None
    return found


def with_slack(settings: Settings, **changes: object) -> Settings:
    return replace(settings, platforms={"slack": replace(slack_of(settings), **changes)})  # type: ignore[arg-type]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Bot]:
    """The core and the adapter as `acechat slack` runs them; `adapter.transport.idle()` waits for all
    the work of the requests it has acknowledged."""
    core = await ChatCore.open(settings)
    adapter = SlackAdapter(core, slack_of(settings), host="127.0.0.1")
    await adapter.start()
    try:
        yield Bot(core, adapter)
    finally:
        await adapter.close()
        await core.aclose()


@pytest_asyncio.fixture
async def bot(settings: Settings) -> AsyncIterator[Bot]:
    async with running(settings) as b:
        yield b


async def ask(slack: FakeSlack, bot: Bot, text: str, *, user: str = "U1", channel: str = "C1") -> str:
    """Run `/aichat TEXT` to the end; return the response_url key."""
    payload = slack.command(text, user=user, channel=channel)
    delivery = await slack.deliver_http(bot.url, payload)
    assert delivery.status == 200
    await bot.adapter.transport.idle()
    return payload["response_url"].rsplit("/", 1)[1]


async def test_command_is_acked_before_a_slow_answer_which_is_then_posted_and_updated(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(
        Behaviour(latency=2.0, answer="The answer is " + "forty-two " * 20, fragment_delay=0.05)
    )
    async with running(settings) as bot:
        started = time.monotonic()
        delivery = await slack.deliver_http(bot.url, slack.command("what is the answer?"))
        assert delivery.status == 200
        assert delivery.elapsed < 1.0
        assert not slack.calls_to("chat.update")

        await slack.wait_until(lambda: len(slack.in_channel("C1")) == 1 and slack.calls_to("chat.update"), 10)
        await bot.adapter.transport.idle()
    assert time.monotonic() - started >= 2.0
    # One message: who asked what (by name: the asker is not pinged), then the answer as it streamed.
    [answer] = slack.in_channel("C1")
    assert (
        answer.text
        == "*u1-display* asked: what is the answer?\n\n" + ("The answer is " + "forty-two " * 20).strip()
    )
    assert len(answer.versions) >= 2 and answer.versions[0] != answer.text
    # The asker alone was told at once that an answer is on its way.
    [thinking] = slack.responses
    assert thinking.ephemeral and thinking.text == "_Thinking…_"
    assert fake_upstream.bodies[0] is not None and fake_upstream.bodies[0]["question"].endswith(
        "what is the answer?"
    )


async def test_follow_ups_reuse_the_channel_conversation(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    await ask(slack, bot, "first question")
    await ask(slack, bot, "second question", user="U2")
    first, second = fake_upstream.bodies
    assert first is not None and second is not None
    assert "id" not in first or first["id"] is None
    assert second["id"] in fake_upstream.conversations
    assert slack.in_channel("C1")[-1].text.startswith("*u2-display* asked: second question\n\nAnswer 2 to:")


async def test_presets_are_for_admins_and_reach_the_next_question(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    name = next(n for n in BUILTIN_PRESETS if n != bot.core.settings.default_preset)
    refused = await ask(slack, bot, f"preset set {name}", user="U1")
    [reply] = slack.responses_to(refused)
    assert reply.ephemeral and "needs a workspace admin or owner" in reply.text

    # An admin whose users.info lookup fails is not trusted.
    slack.admins.add("UBOSS")
    slack.users_info_fails = True
    failed_lookup = await ask(slack, bot, f"preset set {name}", user="UBOSS")
    assert slack.responses_to(failed_lookup)[0].ephemeral

    slack.users_info_fails = False
    accepted = await ask(slack, bot, f"preset set {name}", user=ADMIN)
    [reply] = slack.responses_to(accepted)
    assert not reply.ephemeral, reply.text
    assert not slack.in_channel("C1")

    await ask(slack, bot, "hello with a preset")
    body = fake_upstream.bodies[-1]
    assert body is not None and body["preset"] == BUILTIN_PRESETS[name].prompt

    # A thread under a mention inherits the channel's preset.
    await slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> and in a thread?"))
    await bot.adapter.transport.idle()
    body = fake_upstream.bodies[-1]
    assert body is not None and body["preset"] == BUILTIN_PRESETS[name].prompt
    # The admin's users.info was looked up once, then cached.
    admin_lookups = [c for c in slack.calls_to("users.info") if c.params.get("user") == ADMIN]
    assert len(admin_lookups) == 1


async def test_a_mention_is_answered_in_a_thread_that_keeps_its_own_conversation(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    await ask(slack, bot, "a channel question")
    mention = slack.mention(f"<@{BOT_USER_ID}> summarise   this &amp; that")
    thread = mention["event"]["ts"]
    await slack.deliver_http(bot.url, mention)
    await bot.adapter.transport.idle()
    [answer] = slack.in_channel("C1", thread)
    assert answer.text.startswith("Answer 1 to:")
    body = fake_upstream.bodies[-1]
    assert body is not None and body["question"].endswith("summarise   this & that")
    assert "<@" not in body["question"]

    await slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> and then?", thread_ts=thread))
    await bot.adapter.transport.idle()
    assert [m.text[:8] for m in slack.in_channel("C1", thread)] == ["Answer 1", "Answer 2"]
    follow_up = fake_upstream.bodies[-1]
    assert follow_up is not None
    # The thread continues the conversation its first mention started, not the channel's.
    thread_turns = fake_upstream.conversations[follow_up["id"]]
    assert thread_turns[0]["question"].endswith("summarise   this & that")
    assert len(slack.in_channel("C1")) == 1  # the channel question's answer, nothing more


async def test_direct_messages_are_a_conversation_and_bot_messages_are_ignored(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    await slack.deliver_http(bot.url, slack.direct_message("hi in private"))
    await slack.deliver_http(bot.url, slack.direct_message("edited", subtype="message_changed"))
    await slack.deliver_http(bot.url, slack.direct_message("from a bot", user="U9", bot_id="B9"))
    await bot.adapter.transport.idle()
    assert len(fake_upstream.requests) == 1
    [answer] = slack.in_channel("D1")
    assert answer.text.startswith("Answer 1 to:") and answer.text.endswith("hi in private")


@pytest.mark.parametrize(
    "how",
    [
        {"secret": "wrong-secret"},
        {"timestamp": time.time() - 600},
        {"signed": False},
    ],
    ids=["forged", "stale", "unsigned"],
)
async def test_a_bad_signature_is_rejected_before_any_handler(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream, how: dict[str, object]
) -> None:
    at_startup = len(slack.calls)
    delivery = await slack.deliver_http(bot.url, slack.command("hello"), **how)  # type: ignore[arg-type]
    await bot.adapter.transport.idle()
    assert delivery.status == 401
    assert len(slack.calls) == at_startup and slack.responses == [] and fake_upstream.requests == []


@pytest.mark.parametrize("token", ["bot", "app", "secret"])
async def test_a_rejected_token_or_missing_secret_stops_startup_with_a_clear_error(
    settings: Settings, token: str
) -> None:
    changes = {
        "bot": {"bot_token": "xoxb-wrong"},
        "app": {"app_token": "xapp-wrong"},
        "secret": {"signing_secret": None},
    }[token]
    core = await ChatCore.open(settings)
    adapter = SlackAdapter(core, replace(slack_of(settings), **changes), host="127.0.0.1")  # type: ignore[arg-type]
    try:
        with pytest.raises(StartupError, match="SLACK_") as caught:
            await adapter.start()
        assert "wrong" not in str(caught.value)
    finally:
        await adapter.close()
        await core.aclose()


async def test_a_redelivered_event_is_answered_once_even_after_a_restart(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    event = slack.mention(f"<@{BOT_USER_ID}> only once please")
    command = slack.command("once as well")
    async with running(settings) as bot:
        for retry in (None, 1):
            assert (await slack.deliver_http(bot.url, event, retry_num=retry)).status == 200
            assert (await slack.deliver_http(bot.url, command, retry_num=retry)).status == 200
            await bot.adapter.transport.idle()
    async with running(settings) as bot:
        assert (await slack.deliver_http(bot.url, event, retry_num=2)).status == 200
        assert (await slack.deliver_http(bot.url, command, retry_num=2)).status == 200
        await bot.adapter.transport.idle()
    assert len(fake_upstream.requests) == 2
    assert len(slack.calls_to("chat.postMessage")) == 2  # one answer in the thread, one in the channel


async def test_an_upstream_403_gives_a_clear_message(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour.fail(403, "used_up", "balance exhausted"))
    await ask(slack, bot, "will this work?")
    [answer] = slack.in_channel("C1")
    assert USED_UP in answer.text
    assert "Traceback" not in answer.text and "403" not in answer.text


async def test_a_long_answer_arrives_as_several_messages_under_the_limit(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(30)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 9000
    fake_upstream.queue(Behaviour(answer=text, fragment_size=400))
    await ask(slack, bot, "tell me a lot")
    answers = slack.in_channel("C1")
    assert len(answers) >= 3
    assert all(len(m.text) <= 4000 for m in answers)
    assert slack.too_long == 0
    shown = "\n\n".join(m.text for m in answers)
    assert all(p.strip() in shown for p in paragraphs)


async def test_an_answer_dense_in_escapable_characters_loses_no_row(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    # Each `<` shows as `&lt;`: split on the Markdown's own length, 41 to 44 of these rows were cut.
    rows = [f"<tr><td>row {i}</td><td>a & b</td><td>{'<b>x</b>' * 3}</td></tr>" for i in range(150)]
    answer = "<table>\n" + "\n".join(rows) + "\n</table>"
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=700))
    await ask(slack, bot, "an html table please")
    messages = slack.in_channel("C1")
    assert len(messages) >= 4 and slack.too_long == 0
    assert not any(m.text.endswith(" …") for m in messages)
    shown = "".join(m.text for m in messages).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert all(row in shown for row in rows)


async def test_markdown_is_converted_to_mrkdwn_and_escaped(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(
        Behaviour(answer="**Bold** and [a link](https://example.com) if a < b & c <!here> <@U2>\n\n- item")
    )
    await ask(slack, bot, "format please <!channel>")
    [answer] = slack.in_channel("C1")
    header, body = answer.text.split("\n\n", 1)
    assert header.startswith("*u1-display* asked: format please")
    assert body.startswith("*Bold* and <https://example.com|a link> if a &lt; b &amp; c ")
    assert body.endswith("\n\n• item")
    assert "<!" not in answer.text and "<@U2" not in answer.text


@pytest.mark.parametrize("text", ["", "help", "preset set", "hlep"])
async def test_help_and_unknown_subcommands_get_help(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream, text: str
) -> None:
    key = await ask(slack, bot, text)
    [reply] = slack.responses_to(key)
    assert reply.ephemeral and "preset list" in reply.text
    assert fake_upstream.requests == [] and not slack.in_channel("C1")


async def test_a_refused_question_leaves_nothing_in_the_channel(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    key = await ask(slack, bot, "x" * (bot.core.settings.max_question_chars + 1))
    [reply] = slack.responses_to(key)
    assert reply.ephemeral and "limit" in reply.text
    assert not slack.calls_to("chat.postMessage") and not slack.calls_to("chat.delete")
    assert fake_upstream.requests == []


async def test_chat_update_429_is_honoured_and_the_final_text_still_arrives(
    settings: Settings, fake_upstream: FakeUpstream
) -> None:
    full = " ".join(f"word{i}" for i in range(150))
    fake_upstream.queue(Behaviour(answer=full, fragment_size=20, fragment_delay=0.03))
    held = time.monotonic()
    refused: list[float] = []

    def clock() -> float:
        # The fake's time stands still until it has refused a call, then runs on from there: however
        # slowly a busy machine streams the answer, its second update meets an empty bucket, and a retry
        # sooner than Slack's Retry-After would meet it again.
        if not strict.rate_limited:
            return held
        if not refused:
            refused.append(time.monotonic())
        return held + time.monotonic() - refused[0]

    async with FakeSlack(update_burst=1, update_per_minute=120, clock=clock) as strict:
        tight = with_slack(settings, api_url=strict.api_url)
        async with running(tight) as bot:
            await ask(strict, bot, "stream a lot")
        assert strict.rate_limited == strict.limited["chat.update"] == 1
        assert strict.in_channel("C1")[-1].text == "*u1-display* asked: stream a lot\n\n" + full


async def test_close_lets_an_answer_in_flight_finish(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(latency=0.5, answer="finished anyway"))
    async with running(settings) as bot:
        await slack.deliver_http(bot.url, slack.command("slow one"))
        await fake_upstream.wait_for_requests(1)
        await bot.adapter.close()
        assert not bot.adapter.connected
    assert slack.in_channel("C1")[-1].text.endswith("\n\nfinished anyway")


async def test_socket_mode_acks_a_command_on_the_socket_and_answers(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    socket_settings = with_slack(settings, app_token=APP_TOKEN, signing_secret=None)
    fake_upstream.queue(Behaviour(latency=0.5, answer="over the socket"))
    async with running(socket_settings) as bot:
        assert bot.adapter.connected and bot.adapter.port is None
        sent = time.monotonic()
        envelope = await slack.deliver_socket(slack.command("via socket"))
        ack = await slack.wait_for_ack(envelope)
        assert ack.at - sent < 1.0 and not ack.payload
        await slack.wait_until(lambda: len(slack.in_channel("C1")) == 1, 5)

        mention = slack.mention(f"<@{BOT_USER_ID}> retried")
        first = await slack.deliver_socket(mention)
        again = await slack.deliver_socket(mention, retry_attempt=1)
        await slack.wait_for_ack(first)
        await slack.wait_for_ack(again)
        await slack.wait_until(lambda: len(slack.in_channel("C1", mention["event"]["ts"])) == 1, 5)
        await bot.adapter.transport.idle()
    assert slack.in_channel("C1")[-1].text.endswith("\n\nover the socket")
    assert len(fake_upstream.requests) == 2


async def test_socket_mode_reconnects_after_slack_drops_the_connection(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    socket_settings = with_slack(settings, app_token=APP_TOKEN, signing_secret=None)
    async with running(socket_settings) as bot:
        await slack.wait_for_socket(1)
        await slack.drop_socket()
        await slack.wait_for_socket(2)
        await slack.wait_for_ack(await slack.deliver_socket(slack.command("still there?")))
        await slack.wait_until(lambda: len(slack.in_channel("C1")) == 1)
        assert bot.adapter.connected
    assert slack.in_channel("C1")[-1].text.endswith("still there?")


# --- hostile use ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"edited": {"user": "U1", "ts": "1700000000.000009"}},
        {"subtype": "bot_message"},
        {"bot_id": "B0999"},
    ],
    ids=["edited", "subtype", "another-bot"],
)
async def test_edited_mentions_and_other_bots_are_not_answered(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream, extra: dict[str, object]
) -> None:
    """Answering an edited mention again, or another bot's, lets two bots talk to each other forever."""
    payload = slack.mention(f"<@{BOT_USER_ID}> say hi to the other bot")
    payload["event"].update(extra)
    assert (await slack.deliver_http(bot.url, payload)).status == 200
    await bot.adapter.transport.idle()
    assert fake_upstream.requests == [] and not slack.calls_to("chat.postMessage")


async def test_refused_commands_post_nothing_in_the_channel(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    """Six questions past the rate limit used to cost seven posts and five deletes."""
    limited = replace(settings, user_rate=RateLimit(1, 60))
    async with running(limited) as bot:
        keys = [await ask(slack, bot, f"question {i}") for i in range(6)]
    assert len(slack.calls_to("chat.postMessage")) == 1 and not slack.calls_to("chat.delete")
    for key in keys[1:]:
        [refusal] = slack.responses_to(key)
        assert refusal.ephemeral and "faster than this bot allows" in refusal.text
    assert len(fake_upstream.requests) == 1


async def test_a_demoted_admin_loses_the_rights_when_slack_says_so(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    assert not slack.responses_to(await ask(slack, bot, "preset set coder", user=ADMIN))[0].ephemeral
    slack.admins.discard(ADMIN)
    demoted = {
        "id": ADMIN,
        "team_id": slack.team_id,
        "name": "uadmin",
        "profile": {"display_name": "uadmin-display"},
        "is_admin": False,
        "is_owner": False,
    }
    await slack.deliver_http(bot.url, slack.event({"type": "user_change", "user": demoted}))
    await bot.adapter.transport.idle()
    [refused] = slack.responses_to(await ask(slack, bot, "preset set writer", user=ADMIN))
    assert refused.ephemeral and "needs a workspace admin or owner" in refused.text
    assert len([c for c in slack.calls_to("users.info") if c.params.get("user") == ADMIN]) == 1


async def test_an_admin_is_looked_up_again_within_a_minute(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    now = [1000.0]
    core = await ChatCore.open(settings)
    adapter = SlackAdapter(core, slack_of(settings), host="127.0.0.1", clock=lambda: now[0])
    await adapter.start()
    bot = Bot(core, adapter)
    try:
        assert not slack.responses_to(await ask(slack, bot, "preset set coder", user=ADMIN))[0].ephemeral
        slack.admins.discard(ADMIN)  # demoted, and Slack's user_change event never arrives
        now[0] += 30
        assert not slack.responses_to(await ask(slack, bot, "preset set writer", user=ADMIN))[0].ephemeral
        now[0] += 31
        [refused] = slack.responses_to(await ask(slack, bot, "preset set tutor", user=ADMIN))
        assert refused.ephemeral and "needs a workspace admin or owner" in refused.text
    finally:
        await adapter.close()
        await core.aclose()


async def test_an_admin_of_another_organisation_is_not_an_admin_here(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    """In a Slack Connect channel, users.info says `is_admin` of a guest's own workspace."""
    slack.admins.add("UGUEST")
    slack.home_teams["UGUEST"] = "TOTHERORG"
    [refused] = slack.responses_to(await ask(slack, bot, "preset set coder", user="UGUEST"))
    assert refused.ephemeral and "needs a workspace admin or owner" in refused.text
    slack.admins.add("UHOST")
    [accepted] = slack.responses_to(await ask(slack, bot, "preset set coder", user="UHOST"))
    assert not accepted.ephemeral, "an admin of this workspace is one"


async def test_questions_that_start_with_a_command_word_are_answered(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    for question in ("help me write a polite email", "status of the Q3 launch", "reset my password how?"):
        await ask(slack, bot, question)
    asked = [b["question"] for b in fake_upstream.bodies]  # type: ignore[index]
    assert asked == [
        "u1-display: help me write a polite email",
        "u1-display: status of the Q3 launch",
        "u1-display: reset my password how?",
    ]


async def test_an_unreachable_slack_is_one_line(settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    core = await ChatCore.open(settings)
    adapter = SlackAdapter(
        core, replace(slack_of(settings), api_url=f"http://127.0.0.1:{closed}/api/"), host="127.0.0.1"
    )
    try:
        with pytest.raises(StartupError) as caught:
            await adapter.start()
        message = str(caught.value)
        assert message.startswith(f"could not reach Slack (http://127.0.0.1:{closed}/api/)")
        assert "\n" not in message and "Traceback" not in message
    finally:
        await adapter.close()
        await core.aclose()


async def test_markdown_links_to_slack_tokens_ping_nobody_anywhere_an_answer_goes(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    """`[heads up](!channel)` used to reach Slack as `<!channel|heads up>`: a real notification."""
    hostile = (
        "[heads up](!channel) ![x](!everyone) [boss](@U123) [ops](!subteam^S1) <!here> <@U2>\n\n"
        + "filler line to split the answer into several messages\n" * 120
        + "[again](!channel) and [there](@U123)"
    )
    fake_upstream.queue(Behaviour(answer=hostile, fragment_size=300))
    await ask(slack, bot, "[me](!channel) please <!everyone>")
    fake_upstream.queue(Behaviour(answer=hostile))
    await slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> and in a thread"))
    await bot.adapter.transport.idle()
    sent = [m.text for m in slack.messages] + [v for m in slack.messages for v in m.versions]
    sent += [r.text for r in slack.responses] + [str(e.get("text", "")) for e in slack.ephemerals]
    assert len(slack.messages) >= 4, "the answers were split: continuations are checked too"
    for text in sent:
        for token in ("<!", "<@", "<#"):
            assert token not in text, (token, text[:200])


async def test_a_question_with_slack_files_says_in_one_line_that_they_are_not_passed(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    mention = slack.mention(f"<@{BOT_USER_ID}> what is in these?")
    mention["event"]["files"] = [
        {
            "id": "F1",
            "name": "diagram.png",
            "mimetype": "image/png",
            "size": 10,
            "url_private": "https://files.slack.com/files-pri/T1-F1/diagram.png",
        },
        {
            "id": "F2",
            "name": "notes.pdf",
            "mimetype": "application/pdf",
            "size": 10,
            "url_private": "https://files.slack.com/files-pri/T1-F2/notes.pdf",
        },
    ]
    await slack.deliver_http(bot.url, mention)
    await bot.adapter.transport.idle()
    [answer] = slack.in_channel("C1", mention["event"]["ts"])
    body = fake_upstream.bodies[-1]
    assert body is not None and "message" not in body and "references" not in body
    assert "files.slack.com" not in str(body), (
        "a Slack file URL (which needs the bot token) never goes upstream"
    )
    notes = [line for line in answer.text.splitlines() if "Skipped" in line]
    assert len(notes) == 1 and "diagram.png, notes.pdf" in notes[0] and "no public link" in notes[0]


# --- sends with an unknown outcome ---------------------------------------------------------------------


async def mention_and_wait(slack: FakeSlack, bot: Bot, text: str) -> str:
    payload = slack.mention(f"<@{BOT_USER_ID}> {text}", channel="C1")
    delivery = await slack.deliver_http(bot.url, payload)
    assert delivery.status == 200
    await bot.adapter.transport.idle()
    return str(payload["event"]["ts"])


async def test_a_post_delivered_but_unanswered_is_found_not_posted_twice(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="Delivered once."))
    slack.drop_after_delivery["chat.postMessage"] = 1
    thread = await mention_and_wait(slack, bot, "hello")
    [answer] = slack.in_channel("C1", thread)
    assert answer.text == "Delivered once."
    assert len(slack.calls_to("chat.postMessage")) == 1, "never sent again"
    [lookup] = slack.calls_to("conversations.replies")
    assert lookup.params["ts"] == thread


async def test_a_post_that_did_not_arrive_is_posted_again_once_looked_for(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="Posted on the second try."))
    slack.drop_before_delivery["chat.postMessage"] = 1
    thread = await mention_and_wait(slack, bot, "hello")
    [answer] = slack.in_channel("C1", thread)
    assert answer.text == "Posted on the second try."
    posts = slack.calls_to("chat.postMessage")
    lookups = slack.calls_to("conversations.replies")
    assert len(posts) == 1, "the lost one never reached the fake's record"
    assert len(lookups) == 2 and all(lookup.at < posts[0].at for lookup in lookups), (
        "looked for at once and again before posting anew"
    )


async def test_an_edit_delivered_but_unanswered_is_made_again_on_the_same_message(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="Streamed " + "word " * 60, fragment_size=8, fragment_delay=0.02))
    slack.drop_after_delivery["chat.update"] = 1
    thread = await mention_and_wait(slack, bot, "hello")
    [answer] = slack.in_channel("C1", thread)
    assert answer.text == ("Streamed " + "word " * 60).strip()
    assert len(slack.calls_to("chat.postMessage")) == 1, "one message, edited, never posted again"


# --- many answers in one channel -----------------------------------------------------------------------


async def test_askers_in_one_channel_take_turns_for_its_posts(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    """Slack posts about once a second per channel: with every answer ready at once, each asker's next
    answer waits behind the other's earlier ones."""
    gate = asyncio.Event()
    fake_upstream.queue(*(Behaviour(gate=gate) for _ in range(8)))
    threads: dict[str, str] = {}
    for user, n in [("UA", 1), ("UA", 2), ("UA", 3), ("UA", 4), ("UB", 1), ("UB", 2), ("UB", 3), ("UB", 4)]:
        payload = slack.mention(f"<@{BOT_USER_ID}> question {n}", user=user, channel="C1")
        assert (await slack.deliver_http(bot.url, payload)).status == 200
        threads[f"{user}{n}"] = str(payload["event"]["ts"])
    async with asyncio.timeout(5):
        await fake_upstream.wait_for_requests(8)
    gate.set()
    await bot.adapter.transport.idle()
    shown = {name: slack.in_channel("C1", ts) for name, ts in threads.items()}
    assert all(len(messages) == 1 for messages in shown.values()), "every answer whole, none twice"
    order = sorted(shown, key=lambda name: shown[name][0].at[-1])
    arrival = list(threads)
    # The channel's burst of three goes to whichever answers were ready first; the rest wait in line:
    # each asker's n-th answer behind every asker's earlier ones, then in order of arrival.
    queued = order[3:]
    assert queued == sorted(queued, key=lambda name: (int(name[2:]), arrival.index(name)))
    assert slack.rate_limited == 0


async def test_posts_slow_on_their_way_never_let_the_next_ones_arrive_too_close(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    """Slack counts a post when it arrives. The channel's burst of three is slow on its way and the posts
    after it are fast: counted when sent, those went out a refill apart and arrived before the slow
    three, which then met an empty bucket. Counted until answered, none is refused and each arrives."""
    gate = asyncio.Event()
    texts = [f"Answer number {n}." for n in range(5)]
    fake_upstream.queue(*(Behaviour(answer=text, gate=gate) for text in texts))
    threads = []
    for n in range(5):
        payload = slack.mention(f"<@{BOT_USER_ID}> question {n}", user=f"U{n}", channel="C1")
        assert (await slack.deliver_http(bot.url, payload)).status == 200
        threads.append(str(payload["event"]["ts"]))
    async with asyncio.timeout(5):
        await fake_upstream.wait_for_requests(5)
    slack.delay_next["chat.postMessage"] = [2.5, 2.5, 2.5]
    gate.set()
    await bot.adapter.transport.idle()
    assert slack.limited["chat.postMessage"] == 0
    shown = [slack.in_channel("C1", ts) for ts in threads]
    assert all(len(messages) == 1 for messages in shown), "every answer whole, none twice"
    assert sorted(messages[0].text for messages in shown) == texts
    assert not slack.delay_next["chat.postMessage"], "the burst was slow on its way"


async def test_an_answer_keeps_its_turn_while_its_thinking_status_is_slow(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    """A first post never waits for an "is thinking…" status still on its way: the answer ready first in a
    channel is posted first, and the status that lands after it is cleared, not left under the answer."""
    first_ready, second_ready = asyncio.Event(), asyncio.Event()
    fake_upstream.queue(
        Behaviour(answer="Asked first, ready first.", gate=first_ready),
        Behaviour(answer="Asked second, ready second.", gate=second_ready),
    )
    slow = slack.delay_next["assistant.threads.setStatus"] = [2.5]
    first = slack.mention(f"<@{BOT_USER_ID}> one", user="UA", channel="C1")
    assert (await slack.deliver_http(bot.url, first)).status == 200
    async with asyncio.timeout(5):
        while slow:  # noqa: ASYNC110 - the fake takes the delay when the call arrives
            await asyncio.sleep(0.01)
    second = slack.mention(f"<@{BOT_USER_ID}> two", user="UB", channel="C1")
    assert (await slack.deliver_http(bot.url, second)).status == 200
    one, two = str(first["event"]["ts"]), str(second["event"]["ts"])
    await slack.wait_until(lambda: slack.statuses_in("C1", two))
    assert not slack.statuses_in("C1", one), "the first answer's status is still on its way"

    first_ready.set()
    await asyncio.sleep(0.2)
    second_ready.set()
    await bot.adapter.transport.idle()

    def posted(thread: str) -> float:
        return min(c.at for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == thread)

    assert posted(one) < posted(two), "the answer ready first is posted first"
    assert [m.text for m in slack.in_channel("C1", one)] == ["Asked first, ready first."]
    # Once the slow status has landed, the thread shows none: it landed after the answer and was cleared.
    await slack.wait_until(
        lambda: bool(slack.statuses_in("C1", one)) and slack.status_of("C1", one) == "", within=6
    )
    statuses = slack.statuses_in("C1", one)
    if statuses[0].at > posted(one):
        assert [s.status for s in statuses] == [STATUS, ""]
