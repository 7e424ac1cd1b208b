"""AI Chat v2's stream events other than answer text, read defensively from untrusted JSON.

Every field here is model- or web-controlled: a value of the wrong type is dropped, never trusted, and
text is clipped so one event cannot hold megabytes. Rendering (neutralising, shortening) is the
answer view's job (`core.answer`); this module only says what arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Longer strings are clipped on arrival: nothing shown needs more, and it bounds what a line can cost.
FIELD_CHARS = 2000
ARTIFACT_CHARS = 20_000
MAX_OPTIONS = 10
# How many distinct unknown event types are logged; past it the names are not kept.
UNKNOWN_KEPT = 100


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """`tool_use`: the model called a tool. `detail` is the one input worth showing (a query, a URL)."""

    tool_id: str
    name: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """`tool_result`; its output is never kept, only whether it failed."""

    tool_id: str
    failed: bool


@dataclass(frozen=True, slots=True)
class Citation:
    url: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Card:
    """A structured card from a tool: an image, or a link preview."""

    title: str | None = None
    url: str | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class Artifact:
    title: str | None
    content: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class AskUser:
    """`ask_user_question`: the conversation waits for `tool_results` answering `tool_id`."""

    tool_id: str
    question: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    """`done`: the turn ended; `terminal_reason` as the service words it (None if absent)."""

    usage: Usage | None = None
    terminal_reason: str | None = None
    # A turn with no answer text (one that only asked back) names its conversation here alone.
    conversation_id: str | None = None


@dataclass(slots=True)
class UnknownTypes:
    """Event types this acechat does not know: each is logged once per process, then ignored."""

    seen: set[str] = field(default_factory=set)

    def note(self, kind: str) -> None:
        if kind in self.seen or len(self.seen) >= UNKNOWN_KEPT:
            return
        self.seen.add(kind)
        log.info("ignoring AI Chat stream events of unknown type %r", kind[:40])


UNKNOWN_TYPES = UnknownTypes()

Event = ToolStarted | ToolFinished | Citation | Card | Artifact | AskUser | Finished

# Ignored on purpose: `compact` says the service compressed its context; `system_message` is a UI note
# the guide calls "not user or assistant content".
IGNORED = frozenset({"compact", "system_message"})


def text(value: object, limit: int = FIELD_CHARS) -> str | None:
    """A non-empty string, clipped; anything else None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _link(obj: Mapping[str, Any], *names: str) -> str | None:
    """The first non-empty of `names` as a URL, whole or not at all: clipped, it would be a link to a
    page nobody named."""
    found = _first(obj, *names, limit=FIELD_CHARS + 1)
    return found if found is not None and len(found) <= FIELD_CHARS else None


def _first(obj: Mapping[str, Any], *names: str, limit: int = FIELD_CHARS) -> str | None:
    for name in names:
        found = text(obj.get(name), limit)
        if found is not None:
            return found
    return None


def _nested(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = obj.get(name)
    return value if isinstance(value, dict) else {}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_event(kind: str, obj: Mapping[str, Any]) -> Event | None:
    """The event of a typed line other than `text_delta`, `thinking` and `error` (the parser's own),
    or None for one that carries nothing usable or is of a type to ignore."""
    if kind == "tool_use":
        tool_input = obj.get("input")
        detail = None
        if isinstance(tool_input, dict):
            detail = _first(tool_input, "query", "url", "q", "path", "file", "filename", "name")
        elif isinstance(tool_input, str):
            detail = text(tool_input)
        return ToolStarted(
            _first(obj, "tool_id") or "", _first(obj, "tool_name", "name") or "tool", detail
        )
    if kind == "tool_result":
        return ToolFinished(_first(obj, "tool_id") or "", obj.get("is_error") is True)
    if kind == "citation":
        # The guide does not fix the fields: the URL may sit at the top or inside a nested object.
        for source in (obj, _nested(obj, "citation"), _nested(obj, "source"), _nested(obj, "data")):
            url = _link(source, "url", "uri", "link", "href")
            if url is not None:
                return Citation(url, _first(source, "title", "name", "site_name"))
        return None
    if kind == "card":
        for source in (obj, _nested(obj, "card"), _nested(obj, "data")):
            image = _link(source, "image_url", "image", "thumbnail")
            url = _link(source, "url", "link", "href")
            title = _first(source, "title", "name", "description", "text")
            if image or url or title:
                return Card(title, url, image)
        return None
    if kind == "artifact":
        for source in (obj, _nested(obj, "artifact"), _nested(obj, "data")):
            content = _first(source, "content", "text", "code", "body", limit=ARTIFACT_CHARS)
            if content is not None:
                return Artifact(
                    _first(source, "title", "name", "filename"), content, _first(source, "language", "lang")
                )
        return None
    if kind == "ask_user_question":
        question = _first(obj, "question", "text", "message")
        tool_id = _first(obj, "tool_id")
        if question is None or tool_id is None:
            return None
        raw = obj.get("options")
        options: list[str] = []
        for option in raw if isinstance(raw, list) else ():
            # An option may be a string or an object with a label.
            label = text(option, 200) if isinstance(option, str) else None
            if label is None and isinstance(option, dict):
                label = _first(option, "label", "text", "value", limit=200)
            if label is not None and label not in options:
                options.append(label)
        return AskUser(tool_id, question, tuple(options[:MAX_OPTIONS]))
    if kind == "done":
        usage = obj.get("usage")
        counted = None
        if isinstance(usage, dict):
            counted = Usage(
                _count(usage.get("prompt_tokens")),
                _count(usage.get("completion_tokens")),
                _count(usage.get("total_tokens")),
            )
        return Finished(
            counted, _first(obj, "terminal_reason", limit=80), _first(obj, "conversation_id", "id", limit=200)
        )
    if kind not in IGNORED:
        UNKNOWN_TYPES.note(kind)
    return None
