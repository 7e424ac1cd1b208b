"""Answers streamed through Slack's own streaming methods (issue 18, item 5), end to end: real slack-bolt
against FakeSlack in HTTP mode, with the app declared an agent (`SLACK_AGENT`), so that a direct message
is an agent session one person watches."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from acechat.bots.slack_text import MAX_STREAM_CHARS
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.slack import BOT_USER_ID, ApiCall, FakeSlack, Message
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_slack import Bot, running, slack_settings, with_slack

ACK_SECONDS = 3.0
STREAMING = ("chat.startStream", "chat.appendStream", "chat.stopStream")
# Whatever still pings once shown: a special or user mention, @here and its kin, an entity for `<`.
PING = re.compile(r"<[@!#]|@(?:here|channel|everyone)|&(?:lt|#60|#x3c);", re.IGNORECASE)
# In mrkdwn `&lt;` is how a `<` is written safely.
MRKDWN_PING = re.compile(r"<[@!#]|@(?:here|channel|everyone)", re.IGNORECASE)


@pytest.fixture
def settings(tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack) -> Settings:
    served = with_slack(slack_settings(tmp_path, upstream_settings, slack), agent=True)
    return replace(served, user_rate=RateLimit(0, 60.0), channel_rate=RateLimit(0, 60.0))


def not_an_agent(settings: Settings) -> Settings:
    return with_slack(settings, agent=False)


async def deliver(slack: FakeSlack, bot: Bot, payload: dict[str, object]) -> None:
    delivery = await slack.deliver_http(bot.url, payload)
    assert delivery.status == 200 and delivery.elapsed < ACK_SECONDS


async def ask_in_dm(
    slack: FakeSlack, bot: Bot, text: str, *, thread_ts: str | None = None, wait: bool = True
) -> str:
    """A direct message; the thread its answer goes in (its own, as an agent)."""
    extra = {"thread_ts": thread_ts} if thread_ts else {}
    dm = slack.direct_message(text, **extra)
    await deliver(slack, bot, dm)
    if wait:
        await bot.adapter.transport.idle()
    return thread_ts or str(dm["event"]["ts"])


def calls_in(slack: FakeSlack, methods: tuple[str, ...], ts: set[str] | None = None) -> list[ApiCall]:
    return [c for c in slack.calls if c.method in methods and (ts is None or c.params.get("ts") in ts)]


def stream_text(call: ApiCall) -> str:
    """What a streaming call added to its message's text."""
    chunks = call.params.get("chunks") or []
    return str(call.params.get("markdown_text") or "") + "".join(
        str(c.get("text", "")) for c in chunks if c.get("type") == "markdown_text"
    )


def shown(messages: list[Message]) -> str:
    return "".join(m.text for m in messages)


def vote_ids(message: Message) -> list[str]:
    return [a for a in message.action_ids if a.startswith("acechat:vote:")]


async def test_an_agent_session_answer_streams_and_ends_with_slacks_feedback_buttons(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    answer = "Here is **the plan**:\n\n1. first step\n2. second step\n\n" + "more words " * 40
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=7, fragment_delay=0.01))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "What is the plan?")
        (message,) = slack.in_channel("D1", thread)
        # The whole answer, as the core's Markdown (markdown_text is Markdown, not mrkdwn), streamed.
        assert message.text == answer.strip() and not message.streaming
        (start,) = calls_in(slack, ("chat.startStream",))
        assert start.ok and start.params["thread_ts"] == thread
        assert (start.params["recipient_user_id"], start.params["recipient_team_id"]) == ("U1", slack.team_id)
        appends = calls_in(slack, ("chat.appendStream",))
        assert len(appends) >= 2 and all(c.ok for c in appends), "the answer streams in several appends"
        (stop,) = calls_in(slack, ("chat.stopStream",))
        assert stop.ok and stop.params["ts"] == message.ts
        # Slack's own feedback buttons under the streamed text; Stop was Slack's (the session's) all along.
        assert len(vote_ids(message)) == 1 and message.action_ids == vote_ids(message)
        assert slack.sessions[("D1", thread)]["status"] == "active"
        # Nothing was posted or edited the old way.
        assert calls_in(slack, ("chat.postMessage", "chat.update")) == []
        # Each append extends the text by what the core added: no word was cut in two.
        pieces = [stream_text(c) for c in (start, *appends)]
        assert all(p == "" or p[-1].isspace() for p in pieces)


async def test_text_without_spaces_streams_as_it_is_written_not_all_at_its_end(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    # Chinese has no spaces between words: waiting for whitespace would show nothing until the end.
    answer = "计划如下首先检查日志然后重启服务最后通知团队" * 30
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=20, fragment_delay=0.1))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "计划是什么？")
        (message,) = slack.in_channel("D1", thread)
        assert message.text == answer and not message.streaming
        before_end = [stream_text(c) for c in calls_in(slack, ("chat.startStream", "chat.appendStream"))]
        assert sum(len(p) for p in before_end) >= len(answer) // 2, "most of it streamed before the end"
        assert len([p for p in before_end if p]) >= 3


async def test_a_dm_starts_a_session_and_its_follow_up_streams_in_the_same_thread(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        fake_upstream.queue(Behaviour(answer="First answer, in several words.", fragment_size=4))
        thread = await ask_in_dm(slack, bot, "hello")
        fake_upstream.queue(Behaviour(answer="Second answer, in the same thread.", fragment_size=4))
        await ask_in_dm(slack, bot, "and then?", thread_ts=thread)
        first, second = slack.in_channel("D1", thread)
        assert (first.text, second.text) == (
            "First answer, in several words.",
            "Second answer, in the same thread.",
        )
        assert len(calls_in(slack, ("chat.startStream",))) == 2
        assert all(vote_ids(m) for m in (first, second))
        assert calls_in(slack, ("chat.update",)) == []


async def test_a_dm_outside_the_agent_view_keeps_paced_edits_at_the_top_level(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="word " * 200, fragment_size=5, fragment_delay=0.005))
    async with running(not_an_agent(settings)) as bot:
        await ask_in_dm(slack, bot, "hello")
        (message,) = slack.in_channel("D1")
        assert message.thread_ts is None and message.text.startswith("word word")
        assert calls_in(slack, STREAMING) == []
        assert calls_in(slack, ("chat.postMessage",)) and calls_in(slack, ("chat.update",))


async def test_channel_mentions_keep_paced_chat_update_for_an_agent_too(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="word " * 200, fragment_size=5, fragment_delay=0.005))
    async with running(settings) as bot:
        mention = slack.mention(f"<@{BOT_USER_ID}> hello")
        await deliver(slack, bot, mention)
        await bot.adapter.transport.idle()
        (message,) = slack.in_channel("C1", str(mention["event"]["ts"]))
        assert message.text.startswith("word word")
        assert calls_in(slack, STREAMING) == []
        assert len(calls_in(slack, ("chat.update",))) >= 1


async def test_a_workspace_refusing_streaming_is_answered_with_chat_update_and_not_asked_again(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    slack.streaming_refused = "not_allowed_token_type"
    async with running(settings) as bot:
        with caplog.at_level(logging.WARNING, logger="acechat"):
            fake_upstream.queue(Behaviour(answer="word " * 200, fragment_size=5, fragment_delay=0.005))
            first = await ask_in_dm(slack, bot, "hello")
            fake_upstream.queue(Behaviour(answer="Another answer entirely.", fragment_size=4))
            second = await ask_in_dm(slack, bot, "again")
        (answer,) = slack.in_channel("D1", first)
        assert answer.text.startswith("word word") and vote_ids(answer)
        (again,) = slack.in_channel("D1", second)
        assert again.text == "Another answer entirely." and vote_ids(again)
        (refused,) = calls_in(slack, STREAMING)  # asked once, for the first answer only
        assert refused.reply["error"] == "not_allowed_token_type"
        assert calls_in(slack, ("chat.update",))
        told = [r for r in caplog.records if "refused streaming" in r.getMessage()]
        assert len(told) == 1 and "not_allowed_token_type" in told[0].getMessage()


async def test_a_long_answer_goes_on_in_a_new_stream_when_slack_closes_one_and_loses_no_text(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    slack.stream_max_chars = 400
    answer = " ".join(f"w{n}" for n in range(400))
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=20, fragment_delay=0.002))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "a long one")
        messages = slack.in_channel("D1", thread)
        assert len(messages) >= 3, "each closed stream went on in a new message"
        assert shown(messages) == answer
        assert not any(m.streaming for m in messages)
        closed = [c for c in calls_in(slack, ("chat.appendStream",)) if not c.ok]
        assert closed and {c.reply["error"] for c in closed} == {"message_not_in_streaming_state"}
        # The buttons are under the last; nothing went through chat.update.
        assert [bool(vote_ids(m)) for m in messages] == [False] * (len(messages) - 1) + [True]
        assert calls_in(slack, ("chat.update",)) == []


async def test_a_stream_slack_closed_for_age_goes_on_in_a_new_stream(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    slack.stream_max_seconds = 0.3
    answer = " ".join(f"w{n}" for n in range(300))
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=10, fragment_delay=0.01))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "a slow one")
        messages = slack.in_channel("D1", thread)
        assert len(messages) >= 2 and shown(messages) == answer
        assert vote_ids(messages[-1]) and not any(m.streaming for m in messages)


async def test_slacks_stop_mid_stream_leaves_the_text_with_stopped_and_no_stream_open(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="word " * 600, fragment_size=5, fragment_delay=0.02))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "a long story", wait=False)
        await slack.wait_until(lambda: any(len(m.text) > 30 for m in slack.in_channel("D1", thread)))
        (streaming,) = slack.in_channel("D1", thread)
        stop = slack.agent_session_stopped("D1", thread)
        event = stop["event"]
        assert isinstance(event, dict) and event["streaming_message_ts"] == [streaming.ts]
        await deliver(slack, bot, stop)
        await bot.adapter.transport.idle()
        assert fake_upstream.active == 0
        messages = slack.in_channel("D1", thread)
        assert not any(m.streaming for m in messages)
        # The text shown so far stays, "(stopped)" after it, and the feedback buttons under the last.
        assert messages[0].text.startswith("word word")
        assert messages[-1].text.endswith("_(stopped)_") and vote_ids(messages[-1])
        assert len(messages) == 1, "a stream a person stopped is finished in place, not continued"
        assert slack.sessions[("D1", thread)]["status"] == "active"


async def test_hostile_text_never_pings_and_never_passes_a_streaming_calls_limit(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    hostile = (
        "Hey @here and @channel, <!channel> <!here|everyone> <@U123> <!subteam^S1|@oncall> "
        "&lt;!here&gt; &#60;@U9&#62; [x](<!everyone>) @everyone\n\n"
    )
    # Pings arriving in pieces, then more text than a message holds.
    answer = hostile * 6 + "<!here|every one> then more words\n\n" + ("lorem ipsum dolor " * 700)
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=9, fragment_delay=0.001))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "say hostile things")
        messages = slack.in_channel("D1", thread)
        assert len(messages) >= 3, "split into messages"
        sent = calls_in(slack, STREAMING)
        assert len(calls_in(slack, ("chat.appendStream",))) >= 2 and all(c.ok for c in sent)
        for call in sent:
            text = stream_text(call)
            assert len(text) <= MAX_STREAM_CHARS
            assert not PING.search(text), text[:200]
        for call in calls_in(slack, ("chat.update",)):
            assert not MRKDWN_PING.search(str(call.params["text"]))
        assert slack.too_long == 0
        assert "lorem ipsum dolor" in messages[-1].text and vote_ids(messages[-1])


async def test_a_rewrite_stops_the_stream_and_the_message_is_edited_with_chat_update(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    # A mention whose label has spaces is defused one way while it arrives and another once whole: the
    # text streamed so far is not the start of the final text.
    first = "Begin <!here|a b"
    fake_upstream.queue(
        Behaviour(answer=first + " c> and the rest.", fragment_size=len(first), fragment_delay=1.2)
    )
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "go")
        (message,) = slack.in_channel("D1", thread)
        (start,) = calls_in(slack, ("chat.startStream",))
        assert start.params["markdown_text"] == "Begin <\u200b!here|a "
        (stop,) = calls_in(slack, ("chat.stopStream",))
        assert stop.ok and "markdown_text" not in stop.params, "stopped as it was, then edited"
        assert not message.streaming and message.text == "Begin @\u200dhere and the rest."
        assert vote_ids(message)
        updates = calls_in(slack, ("chat.update",))
        assert updates and all(c.ok and c.at > stop.at for c in updates)


async def test_tool_steps_show_in_slacks_task_timeline_and_the_tool_line_never_streams(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    search = {"type": "tool_use", "tool_id": "t1", "tool_name": "web_search", "input": {"query": "q"}}
    read = {
        "type": "tool_use",
        "tool_id": "t2",
        "tool_name": "fetch",
        "input": {"url": "https://example.com/a"},
    }
    answer = "The answer, found on the web. " * 12
    fake_upstream.queue(
        Behaviour(
            answer=answer,
            fragment_size=12,
            fragment_delay=0.03,
            before=(search, {"type": "tool_result", "tool_id": "t1", "output": "x", "is_error": False}),
            after=(
                read,
                {"type": "tool_result", "tool_id": "t2", "output": "y", "is_error": False},
                {"type": "citation", "url": "https://example.com/a", "title": "Example"},
            ),
        )
    )
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "look it up")
        (message,) = slack.in_channel("D1", thread)
        assert message.text.startswith(answer.strip()) and "**Sources**" in message.text
        assert "https://example.com/a" in message.text and "Searching" not in message.text
        streamed = [stream_text(c) for c in calls_in(slack, STREAMING)]
        assert not any("Searching" in s or "Reading" in s for s in streamed)
        assert calls_in(slack, ("chat.update",)) == [] and vote_ids(message)
        # Each tool step is a task of the message's timeline, complete once the answer is.
        steps = list(message.tasks.values())
        titles = [t["title"] for t in steps]
        # The second tool runs for a moment only: it shows if an edit came while it ran.
        assert titles in (
            ["🔎 Searching the web for “q”…"],
            ["🔎 Searching the web for “q”…", "📖 Reading example.com…"],
        )
        assert {t["status"] for t in steps} == {"complete"}


async def test_an_append_with_an_unknown_outcome_is_never_repeated_the_message_is_edited_whole(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    slack.drop_after_delivery["chat.appendStream"] = 1  # it lands, its answer never comes
    answer = " ".join(f"w{n}" for n in range(300))
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=10, fragment_delay=0.005))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "go")
        (message,) = slack.in_channel("D1", thread)
        assert message.text == answer and not message.streaming and vote_ids(message)
        assert calls_in(slack, ("chat.update",)), "edited whole once the append's outcome was unknown"
        assert len(calls_in(slack, ("chat.appendStream",))) == 1, "never appended again"


async def test_a_stream_opened_by_a_tool_step_starts_with_the_task_in_progress(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    search = {"type": "tool_use", "tool_id": "t1", "tool_name": "web_search", "input": {"query": "news"}}
    done = {"type": "tool_result", "tool_id": "t1", "output": "x", "is_error": False}
    fake_upstream.queue(
        Behaviour(answer="Found it.", fragment_size=100, fragment_delay=0.4, before=(search, done))
    )
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "any news?")
        (message,) = slack.in_channel("D1", thread)
        (start,) = calls_in(slack, ("chat.startStream",))
        assert "markdown_text" not in start.params, "no text yet: the tool line is a task, not text"
        (began,) = start.params["chunks"]
        assert (began["type"], began["status"], began["title"]) == (
            "task_update",
            "in_progress",
            "🔎 Searching the web for “news”…",
        )
        assert message.text == "Found it." and message.tasks[began["id"]]["status"] == "complete"


async def test_an_answer_really_ending_in_an_italic_ellipsis_streams_all_its_text_and_no_task(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    # Text that reads like the core's tool line once was (`_…_` at the end) is text, nothing else.
    first = "Intro words here.\n\n_It went on and on…_"
    answer = first + "\n\nThe end, at last."
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=len(first), fragment_delay=1.2))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "tell me")
        (message,) = slack.in_channel("D1", thread)
        assert message.text == answer and not message.streaming and vote_ids(message)
        assert message.tasks == {}, "no text is ever taken for a tool step"
        calls = calls_in(slack, STREAMING)
        assert not any(c.get("type") == "task_update" for x in calls for c in x.params.get("chunks") or [])
        before_stop = "".join(stream_text(c) for c in calls if c.method != "chat.stopStream")
        assert "Intro words here.\n\n_It went on and " in before_stop
        assert calls_in(slack, ("chat.update",)) == []


def open_streams(slack: FakeSlack) -> list[Message]:
    return [m for m in slack.messages if m.streaming]


async def test_an_upstream_error_mid_answer_leaves_no_stream_open(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(
        Behaviour(answer="word " * 100, fragment_size=10, fragment_delay=0.02, error_after=20)
    )
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "go")
        (message,) = slack.in_channel("D1", thread)
        assert message.text.startswith("word word") and "⚠️" in message.text
        assert open_streams(slack) == []
        starts, stops = (calls_in(slack, (m,)) for m in ("chat.startStream", "chat.stopStream"))
        assert len(starts) == len(stops) == 1, "stopped once"


async def test_a_platform_error_mid_answer_leaves_no_stream_open(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    # The channel is archived while the answer streams: the core gives the answer up and says so.
    slack.fail_next["chat.appendStream"] = ["is_archived"]
    fake_upstream.queue(Behaviour(answer="word " * 100, fragment_size=10, fragment_delay=0.02))
    async with running(settings) as bot:
        with caplog.at_level(logging.INFO, logger="acechat"):
            thread = await ask_in_dm(slack, bot, "go")
        (message,) = slack.in_channel("D1", thread)
        assert message.text.startswith("word") and not message.streaming
        assert open_streams(slack) == []
        starts, stops = (calls_in(slack, (m,)) for m in ("chat.startStream", "chat.stopStream"))
        assert len(starts) == len(stops) == 1 and stops[0].ok, "stopped once, by the answer's end"
        assert slack.ephemerals, "the asker was told"
        assert any("left open" in r.getMessage() for r in caplog.records)


async def test_an_answer_cut_off_at_shutdown_leaves_no_stream_open(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="word " * 600, fragment_size=5, fragment_delay=0.02))
    async with running(replace(settings, shutdown_grace=0.3)) as bot:
        thread = await ask_in_dm(slack, bot, "a long story", wait=False)
        await slack.wait_until(lambda: any(len(m.text) > 30 for m in slack.in_channel("D1", thread)))
    # The adapter and the core closed with the answer still streaming: it was cut off, and its stream
    # stopped as it stood.
    await slack.wait_until(lambda: not open_streams(slack))
    starts, stops = (calls_in(slack, (m,)) for m in ("chat.startStream", "chat.stopStream"))
    assert len(starts) == len(stops) == 1
