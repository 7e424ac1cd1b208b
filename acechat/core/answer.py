"""What one answer shows, built from AI Chat v2's stream: the text, one live line while tools run, and
under the finished text its sources, cards, artifacts and a question back.

Everything here comes from the model or the web and is hostile: tool names keep a safe alphabet, queries
and titles are clipped to one line with the characters that make Markdown structure taken out, URLs are
kept only when `http(s)`, and the whole of it passes the same mention neutraliser as answers. Links are
written `[title](<url>)`: Discord shows no preview for an angle-bracketed URL (five sources must not
make five embeds), and Slack's renderer reads the same form as a link.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from acechat.core.events import (
    Artifact,
    AskUser,
    Card,
    Citation,
    Event,
    Finished,
    ToolFinished,
    ToolStarted,
    Usage,
)
from acechat.core.platform import MentionRules
from acechat.core.sanitize import ThinkingMode, format_answer
from acechat.core.upstream import AnswerText

MAX_SOURCES = 10
MAX_CARDS = 5
MAX_ARTIFACTS = 3
TITLE_CHARS = 80
DETAIL_CHARS = 80
URL_CHARS = 2000
TOOL_NAME_CHARS = 40
ARTIFACT_SHOWN = 3500
# How the service says a turn ended as it should; any other reason is said in the answer.
NATURAL_STOPS = frozenset({"natural_stop", "end_turn", "stop", "completed", "awaiting_user_input"})
STOP_REASONS = {
    "max_turns": "it reached its limit of tool steps",
    "max_tokens": "it reached its length limit",
    "length": "it reached its length limit",
    "content_filter": "the service's content filter stopped it",
    "refusal": "the model refused to go on",
    "timeout": "the service ran out of time",
    "user_cancelled": "it was cancelled",
}
# What a line we write around untrusted text replaces in it: characters that would open Markdown
# structure (emphasis, code, links, quotes, headings), and what would show as something else there:
# control characters, the bidirectional embeddings, overrides and isolates (which reorder what follows
# them, the line's own words too), and surrogates that lost their pair (a JSON `\ud83d` split from
# the rest of its emoji).
_CONTROLS = [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ONE_LINE = str.maketrans(
    {
        **dict.fromkeys("`*_~[]()<>|#\\", " "),
        **dict.fromkeys(_CONTROLS, " "),
        **dict.fromkeys(range(0xD800, 0xE000), "\ufffd"),
    }
)
_TOOL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")
_LANGUAGE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+#-")

SEARCH_WORDS = ("search",)
READ_WORDS = ("fetch", "browse", "read_url", "web_read", "open_url", "visit", "crawl", "scrape")
FILE_WORDS = ("file", "read", "document", "pdf")


def one_line(value: str, limit: int) -> str:
    """Untrusted text as one short line with no Markdown structure in it."""
    flat = " ".join(value.translate(_ONE_LINE).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def safe_url(value: str | None) -> str | None:
    """`value` if it is an http(s) URL that can sit inside `<…>` whole; otherwise None."""
    if not value or len(value) > URL_CHARS:
        return None
    if any(c in value for c in "<>\"'`") or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value


def short_place(url: str) -> str:
    """`example.com/path…` for a progress line: the host and the start of the path."""
    parts = urlsplit(url)
    host = (parts.hostname or "").removeprefix("www.")
    path = parts.path.rstrip("/")
    return one_line(host + path, DETAIL_CHARS)


def tool_name(value: str) -> str:
    name = "".join(c for c in value if c in _TOOL_NAME_CHARS)[:TOOL_NAME_CHARS]
    return name or "a tool"


def progress_line(step: ToolStarted) -> str:
    """The one line shown while a tool runs: what it does, never what it returned."""
    name = step.name.lower()
    detail = step.detail
    url = safe_url(detail)
    if any(word in name for word in SEARCH_WORDS) and detail and not url:
        return f"🔎 Searching the web for “{one_line(detail, DETAIL_CHARS)}”…"
    if url is not None:
        return f"📖 Reading {short_place(url)}…"
    if any(word in name for word in READ_WORDS) or any(word in name for word in FILE_WORDS):
        what = one_line(detail, DETAIL_CHARS) if detail else "a page" if "file" not in name else "a file"
        return f"📖 Reading {what}…"
    return f"🛠️ Using `{tool_name(step.name)}`…"


def stop_note(reason: str | None) -> str | None:
    """What the answer says about a turn that ended other than naturally; None if it ended naturally."""
    if reason is None:
        return None
    key = reason.strip().lower()
    if key in NATURAL_STOPS:
        return None
    why = STOP_REASONS.get(key)
    if why is None:
        why = f"it ended with `{tool_name(key)}`" if key else "for a reason the service did not name"
    return f"_The model stopped before a natural end: {why}._"


@dataclass(slots=True)
class _Step:
    tool_id: str
    name: str
    line: str


class AnswerView:
    """One answer as the stream builds it. `version` changes with every visible change, so the streamer
    re-renders only when something new can be shown; `len()` is non-zero once there is anything."""

    __slots__ = (
        "_artifacts",
        "_cards",
        "_failed_tools",
        "_mentions",
        "_source_urls",
        "_sources",
        "_step",
        "_text",
        "_thinking",
        "question",
        "terminal_reason",
        "text_version",
        "usage",
        "version",
    )

    def __init__(self, thinking: ThinkingMode, mentions: MentionRules) -> None:
        self._text: AnswerText | None = None
        self._thinking = thinking
        # The platform's pings, defused in everything shown, as in answers.
        self._mentions = mentions
        self._step: _Step | None = None
        self._sources: list[Citation] = []
        self._source_urls: set[str] = set()
        self._cards: list[Card] = []
        self._artifacts: list[Artifact] = []
        self._failed_tools = 0
        self.question: AskUser | None = None
        self.usage: Usage | None = None
        self.terminal_reason: str | None = None
        self.version = 0
        # Changes of the answer text alone: the streamer paces a change of the tool line alone apart.
        self.text_version = 0

    def __len__(self) -> int:
        return len(self._text or "") + (1 if self._step is not None else 0)

    @property
    def text(self) -> str:
        return str(self._text) if self._text is not None else ""

    @property
    def text_length(self) -> int:
        return len(self._text) if self._text is not None else 0

    @property
    def progress(self) -> str | None:
        """The live tool line as plain, defused text while no answer text has come: what a target with a
        status (core.reply_target) shows there instead of in a message. None otherwise."""
        return None if self.text_version else self.step

    @property
    def step(self) -> str | None:
        """The live tool line as plain, defused text, text or not: what a target showing tool steps apart
        from the text (core.reply_target) shows. None while no tool runs (text after a tool ends it)."""
        if self._step is None:
            return None
        return self._mentions.neutralize(self._step.line.replace("`", ""))

    def on_text(self, text: AnswerText) -> None:
        """New answer text: the text so far (one growing object) replaces any tool line."""
        self._text = text
        self._step = None
        self.version += 1
        self.text_version += 1

    def replace_text(self, text: str) -> None:
        """The text cut to a limit: what is shown from now on."""
        answer = AnswerText()
        answer.replace(text)
        self._text = answer
        self.version += 1
        self.text_version += 1

    def on_event(self, event: Event) -> None:
        if isinstance(event, ToolStarted):
            self._step = _Step(event.tool_id, event.name, progress_line(event))
        elif isinstance(event, ToolFinished):
            if event.failed:
                # The output is never shown; a failed step only changes the line while it lasts.
                self._failed_tools += 1
                if self._step is not None and self._step.tool_id == event.tool_id:
                    name = tool_name(self._step.name)
                    self._step.line = f"⚠️ `{name}` did not work; the model carries on without it…"
        elif isinstance(event, Citation):
            url = safe_url(event.url)
            if url is None or url in self._source_urls or len(self._sources) >= MAX_SOURCES:
                return
            self._source_urls.add(url)
            self._sources.append(Citation(url, event.title))
        elif isinstance(event, Card):
            if len(self._cards) < MAX_CARDS:
                self._cards.append(event)
        elif isinstance(event, Artifact):
            if len(self._artifacts) < MAX_ARTIFACTS:
                self._artifacts.append(event)
        elif isinstance(event, AskUser):
            self.question = event
            self._step = None
        elif isinstance(event, Finished):
            self.usage = event.usage
            self.terminal_reason = event.terminal_reason
        self.version += 1

    # --- rendering ---------------------------------------------------------------------------------

    def render(self, *, streaming: bool, tool_line: bool = True) -> str:
        """Markdown to post: while streaming, the text and the live tool line (unless not `tool_line`: a
        target showing steps apart); finished, the text and everything under it (the tool line is gone)."""
        parts: list[str] = []
        if self._text is not None and len(self._text):
            answer = format_answer(
                str(self._text), thinking_mode=self._thinking, mentions=self._mentions, streaming=streaming
            )
            if answer.strip():
                parts.append(answer.rstrip())
        extra: list[str] = []
        if streaming:
            if self._step is not None and tool_line:
                extra.append(f"_{self._step.line}_")
        else:
            extra.extend(self._finished_parts())
        if extra:
            parts.append(self._mentions.neutralize("\n\n".join(extra)))
        return "\n\n".join(parts)

    def _finished_parts(self) -> list[str]:
        parts: list[str] = []
        for artifact in self._artifacts:
            parts.append(_artifact(artifact))
        cards = [line for line in (_card(card) for card in self._cards) if line]
        if cards:
            parts.append("\n".join(cards))
        if self.question is not None:
            parts.append(_question(self.question))
        if self._sources:
            lines = ["**Sources**"]
            for n, source in enumerate(self._sources, 1):
                title = one_line(source.title, TITLE_CHARS) if source.title else ""
                lines.append(f"{n}. [{title}](<{source.url}>)" if title else f"{n}. <{source.url}>")
            parts.append("\n".join(lines))
        if self.question is None:
            note = stop_note(self.terminal_reason)
            if note:
                parts.append(note)
        return parts


def _card(card: Card) -> str | None:
    title = one_line(card.title, TITLE_CHARS) if card.title else ""
    image = safe_url(card.image_url)
    url = safe_url(card.url)
    if image is not None:
        return f"🖼️ [{title or 'Image'}](<{image}>)"
    if url is not None:
        return f"🔗 [{title or short_place(url)}](<{url}>)"
    return f"🔗 {title}" if title else None


def _artifact(artifact: Artifact) -> str:
    language = "".join(c for c in (artifact.language or "") if c in _LANGUAGE_CHARS)[:20]
    content = artifact.content
    cut = ""
    if len(content) > ARTIFACT_SHOWN:
        cut = f"\n_({len(content) - ARTIFACT_SHOWN:,} more characters of this artifact are not shown.)_"
        content = content[:ARTIFACT_SHOWN]
    # A fence inside would close ours early and turn the rest into live Markdown.
    content = content.replace("```", "`\u200b``").rstrip()
    title = one_line(artifact.title, TITLE_CHARS) if artifact.title else "Artifact"
    return f"**📎 {title}**\n```{language}\n{content}\n```{cut}"


def _question(question: AskUser) -> str:
    lines = [f"**❓ {one_line(question.question, 300)}**"]
    lines += [f"{n}. {one_line(option, TITLE_CHARS)}" for n, option in enumerate(question.options, 1)]
    how = "`answer NUMBER` or `answer` and your own words" if question.options else "`answer` and your words"
    lines.append(f"_Reply with {how} (the asker or a channel admin)._")
    return "\n".join(lines)
