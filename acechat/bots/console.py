"""`acechat console`: a terminal chat on the same core, for trying presets and models before deploying.

Lines starting with `/` are commands (`/help`, `/preset set coder`, ...); everything else is a question.
The operator at the terminal is a workspace admin.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import TextIO

from acechat.core.chat import ChatCore, Question
from acechat.core.commands import is_command
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege
from acechat.core.platform import MentionRules, PlatformRules
from acechat.core.reply_target import Mark, TargetLimits
from acechat.core.scope import Scope

PROMPT = "you> "
# Nothing pings anyone in a terminal; the operator at it holds every right.
RULES = PlatformRules("console", MentionRules(()))


class ConsoleTarget:
    """Streams by writing only what is new; a rewrite (rare: folded reasoning) reprints the message."""

    limits = TargetLimits(max_chars=100_000, edit_burst=50, edit_window=1.0)
    rules = RULES

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown: dict[str, str] = {}

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def post(self, text: str) -> str:
        handle = str(len(self._shown))
        self._write(("\n" if self._shown else "") + "bot> " + text)
        self._shown[handle] = text
        return handle

    async def edit(self, handle: str, text: str) -> None:
        shown = self._shown[handle]
        self._write(text[len(shown) :] if text.startswith(shown) else "\nbot> " + text)
        self._shown[handle] = text

    async def typing(self) -> None:
        return None

    async def notify(self, text: str) -> None:
        self._write(f"(bot) {text}\n")

    async def announce(self, text: str) -> None:
        self._write(f"{text}\n")

    async def mark(self, mark: Mark) -> None:
        return None


async def run_console(
    core: ChatCore,
    *,
    channel: str = "terminal",
    user: str | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> None:
    name = user or getpass.getuser()
    actor = Actor(user_id=name, display_name=name, privilege=Privilege.WORKSPACE_ADMIN)
    scope = Scope.of("console", "local", channel)
    out.write(f"acechat console · channel '{channel}' · /help for commands · Ctrl-D to quit\n")
    out.flush()
    while True:
        out.write(PROMPT)
        out.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            out.write("\n")
            return
        line = line.strip()
        if not line:
            continue
        target = ConsoleTarget(out)
        if line.startswith("/"):
            if not is_command(line[1:]):
                word = line.split(None, 1)[0]
                out.write(
                    f"Unknown command `{word}`: type /help for the commands; lines without / are questions.\n"
                )
                continue
            await core.run_line(scope, actor, line[1:], target)
        else:
            await core.ask(Question(scope=scope, actor=actor, text=line), target)
        out.write("\n")
