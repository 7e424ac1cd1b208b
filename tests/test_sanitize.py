from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acechat.bots import discord_rules, slack_rules
from acechat.core.platform import ZWJ, ZWSP, MentionRules
from acechat.core.sanitize import (
    FOLDED,
    THINKING,
    ThinkingMode,
    fold_thinking,
    format_answer,
    parse_thinking_mode,
)
from acechat.core.splitting import split_message

DISCORD = discord_rules.MENTIONS
SLACK = slack_rules.MENTIONS
# Anything each platform would turn into a ping; written apart from the rules under test.
LIVE = {
    DISCORD: re.compile(r"@(?:everyone|here)|<@[!&]?[A-Za-z0-9]", re.IGNORECASE),
    SLACK: re.compile(
        r"@(?:everyone|here|channel)|<!(?:channel|here|everyone|subteam)|<@[!&]?[A-Za-z0-9]", re.IGNORECASE
    ),
}
PLATFORMS = [pytest.param(DISCORD, id="discord"), pytest.param(SLACK, id="slack")]
platforms: st.SearchStrategy[MentionRules] = st.sampled_from([DISCORD, SLACK])

fragments = st.sampled_from(
    [
        *"@<>!&|^ \n-_.aZ1",
        "everyone",
        "EveryOne",
        "here",
        "channel",
        "subteam",
        "U123",
        "123456789",
        "S0G1",
        "<@",
        "<!",
        "<@!",
        "<@&",
        "<!subteam^",
        "@everyone",
        "@here",
        "<!channel>",
        "<!here|here>",
        ZWSP,
        ZWJ,
        "a@b.com",
        "<think>",
        "</think>",
        "```",
    ]
)
hostile = st.one_of(st.lists(fragments, max_size=60).map("".join), st.text(max_size=200))
modes: st.SearchStrategy[ThinkingMode] = st.sampled_from(["hide", "fold", "show"])


@given(hostile, platforms)
@settings(max_examples=400)
def test_no_output_ever_pings(text: str, mentions: MentionRules) -> None:
    out = mentions.neutralize(text)
    assert LIVE[mentions].search(out) is None, out
    assert mentions.neutralize(out) == out


@given(hostile, platforms, modes, st.booleans())
@settings(max_examples=300)
def test_formatted_answers_never_ping(
    text: str, mentions: MentionRules, mode: ThinkingMode, streaming: bool
) -> None:
    formatted = format_answer(text, thinking_mode=mode, mentions=mentions, streaming=streaming)
    assert LIVE[mentions].search(formatted) is None


@given(st.text(alphabet=st.characters(blacklist_characters="@<"), max_size=300), platforms)
def test_text_without_at_or_angle_brackets_is_unchanged(text: str, mentions: MentionRules) -> None:
    assert mentions.neutralize(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "mail ana@example.com or ops@acme.io",
        "@dataclass\nclass A: ...",
        "if a < b and c > d: pass",
        "<!-- comment --> <!DOCTYPE html> <div>",
        "see <#C123|general> and <https://example.com|docs>",
        "@alice said hi",
        "",
    ],
)
@pytest.mark.parametrize("mentions", PLATFORMS)
def test_ordinary_text_is_left_alone(text: str, mentions: MentionRules) -> None:
    assert mentions.neutralize(text) == text


BOTH = [
    ("hey @everyone look", f"hey @{ZWSP}everyone look"),
    ("@HERE now", f"@{ZWSP}HERE now"),
    # Discord reads "@here" inside a word too, so even an address like this one is defused.
    ("ops@here.io", f"ops@{ZWSP}here.io"),
    ("thanks <@123456>, <@!42> and <@&77>", f"thanks <{ZWSP}@123456>, <{ZWSP}@!42> and <{ZWSP}@&77>"),
    ("`@everyone` in code", f"`@{ZWSP}everyone` in code"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *BOTH,
        # Slack's syntax means nothing on Discord.
        ("<!channel> deploy done", "<!channel> deploy done"),
        ("@channel", "@channel"),
    ],
)
def test_discord_mentions_are_defused(text: str, expected: str) -> None:
    assert DISCORD.neutralize(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *BOTH,
        ("@channel, listen", f"@{ZWSP}channel, listen"),
        ("<!channel> deploy done", f"@{ZWJ}channel deploy done"),
        ("<!here|here> and <!everyone>", f"@{ZWJ}here and @{ZWJ}everyone"),
        ("ping <!subteam^S0G1|@oncall> please", f"ping @{ZWJ}oncall please"),
        ("ping <!subteam^S0G1>", f"ping @{ZWJ}group"),
        ("cc <@U024BE7LH|bob>", f"cc <{ZWSP}@U024BE7LH|bob>"),
        (
            "broken <!channel and <!here|" + "x" * 100 + ">",
            f"broken <{ZWSP}!channel and <{ZWSP}!here|" + "x" * 100 + ">",
        ),
    ],
)
def test_slack_mentions_are_defused(text: str, expected: str) -> None:
    assert SLACK.neutralize(text) == expected


ANSWER = "<think>\nThe user wants a haiku.\nCount syllables.\n</think>\n\n  Autumn moonlight"


def test_hide_removes_the_reasoning() -> None:
    assert fold_thinking(ANSWER, "hide") == "Autumn moonlight"


def test_fold_leaves_one_quoted_line() -> None:
    assert fold_thinking(ANSWER, "fold") == f"{FOLDED}\n\nAutumn moonlight"


def test_show_quotes_the_reasoning() -> None:
    assert (
        fold_thinking(ANSWER, "show") == "> The user wants a haiku.\n> Count syllables.\n\nAutumn moonlight"
    )


def test_empty_reasoning_disappears_in_every_mode() -> None:
    for mode in ("hide", "fold", "show"):
        assert fold_thinking("<think>\n\n</think>\n\nHello", mode) == "Hello"


def test_only_a_leading_block_is_reasoning() -> None:
    text = "Models wrap reasoning in <think>...</think> tags."
    assert fold_thinking(text, "hide") == text
    assert fold_thinking("  \n<think>x</think>ok", "hide") == "ok"


def test_streaming_an_unclosed_block() -> None:
    partial = "<think>Let me think about @everyone</th"
    assert fold_thinking(partial, "hide", streaming=True) == ""
    assert fold_thinking(partial, "fold", streaming=True) == THINKING
    assert fold_thinking(partial, "show", streaming=True) == "> Let me think about @everyone"
    assert (
        format_answer(partial, thinking_mode="show", mentions=DISCORD, streaming=True)
        == f"> Let me think about @{ZWSP}everyone"
    )


def test_streaming_holds_back_an_opening_tag_still_arriving() -> None:
    assert fold_thinking("<thi", "show", streaming=True) == ""
    assert fold_thinking("<thi", "show") == "<thi"
    assert fold_thinking("<b>bold</b>", "hide", streaming=True) == "<b>bold</b>"


@pytest.mark.parametrize("arriving", ["<", "</", "</thi", "</think"])
def test_streaming_holds_back_a_closing_tag_still_arriving(arriving: str) -> None:
    assert fold_thinking(f"<think>abc{arriving}", "show", streaming=True) == "> abc"
    assert fold_thinking(f"<think>abc{arriving}", "show") == f"> abc{arriving}"


def test_reasoning_just_opened_shows_nothing_yet() -> None:
    assert fold_thinking("<think>", "show", streaming=True) == ""
    assert fold_thinking("<think>\n ", "show", streaming=True) == ""
    assert fold_thinking("<think>", "fold", streaming=True) == THINKING
    assert fold_thinking("<think>", "hide", streaming=True) == ""


def test_a_finished_answer_is_formatted_as_finished_by_default() -> None:
    assert format_answer("<thi", thinking_mode=ThinkingMode.SHOW, mentions=SLACK) == "<thi"
    assert format_answer("<think>cut off", thinking_mode=ThinkingMode.FOLD, mentions=SLACK) == FOLDED


def test_an_answer_that_never_closed_its_reasoning() -> None:
    assert fold_thinking("<think>cut off mid-thou", "hide") == ""
    assert fold_thinking("<think>cut off mid-thou", "fold") == FOLDED


def test_thinking_mode_is_checked() -> None:
    assert parse_thinking_mode("fold") == "fold"
    with pytest.raises(ValueError, match="thinking mode"):
        parse_thinking_mode("loud")
    with pytest.raises(ValueError):
        fold_thinking("x", "loud")  # type: ignore[arg-type]


# --- streaming stability: what core.streaming relies on -------------------------------------------

# How far from its end the formatting of a growing answer may still change.
UNSETTLED_TAIL = 256


def answers(min_size: int) -> st.SearchStrategy[str]:
    piece = st.one_of(
        fragments,
        st.sampled_from(
            ["The answer is 42. ", "\n\n", "```py\nprint(1)\n```\n", "word " * 20, "lorem ipsum " * 40]
        ),
    )
    text = st.lists(piece, min_size=min_size, max_size=min_size + 60).map("".join)
    return st.one_of(text, text.map(lambda t: "<think>" + t), text.map(lambda t: " \n<think>\n" + t))


@given(answers(0), modes, platforms, st.data())
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_growing_text_only_changes_in_its_last_characters(
    text: str, mode: ThinkingMode, mentions: MentionRules, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(text)))
    partial = format_answer(text[:cut], thinking_mode=mode, mentions=mentions, streaming=True)
    settled = partial[: max(0, len(partial) - UNSETTLED_TAIL)]
    assert format_answer(text, thinking_mode=mode, mentions=mentions, streaming=True).startswith(settled)
    assert format_answer(text, thinking_mode=mode, mentions=mentions).startswith(settled)


@given(answers(20), modes, platforms, st.integers(50, 150), st.data())
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_messages_before_the_unsettled_tail_never_change(
    text: str, mode: ThinkingMode, mentions: MentionRules, limit: int, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(text)))
    partial = format_answer(text[:cut], thinking_mode=mode, mentions=mentions, streaming=True)
    settled = partial[: max(0, len(partial) - UNSETTLED_TAIL)]
    final = split_message(settled, limit)[:-1]
    streamed = format_answer(text, thinking_mode=mode, mentions=mentions, streaming=True)
    for longer in (partial, streamed, format_answer(text, thinking_mode=mode, mentions=mentions)):
        assert split_message(longer, limit)[: len(final)] == final
