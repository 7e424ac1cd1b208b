"""Text crossing the Slack boundary: Slack's markup in, the core's Markdown out as mrkdwn."""

from __future__ import annotations

import logging
import re

from markdown_to_mrkdwn import SlackMarkdownConverter

log = logging.getLogger(__name__)

# Slack refuses texts near 4,000 characters with msg_too_long, far below the documented 40,000.
MAX_MESSAGE_CHARS = 3900

_converter = SlackMarkdownConverter()
_MARKUP = re.compile(r"<([^<>\n]+)>")
_QUOTE = "> "


def escape(text: str) -> str:
    """Slack's three control characters as entities, so model or user text cannot form `<!here>` or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_keeping_quotes(markdown: str) -> str:
    # A leading "> " is Markdown's blockquote, which mrkdwn shares: keep it and escape the rest.
    lines = []
    for line in markdown.split("\n"):
        if line.startswith(_QUOTE):
            lines.append(_QUOTE + escape(line[len(_QUOTE) :]))
        else:
            lines.append(escape(line))
    return "\n".join(lines)


def to_mrkdwn(markdown: str) -> str:
    return str(_converter.convert(_escape_keeping_quotes(markdown)))


def render(markdown: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Markdown as mrkdwn no longer than `limit`.

    Conversion rarely grows text, but every escaped `&`, `<` or `>` does; past the limit the tail is
    cut (at the source, so no entity or markup is split) rather than have Slack refuse the message.
    """
    text = to_mrkdwn(markdown)
    if len(text) <= limit:
        return text
    log.warning("converted message is %d characters; cutting it to %d", len(text), limit)
    cut = len(markdown) * limit // len(text)
    while cut > 0:
        text = to_mrkdwn(markdown[:cut].rstrip() + " …")
        if len(text) <= limit:
            return text
        cut -= max(1, len(text) - limit)
    return "…"


def _plain(match: re.Match[str], bot_user_id: str | None) -> str:
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):
        return "" if target[1:] == bot_user_id else "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!"):
        # <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
        return label or "@" + target[1:].split("^")[0]
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    if label and label not in target:
        return f"{label} ({target})"
    return target


def from_slack(text: str, bot_user_id: str | None = None) -> str:
    """What a user typed, as plain text: mentions, channels and links unwrapped, the bot's mention removed."""
    plain = _MARKUP.sub(lambda m: _plain(m, bot_user_id), text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
