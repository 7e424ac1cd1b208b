"""Admins' controls and the admission rules they make: where the bot answers, who may ask, how much.

Pure functions over plain values, tested without a network: `Controls.of` reads what the store holds
for a channel and its workspace; `where_refusal`, `who_refusal` and `quota_refusal` say why a question
must not go upstream, or None. Admins (channel level and up) are never refused by these rules.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from acechat.storage.records import Control, UsageCount

DAY = 86400.0

# Control names as stored. Channel level: CHANNEL, ENGAGE, AUTOTHREAD; the rest are per workspace.
CHANNEL = "channel"
ACCESS = "access"
DMS = "dms"
ENGAGE = "engage"
AUTOTHREAD = "autothread"
TRANSCRIPTS = "transcripts"
QUOTA_PREFIX = "quota:"
USER_PREFIX = "user:"
ROLE_PREFIX = "role:"

LEVELS = ("user", "channel", "workspace")
UNITS = ("questions", "tokens")
PERIODS = {"today": 0, "7d": 7, "30d": 30}
# Decimal digits only, and few of them: int() stays cheap whatever is typed.
MAX_QUOTA = 10**12


class Refusal(enum.Enum):
    CHANNEL_OFF = "channel off"
    NOT_LISTED = "not listed"
    DMS_OFF = "dms off"
    DENIED = "denied"
    NOT_ALLOWED = "not allowed"


REFUSALS: dict[Refusal, str] = {
    Refusal.CHANNEL_OFF: "I'm turned off in this channel; an admin can turn me on with `channel on`.",
    Refusal.NOT_LISTED: (
        "I only answer in channels an admin has turned on (`channel on`), and this is not one of them."
    ),
    Refusal.DMS_OFF: "Direct messages to me are turned off here; ask me in a channel instead.",
    Refusal.DENIED: "An admin has not allowed you to ask me in this workspace.",
    Refusal.NOT_ALLOWED: "Only people an admin has allowed may ask me in this workspace.",
}


@dataclass(frozen=True, slots=True)
class Quota:
    level: str  # user, channel or workspace
    unit: str  # questions or tokens
    limit: int

    @property
    def name(self) -> str:
        return f"{QUOTA_PREFIX}{self.level}:{self.unit}"

    @property
    def amount(self) -> str:
        return f"{self.limit:,} {self.unit.removesuffix('s') if self.limit == 1 else self.unit}"

    def describe(self) -> str:
        return (
            f"{self.amount} a day per {self.level}" if self.level != "workspace" else f"{self.amount} a day"
        )


@dataclass(frozen=True, slots=True)
class Controls:
    """What is in force for one channel. None: nobody set it, the default applies."""

    channel: bool | None = None
    engage_thread: bool | None = None
    autothread: bool | None = None
    listed: bool | None = None
    dms: bool | None = None
    transcripts: bool | None = None
    # "user:ID" or "role:ID" -> "allow" or "deny"
    people: Mapping[str, str] = field(default_factory=dict)
    quotas: tuple[Quota, ...] = ()

    @classmethod
    def of(cls, channel: Iterable[Control], workspace: Iterable[Control]) -> Controls:
        here = {c.name: c.value for c in channel}
        ws = {c.name: c.value for c in workspace}
        quotas = []
        for name, value in ws.items():
            quota = _stored_quota(name, value)
            if quota is not None:
                quotas.append(quota)
        return cls(
            channel=_flag(here.get(CHANNEL), "on"),
            engage_thread=_flag(here.get(ENGAGE), "thread"),
            autothread=_flag(here.get(AUTOTHREAD), "on"),
            listed=_flag(ws.get(ACCESS), "listed"),
            dms=_flag(ws.get(DMS), "on"),
            transcripts=_flag(ws.get(TRANSCRIPTS), "on"),
            people={k: v for k, v in ws.items() if k.startswith((USER_PREFIX, ROLE_PREFIX))},
            quotas=tuple(sorted(quotas, key=lambda q: (LEVELS.index(q.level), UNITS.index(q.unit)))),
        )

    @property
    def keeps_transcripts(self) -> bool:
        return self.transcripts is not False

    @property
    def engages_threads(self) -> bool:
        return bool(self.engage_thread)

    def allow_list(self) -> list[str]:
        return sorted(k for k, v in self.people.items() if v == "allow")

    def deny_list(self) -> list[str]:
        return sorted(k for k, v in self.people.items() if v == "deny")


def _flag(value: str | None, true: str) -> bool | None:
    return None if value is None else value == true


def _stored_quota(name: str, value: str) -> Quota | None:
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "quota" or parts[1] not in LEVELS or parts[2] not in UNITS:
        return None
    if not (value.isascii() and value.isdecimal()):
        return None
    return Quota(parts[1], parts[2], int(value))


def where_refusal(
    controls: Controls, *, direct: bool, workspaceless: bool, operator_dms: bool
) -> Refusal | None:
    """Whether the bot answers here at all: direct messages by their own switch (the workspace's, or
    for DMs that belong to no workspace, as Discord's, the operator's), a channel by its own switch,
    then by the workspace's mode (`access listed`: only channels turned on)."""
    if direct:
        if workspaceless:
            return None if operator_dms else Refusal.DMS_OFF
        return Refusal.DMS_OFF if controls.dms is False else None
    if controls.channel is False:
        return Refusal.CHANNEL_OFF
    if controls.listed and controls.channel is not True:
        return Refusal.NOT_LISTED
    return None


def who_refusal(controls: Controls, user_id: str, roles: Iterable[str]) -> Refusal | None:
    """A deny (of the user or one of their roles) always wins; with an allow list, only those on it."""
    mine = [USER_PREFIX + user_id, *(ROLE_PREFIX + r for r in roles)]
    verdicts = [controls.people.get(k) for k in mine]
    if "deny" in verdicts:
        return Refusal.DENIED
    if "allow" in verdicts:
        return None
    return Refusal.NOT_ALLOWED if any(v == "allow" for v in controls.people.values()) else None


@dataclass(frozen=True, slots=True)
class QuotaHit:
    quota: Quota
    used: int


def quota_refusal(controls: Controls, used: UsageCount) -> QuotaHit | None:
    """The first quota already reached (the question that reaches it was answered; the next is not)."""
    for quota in controls.quotas:
        count = getattr(used, f"{quota.level}_{quota.unit}")
        if count >= quota.limit:
            return QuotaHit(quota, int(count))
    return None


def day_start(now: float) -> float:
    """The start of the UTC day holding `now`: quotas count from there."""
    return now - now % DAY


def quota_text(hit: QuotaHit, now: float) -> str:
    left = day_start(now) + DAY - now
    hours, minutes = int(left // 3600), int(left % 3600 // 60)
    reset = time.strftime("%H:%M", time.gmtime(day_start(now) + DAY))
    whose = {"user": "Your", "channel": "This channel's", "workspace": "This workspace's"}[hit.quota.level]
    return (
        f"{whose} quota of {hit.quota.amount} a day is used up; "
        f"it resets at {reset} UTC (in {hours} h {minutes} min)."
    )


def parse_amount(words: list[str]) -> tuple[str, int] | None:
    """`N/day` or `N tokens/day` (also `N questions/day`): the unit and the number, or None."""
    if len(words) == 1 and words[0].endswith("/day"):
        number, unit = words[0].removesuffix("/day"), "questions"
    elif len(words) == 2 and words[1] in ("tokens/day", "questions/day"):
        number, unit = words[0], words[1].removesuffix("/day")
    else:
        return None
    number = number.replace(",", "").replace("_", "")
    if not (number.isascii() and number.isdecimal()) or len(number) > 13:
        return None
    value = int(number)
    return (unit, value) if 0 < value <= MAX_QUOTA else None


def parse_subject(word: str) -> str | None:
    """Someone named in a command: a platform mention (`<@U1>`, `<@U1|ann>`, `<@!42>`, `<@&7>` for a
    Discord role) or a bare id. Returns "user:ID" or "role:ID"."""
    token = word.strip()
    if token.startswith("<@") and token.endswith(">"):
        inner = token[2:-1].split("|", 1)[0]
        if inner.startswith("&"):
            return ROLE_PREFIX + inner[1:] if _is_id(inner[1:]) else None
        inner = inner.removeprefix("!")
        return USER_PREFIX + inner if _is_id(inner) else None
    return USER_PREFIX + token if _is_id(token) and any(c.isdigit() for c in token) else None


def _is_id(text: str) -> bool:
    # Slack ids are upper-case letters and digits (U…, W…); Discord ids are digits.
    return 0 < len(text) <= 32 and text.isascii() and text.isalnum() and text.upper() == text


def show_subject(subject: str) -> str:
    kind, _, ident = subject.partition(":")
    return f"{kind} `{ident}`"
