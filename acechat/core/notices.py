"""What the bot tells people when it does not answer: refusals and failures on its own side.

Upstream failures are worded in core/upstream.py (`UpstreamError.user_message`), command replies in
core/command_runner.py; everything else a user can read about a problem is here.
"""

from __future__ import annotations

import math

from acechat.core.platform import PlatformRules

# Any failure nobody planned for: the log has the traceback, the user gets one calm line.
INTERNAL_ERROR = "Something went wrong on my side; the operator's log has the details."
RESTARTING = "I'm restarting; ask again in a minute."
# Only for the platform saying the bot may not post here: other failures are not a permissions problem.
CANNOT_POST = "I can't post in this channel; an admin should check my permissions here (or invite me)."
NOT_DELIVERED = "I couldn't deliver my answer here: the platform kept refusing it. Try again in a moment."
UNKNOWN_CHANNEL = "I can't tell which channel this came from, so I can't answer it; try again in a channel."


def empty_question(rules: PlatformRules) -> str:
    """A question with nothing in it; how one asks (a mention, a command) is the platform's to say."""
    return f"Ask me something, e.g. “how do I rotate a log file?”: {rules.asking}. {rules.commands}"


def no_asking_here(rules: PlatformRules) -> str:
    """A question handed to a command's path, which has nowhere to answer it."""
    return f"Questions need a place to answer in; to ask, {rules.asking}."


def retry_in_text(seconds: float) -> str:
    """'try again in 12 s' (rounded up, at least 1 s); minutes from two minutes on."""
    # Float drift must not turn a wait of exactly 3 s into "4 s".
    whole = max(1, math.ceil(seconds - 1e-9))
    if whole < 120:
        return f"try again in {whole} s"
    return f"try again in {math.ceil(whole / 60)} min"


def too_long(length: int, limit: int) -> str:
    return f"That question is {length:,} characters long; the limit is {limit:,}. Shorten it and ask again."


def user_rate(wait: float) -> str:
    return f"You're asking faster than this bot allows; {retry_in_text(wait)}."


def channel_rate(wait: float) -> str:
    return f"This channel is asking faster than this bot allows; {retry_in_text(wait)}."


def channel_busy(wait: float) -> str:
    return (
        "The answers already on their way here would keep mine from being shown in time "
        f"(the platform takes about one message a second per channel); {retry_in_text(wait)}."
    )


def queue_full(waiting: int) -> str:
    return f"{waiting} questions here are already waiting for an answer; ask again once they are answered."


def queue_wait(seconds: float) -> str:
    return f"Your question waited {seconds:.0f} s for the ones before it and was dropped; ask again."


# --- presses and forms (issue 18) -----------------------------------------------------------------
ONLY_ASKER_STOPS = "Only the person who asked, or an admin of this channel, can stop this answer."
STOPPED = "_(stopped)_"
VOTE_CLOSED = "This answer can no longer be rated."
NO_QUESTION = "Type a question about the message, then send the form again."


def voted(up: bool, *, changed: bool) -> str:
    mark = "👍" if up else "👎"
    return f"Changed your rating to {mark}." if changed else f"Thanks: you rated this answer {mark}."


# Questions the model asks back (AI Chat v2, issue 16).
NO_OPEN_QUESTION = "There is no question waiting for an answer here."
QUESTION_ANSWERED = "That question was already answered."
QUESTION_SKIPPED = "That question was skipped: a newer question was asked here, or the conversation was reset."
NOT_YOUR_QUESTION = "Only the person who asked, or a channel admin, can answer this question."
ANSWER_USAGE = "Answer with the number of a choice, or with your own words."
# What a skipped question's buttons give way to: at once, saying why; or, found only when pressed, either.
SKIPPED_BY_QUESTION = "⏭️ Skipped: a new question was asked here."
SKIPPED_BY_RESET = "⏭️ Skipped: the conversation was reset."
BUTTONS_SKIPPED = "⏭️ Skipped: a newer question was asked here, or the conversation was reset."
