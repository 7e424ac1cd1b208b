"""Buttons and one-field forms, platform-neutral: what the core offers and how a press names it.

The core decides what is offered (`Choices`, `Form`), who may press and what a press does; adapters
only render these (Slack Block Kit, Discord components, numbered lines in the console) and hand every
press back as the control id they were given. Ids are short, fixed-shape strings that survive a restart
(Discord's persistent `custom_id`, Slack's `action_id`/`callback_id`), so a press is understood by any
process. Issue 18's Stop and feedback buttons add their own kinds here.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "acechat"
OTHER_LABEL = "Other…"
# Slack's button text and Discord's button label both stop at 80 characters; Slack's at 75.
LABEL_CHARS = 75
FORM_TITLE = "Your answer"
FORM_LABEL = "Answer in your own words"
FORM_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Control:
    """One button: its id (what a press sends back) and its label."""

    id: str
    label: str


@dataclass(frozen=True, slots=True)
class Choices:
    """The options of a question the model asked back, then "Other…" (which opens a `Form`)."""

    question_id: str
    question: str
    buttons: tuple[Control, ...]


@dataclass(frozen=True, slots=True)
class Form:
    """A one-field form: its id comes back with the text typed into it."""

    id: str
    title: str = FORM_TITLE
    label: str = FORM_LABEL
    max_chars: int = FORM_CHARS


@dataclass(frozen=True, slots=True)
class Press:
    """What a control id says: answer `question_id` with option `option` (0-based), or open its form
    (`other`), or (a form's id) submit the typed text."""

    kind: str  # "answer", "other" or "form"
    question_id: str
    option: int | None = None


def _label(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= LABEL_CHARS else flat[: LABEL_CHARS - 1] + "…"


def choices_for(question_id: str, question: str, options: tuple[str, ...]) -> Choices:
    buttons = [Control(f"{PREFIX}:answer:{question_id}:{n}", _label(o)) for n, o in enumerate(options)]
    buttons.append(Control(f"{PREFIX}:other:{question_id}", OTHER_LABEL))
    return Choices(question_id, question, tuple(buttons))


def form_for(question_id: str) -> Form:
    return Form(f"{PREFIX}:form:{question_id}")


def parse_control(control_id: str) -> Press | None:
    """The press a control id stands for; None for anything not made by `choices_for`/`form_for`."""
    if len(control_id) > 100:
        return None
    parts = control_id.split(":")
    if len(parts) < 3 or parts[0] != PREFIX or not _question_id(parts[2]):
        return None
    if parts[1] == "answer" and len(parts) == 4 and parts[3].isascii() and parts[3].isdecimal():
        return Press("answer", parts[2], int(parts[3][:3]))
    if parts[1] in ("other", "form") and len(parts) == 3:
        return Press(parts[1], parts[2])
    return None


def _question_id(value: str) -> bool:
    return 0 < len(value) <= 32 and all(c in "0123456789abcdef" for c in value)
