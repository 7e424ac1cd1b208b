"""The command vocabulary every adapter offers, and the one text grammar (Slack and the console).

Discord builds `Command` values from slash-command options; Slack and the console type lines that
`parse_command` turns into the same values. Anything that is not a command is a question.
"""

from __future__ import annotations

import difflib
import enum
from dataclasses import dataclass

from acechat.core.access import LEVELS, PERIODS, parse_amount, parse_subject


class Action(enum.StrEnum):
    HELP = "help"
    ASK = "ask"
    RESET = "reset"
    STATUS = "status"
    AUDIT = "audit"
    FEEDBACK = "feedback"
    PRESET_LIST = "preset list"
    PRESET_SHOW = "preset show"
    PRESET_SET = "preset set"
    PRESET_CLEAR = "preset clear"
    PRESET_DEFAULT = "preset default"
    PRESET_CREATE = "preset create"
    PRESET_EDIT = "preset edit"
    PRESET_DELETE = "preset delete"
    MODEL_LIST = "model list"
    MODEL_SHOW = "model show"
    MODEL_SET = "model set"
    MODEL_DEFAULT = "model default"
    # admins' controls (issue 17): `name` holds the choice (or who, or the quota's level), `text` the amount
    CHANNEL = "channel"
    ACCESS = "access"
    ACCESS_DMS = "access dms"
    USERS_ALLOW = "users allow"
    USERS_DENY = "users deny"
    USERS_REMOVE = "users remove"
    USERS_LIST = "users list"
    QUOTA = "quota"
    USAGE = "usage"
    ENGAGE = "engage"
    AUTOTHREAD = "autothread"
    TRANSCRIPTS = "transcripts"
    FORGET_ME = "forget me"
    # AI Chat v2's tools (issue 16): `tools`, `tools on|off`, `tools default on|off`.
    TOOLS_SHOW = "tools show"
    TOOLS_SET = "tools set"
    TOOLS_DEFAULT = "tools default"
    # Answers the question the model asked back: `answer NUMBER` or `answer WORDS`.
    ANSWER = "answer"


@dataclass(frozen=True, slots=True)
class Command:
    action: Action
    name: str | None = None
    text: str | None = None
    description: str | None = None
    page: int = 1


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What a command says back. `public` marks a change the channel should hear about."""

    text: str
    public: bool = False
    ok: bool = True

    @property
    def in_channel(self) -> bool:
        """Shown to the whole channel; otherwise to the asker only. Failures are never broadcast."""
        return self.public and self.ok


HELP_TEXT = """\
**Ask** by mentioning me or with `ask QUESTION`. Everyone in a channel shares one conversation.
`reset` — start a new conversation here
`status` — this channel's model, preset and conversation
`preset list` · `preset show [NAME]`
`model list` · `model show` · `tools` (may the AI search the web, read pages and files?)
`answer NUMBER` or `answer WORDS` — answer a question the AI asked back (the asker or a channel admin)
Channel admins: `preset set NAME` · `preset clear` · `model set NAME` · `tools on|off`
Workspace admins: `preset default NAME` · `preset create NAME PROMPT` · `preset edit NAME PROMPT` · \
`preset delete NAME` · `model default NAME` · `tools default on|off` · `audit [PAGE]` · `feedback`
Where and who — channel admins: `channel on|off` · `engage mention|thread` · `autothread on|off` (Discord); \
workspace admins: `access open|listed` · `access dms on|off` (Slack) · `users allow|deny|remove @someone` · \
`users list`
How much — workspace admins: `quota user|channel|workspace N/day` (or `N tokens/day`, or `off`) · \
`usage [today|7d|30d]` · `transcripts on|off`
Anyone: `forget me` — delete your questions and answers kept here"""

CONTROL_WORDS = (
    "channel",
    "access",
    "users",
    "quota",
    "usage",
    "engage",
    "autothread",
    "transcripts",
    "forget",
)
_TOP = (
    "help",
    "ask",
    "reset",
    "status",
    "audit",
    "feedback",
    "preset",
    "model",
    "tools",
    "answer",
    *CONTROL_WORDS,
)
# The word every command starts with (the console writes them with their `/`).
COMMAND_WORDS = frozenset(_TOP)
_SWITCH = ("on", "off")
_PRESET_SUBS = ("list", "show", "set", "clear", "default", "create", "edit", "delete")
_MODEL_SUBS = ("list", "show", "set", "default")
_NEEDS_NAME = {"set", "default", "delete"}
MAX_AUDIT_PAGE = 1000


def _help(reason: str) -> Command:
    return Command(Action.HELP, text=reason)


def _first_word(text: str) -> tuple[str, str]:
    """The first word and the rest, split at any whitespace: a prompt may start on a new line."""
    parts = text.split(None, 1)
    return (parts[0], parts[1].strip()) if len(parts) == 2 else (text.strip(), "")


def parse_command(line: str) -> Command:
    """A command only when the line has a command's exact shape; anything else is a question.

    "help", "status of the Q3 launch" or "model the churn data" are questions. A command word with a
    required argument missing ("preset set") gets its usage, since nobody asks just that.
    """
    text = line.strip()
    if not text:
        return _help("")
    head, rest = _first_word(text)
    keyword = head.lower()
    question = Command(Action.ASK, text=text)

    if keyword not in _TOP:
        # A lone word that looks like a mistyped command is more likely a typo than a question.
        close = [] if rest else difflib.get_close_matches(keyword, _TOP, n=1, cutoff=0.75)
        if close:
            return _help(f"Unknown command `{head}`. Did you mean `{close[0]}`?")
        return question
    if keyword == "ask":
        return Command(Action.ASK, text=rest)
    if keyword == "help":
        return _help("") if not rest else question
    if keyword in ("reset", "status", "feedback"):
        return Command(Action(keyword)) if not rest else question
    if keyword in CONTROL_WORDS:
        return _parse_control(keyword, rest) or question
    if keyword == "audit":
        if not rest:
            return Command(Action.AUDIT)
        page = _page(rest)
        return Command(Action.AUDIT, page=page) if page is not None else question
    if keyword == "tools":
        return _parse_tools(rest) or question
    if keyword == "answer":
        return (
            Command(Action.ANSWER, text=rest)
            if rest
            else _help("Usage: `answer NUMBER` or `answer YOUR WORDS`.")
        )
    subs = _PRESET_SUBS if keyword == "preset" else _MODEL_SUBS
    return _parse_group(keyword, subs, rest) or question


def _parse_tools(rest: str) -> Command | None:
    """`tools`, `tools on|off`, `tools default on|off`; None for any other shape (a question)."""
    words = rest.lower().split()
    if not words:
        return Command(Action.TOOLS_SHOW)
    if len(words) == 1 and words[0] in _SWITCH:
        return Command(Action.TOOLS_SET, name=words[0])
    if words[0] == "default":
        if len(words) == 2 and words[1] in _SWITCH:
            return Command(Action.TOOLS_DEFAULT, name=words[1])
        return _help("Usage: `tools default on` or `tools default off`.") if len(words) == 1 else None
    return None


def _page(word: str) -> int | None:
    # isdecimal also accepts other scripts' digits, which int() reads; the length check keeps int() cheap.
    if not (word.isascii() and word.isdecimal()) or len(word) > 4:
        return None
    page = int(word)
    return page if 1 <= page <= MAX_AUDIT_PAGE else None


def _parse_group(group: str, subs: tuple[str, ...], rest: str) -> Command | None:
    """The group's command for `rest`, or None when the line is not a command's shape (a question)."""
    sub_word, args = _first_word(rest)
    sub = sub_word.lower() or "show"
    if sub not in subs:
        return None
    action = Action(f"{group} {sub}")
    name, tail = _first_word(args)

    if sub in ("list", "clear") or (group == "model" and sub == "show"):
        return None if args else Command(action)
    if sub == "show":
        return None if tail else Command(action, name=name or None)
    if sub in _NEEDS_NAME:
        if not name:
            return _help(f"Usage: `{group} {sub} NAME`.")
        return None if tail else Command(action, name=name)
    # create / edit: NAME PROMPT, with an optional one-line description as `NAME "description" PROMPT`
    if not name or not tail:
        return _help(f"Usage: `{group} {sub} NAME PROMPT`.")
    description, prompt = _split_description(tail)
    return Command(action, name=name, text=prompt, description=description)


def _split_description(tail: str) -> tuple[str | None, str]:
    if tail.startswith('"'):
        end = tail.find('"', 1)
        if end > 1 and tail[end + 1 :].strip():
            return tail[1:end].strip(), tail[end + 1 :].strip()
    return None, tail


# --- admins' controls (issue 17) ---------------------------------------------------------------------

# The exact shapes: "channel on", "quota user 20/day"; anything else starting with these words is a question.
_SWITCHES = {
    "channel": (Action.CHANNEL, ("on", "off")),
    "engage": (Action.ENGAGE, ("mention", "thread")),
    "autothread": (Action.AUTOTHREAD, ("on", "off")),
    "transcripts": (Action.TRANSCRIPTS, ("on", "off")),
}
_USERS = {"allow": Action.USERS_ALLOW, "deny": Action.USERS_DENY, "remove": Action.USERS_REMOVE}
QUOTA_USAGE = "Usage: `quota user|channel|workspace N/day`, `… N tokens/day` or `… off`."


def _parse_control(keyword: str, rest: str) -> Command | None:
    words = rest.lower().split()
    if keyword in _SWITCHES:
        action, choices = _SWITCHES[keyword]
        return Command(action, name=words[0]) if len(words) == 1 and words[0] in choices else None
    if keyword == "access":
        if len(words) == 1 and words[0] in ("open", "listed"):
            return Command(Action.ACCESS, name=words[0])
        if len(words) == 2 and words[0] == "dms" and words[1] in ("on", "off"):
            return Command(Action.ACCESS_DMS, name=words[1])
        return None
    if keyword == "forget":
        return Command(Action.FORGET_ME) if words == ["me"] else None
    if keyword == "usage":
        if not words:
            return Command(Action.USAGE, name="today")
        return Command(Action.USAGE, name=words[0]) if len(words) == 1 and words[0] in PERIODS else None
    if keyword == "users":
        if words == ["list"]:
            return Command(Action.USERS_LIST)
        if not words or words[0] not in _USERS:
            return None
        raw = rest.split()
        if len(raw) != 2:
            return _help(f"Usage: `users {words[0]} @someone`.") if len(raw) == 1 else None
        subject = parse_subject(raw[1])
        if subject is None:
            return _help(f"Name someone with a mention: `users {words[0]} @someone`.")
        return Command(_USERS[words[0]], name=subject)
    # quota
    if not words or words[0] not in LEVELS:
        return _help(QUOTA_USAGE) if not words else None
    if words[1:] == ["off"]:
        return Command(Action.QUOTA, name=words[0], text="off")
    amount = parse_amount(words[1:])
    if amount is None:
        return _help(QUOTA_USAGE)
    unit, value = amount
    return Command(Action.QUOTA, name=words[0], text=f"{value} {unit}")


def is_command(line: str) -> bool:
    """Whether the line has a command's shape (`ask …` included) rather than being a plain question."""
    words = line.split(None, 1)
    return bool(words) and (words[0].lower() == "ask" or parse_command(line).action is not Action.ASK)
