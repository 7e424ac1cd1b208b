"""A hostile user and a hostile web against Slack's streamed answers, task timeline, question buttons and
preset forms: nothing pings, nothing passes a platform's limit, nothing stalls the loop, everything that
can be shown is."""

from __future__ import annotations

import html
import re
import time

from markdown_it import MarkdownIt

from acechat.bots.slack_stream import UNSETTLED_RUN, settled
from acechat.bots.slack_text import MAX_STREAM_CHARS, stream_markdown
from acechat.core.answer import progress_line
from acechat.core.events import ToolStarted
from acechat.core.settings import Settings
from tests.fakes.slack import FakeSlack
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_slack import Bot
from tests.test_slack_interactive import ids, offers_choices
from tests.test_slack_stream import PING, STREAMING, ask_in_dm, calls_in, running, stream_text

__all__ = ["bot", "settings"]  # fixtures
from tests.test_slack import bot
from tests.test_slack_stream import settings

HOSTILE = "<!here> <@U123> @channel <!subteam^S1|@oncall> &lt;!here&gt; &#60;@U9&#62; "
# Control characters, a right-to-left override, a lone surrogate (a JSON `\ud83d` split off its pair).
ODD = "\x00\x07\x1b\u202e\u2066\ud83d"


# What no line written around untrusted text may hold: control characters, the bidirectional embeddings,
# overrides and isolates that reorder what follows them (the line's own words too), lone surrogates.
UNSHOWN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


# Streamed text is Markdown: what Slack shows is what CommonMark makes of it (entities and backslash
# escapes decoded), and that must not read as a mention either.
COMMONMARK = MarkdownIt("commonmark").enable("strikethrough")
HTML_TAG = re.compile(r"<[^<>]*>")
ESCAPED = r"<\!here> <\@U123> <\!channel> <\#C1> <\!subteam^S1> \<!here> <&#33;here> &lt;\!here&gt; "


def shown_as(markdown: str) -> str:
    """The text CommonMark renders `markdown` to, tags dropped and entities decoded."""
    return html.unescape(HTML_TAG.sub("", COMMONMARK.render(markdown)))


def tool(n: int, name: str, **given: str) -> tuple[dict[str, object], dict[str, object]]:
    use = {"type": "tool_use", "tool_id": f"t{n}", "tool_name": name, "input": given}
    return use, {"type": "tool_result", "tool_id": f"t{n}", "output": "x", "is_error": False}


async def test_hostile_tool_steps_never_ping_or_pass_a_task_titles_limit(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    steps = (
        *tool(1, "web_search", query=HOSTILE + ODD + "q" * 10_000),
        *tool(2, "fetch", url="https://example.com/<!here>" + "a" * 10_000),
        *tool(3, "read_page", page=HOSTILE * 200),
        *tool(4, HOSTILE + ODD + "mcp__" + "x" * 5_000),
    )
    fake_upstream.queue(
        Behaviour(answer="Found it. " * 5, fragment_size=5, fragment_delay=0.05, before=steps)
    )
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "look it up")
        (message,) = slack.in_channel("D1", thread)
        sent = calls_in(slack, STREAMING)
        assert sent and all(c.ok for c in sent), [c.response for c in sent if not c.ok]
        titles = [t["title"] for t in message.tasks.values()]
        assert titles and all(len(t) <= 200 for t in titles)
        for title in titles:
            assert not PING.search(title) and not UNSHOWN.search(title), title
        assert message.text.startswith("Found it.") and not message.streaming


async def test_a_ping_arriving_one_character_per_delta_never_streams(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    answer = "Look " + ODD + " " + ESCAPED + HOSTILE * 3 + "<!CHANNEL> <!here|x> &amp;lt;!here&amp;gt; done. " * 3
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=1, fragment_delay=0.002))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "go")
        sent = calls_in(slack, STREAMING)
        assert sent and all(c.ok for c in sent)
        for call in sent:
            assert not PING.search(stream_text(call)), stream_text(call)
        (message,) = slack.in_channel("D1", thread)
        assert not PING.search(message.text) and message.text.endswith("done.")
        assert not PING.search(shown_as(message.text)), shown_as(message.text)


async def test_a_huge_unbroken_word_is_shown_whole_within_every_calls_limit(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    word = "".join(chr(0x61 + n % 26) for n in range(100_000))
    fake_upstream.queue(Behaviour(answer=f"Start {word} end", fragment_size=997, fragment_delay=0.001))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "go")
        messages = slack.in_channel("D1", thread)
        sent = calls_in(slack, STREAMING)
        assert sent and all(c.ok for c in sent)
        assert all(len(stream_text(c)) <= MAX_STREAM_CHARS for c in sent)
        assert slack.too_long == 0 and not any(m.streaming for m in messages)
        # Every character up to the answer's limit shows, in order, once the word has arrived whole.
        shown = "".join("".join(m.text.split()) for m in messages)
        assert shown.startswith("Start" + word[:11_000]) and "cut" in messages[-1].text


def test_settling_and_defusing_a_megabyte_stay_linear() -> None:
    word = "x" * 1_000_000
    mentions = "<!here>&lt;@" * 100_000
    began = time.perf_counter()
    assert settled(word) == len(word) - UNSETTLED_RUN and settled(word + " ") == len(word) + 1
    assert "<!" not in stream_markdown(mentions)
    stream_markdown("&" + "a" * 1_000_000)
    assert time.perf_counter() - began < 1.0


async def test_question_options_with_pings_and_1000_characters_fit_slacks_buttons(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    asked = {
        "type": "ask_user_question",
        "tool_id": "toolu_ask_1",
        "tool_name": "ask_user_question",
        "question": HOSTILE * 100 + ODD,
        "options": [HOSTILE + "a" * 1000, "<!channel>", {"label": "@everyone " + "b" * 1000}, ODD],
    }
    fake_upstream.queue(Behaviour(answer="", before=(asked,), terminal_reason="awaiting_user_input"))
    mention = slack.mention("<@UBOT> write the report")
    await slack.deliver_http(bot.url, mention)
    await bot.adapter.transport.idle()
    thread = mention["event"]["ts"]
    buttons = next(m for m in slack.in_channel("C1", thread) if offers_choices(m))
    labels = [e["text"]["text"] for b in buttons.blocks or () for e in b.get("elements", ())]
    assert len(labels) == 5 and all(0 < len(label) <= 75 for label in labels)
    assert all(e["text"]["type"] == "plain_text" for b in buttons.blocks[1:] for e in b["elements"])
    assert buttons.blocks[0]["text"]["type"] == "plain_text"  # the question: no markup, no pings
    for message in slack.in_channel("C1", thread):
        assert "<!" not in message.text and "<@U123" not in message.text
    # A press on a hostile option answers with it, and the buttons' message says so without a ping.
    await slack.deliver_http(bot.url, slack.press(buttons, ids(buttons)[1]))
    await bot.adapter.transport.idle()
    assert "<!channel>" not in buttons.text and ids(buttons) == []


def test_a_tool_lines_untrusted_detail_cannot_reorder_or_hide_the_line() -> None:
    for name, detail in (("web_search", "q"), ("read_file", "f"), ("fetch_page", "p")):
        line = progress_line(ToolStarted("t1", name, ODD + "\u202e" + detail + "\u2067x\x85"))
        assert not UNSHOWN.search(line) and detail in line, repr(line)


async def test_hostile_sources_stream_with_no_ping_and_no_hidden_characters(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    citations = tuple(
        {"type": "citation", "url": url, "title": title}
        for url, title in (
            ("https://example.com/a", HOSTILE + ODD + "t" * 10_000),
            ("https://example.com/<!here>", "bad url"),
            ("javascript:alert(1)", "script"),
            ("https://example.com/" + "p" * 10_000, "long url"),
            ("https://example.com/b", "&lt;!channel&gt; [x](https://evil.example) **bold** `code`"),
        )
    )
    fake_upstream.queue(Behaviour(answer="The answer. " * 4, fragment_size=6, after=citations))
    async with running(settings) as bot:
        thread = await ask_in_dm(slack, bot, "sources?")
        (message,) = slack.in_channel("D1", thread)
        sent = calls_in(slack, STREAMING)
        assert sent and all(c.ok for c in sent)
        for call in sent:
            text = stream_text(call)
            assert not PING.search(text) and not UNSHOWN.search(text.replace("\n", " ")), text[:300]
        assert "**Sources**" in message.text and "https://example.com/a" in message.text
        assert "javascript:" not in message.text and "bad url" not in message.text
        # A URL too long to keep is dropped, never clipped into a link to a page nobody named.
        assert "long url" not in message.text and "ppp…" not in message.text


def test_streamed_markdown_never_renders_as_a_mention() -> None:
    for text in (ESCAPED, HOSTILE, ESCAPED.replace(" ", "\n"), "[" + ESCAPED + "](https://example.com)"):
        streamed = stream_markdown(text)
        assert not PING.search(shown_as(streamed)), (text, streamed, shown_as(streamed))
