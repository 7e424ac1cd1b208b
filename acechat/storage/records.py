"""Plain records that cross the storage boundary. Times are Unix seconds (float)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A scope's upstream conversation and what it was started with.

    `upstream_id` is None after a reset. `epoch` counts the resets of the scope: a write carrying an
    older epoch than the stored one is refused, so a turn that began before a reset cannot undo it.
    """

    scope_key: str
    upstream_id: str | None
    model: str
    preset: str
    turns: int
    created_at: float
    updated_at: float
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class ScopeSettings:
    """Admin choices for one setting key (a thread, channel or workspace key); None means inherit."""

    key: str
    preset: str | None = None
    model: str | None = None
    updated_at: float | None = None
    # "on" or "off": whether the model may use AI Chat v2's tools here.
    tools: str | None = None


@dataclass(frozen=True, slots=True)
class CustomPreset:
    workspace_key: str
    name: str
    description: str
    prompt: str
    author_id: str
    created_at: float
    updated_at: float


class AuditAction(enum.StrEnum):
    """What an audit entry records; the value is what the database stores."""

    PRESET_SET = "preset set"
    PRESET_CLEAR = "preset clear"
    PRESET_DEFAULT = "preset default"
    PRESET_CREATE = "preset create"
    PRESET_EDIT = "preset edit"
    PRESET_DELETE = "preset delete"
    MODEL_SET = "model set"
    MODEL_DEFAULT = "model default"
    # admins' controls (issue 17)
    CHANNEL = "channel"
    ACCESS = "access"
    ACCESS_DMS = "access dms"
    USERS = "users"
    QUOTA = "quota"
    ENGAGE = "engage"
    AUTOTHREAD = "autothread"
    TRANSCRIPTS = "transcripts"
    FORGET = "forget me"
    # `acechat db copy` into a database that held data: an operator's change to every workspace it touched.
    DATABASE_COPY = "database copy"
    TOOLS_SET = "tools set"
    TOOLS_DEFAULT = "tools default"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    workspace_key: str
    scope_key: str
    actor_id: str
    actor_name: str
    action: AuditAction
    old: str | None
    new: str | None
    at: float
    id: int | None = None


@dataclass(frozen=True, slots=True)
class TranscriptEntry:
    scope_key: str
    conversation_id: str | None
    author_id: str
    author_name: str
    question: str
    answer: str
    outcome: str
    trace_id: str | None
    asked_at: float
    answered_at: float


@dataclass(frozen=True, slots=True)
class RateCheck:
    """At most `count` hits on `key` in any `per_seconds` window; `count == 0` turns the check off."""

    key: str
    count: int
    per_seconds: float


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """`refused` is the index of the first check that refused (None: all passed, every hit recorded);
    `wait` is how many seconds until that check would pass."""

    refused: int | None
    wait: float = 0.0


# "stop": someone asked to stop the running answer whose id is the key (issue 18).
ChangeKind = Literal["setting", "preset", "control", "stop"]

# The key of a change that may have touched anything (a missed notification, say): drop every cache.
EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class Change:
    """A committed settings, preset or control change: `key` is the setting key, or the workspace key for
    presets; for a stop, the answer id."""

    kind: ChangeKind
    key: str


# --- admins' controls: where, who, how much (issue 17) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    """One admin control on a setting key (a channel or workspace key): `name` such as "channel" or
    "quota:user:questions", or "user:ID"/"role:ID" for the workspace's allow and deny lists."""

    key: str
    name: str
    value: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One question that went upstream. `tokens` is None where the service reported no token usage."""

    workspace_key: str
    channel_key: str
    user_id: str
    model: str
    answer_chars: int
    upstream_seconds: float
    outcome: str
    at: float
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class UsageHold:
    """A question admitted under a quota and not yet recorded: counted with the day's answered
    questions of its user, channel and workspace, whichever process reads them, until it is recorded
    or released, or (its process gone) until `expires`."""

    id: str
    workspace_key: str
    channel_key: str
    user_id: str
    day: float
    expires: float


@dataclass(frozen=True, slots=True)
class UsageCount:
    """Answered questions and reported tokens since a moment, for one user, channel and workspace."""

    user_questions: int = 0
    user_tokens: int = 0
    channel_questions: int = 0
    channel_tokens: int = 0
    workspace_questions: int = 0
    workspace_tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """A workspace's usage since a moment: totals, and the top users and channels by questions."""

    questions: int
    answered: int
    answer_chars: int
    upstream_seconds: float
    tokens: int
    top_users: tuple[tuple[str, int], ...]
    top_channels: tuple[tuple[str, int], ...]


# --- answers and feedback (issue 18) ----------------------------------------------------------------

AnswerState = Literal["running", "stopping", "answered", "stopped", "failed"]


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One answer, from its turn's start: who asked and what served it, so a Stop or a vote pressed in
    any process (or after a restart) can be checked and recorded. No text: that stays in transcripts."""

    answer_id: str
    scope_key: str
    workspace_key: str
    asker_id: str
    model: str
    preset: str
    started_at: float
    state: AnswerState = "running"


@dataclass(frozen=True, slots=True)
class FeedbackTally:
    """Votes on answers of one model and preset."""

    model: str
    preset: str
    up: int
    down: int
# --- AI Chat v2 (issue 16): conversations to delete at the service, questions asked back ----------


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """A conversation a reset left behind, to delete at the service; retried until `attempts` run out."""

    conversation_id: str
    model: str
    attempts: int = 0
    next_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingQuestion:
    """A question the model asked back (v2 `ask_user_question`); the conversation waits for its answer.

    It is open while the scope's conversation is still `conversation_id` at `turns` turns: any later
    turn or a reset skips it (the service marks the paused call skipped by itself). `answered` is set
    once, by whoever answers first."""

    id: str
    scope_key: str
    conversation_id: str
    turns: int
    tool_id: str
    question: str
    options: tuple[str, ...]
    asker_id: str
    created_at: float
    answered: bool = False
