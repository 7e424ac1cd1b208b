"""Make model output safe and tidy to post: no pings, reasoning folded away.

Model output is untrusted: it must never ping a whole channel or a person, whatever it says. What pings
depends on the platform, so the caller passes that platform's `MentionRules` (core.platform).

While an answer streams, `format_answer(..., streaming=True)` of the text so far agrees with the
formatting of any longer text except in its last few hundred characters (a tag or mention still
arriving, the reasoning placeholder), so messages the streamer has moved past stay as they were shown.
"""

from __future__ import annotations

import enum

from acechat.core.platform import MentionRules


class ThinkingMode(enum.StrEnum):
    """What to do with the <think>...</think> reasoning some models emit before their answer."""

    HIDE = "hide"
    FOLD = "fold"
    SHOW = "show"


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
FOLDED = "> 💭 _Thought for a while_"
THINKING = "> 💭 _Thinking…_"

_THINKING_MODES = frozenset(ThinkingMode)


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


def format_answer(
    text: str, *, thinking_mode: ThinkingMode, mentions: MentionRules, streaming: bool = False
) -> str:
    """What to post for a (possibly partial) model answer, on the platform whose pings are `mentions`."""
    return mentions.neutralize(fold_thinking(text, thinking_mode, streaming=streaming))
