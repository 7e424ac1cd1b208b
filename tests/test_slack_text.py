"""Slack markup in, mrkdwn out: bots/slack_text.py."""

from __future__ import annotations

from bots.slack_text import MAX_MESSAGE_CHARS, from_slack, render


def test_user_markup_becomes_plain_text_without_the_bot_mention() -> None:
    text = "<@UBOT> ask <@U2|bob> in <#C1|general> about <https://a.io|a.io> and <https://b.io|docs> &lt;3"
    assert from_slack(text, "UBOT") == "ask @bob in #general about https://a.io and docs (https://b.io) <3"
    text = "<@U2> <mailto:x@y.z|x@y.z> <!subteam^S1|@ops> <!here> &amp;"
    assert from_slack(text, "UBOT") == "@U2 x@y.z @ops @here &"


def test_markdown_becomes_mrkdwn_with_slack_control_characters_escaped() -> None:
    markdown = "# Title\n**bold** [link](https://x.io/?a=1&b=2)\n> quoted <b>\n\n```\nif a < b:\n```"
    assert render(markdown) == (
        "*Title*\n*bold* <https://x.io/?a=1&amp;b=2|link>\n> quoted &lt;b&gt;\n\n```\nif a &lt; b:\n```"
    )


def test_text_that_grows_past_the_limit_is_cut_not_refused() -> None:
    grown = render("a & b " * 700)  # 4,200 characters once every "&" is "&amp;"
    assert len(grown) <= MAX_MESSAGE_CHARS
    # Cut in the source, so no entity is left half written.
    assert grown.endswith(" …") and grown[:-2].rstrip().endswith(("a", "b", "&amp;"))
    assert render("short") == "short"
