"""Plain records that cross the storage boundary. Times are Unix seconds (float)."""

from __future__ import annotations

from dataclasses import dataclass


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
