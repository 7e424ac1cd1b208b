"""The pieces of an answer people press: which controls it shows, how their ids read, where they sit.

Every control id is namespaced per feature, `acechat:<feature>:<argument>` (`acechat:stop:<answer-id>`,
`acechat:vote:<answer-id>`), so one dispatcher per platform routes any feature's presses to the core and
a press keeps working after a restart: everything it needs is in its id and the shared database.

An answer shows a Stop button while it streams and 👍/👎 once it is complete. A target that can show
controls (`Interactive`) keeps them on its last message only; `ControlBoard` is that bookkeeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from acechat.core.commands import Action
from acechat.core.pacing.scheduler import Urgency
from acechat.core.reply_target import TargetLimits

PREFIX = "acechat"
# Discord allows 100 characters in a custom id, Slack 255 in an action id.
MAX_ID_CHARS = 100
# Features whose presses and forms the core answers.
STOP = "stop"
VOTE = "vote"
ASK = "ask"
PRESET = "preset"
OPEN = "open"  # a button that opens a form: `acechat:open:create`, `acechat:open:edit`


def control_id(feature: str, argument: str = "") -> str:
    """`acechat:<feature>:<argument>`."""
    return f"{PREFIX}:{feature}:{argument}"


def parse_control(custom_id: str) -> tuple[str, str] | None:
    """(feature, argument) of one of acechat's ids; None for anything else (another app's, or forged)."""
    if len(custom_id) > MAX_ID_CHARS:
        return None
    prefix, _, rest = custom_id.partition(":")
    feature, colon, argument = rest.partition(":")
    if prefix != PREFIX or not colon or not feature:
        return None
    return feature, argument


def is_answer_id(text: str) -> bool:
    """The shape `new_answer_id` makes: anything else in a press is not ours."""
    return 0 < len(text) <= 32 and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True, slots=True)
class Controls:
    """What an answer's last message offers: Stop while it runs, a vote once it is done."""

    stop: str | None = None  # the answer id a Stop button stops
    vote: str | None = None  # the answer id 👍/👎 rate

    def __bool__(self) -> bool:
        return self.stop is not None or self.vote is not None


NONE = Controls()


class Interactive(Protocol):
    """A reply target that can show controls under its messages (buttons)."""

    def set_controls(self, controls: Controls) -> None:
        """From now on the last message carries `controls`, earlier ones none; applied with the next post
        or edit of each message."""

    async def settle_controls(self) -> None:
        """Edit the messages whose controls are not yet what `set_controls` asked for."""


def interactive(target: object) -> Interactive | None:
    """`target`, if it shows controls. Checked by name: `isinstance` against a runtime Protocol costs
    tens of microseconds, on every answer."""
    return cast(Interactive, target) if hasattr(target, "settle_controls") else None


class ControlBoard:
    """Which controls each message of an answer shows, and which it should: the last message carries the
    current controls, every earlier one none."""

    def __init__(self) -> None:
        self.wanted = NONE
        self._shown: dict[str, tuple[str, Controls]] = {}
        self._last: str | None = None

    def for_post(self) -> Controls:
        return self.wanted

    def for_edit(self, handle: str) -> Controls:
        return self.wanted if handle == self._last else NONE

    def shown(self, handle: str, text: str, controls: Controls) -> None:
        """`handle` now shows `text` with `controls`; a handle not seen before is the new last message."""
        if handle not in self._shown:
            self._last = handle
        self._shown[handle] = (text, controls)

    def stale(self) -> list[tuple[str, str, Controls]]:
        """(handle, its text, the controls it should show) for each message showing others."""
        return [
            (handle, text, self.for_edit(handle))
            for handle, (text, controls) in self._shown.items()
            if controls != self.for_edit(handle)
        ]

    @property
    def used(self) -> bool:
        """Whether any message has shown controls (then every later edit says what it shows)."""
        return any(controls for _, controls in self._shown.values()) or bool(self.wanted)


@dataclass(frozen=True, slots=True)
class PresetForm:
    """A preset's fields as a form opens with them (`preset create` or `preset edit` without a prompt)."""

    editing: bool
    name: str
    description: str
    prompt: str
    max_chars: int  # ACECHAT_MAX_PRESET_CHARS; a platform's form may hold fewer

    @property
    def feature(self) -> str:
        """The form's id argument: which command its submission runs."""
        return "edit" if self.editing else "create"


# The fields of a preset form, as `ChatCore.preset_problems` names what is wrong with a submission; the
# whole form (the submitter's rights) is `WHOLE_FORM`. Each platform maps them to its own field ids.
NAME_FIELD = "name"
DESCRIPTION_FIELD = "description"
PROMPT_FIELD = "prompt"
WHOLE_FORM = ""


def preset_form_request(line: str) -> tuple[bool, str] | None:
    """`preset create [NAME]` or `preset edit NAME` with no prompt, as typed: (editing, name) of the form
    it opens. With a prompt the line is the one-line command, which keeps working."""
    words = line.split()
    if len(words) not in (2, 3) or words[0].lower() != "preset" or words[1].lower() not in ("create", "edit"):
        return None
    editing = words[1].lower() == "edit"
    if editing and len(words) != 3:
        return None
    return editing, words[2] if len(words) == 3 else ""


@dataclass(frozen=True, slots=True)
class Home:
    """What a person's home page in the app shows (Slack's App Home): Markdown sections, most useful
    first, and for workspace admins the presets their buttons can edit."""

    sections: tuple[str, ...]
    admin: bool
    editable: tuple[str, ...] = ()


# Commands whose success changes what every Home page shows (presets, the workspace's defaults): the
# person who ran one sees it there without opening the page again.
HOME_CHANGES = frozenset(
    {
        Action.PRESET_CREATE,
        Action.PRESET_EDIT,
        Action.PRESET_DELETE,
        Action.PRESET_DEFAULT,
        Action.MODEL_DEFAULT,
    }
)


class StopSignal:
    """A Stop for one running answer: cancels the task reading its upstream stream, which then ends the
    answer with what it has. No task of its own, so an answer that is never stopped costs nothing."""

    def __init__(self) -> None:
        self.requested = False
        self.reading: asyncio.Task[Any] | None = None

    def request(self) -> None:
        if self.requested:
            return
        self.requested = True
        if self.reading is not None:
            self.reading.cancel()


async def paced_edit(limits: TargetLimits, edit: Callable[[], Awaitable[None]]) -> None:
    """An edit made only to change a message's controls, under the platform's shared edit allowance
    like an answer's final edit: the controls of an answer's earlier messages are settled after it ends."""
    scheduler = limits.scheduler
    if scheduler is None or not limits.edits:
        await edit()
        return
    await scheduler.call(Urgency.FINAL, limits.edits)
    try:
        await edit()
    finally:
        scheduler.done(limits.edits)
