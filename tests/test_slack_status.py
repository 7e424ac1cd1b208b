"""Issue 16: on Slack, a tool line before any answer text shows as the thread's status, so the answer's
first text is still a post (no `chat.update`, which the whole workspace shares). Through the real adapter,
with signed events, against the Slack fake; where there is no thread status the line stays on the message."""

from __future__ import annotations

from acechat.bots.slack_targets import STATUS, STATUS_CHARS
from tests.fakes.slack import BOT_USER_ID, FakeSlack
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_slack import Bot, ask
from tests.test_v2 import result, tool

__all__ = ["bot", "settings"]  # fixtures
from tests.test_slack import bot, settings

LONG_QUERY = "why " * 60

# Half a second between stream lines: the status (at most one call a second) has time to show a tool line
# before the text comes, even on a loaded machine.
TOOLS = Behaviour(
    answer="Found it.",
    fragment_delay=0.5,
    before=(
        tool("t1", "web_search", query="acechat <!channel> @everyone"),
        result("t1", "SECRET RAW OUTPUT"),
        tool("t2", "web_search", query=LONG_QUERY),
        result("t2"),
    ),
)


async def test_a_tool_line_before_text_is_the_thread_status_and_the_first_text_a_post(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(TOOLS)
    mention = slack.mention(f"<@{BOT_USER_ID}> dig", user="U1")
    thread = mention["event"]["ts"]
    await slack.deliver_http(bot.url, mention)
    await bot.adapter.transport.idle()

    statuses = [s.status for s in slack.statuses_in("C1", thread)]
    tool_lines = [s for s in statuses if s != STATUS]
    assert tool_lines, statuses
    assert all(s.startswith("🔎 Searching the web for “") for s in tool_lines), tool_lines
    assert all(len(s) <= STATUS_CHARS and "`" not in s and "_" not in s for s in tool_lines), tool_lines
    everything = "\n".join(statuses)
    assert "@everyone" not in everything and "<!channel>" not in everything and "SECRET" not in everything

    posts = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == thread]
    assert posts and posts[0].params["text"] == "Found it.", "the first text is a post, not an edit"
    assert all(s.at <= posts[0].at for s in slack.statuses_in("C1", thread)), "no status after the answer"
    shown = [c.text for c in slack.changes_in("C1", thread) if c.text is not None]
    assert not any("Searching" in text for text in shown), "no message shows a tool line"
    assert [m.text for m in slack.in_channel("C1", thread)] == ["Found it."]
    assert slack.status_of("C1", thread) == "", "posting the answer clears the status"


async def test_a_command_answer_has_no_thread_status_and_keeps_the_line_on_its_message(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(TOOLS)
    await ask(slack, bot, "dig")
    shown = [c.text or "" for c in slack.changes_in("C1")]
    assert any("Searching the web for" in text for text in shown), shown
    assert slack.in_channel("C1")[-1].text.endswith("Found it.")
    assert not slack.calls_to("assistant.threads.setStatus")
