"""Make model output safe and tidy to post: no pings, reasoning folded away.

Model output is untrusted: it must never ping a whole channel or a person, whatever it says.

While an answer streams, `format_answer(..., streaming=True)` of the text so far agrees with the
formatting of any longer text except in its last few hundred characters (a tag or mention still
arriving, the reasoning placeholder), so messages the streamer has moved past stay as they were shown.
"""

from __future__ import annotations

import enum
import re


class ThinkingMode(enum.StrEnum):
    """What to do with the <think>...</think> reasoning some models emit before their answer."""

    HIDE = "hide"
    FOLD = "fold"
    SHOW = "show"


ZWSP = "\u200b"  # breaks a mention without a visible change
ZWJ = "\u200d"

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
FOLDED = "> 💭 _Thought for a while_"
THINKING = "> 💭 _Thinking…_"

_THINKING_MODES = frozenset(ThinkingMode)

_SLACK_BROADCAST = re.compile(r"<!(channel|here|everyone)(?:\|[^<>\n]{0,64})?>", re.IGNORECASE)
_SLACK_GROUP = re.compile(r"<!subteam\^[A-Za-z0-9]+(?:\|@?([^<>\n]{1,64}))?>", re.IGNORECASE)
_AT_BROADCAST = re.compile(r"@(?=everyone|here)", re.IGNORECASE)
# Whatever a full-token rule above missed: Discord <@123> <@!123> <@&123>, Slack <@U123>, broken <!...>.
_TOKEN_START = re.compile(r"<(?=@[!&]?[A-Za-z0-9]|!(?:channel|here|everyone|subteam))", re.IGNORECASE)


def neutralize_mentions(text: str) -> str:
    """Defuse @everyone/@here, Slack's <!channel>-style tokens and user or role mentions.

    Slack broadcasts and user groups read as "@channel" or "@team" with a zero-width joiner; other
    mentions keep their text with a zero-width space after "<" or "@". Emails and decorators are untouched.
    """
    # Each pattern needs its first character in the text; most answers have neither, and skip the scans.
    has_token = "<" in text
    if has_token:
        text = _SLACK_BROADCAST.sub(lambda m: f"@{ZWJ}{m.group(1)}", text)
        text = _SLACK_GROUP.sub(lambda m: f"@{ZWJ}{m.group(1) or 'group'}", text)
    if "@" in text:
        text = _AT_BROADCAST.sub("@" + ZWSP, text)
    return _TOKEN_START.sub("<" + ZWSP, text) if has_token else text


def parse_thinking_mode(value: str) -> ThinkingMode:
    if value not in _THINKING_MODES:
        raise ValueError(f"unknown thinking mode {value!r}: expected hide, fold or show")
    return ThinkingMode(value)


def _quote(text: str) -> str:
    return "> " + text.replace("\n", "\n> ")


def _without_partial_tag(text: str, tag: str) -> str:
    """`text` less an ending that may be the start of `tag` still arriving."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return text[:-size]
    return text


def fold_thinking(text: str, mode: ThinkingMode, *, streaming: bool = False) -> str:
    """Hide, fold or quote the <think>...</think> reasoning that opens an answer.

    Only a block at the very start counts, so an answer that merely talks about the tag is left alone.
    A block still open at the end is all reasoning; while streaming, a tag still arriving is held back.
    """
    parse_thinking_mode(mode)
    body = text.lstrip()
    if not body.startswith(THINK_OPEN):
        if streaming and body and THINK_OPEN.startswith(body):
            return ""
        return text
    thought, closed, answer = body[len(THINK_OPEN) :].partition(THINK_CLOSE)
    if not closed and streaming:
        thought = _without_partial_tag(thought, THINK_CLOSE)
    thought = thought.strip()
    answer = answer.lstrip()
    if mode == "hide" or (closed and not thought):
        shown = ""
    elif mode == "fold":
        shown = FOLDED if closed or not streaming else THINKING
    else:
        shown = _quote(thought) if thought else ""
    return f"{shown}\n\n{answer}" if shown and answer else shown or answer


def format_answer(text: str, *, thinking_mode: ThinkingMode, streaming: bool = False) -> str:
    """What to post for a (possibly partial) model answer."""
    return neutralize_mentions(fold_thinking(text, thinking_mode, streaming=streaming))
