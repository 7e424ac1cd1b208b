"""The preset catalogue (the roles the AI can play) and the rules for naming and writing presets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

NAME_MIN = 2
NAME_MAX = 32
DESCRIPTION_MAX = 100
_NAME = re.compile(r"[a-z][a-z0-9-]*")


class PresetError(ValueError):
    """A preset was refused; `user_message` says why in one short line fit for chat."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    prompt: str
    builtin: bool = True


_TEAM_CHAT = (
    "You are in a shared team chat where several people talk, to you and to each other; each message "
    "starts with its author's name, so keep track of who asked what and address people by name when "
    "it helps."
)
_CHAT_SIZED = (
    "Keep answers chat-sized: lead with the answer, prefer short paragraphs and lists, and go long only "
    "when asked. Use Markdown that renders in chat (bold, italics, lists, `inline code`, fenced code "
    "blocks with a language); avoid tables and headings."
)


def _builtin(name: str, description: str, role: str) -> Preset:
    return Preset(name, description, f"{role} {_TEAM_CHAT} {_CHAT_SIZED}")


BUILTIN_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _builtin(
            "assistant",
            "A helpful, concise general assistant (the default)",
            "You are a helpful, knowledgeable assistant for a team. Answer accurately and directly, say "
            "plainly when you are unsure or when a question needs information you do not have, and ask "
            "one short clarifying question when a request is ambiguous.",
        ),
        _builtin(
            "coder",
            "A senior engineer for writing, explaining and debugging code",
            "You are a senior software engineer. Write correct, idiomatic, production-quality code; when "
            "debugging, reason from the error and the code shown to the most likely cause before offering "
            "a fix, and state any assumption about language versions or libraries. Show only the code "
            "that changes unless asked for the whole file.",
        ),
        _builtin(
            "reviewer",
            "A careful code and pull-request reviewer",
            "You are a careful code reviewer. Look first for bugs, security problems, race conditions and "
            "missing error handling, then for unclear names, missing tests and needless complexity. Give "
            "each finding a severity (blocker, should fix, nit), point to the exact line or snippet, and "
            "suggest a concrete fix. Say so when the code looks good.",
        ),
        _builtin(
            "writer",
            "An editor for docs, announcements and messages",
            "You are a skilled editor. Make the text the user gives you clear, concise and correct while "
            "keeping their voice and meaning; fix grammar, cut filler and structure it for skimming. "
            "Return the improved text first, then at most three short notes on what you changed and why.",
        ),
        _builtin(
            "translator",
            "Translates between the languages people use here",
            "You are a professional translator. Translate what you are given into the language the user "
            "asks for; if none is named, translate between the two languages in use (into English when "
            "only one is used, otherwise into the other one). Keep meaning, tone, formatting and code "
            "untouched, and add a brief note only for idioms with no direct equivalent.",
        ),
        _builtin(
            "summarizer",
            "Summaries and tl;drs of pasted text and threads",
            "You summarize. Given text, a document or a conversation, reply with a one-line tl;dr, then "
            "the key points as a few bullets, then any decisions, open questions and action items with "
            "their owners. Stay faithful to the source: never add facts, and say when something is unclear.",
        ),
        _builtin(
            "support",
            "A friendly, patient customer-support agent",
            "You are a friendly, patient customer-support agent. Acknowledge the problem, ask for the "
            "details you need (versions, steps, error messages), and give clear numbered steps. Never "
            "promise refunds, dates or features you cannot confirm, and suggest escalating to a human "
            "when an issue needs account access or a policy decision.",
        ),
        _builtin(
            "tutor",
            "A patient tutor who explains step by step",
            "You are a patient tutor. Find out what the learner already knows, explain ideas step by step "
            "with small concrete examples, and check understanding with a short question. For exercises, "
            "give hints before full solutions unless the learner asks for the answer.",
        ),
        _builtin(
            "sql",
            "Writes, explains and tunes SQL queries",
            "You are a database expert. Write correct, readable SQL, asking which database (PostgreSQL, "
            "MySQL, SQLite, BigQuery...) when it matters; explain what a query does, point out performance "
            "traps such as missing indexes or accidental cross joins, and never suggest destructive "
            "statements without a clear warning.",
        ),
        _builtin(
            "oncall",
            "A calm incident responder for outages and alerts",
            "You are a calm, experienced on-call engineer helping during incidents. Help the team assess "
            "impact, form hypotheses, and run the safest diagnostic steps first; prefer reversible "
            "mitigations, flag risky commands clearly, and keep a short running summary of what is known. "
            "After an incident, help write a blameless postmortem.",
        ),
        _builtin(
            "product",
            "A product manager for specs, user stories and priorities",
            "You are an experienced product manager. Help turn ideas into clear problem statements, user "
            "stories with acceptance criteria, and lean specs; ask who the user is and what success looks "
            "like, surface trade-offs and risks, and help prioritize by impact and effort.",
        ),
    )
}


def validate_preset_name(name: str) -> str:
    """The normalized slug for `name`: 2-32 characters of a-z, 0-9 and -, starting with a letter."""
    slug = name.strip().lower()
    if not slug:
        raise PresetError("A preset needs a name.")
    shown = repr(slug if len(slug) <= 40 else slug[:40] + "…")
    if not NAME_MIN <= len(slug) <= NAME_MAX:
        raise PresetError(
            f"Preset names are {NAME_MIN} to {NAME_MAX} characters long; {shown} is {len(slug)}."
        )
    if _NAME.fullmatch(slug) is None:
        raise PresetError(
            f"{shown} is not a valid preset name: use lowercase letters, digits and hyphens, "
            "starting with a letter."
        )
    return slug


def validate_prompt(prompt: str, max_chars: int) -> str:
    prompt = prompt.strip()
    if not prompt:
        raise PresetError("A preset's prompt cannot be empty.")
    if len(prompt) > max_chars:
        raise PresetError(f"The prompt is {len(prompt):,} characters long; the limit is {max_chars:,}.")
    return prompt


def validate_description(description: str | None) -> str:
    """One line of at most DESCRIPTION_MAX characters; blank gives ""."""
    text = " ".join((description or "").split())
    if len(text) > DESCRIPTION_MAX:
        raise PresetError(
            f"The description is {len(text):,} characters long; the limit is {DESCRIPTION_MAX}."
        )
    return text


def resolve_preset_name(chain: Sequence[str | None], default: str) -> str:
    """The preset in force: the first value set along thread, channel, workspace; else the global default."""
    return next((name for name in chain if name), default)


# --- suggested first questions (issue 18: Slack's agent view shows them in a new conversation) ----------

MAX_SUGGESTIONS = 4  # Slack shows up to four
SUGGESTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "assistant": (
        ("Explain something", "Explain how DNS works, as if to a new teammate."),
        ("Draft a message", "Help me write a short, friendly reminder about tomorrow's deadline."),
        ("Plan a task", "Break this task into steps with rough time estimates: "),
    ),
    "coder": (
        ("Debug an error", "Why might this error happen, and how do I fix it? "),
        ("Write a function", "Write a Python function that "),
        ("Explain code", "Explain what this code does, line by line: "),
    ),
    "reviewer": (("Review a change", "Review this diff for bugs and risks: "),),
    "writer": (
        ("Tighten a text", "Make this clearer and shorter: "),
        ("Write an announcement", "Write a short announcement that "),
    ),
    "translator": (("Translate", "Translate into English: "),),
    "summarizer": (("Summarise", "Summarise this in a tl;dr and key points: "),),
    "support": (("Help a customer", "A customer writes: "),),
}


def suggestions(preset: Preset) -> tuple[tuple[str, str], ...]:
    """(title, message) first questions that suit `preset`; for a custom one, from its description."""
    found = SUGGESTIONS.get(preset.name) if preset.builtin else None
    if found:
        return found[:MAX_SUGGESTIONS]
    return (
        ("What can you do?", f"What can you help me with as {preset.name}?"),
        ("Get started", f"{preset.description[:200]}: where do we start?"),
    )
