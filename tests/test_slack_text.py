"""Slack markup in, mrkdwn out: bots/slack_text.py."""

from __future__ import annotations

import asyncio
import gc
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acechat.bots.slack_targets import SlackLimits
from acechat.bots.slack_text import (
    MAX_MESSAGE_CHARS,
    MAX_STREAMED_MESSAGE_CHARS,
    escape,
    from_slack,
    render,
    shown_length,
    stream_length,
    stream_markdown,
)
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.facts import Actor
from acechat.core.reply_target import TargetLimits
from acechat.core.scope import Scope
from acechat.core.splitting import split_message
from tests.fakes.target import RecordingTarget
from tests.fakes.upstream import Behaviour, FakeUpstream

# A link token the renderer makes: an http(s) or mailto target, then a label, neither able to end it.
LINK_TOKEN = re.compile(r"<(?:https?://|mailto:)[^\s<>|]+\|[^<>|]*>")
ENTITIES_ONLY = re.compile(r"(?:[^&]|&(?:amp|lt|gt);)*", re.DOTALL)
PINGS = ("<!", "<@", "<#", "<!subteam")


def assert_safe(mrkdwn: str) -> None:
    """Nothing in `mrkdwn` is a Slack token but links we made; `<`, `>` and `&` are otherwise entities."""
    for ping in PINGS:
        assert ping not in mrkdwn, mrkdwn
    rest = LINK_TOKEN.sub("", mrkdwn)
    assert "<" not in rest, mrkdwn
    # `>` is left only as the quote mark that starts a line.
    assert all(">" not in line.removeprefix("> ") for line in rest.split("\n")), mrkdwn
    assert ENTITIES_ONLY.fullmatch(rest), mrkdwn


# --- Slack's markup in ------------------------------------------------------------------------------


def test_user_markup_becomes_plain_text_without_the_bot_mention() -> None:
    text = "<@UBOT> ask <@U2|bob> in <#C1|general> about <https://a.io|a.io> and <https://b.io|docs> &lt;3"
    assert from_slack(text, "UBOT") == "ask @bob in #general about https://a.io and docs (https://b.io) <3"
    text = "<@U2> <mailto:x@y.z|x@y.z> <!subteam^S1|@ops> <!here> &amp;"
    assert from_slack(text, "UBOT") == "@U2 x@y.z @ops @here &"


def test_markup_that_never_closes_is_left_as_typed() -> None:
    # Each `<` is tried once: the pattern gives up an unclosed one without retrying shorter matches.
    assert from_slack("<" + "a" * 50_000) == "<" + "a" * 50_000
    assert from_slack("<a" * 20_000 + "> <@U1>") == "<a" * 19_999 + "a @U1"
    assert from_slack("&lt;" * 1000) == "<" * 1000


# --- mrkdwn out: the format ---------------------------------------------------------------------------


def test_markdown_becomes_mrkdwn_with_slack_control_characters_escaped() -> None:
    markdown = "# Title\n**bold** [link](https://x.io/?a=1&b=2)\n> quoted <b>\n\n```\nif a < b:\n```"
    assert render(markdown) == (
        "*Title*\n*bold* <https://x.io/?a=1&amp;b=2|link>\n> quoted &lt;b&gt;\n\n```\nif a &lt; b:\n```"
    )


def test_a_real_looking_answer() -> None:
    markdown = (
        "## Rotating logs with **logrotate**\n"
        "Read [the _manual_ page](https://linux.die.net/man/8/logrotate) or "
        "[Log rotation (Unix)](https://en.wikipedia.org/wiki/Log_rotation_(Unix)) first.\n"
        "\n"
        "1. Install it\n"
        "2. Configure it:\n"
        "   - `daily` or ~~hourly~~ `weekly`\n"
        "   - keep *seven* copies\n"
        "     - compressed\n"
        "\n"
        "```bash\n"
        "echo '<@U1> <!channel>' > /tmp/x && cat a | b\n"
        "\n"
        "tail -f /var/log/syslog\n"
        "```\n"
        "\n"
        "> **Note:** ask <@U2> or mail <ops@example.com>.\n"
        "\n"
        "| file | keep |\n"
        "|------|------|\n"
        "| syslog | 7 |\n"
        "| auth.log | 30 |\n"
        "\n"
        "---\n"
        "Done  \n"
        "![diagram](https://example.com/d.png) ![local](d.png)"
    )
    assert render(markdown) == (
        "*Rotating logs with logrotate*\n"
        "Read <https://linux.die.net/man/8/logrotate|the _manual_ page> or "
        "<https://en.wikipedia.org/wiki/Log_rotation_(Unix)|Log rotation (Unix)> first.\n"
        "\n"
        "1. Install it\n"
        "2. Configure it:\n"
        "    • `daily` or ~hourly~ `weekly`\n"
        "    • keep _seven_ copies\n"
        "        ◦ compressed\n"
        "\n"
        "```bash\n"
        "echo '&lt;@U1&gt; &lt;!channel&gt;' &gt; /tmp/x &amp;&amp; cat a | b\n"
        "\n"
        "tail -f /var/log/syslog\n"
        "```\n"
        "\n"
        "> *Note:* ask &lt;@U2&gt; or mail <mailto:ops@example.com|ops@example.com>.\n"
        "\n"
        "*file* | *keep*\n"
        "syslog | 7\n"
        "auth.log | 30\n"
        "\n"
        "──────────\n"
        "Done\n"
        "<https://example.com/d.png|diagram> local"
    )


def test_quotes_nested_lists_and_loose_items_keep_their_shape() -> None:
    markdown = "> - a\n>   - b\n>\n> after\n\n3. three\n\n   more of three\n4. four"
    assert render(markdown) == "> • a\n>     ◦ b\n\n> after\n\n3. three\n\n    more of three\n4. four"


# --- mrkdwn out: no pings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "shown"),
    [
        ("[heads up](!channel)", "heads up (!channel)"),
        ("![x](!everyone)", "x"),
        ("[boss](@U123)", "boss (@U123)"),
        ("[ops](!subteam^S1)", "ops (!subteam^S1)"),
        ("[x](!here)", "x (!here)"),
        ("[](!channel)", "!channel"),
        ("[!channel](!channel)", "!channel"),
        ("[x](<!channel>)", "x (!channel)"),
        ("[x](<@U123|boss>)", "x (@U123|boss)"),
        ("[x](#C1)", "x (#C1)"),
        ("![x](@U1)", "x"),
        ("![](!here)", ""),
        ("[x][r]\n\n[r]: !channel", "x (!channel)"),
        ("[x](!date^1^{date}|x)", "x (!date^1^{date}|x)"),
        ("**[a](!channel)**", "*a (!channel)*"),
        ("[a](javascript:alert(1))", "[a](javascript:alert(1))"),
        ("<!channel> <!here|here> <@U1> <#C1> <!subteam^S1|@ops>", None),
        ("<\u200b!channel> [x](<\u200b!channel>)", None),
        ("[<!channel>](https://a.io)", "<https://a.io|&lt;!channel&gt;>"),
        ("[x](https://a.io/<!channel>)", "<https://a.io/%3C!channel%3E|x>"),
        ("[x](mailto:<!here>)", "<mailto:%3C!here%3E|x>"),
        ("[x](https://) [y](mailto:)", "x (https://) y (mailto:)"),
        ("![<@U1>](https://a.io/i.png)", "<https://a.io/i.png|&lt;@U1&gt;>"),
    ],
)
def test_markdown_links_to_anything_but_a_url_are_text(markdown: str, shown: str | None) -> None:
    mrkdwn = render(markdown)
    assert_safe(mrkdwn)
    if shown is not None:
        assert mrkdwn == shown


def test_a_url_or_label_cannot_break_out_of_its_link_token() -> None:
    assert render("[a|b>c](https://x.com/a|b>c<d)") == "<https://x.com/a%7Cb%3Ec%3Cd|a¦b&gt;c>"
    assert render("[a](<https://x.com/a b|c>)") == "<https://x.com/a%20b%7Cc|a>"
    assert render("[`a|b`](https://x.com)") == "<https://x.com|`a¦b`>"
    assert render("[x\ny](https://x.com)") == "<https://x.com|x y>"
    assert render("<https://x.com/?q=a&b>") == "<https://x.com/?q=a&amp;b|https://x.com/?q=a&amp;b>"
    # No link inside a link token: an image in a label is its alt text.
    assert render("[![i](https://x.com/i.png) see](https://x.com)") == "<https://x.com|i see>"


def test_emphasis_is_never_doubled_inside_itself() -> None:
    assert render("**a **b** c**") == "*a b c*"
    assert render("***both***") == "_*both*_"
    assert render("# A **bold** heading") == "*A bold heading*"


# --- mrkdwn out: the length ---------------------------------------------------------------------------


def test_text_that_grows_past_the_limit_is_cut_not_refused() -> None:
    grown = render("a & b " * 700)  # 4,200 characters once every "&" is "&amp;"
    assert len(grown) <= MAX_MESSAGE_CHARS
    # Cut outside entities, so none is left half written.
    assert grown.endswith(" …") and grown[:-2].rstrip().endswith(("a", "b", "&amp;"))
    assert render("short") == "short"


def test_a_cut_keeps_link_tokens_whole_and_closes_what_it_opened(caplog: pytest.LogCaptureFixture) -> None:
    links = render("[docs](https://example.com/a?b=1&c=2) " * 100, limit=500)
    assert len(links) <= 500 and links.endswith(" …")
    assert_safe(links)
    assert links.count("<") == links.count(">") == links.count("|docs>")
    assert "cutting" in caplog.text

    bold = render("**" + "x & y " * 45 + "z**", limit=300)  # 275 characters; 455 once escaped
    assert len(bold) <= 300 and bold.startswith("*x") and bold.endswith("*" + " …")
    assert bold.count("*") == 2

    code = render("```\n" + "a < b\n" * 100 + "```", limit=200)
    assert len(code) <= 200 and code.startswith("```\n") and code.endswith("\n``` …")
    assert_safe(code)

    assert render("x" * 10, limit=3) == "x …"
    assert render("x" * 10, limit=1) == "…"


def test_reference_links_cannot_multiply_a_long_target() -> None:
    url = "https://example.com/" + "a" * 1000
    links = render(f"[r]: {url}\n\n" + "[r] " * 1000)
    assert len(links) <= MAX_MESSAGE_CHARS and links.endswith(" …")
    assert links.count(f"<{url}|r>") == 3
    assert_safe(links)
    texts = render("[r]: docs/" + "a" * 1000 + "\n\n" + "[r] " * 1000)
    assert len(texts) <= MAX_MESSAGE_CHARS and texts.startswith("r (docs/aaa")


def test_markdown_past_what_a_message_can_show_is_not_read() -> None:
    answer = "A line of the answer, with **bold** in it.\n" * 300  # 12,900 characters
    shown = render(answer)
    assert len(shown) <= MAX_MESSAGE_CHARS and shown.endswith(" …")
    assert shown.startswith("A line of the answer, with *bold* in it.\n")
    assert render("[r]: https://example.com\n" * 1000) == "…"


@pytest.mark.parametrize("limit", [5, 6, 7, 8, 9, 10, 11, 40])
def test_a_cut_never_splits_an_entity(limit: int) -> None:
    cut = render("<<<<<<<<<<<<<<<<<<<<", limit=limit)
    assert len(cut) <= limit
    assert ENTITIES_ONLY.fullmatch(cut)


# --- the property -------------------------------------------------------------------------------------

SOUP = st.sampled_from(
    [
        *"[]()!<>@#|^&`*_~\n :\\",
        *("channel", "here", "everyone", "subteam^S1", "U123", "C1", "date^1^{date}", "<!", "<@"),
        *("https://", "http://x.io", "mailto:", "a@b.io", "javascript:", "&amp;", "&lt;", "&#60;"),
    ]
)
WORDS = st.lists(SOUP, max_size=8).map("".join)
LINE_STARTS = st.sampled_from(["", "> ", "- ", "1. ", "  - ", "# ", "    ", "| ", "|-|\n| ", "[r]: "])
SNIPPETS = st.sampled_from(
    [
        "**Bold** and _italic_ and ~~gone~~ and `code`",
        "```python\nprint('<@U1> <!channel>')\n```\n",
        "- one\n  - two\n    1. three\n",
        "> quoted [link](https://example.com/a_(b)) text\n",
        "[**bold _link_**](https://example.com)",
        "| a | b |\n|---|---|\n| <!here> | [x](!channel) |\n",
        "![img](https://example.com/i.png) ![alt](!everyone)",
        "[ref][r] and [r]\n\n[r]: https://example.com\n",
        "<https://example.com> <ops@example.com> <!channel>",
        "Title\n=====\n\n---\n",
    ]
)
LINKS = st.builds(
    lambda bang, label, target, title: f"{bang}[{label}]({target}{title})",
    st.sampled_from(["", "!"]),
    WORDS,
    st.one_of(WORDS, st.builds("<{}>".format, WORDS), st.builds("https://x.io/{}".format, WORDS)),
    st.sampled_from(["", ' "t"', " '<!here>'"]),
)
ANSWERS = st.lists(
    st.one_of(SOUP, WORDS, LINKS, SNIPPETS, st.builds("\n{}".format, LINE_STARTS)), max_size=40
).map("".join)


@settings(derandomize=True, max_examples=1500, deadline=None, database=None)
@given(
    ANSWERS,
    st.sampled_from([1, 1, 1, 50]),
    st.one_of(st.just(MAX_MESSAGE_CHARS), st.integers(min_value=1, max_value=300)),
)
def test_no_answer_renders_a_ping_or_a_token_we_did_not_make(answer: str, times: int, limit: int) -> None:
    mrkdwn = render(answer * times, limit)
    assert len(mrkdwn) <= limit
    assert_safe(mrkdwn)


@settings(derandomize=True, max_examples=300, deadline=None, database=None)
@given(st.text(alphabet="[]()!<>@#|^&`*_~\\\n :/aUS1", max_size=400))
def test_escaped_text_survives_as_text(text: str) -> None:
    # Inside a code block nothing is markup: the text comes back exactly, but escaped.
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 3)
    assert render(f"{fence}\n{text}\n{fence}") == f"```\n{escape(text)}\n```"


# --- split on what Slack shows: no text lost to escaping ---------------------------------------------------

TEXT_WORDS = st.builds("{}{}".format, st.sampled_from("abcxyz"), st.text(alphabet='abc<>&="/', max_size=12))
URL_PATHS = st.text(alphabet="abcdefghij0123456789/?=&.-", min_size=1, max_size=1200)
URLS = st.builds("https://example.com/{}".format, URL_PATHS)


@st.composite
def escapable_answers(draw: st.DrawFn) -> tuple[str, list[str]]:
    """An answer dense in `<`, `>`, `&` and long URLs, and the words a reader must find in it, in order."""
    parts: list[str] = []
    words: list[str] = []
    for _ in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["word", "word", "word", "tag", "url", "link", "autolink", "break"]))
        if kind == "word":
            word = draw(TEXT_WORDS)
            parts.append(word)
            words.append(word)
        elif kind == "tag":
            parts.append(draw(st.sampled_from(["<td>", "</td>", "<tr>", "a&b", "x<y>z"])))
            words.append(parts[-1])
        elif kind == "url":
            parts.append(draw(URLS))
            words.append(parts[-1])
        elif kind == "link":
            label, url = draw(TEXT_WORDS), draw(URLS)
            parts.append(f"[{label}]({url})")
            words += [label, url]
        elif kind == "autolink":
            url = draw(URLS)
            parts.append(f"<{url}>")
            words.append(url)
        else:
            parts.append(draw(st.sampled_from(["\n", "\n\n"])) + draw(TEXT_WORDS))
            words.append(parts[-1].strip())
    # Repeated, so that most answers need several messages.
    times = draw(st.integers(1, 120))
    return " ".join(parts * times), words * times


def shown_words(mrkdwn: str) -> str:
    """What a reader sees: a link token as its label then its target, entities as their characters."""
    text = re.sub(r"<([^<>|]*)\|([^<>]*)>", r"\2 \1", mrkdwn)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@settings(derandomize=True, max_examples=150, deadline=None, database=None)
@given(escapable_answers())
def test_messages_split_on_their_shown_length_hold_all_the_text(answer: tuple[str, list[str]]) -> None:
    text, words = answer
    limits = SlackLimits().limits("T1", "C1", typing_interval=None)
    messages = [render(part) for part in split_message(text, limits.max_chars, limits.measure)]
    assert all(len(message) <= MAX_MESSAGE_CHARS and not message.endswith(" …") for message in messages)
    shown = "".join(shown_words(message) for message in messages)
    at = 0
    for word in words:
        found = shown.find(word, at)
        assert found != -1, (word, shown[at : at + 200])
        at = found + len(word)


SCOPE = Scope.of("test", "W1", "C1")
ASKER = Actor("U1", "Dana")
# The Slack adapter's message size, measured as shown, and a pace of edits as brisk as it allows.
SLACK_LIKE = TargetLimits(max_chars=MAX_MESSAGE_CHARS, edit_burst=5, edit_window=0.2, measure=shown_length)


class RenderingTarget(RecordingTarget):
    """What the Slack adapter's reply does: every post, edit and notice goes out through `render`."""

    async def post(self, text: str) -> str:
        return await super().post(render(text))

    async def edit(self, handle: str, text: str) -> None:
        await super().edit(handle, render(text))

    async def notify(self, text: str) -> None:
        await super().notify(render(text))


async def test_links_in_every_part_of_a_split_answer_are_text(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    pings = "[heads up](!channel) ![x](!everyone) [boss](@U123) [ops](!subteam^S1)"
    # Under the 12,000-character answer cap, so that every message ends on a whole paragraph.
    answer = "\n\n".join(f"Paragraph {i}: {'lorem ipsum ' * 20}{pings}" for i in range(35))
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=500))
    target = RenderingTarget(SLACK_LIKE)
    assert await core.ask(Question(SCOPE, ASKER, "go"), target) is Outcome.ANSWERED
    assert len(target.messages) >= 3
    for call in target.calls:
        assert_safe(call.text)
    for text in target.messages.values():
        assert "heads up (!channel) x boss (@U123) ops (!subteam^S1)" in text


@pytest.mark.parametrize("unit", ["[a](", "[[[[[[x](", "![", "*a_", "[a][b", "<@U1>&"])
async def test_an_adversarial_answer_streams_without_stalling_the_event_loop(
    core: ChatCore, fake_upstream: FakeUpstream, unit: str
) -> None:
    answer = (unit * (12_000 // len(unit) + 1))[:12_000]
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=400, fragment_delay=0.005))
    target = RenderingTarget(SLACK_LIKE)
    steps: list[float] = []
    run = asyncio.Handle._run

    def timed(handle: asyncio.Handle) -> None:
        # A stall is one step of the loop (a callback, a task's step up to its next await) holding it; timed
        # in this thread's CPU time, so it counts the render's and the core's work, not the time other
        # processes on a busy machine held the CPU meanwhile.
        started = time.thread_time()
        try:
            run(handle)
        finally:
            steps.append(time.thread_time() - started)

    # Collecting what the tests before this one left behind is not this answer's work: keep it out.
    gc.collect()
    gc.freeze()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(asyncio.Handle, "_run", timed)
            outcome = await core.ask(Question(SCOPE, ASKER, "go"), target)
    finally:
        gc.unfreeze()
    assert steps and max(steps) < 0.1, f"one step held the event loop for {max(steps) * 1000:.0f} ms of CPU"
    assert outcome is Outcome.ANSWERED
    assert len(target.messages) >= 4 and target.kinds("edit")
    for call in target.calls:
        assert_safe(call.text)


# --- streamed Markdown (Slack's streaming methods take Markdown, not mrkdwn) ---------------------------

STREAM_HOSTILE = (
    "Hi <!here> <@U1> <!subteam^S1|@ops> <#C1> @here @Channel @everyone &lt;!here&gt; &#60;@U2&#62; "
    "&#x3c;!channel&#x3e; R&D a@b.com <https://example.com> [site](<https://example.com/a>)"
)


def test_stream_markdown_defuses_every_ping_and_leaves_the_rest() -> None:
    streamed = stream_markdown(STREAM_HOSTILE)
    assert not re.search(r"<[@!#]|@(?:here|channel|everyone)|&(?:lt|#60|#x3c);", streamed, re.IGNORECASE)
    assert streamed.replace("\u200b", "") == STREAM_HOSTILE  # only zero-width spaces added
    assert "R&D a@b.com <https://example.com> [site](<https://example.com/a>)" in streamed
    assert stream_markdown(streamed) == streamed  # what the core defused already stays as it is


def test_stream_markdown_of_text_sent_word_by_word_is_the_start_of_the_whole() -> None:
    whole = stream_markdown(STREAM_HOSTILE)
    for at, char in enumerate(STREAM_HOSTILE):
        if char.isspace():
            assert whole.startswith(stream_markdown(STREAM_HOSTILE[: at + 1]))


def test_stream_length_keeps_a_message_within_a_streamed_message_and_within_mrkdwn() -> None:
    # Reference definitions show as nothing in mrkdwn, yet are sent whole as Markdown.
    definitions = "".join(f"[r{n}]: https://example.com/{n}\n" for n in range(400))
    assert shown_length(definitions) < 100
    assert (
        stream_length(definitions) * MAX_STREAMED_MESSAGE_CHARS
        >= len(stream_markdown(definitions)) * MAX_MESSAGE_CHARS
    )
    assert stream_length("<@U1> " * 10) >= shown_length("<@U1> " * 10)
