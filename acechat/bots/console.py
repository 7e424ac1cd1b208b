"""`acechat console`: a terminal chat on the same core, for trying presets and models before deploying.

Lines starting with `/` are commands (`/help`, `/preset set coder`, ...); everything else is a question.
The operator at the terminal is a workspace admin.

At a terminal the prompt is GNU readline's (line editing, history), which works only in the main
thread: there the main thread reads lines while the core runs on an event loop in a worker thread, so
a prompt never blocks the loop and Ctrl-C (delivered to the main thread) quits at once. Between
prompts the terminal does not echo, so text typed during an answer stays out of it and waits, unseen,
for the next prompt. Everything the bot prints passes through `terminal_safe`: a model's answer is
text, and a terminal would obey its escape sequences (a new window title, a cleared screen).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import queue
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TextIO

from acechat.core.chat import ChatCore, Question
from acechat.core.commands import COMMAND_WORDS, HELP_TEXT, is_command
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege
from acechat.core.platform import MentionRules, PlatformRules
from acechat.core.reply_target import Mark, TargetLimits
from acechat.core.sanitize import FOLDED, THINKING
from acechat.core.scope import Scope

PROMPT = "you> "
# Nothing pings anyone in a terminal; the operator at it holds every right. A line without `/` is a
# question (command names in backticks get their `/` when shown: `_as_typed`).
RULES = PlatformRules(
    "console", MentionRules(()), asking="type it on a line of its own, or after `ask`"
)
# Everything the bot says starts with this, answers and notices alike.
SPEAKER = "bot> "
# Folded reasoning, while it runs and once done, as one marker the answer then follows on its line.
REASONED = "💭 (reasoning folded) "
ASK_LINE = (
    "**Ask** by typing a question (a line without `/`), or with `ask QUESTION`. "
    "The lines you ask share one conversation until `reset`."
)
# The core's words for other platforms, as they read here.
_IN_CONSOLE_TERMS = ((HELP_TEXT.partition("\n")[0], ASK_LINE),)

# Escape sequences whole (a CSI or OSC cut off at the end of a partial answer too, so that it never
# shows half; an OSC that never ends loses only its introducer, not the lines after it), then any
# other control character but newline and tab, then bidirectional overrides that would make text read
# in another order than it is. No nested quantifiers: linear in the text.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*(?:[@-~]|\Z)|\x1b\][^\x07\x1b\n]{0,512}(?:\x07|\x1b\\|\Z)|\x1b[@-_]?"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")

# How long the worker thread may take to start its event loop (it does nothing else first).
STARTUP_TIMEOUT = 10.0

LineReader = Callable[[str], Awaitable[str | None]]
"""Shows a prompt and returns the line typed, or None at the end of input."""


def terminal_safe(text: str) -> str:
    """`text` as a terminal may print it: no escape sequences, no control characters but line breaks
    and tabs (a carriage return becomes a line break: it would overwrite what came before)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def _as_typed(reply: str) -> str:
    """A command reply in the console's terms: commands are typed with their `/`, and one asks by
    typing, not by mentioning."""
    for theirs, ours in _IN_CONSOLE_TERMS:
        reply = reply.replace(theirs, ours)

    def slashed(match: re.Match[str]) -> str:
        span = match.group(1)
        return f"`/{span}`" if span.split()[0].lower() in COMMAND_WORDS else match.group()

    return _CODE_SPAN.sub(slashed, reply)


def _answer(text: str) -> str:
    """An answer as the terminal shows it: the folded-reasoning line, which changes from "thinking" to
    "thought" when the answer starts, is one marker that the answer continues on the same line."""
    text = terminal_safe(text)
    for marker in (THINKING, FOLDED):
        if text.startswith(marker):
            return REASONED + text[len(marker) :].lstrip()
    return text


class ConsoleTarget:
    """Streams by writing only what is new; a rewrite (rare) prints the message again."""

    limits = TargetLimits(max_chars=100_000, edit_burst=50, edit_window=1.0)
    rules = RULES

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown: dict[str, str] = {}
        self._line_open = False  # the last write left the cursor after text on its line

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text)
            self._out.flush()
            self._line_open = not text.endswith("\n")

    def _say(self, text: str) -> None:
        self._write(f"{chr(10) if self._line_open else ''}{SPEAKER}{text}\n")

    async def post(self, text: str) -> str:
        handle = str(len(self._shown))
        shown = _answer(text)
        self._write(("\n" if self._shown else "") + SPEAKER + shown)
        self._shown[handle] = shown
        return handle

    async def edit(self, handle: str, text: str) -> None:
        before, shown = self._shown[handle], _answer(text)
        self._write(shown[len(before) :] if shown.startswith(before) else f"\n{SPEAKER}{shown}")
        self._shown[handle] = shown

    async def typing(self) -> None:
        return None

    async def status(self, text: str) -> None:
        """A terminal has no status line: the tool line is on the answer."""

    async def notify(self, text: str) -> None:
        self._say(_as_typed(terminal_safe(text)))

    async def announce(self, text: str) -> None:
        self._say(_as_typed(terminal_safe(text)))

    async def mark(self, mark: Mark) -> None:
        return None


async def run_console(
    core: ChatCore,
    *,
    channel: str = "terminal",
    user: str | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    read_line: LineReader | None = None,
) -> None:
    """Chat until the end of input. Lines come from `read_line`, else from `stdin` as a stream."""
    read = read_line or stream_reader(stdin, out)
    name = user or getpass.getuser()
    actor = Actor(user_id=name, display_name=name, privilege=Privilege.WORKSPACE_ADMIN)
    scope = Scope.of("console", "local", channel)
    out.write(f"acechat console · channel '{channel}' · /help for commands · Ctrl-D or Ctrl-C to quit\n")
    out.flush()
    while (line := await read(PROMPT)) is not None:
        line = line.strip()
        if not line:
            continue
        target = ConsoleTarget(out)
        if line.startswith("/"):
            if not is_command(line[1:]):
                word = terminal_safe(line.split(None, 1)[0])
                await target.notify(
                    f"Unknown command `{word}`: type `/help` for the commands; lines without / are questions."
                )
                continue
            await core.run_line(scope, actor, line[1:], target)
        else:
            await core.ask(Question(scope=scope, actor=actor, text=line), target)
            out.write("\n")
        out.flush()


# --- reading lines ------------------------------------------------------------------------------------


def stream_reader(stdin: TextIO, out: TextIO) -> LineReader:
    """Lines from a stream (a pipe, a file), each read in a daemon thread: a read that never returns
    cannot keep the process from exiting."""

    async def read(prompt: str) -> str | None:
        out.write(prompt)
        out.flush()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()

        def settle(line: str | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(line or "")

        def work() -> None:
            try:
                line, error = stdin.readline(), None
            except Exception as exc:
                line, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, line, error)
            except RuntimeError:  # the loop closed meanwhile: nobody waits for this line
                pass

        threading.Thread(target=work, name="acechat-console-input", daemon=True).start()
        line = await done
        if not line:
            out.write("\n")
            return None
        return line

    return read


def run_interactive(
    session: Callable[[LineReader], Coroutine[Any, Any, None]],
    *,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
) -> None:
    """Run `session` with lines typed by a person: at a terminal with readline, else from the stream.

    Ctrl-C ends the session (its clean-up runs) and returns; exceptions of the session propagate."""
    if not (stdin.isatty() and out.isatty()):
        try:
            asyncio.run(session(stream_reader(stdin, out)))
        except KeyboardInterrupt:
            out.write("\n")
        return
    _Terminal(stdin, out).run(session)


class _Terminal:
    """The main thread reads lines with readline; the session runs on a loop in a worker thread.

    CPython's readline notices Ctrl-C when it interrupts the wait for a key; one that lands in the
    instant between the prompt being drawn and that wait takes effect at the next key."""

    def __init__(self, stdin: TextIO, out: TextIO) -> None:
        self._stdin = stdin
        self._out = out
        self._requests: queue.SimpleQueue[tuple[str, concurrent.futures.Future[str | None]] | None]
        self._requests = queue.SimpleQueue()

    def _read(self, prompt: str) -> Awaitable[str | None]:
        request: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        self._requests.put((prompt, request))
        return asyncio.wrap_future(request)

    def run(self, session: Callable[[LineReader], Coroutine[Any, Any, None]]) -> None:
        import readline  # noqa: F401  (importing it gives input() line editing and history)
        import termios

        started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]]
        started = concurrent.futures.Future()
        failure: list[BaseException] = []

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None
            started.set_result((asyncio.get_running_loop(), task))
            await session(self._read)

        def loop_thread() -> None:
            try:
                asyncio.run(main())
            except asyncio.CancelledError:
                pass
            except BaseException as error:
                failure.append(error)
            finally:
                self._requests.put(None)

        fd = self._stdin.fileno()
        saved = termios.tcgetattr(fd)
        echoing = termios.tcgetattr(fd)
        echoing[3] |= termios.ECHO
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~termios.ECHO
        worker = threading.Thread(target=loop_thread, name="acechat-console", daemon=True)
        try:
            # No echo between prompts, so what is typed during an answer stays out of it; readline
            # echoes only if the terminal did when it started, so each prompt turns echo back on.
            # Neither change discards what was typed: it waits for the next prompt.
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
            worker.start()
            while (request := self._requests.get()) is not None:
                prompt, reply = request
                termios.tcsetattr(fd, termios.TCSANOW, echoing)
                try:
                    line: str | None = input(prompt)
                except EOFError:
                    self._out.write("\n")
                    line = None
                finally:
                    termios.tcsetattr(fd, termios.TCSANOW, quiet)
                reply.set_result(line)
        except KeyboardInterrupt:
            self._out.write("\n")
            self._out.flush()
            # The session's own clean-up (closing the core and its database) runs before this returns.
            loop, task = started.result(timeout=STARTUP_TIMEOUT)
            loop.call_soon_threadsafe(task.cancel)
            worker.join()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if failure:
            raise failure[0]
