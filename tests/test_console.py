"""`acechat console` in process: real core, fake upstream, a tmp database, scripted stdin."""

from __future__ import annotations

import asyncio
import io

from acechat.bots.console import PROMPT, ConsoleTarget, run_console
from acechat.core.chat import ChatCore
from acechat.core.commands import HELP_TEXT
from acechat.core.presets import BUILTIN_PRESETS
from tests.fakes.upstream import FakeUpstream


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
    assert HELP_TEXT in out
    assert "Unknown command `rset`. Did you mean `reset`?" in out
    # A slash line that is not a command gets a hint; only lines without a slash are questions.
    assert "Unknown command `/what`: type /help for the commands; lines without / are questions." in out
    assert [b["question"] for b in fake_upstream.bodies] == ["dana: what is a monad?"]  # type: ignore[index]
    assert "(bot) Ask me something" in out, "an empty question is refused with a notice, not sent"
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
    assert screen.getvalue() == "bot> Thinking about it\nbot> The answer\nbot> More(bot) careful\n"
