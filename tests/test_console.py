"""`acechat console` in process: real core, fake upstream, a tmp database, scripted stdin."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acechat.bots.console import PROMPT, REASONED, ConsoleTarget, run_console, terminal_safe
from acechat.core.chat import ChatCore
from acechat.core.commands import COMMAND_WORDS, HELP_TEXT
from acechat.core.presets import BUILTIN_PRESETS
from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[1]


class Screen(io.StringIO):
    """stdout that also keeps every write, to see an answer arrive in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def console(core: ChatCore, *lines: str, channel: str = "terminal") -> str:
    screen = Screen()
    stdin = io.StringIO("".join(f"{line}\n" for line in lines))
    async with asyncio.timeout(5):
        await run_console(core, stdin=stdin, out=screen, user="dana", channel=channel)
    return screen.getvalue()


async def test_answers_and_keeps_the_conversation(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    out = await console(core, "hello", "and again")
    assert out.startswith("acechat console · channel 'terminal'")
    assert "bot> Answer 1 to: dana: hello\n" in out
    assert "bot> Answer 2 to: dana: and again\n" in out
    first, second = fake_upstream.bodies
    assert first is not None and second is not None
    (conversation_id,) = fake_upstream.conversations
    assert "id" not in first and second["id"] == conversation_id, "the second turn continues the first"
    assert out.endswith(PROMPT + "\n"), "end of input ends the console"


async def test_an_answer_streams_in_pieces(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    answer = "A long answer that arrives in many small pieces, one after another, until it is done."
    fake_upstream.answerer = lambda question, history: answer
    fake_upstream.set_default(fragment_size=8, fragment_delay=0.01)
    screen = Screen()
    async with asyncio.timeout(5):
        await run_console(core, stdin=io.StringIO("tell me\n"), out=screen, user="dana")
    out = screen.getvalue()
    assert f"bot> {answer}\n" in out
    assert out.count("bot> ") == 1, "streaming appends to the message instead of reprinting it"
    pieces = [w for w in screen.writes if w and w in answer]
    assert len(pieces) >= 3, f"the answer came in {len(pieces)} writes"


async def test_preset_set_then_a_question_uses_the_preset(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    out = await console(core, "/preset set coder", "write a sort", "/preset list")
    assert "dana set the preset for this channel to `coder`" in out
    (body,) = fake_upstream.bodies
    assert body is not None and body["preset"] == BUILTIN_PRESETS["coder"].prompt
    assert "**Built-in presets**" in out
    assert f"`coder` — {BUILTIN_PRESETS['coder'].description} ← in use" in out


async def test_model_set_status_reset_and_audit(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    out = await console(core, "/model set grok-4", "hi", "/status", "/reset", "hi again", "/audit")
    assert "set the model for this channel to `grok-4`" in out
    assert "**Model:** `grok-4` (channel)" in out
    assert "**Conversation:** 1 turn, started under a minute ago" in out
    assert "dana started a new conversation in this channel." in out
    assert "bot> Answer 1 to: dana: hi again" in out, "after a reset the conversation starts over"
    first, second = fake_upstream.bodies
    assert first is not None and second is not None
    assert first["model"] == second["model"] == "grok-4"
    assert "id" not in second
    assert "**Admin changes, newest first** (page 1 of 1)" in out
    assert "dana (`dana`) · model set · channel terminal · — → `grok-4`" in out


async def test_help_typos_slash_questions_and_blank_lines(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    out = await console(core, "", "/help", "/rset", "   ", "/what is a monad?", "what is a monad?", "/ask")
    # The help as typed here: every command with its `/`, and asking is typing, not mentioning.
    assert "bot> **Ask** by typing a question (a line without `/`), or with `/ask QUESTION`. " in out
    assert "mentioning me" not in out
    listed = out.split("**Ask**", 1)[1].split("you> ", 1)[0].split("\n", 1)[1]
    commands = re.findall(r"`([^`]+)`", listed)
    assert len(commands) == len(re.findall(r"`([^`]+)`", HELP_TEXT.split("\n", 1)[1])) >= 15
    # Every command with its `/`, but a lone value (`off`, `N tokens/day`) that completes one.
    assert all(command.startswith("/") or command.split()[0] not in COMMAND_WORDS for command in commands)
    assert sum(command.startswith("/") for command in commands) >= 25, commands
    assert "bot> Unknown command `rset`. Did you mean `/reset`?" in out
    # A slash line that is not a command gets a hint; only lines without a slash are questions.
    assert (
        "bot> Unknown command `/what`: type `/help` for the commands; lines without / are questions." in out
    )
    assert [b["question"] for b in fake_upstream.bodies] == ["dana: what is a monad?"]  # type: ignore[index]
    # An empty question is refused with a notice, not sent; it says how one asks here.
    assert "type it on a line of its own, or after `/ask`. `/help` lists my commands." in out
    assert out.count(PROMPT) == 8, "one prompt per line read, and one more that meets end of input"


async def test_channels_hold_separate_conversations(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await console(core, "one", channel="a")
    out = await console(core, "two", channel="b")
    assert "channel 'b'" in out and "Answer 1 to: dana: two" in out
    assert len(fake_upstream.conversations) == 2


async def test_a_rewritten_message_is_printed_again() -> None:
    screen = Screen()
    target = ConsoleTarget(screen)
    handle = await target.post("Thinking")
    await target.edit(handle, "Thinking about it")
    await target.edit(handle, "The answer")
    second = await target.post("More")
    await target.notify("careful")
    assert second != handle
    assert screen.getvalue() == "bot> Thinking about it\nbot> The answer\nbot> More\nbot> careful\n"


# --- what reaches the terminal ------------------------------------------------------------------------


async def test_escape_sequences_and_control_characters_in_an_answer_never_reach_the_terminal(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    hostile = (
        "Title\x1b]0;pwned\x07 set, screen\x1b[2J cleared, \x1b[31mred\x1b[0m, bell\x07, \x9b6n, "
        "over\rwritten, backwards \u202egnirts\u202c, tab\tand\nline"
    )
    fake_upstream.answerer = lambda question, history: hostile
    fake_upstream.set_default(fragment_size=3)
    out = await console(core, "go")
    shown = out.split("bot> ", 1)[1]
    assert not any(char in shown for char in "\x1b\x07\x9b\r\u202e\u202c"), repr(shown)
    assert (
        "Title set, screen cleared, red, bell, 6n, over\nwritten, backwards gnirts, tab\tand\nline" in shown
    )


def test_an_escape_sequence_that_never_ends_takes_no_text_with_it() -> None:
    assert terminal_safe("a\x1b]0;title\nthe rest\nand more") == "a0;title\nthe rest\nand more"
    assert terminal_safe("a\x1b[12\nb") == "a12\nb"
    # Cut off at the end of an answer still arriving: held back whole, never shown in part.
    assert terminal_safe("text\x1b]0;ti") == terminal_safe("text\x1b[3") == "text"


def test_terminal_safe_is_linear_on_hostile_text() -> None:
    for unit in ("\x1b[", "\x1b]", "\x1b[0;", "\x1b", "\x9b"):
        text = unit * 50_000
        started = time.perf_counter()
        assert "\x1b" not in terminal_safe(text)
        assert time.perf_counter() - started < 1.0, unit


async def test_folded_reasoning_is_one_marker_the_answer_follows(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.answerer = lambda question, history: "<think>Let me weigh it up. " * 5 + "</think>It is 42."
    fake_upstream.set_default(fragment_size=7, fragment_delay=0.005)
    out = await console(core, "the question")
    assert f"bot> {REASONED}It is 42.\n" in out
    assert out.count("bot> ") == 1 and "weigh" not in out, "no second line for the same reasoning"


# --- at a real terminal -------------------------------------------------------------------------------


# x86-64 system calls readline waits for a key in: select, pselect6, poll, ppoll.
WAITING_FOR_INPUT = {"23", "270", "7", "271"}


class Terminal:
    """`acechat demo` on a pseudo-terminal of its own, as someone at a keyboard runs it."""

    def __init__(self, cwd: Path) -> None:
        self.master, self.slave = pty.openpty()
        (cwd / "tmp").mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(cwd),
            "TMPDIR": str(cwd / "tmp"),
            "TERM": "xterm",
            "PYTHONPATH": str(ROOT),
            "INPUTRC": str(cwd / "no-inputrc"),
        }

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "acechat.bots.cli", "demo"],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            cwd=cwd,
            env=env,
            preexec_fn=controlling_terminal,
        )
        self.screen = b""

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_for(self, text: str, *, count: int = 1, timeout: float = 30.0) -> str:
        """Read output until `text` has appeared `count` times; the screen so far."""
        deadline = time.monotonic() + timeout
        while self.screen.decode(errors="replace").count(text) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} within {timeout}s: {self.screen.decode(errors='replace')!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:  # the other side closed
                    break
        return self.screen.decode(errors="replace")

    def interrupt_at_the_prompt(self) -> None:
        """Ctrl-C once readline waits for a key. A SIGINT that lands between the prompt being drawn and
        CPython's readline entering its wait is only seen at the next key (a limit of CPython's readline
        module), so this waits, on the kernel's word, until the process sleeps in that wait."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                call = Path(f"/proc/{self.process.pid}/syscall").read_text().split()[0]
            except (OSError, IndexError):
                break  # no /proc here: nothing to wait on
            if call in WAITING_FOR_INPUT:
                break
            time.sleep(0.01)
        self.type("\x03")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    opened = Terminal(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def test_at_a_terminal_typing_ahead_history_and_ctrl_c(terminal: Terminal) -> None:
    terminal.wait_for(PROMPT)
    # A question, and at once the next one, typed while the first is answered.
    terminal.type("hello\rtyped ahead")
    screen = terminal.wait_for(PROMPT, count=2)
    answer = screen.split("bot> ", 1)[1].rsplit(PROMPT, 1)[0]
    assert "turn 1" in answer and "typed ahead" not in answer, "what was typed stays out of the answer"
    # The next prompt shows it, ready to send.
    screen = terminal.wait_for("typed ahead", count=1)
    assert screen.rsplit(PROMPT, 1)[1].endswith("typed ahead")
    terminal.type("\r")
    terminal.wait_for(PROMPT, count=3)
    # Up arrow twice: the question before the last, from the history, edited with the arrow keys.
    terminal.type("\x1b[A\x1b[A\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D!\r")
    screen = terminal.wait_for(PROMPT, count=4)
    assert "turn 3" in screen.rsplit("bot> ", 1)[1]
    assert "“!hello”" in screen or "!hello" in screen.rsplit("bot> ", 1)[1], screen[-600:]
    # Ctrl-C at the prompt: the demo ends at once, cleanly, and the terminal echoes again.
    terminal.interrupt_at_the_prompt()
    assert terminal.process.wait(timeout=15) == 0
    assert termios.tcgetattr(terminal.slave)[3] & termios.ECHO
    assert "Traceback" not in terminal.wait_for("", timeout=1)


def test_at_a_terminal_ctrl_c_during_an_answer_also_quits(terminal: Terminal) -> None:
    terminal.wait_for(PROMPT)
    terminal.type("a question\r")
    terminal.wait_for("bot> ")
    terminal.type("\x03")
    assert terminal.process.wait(timeout=15) == 0
    assert termios.tcgetattr(terminal.slave)[3] & termios.ECHO
