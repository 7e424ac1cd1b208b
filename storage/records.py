"""Plain records that cross the storage boundary. Times are Unix seconds (float)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A scope's live upstream conversation and what it was started with."""

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
    PRESET_SET = "preset set"
    PRESET_CLEAR = "preset clear"
    PRESET_DEFAULT = "preset default"
    PRESET_CREATE = "preset create"
    PRESET_EDIT = "preset edit"
    PRESET_DELETE = "preset delete"
    MODEL_SET = "model set"
    MODEL_DEFAULT = "model default"


@dataclass(frozen=True, slots=True)
class Change:
    kind: Literal["setting", "preset"]
    key: str


@dataclass(frozen=True, slots=True)
class RateCheck:
    key: str
    count: int
    per_seconds: float


@dataclass(frozen=True, slots=True)
class RateVerdict:
    refused: int | None
    wait: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    workspace_key: str
    scope_key: str
    actor_id: str
    actor_name: str
    action: str
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
