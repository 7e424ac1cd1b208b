"""Stop and feedback in the core: who may press, what a press does, across processes and restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from acechat.core import chat as chat_module
from acechat.core import notices
from acechat.core.chat import ChatCore, Outcome, Question, quote
from acechat.core.commands import Action, Command
from acechat.core.facts import Actor
from acechat.core.interactions import NONE, ControlBoard, Controls, control_id, parse_control
from acechat.core.permissions import Privilege
from acechat.core.presets import BUILTIN_PRESETS, Preset, suggestions
from acechat.core.scope import Scope
from acechat.core.settings import Settings
from acechat.core.upstream import AIChatClient
from acechat.storage import Store
from acechat.storage.postgres import PostgresStore
from acechat.storage.records import AnswerRecord, Change, FeedbackTally
from tests.fakes.target import ControlledTarget
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.store_backends import backend, pg_database, pg_url, store

__all__ = ["backend", "pg_database", "pg_url", "store"]  # fixtures

CHANNEL = Scope.of("test", "W1", "C1")
DANA = Actor("U1", "Dana")
EVE = Actor("U2", "Eve")
MOD = Actor("U3", "Mo", privilege=Privilege.CHANNEL_ADMIN)
ADMIN = Actor("U9", "Ada", privilege=Privilege.WORKSPACE_ADMIN)
SLOW = Behaviour(answer="word " * 400, fragment_size=5, fragment_delay=0.02)


async def until(condition: Callable[[], object], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def running(core: ChatCore) -> str:
    (answer_id,) = core._running
    return answer_id


async def start_slow(
    core: ChatCore, fake: FakeUpstream, actor: Actor = DANA
) -> tuple[asyncio.Task[Outcome], ControlledTarget, str]:
    fake.queue(SLOW)
    target = ControlledTarget()
    task = asyncio.create_task(core.ask(Question(CHANNEL, actor, "tell me a long story"), target))
    await until(lambda: target.kinds("post"))
    answer_id = running(core)
    return task, target, answer_id


def test_control_ids_round_trip_and_refuse_anything_else() -> None:
    assert parse_control(control_id("stop", "ab12")) == ("stop", "ab12")
    assert parse_control("acechat:vote:") == ("vote", "")
    for other in ("stop:ab", "otherapp:stop:ab", "acechat:", "acechat", "acechat:stop", "x" * 200):
        assert parse_control(other) is None


def test_the_last_message_carries_the_controls_and_earlier_ones_none() -> None:
    board = ControlBoard()
    board.wanted = Controls(stop="a")
    board.shown("m1", "one", board.for_post())
    board.shown("m2", "two", board.for_post())
    assert board.stale() == [("m1", "one", NONE)]
    board.wanted = Controls(vote="a")
    assert board.for_edit("m2") == Controls(vote="a") and board.for_edit("m1") == NONE
    assert set(board.stale()) == {("m1", "one", NONE), ("m2", "two", Controls(vote="a"))}


def test_the_quoted_message_goes_before_the_question() -> None:
    assert quote("line one\nline two") == "About this message:\n> line one\n> line two"
    assert len(quote("x" * 100_000)) < chat_module.QUOTE_CHARS + 100


async def test_the_asker_stops_an_answer_at_once_and_keeps_the_conversation(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    task, target, answer_id = await start_slow(core, fake_upstream)
    assert target.controls["m1"] == Controls(stop=answer_id)
    pressed = time.monotonic()
    assert await core.stop(answer_id, CHANNEL, DANA) is None
    assert await asyncio.wait_for(task, 5) is Outcome.STOPPED
    # The upstream request was cancelled rather than read to its end (400 words at 20 ms a line).
    await until(lambda: fake_upstream.active == 0, 2)
    assert time.monotonic() - pressed < 2.0
    assert target.text.endswith(notices.STOPPED)
    assert "word" in target.text, "what was shown so far stays"
    last = max(target.controls, key=lambda h: int(h[1:]))
    assert target.controls[last] == Controls(vote=answer_id), "Stop gives way to the vote"
    assert all(c == NONE for h, c in target.controls.items() if h != last)
    answer = await core.store.get_answer(answer_id)
    assert answer is not None and answer.state == "stopped"
    # Stopping keeps the conversation: the next question continues it.
    kept = await core.store.get_conversation(CHANNEL.key)
    assert kept is not None and kept.upstream_id and kept.turns == 1
    await core.ask(Question(CHANNEL, DANA, "and then?"), ControlledTarget())
    follow_up = fake_upstream.bodies[-1]
    assert follow_up is not None and follow_up.get("id") == kept.upstream_id, "the conversation goes on"


async def test_only_the_asker_or_a_channel_admin_can_stop(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    task, _target, answer_id = await start_slow(core, fake_upstream)
    assert await core.stop(answer_id, CHANNEL, EVE) == notices.ONLY_ASKER_STOPS
    assert not task.done()
    # A channel admin of another workspace is nobody here.
    assert await core.stop(answer_id, Scope.of("test", "W2", "C1"), MOD) is None
    assert not task.done()
    assert await core.stop(answer_id, CHANNEL, MOD) is None
    assert await asyncio.wait_for(task, 5) is Outcome.STOPPED


async def test_a_double_press_and_a_press_after_the_end_change_nothing(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    task, target, answer_id = await start_slow(core, fake_upstream)
    assert await core.stop(answer_id, CHANNEL, DANA) is None
    assert await core.stop(answer_id, CHANNEL, DANA) is None
    assert await asyncio.wait_for(task, 5) is Outcome.STOPPED
    calls = len(target.calls)
    assert await core.stop(answer_id, CHANNEL, DANA) is None
    assert await core.stop(answer_id, CHANNEL, EVE) is None, "an ended answer refuses nobody"
    assert await core.stop("not-an-id", CHANNEL, DANA) is None
    assert len(target.calls) == calls
    # A finished answer: its Stop is gone and pressing an old one does nothing either.
    done = ControlledTarget()
    assert await core.ask(Question(CHANNEL, DANA, "short"), done) is Outcome.ANSWERED
    (handle,) = done.messages
    assert done.controls[handle].stop is None and done.controls[handle].vote is not None
    assert await core.stop(done.controls[handle].vote or "", CHANNEL, DANA) is None
    assert not done.text.endswith(notices.STOPPED)


async def test_the_next_question_in_the_scope_starts_as_soon_as_one_is_stopped(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    task, _, answer_id = await start_slow(core, fake_upstream)
    fake_upstream.queue(Behaviour(answer="next"))
    waiting = ControlledTarget()
    second = asyncio.create_task(core.ask(Question(CHANNEL, EVE, "my turn"), waiting))
    await asyncio.sleep(0.05)
    assert not waiting.calls or not waiting.kinds("post"), "it waits for the turn"
    await core.stop(answer_id, CHANNEL, DANA)
    assert await asyncio.wait_for(task, 5) is Outcome.STOPPED
    assert await asyncio.wait_for(second, 5) is Outcome.ANSWERED
    assert waiting.text.startswith("next")


async def test_a_failed_answer_loses_its_stop_and_gets_no_vote(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="partial " * 50, fragment_size=8, error_after=3))
    target = ControlledTarget()
    assert await core.ask(Question(CHANNEL, DANA, "q"), target) is Outcome.FAILED
    assert target.controls and all(c == NONE for c in target.controls.values())


async def test_a_stop_whose_notice_is_lost_is_found_by_the_poll(
    settings: Settings, fake_upstream: FakeUpstream, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answering process hears no notifications (its listener is off): the poll finds the Stop."""
    monkeypatch.setattr(chat_module, "STOP_POLL", 0.05)
    shared = dataclasses.replace(settings, database_url=pg_url)
    deaf = await PostgresStore.connect(pg_url, pool_size=2, listen=False)
    running_core = ChatCore(shared, deaf, AIChatClient(shared.upstream))
    other = await ChatCore.open(shared)
    try:
        task, target, answer_id = await start_slow(running_core, fake_upstream)
        assert await other.stop(answer_id, CHANNEL, EVE) == notices.ONLY_ASKER_STOPS
        assert await other.stop(answer_id, CHANNEL, DANA) is None
        assert await asyncio.wait_for(task, 5) is Outcome.STOPPED
        assert target.text.endswith(notices.STOPPED)
    finally:
        await other.aclose()
        await running_core.aclose()


async def test_with_postgresql_a_stop_reaches_the_answering_process_by_notification(
    settings: Settings, fake_upstream: FakeUpstream, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_module, "STOP_POLL", 60.0)  # the notification alone must do it
    shared = dataclasses.replace(settings, database_url=pg_url)
    running_core = await ChatCore.open(shared)
    other = await ChatCore.open(shared)
    try:
        task, _target, answer_id = await start_slow(running_core, fake_upstream)
        assert await other.stop(answer_id, CHANNEL, MOD) is None
        assert await asyncio.wait_for(task, 5) is Outcome.STOPPED
        assert await other.vote(answer_id, CHANNEL, DANA, up=True) == notices.voted(True, changed=False)
        (tally,) = await other.store.feedback(CHANNEL.workspace_key, 0)
        assert (tally.up, tally.down) == (1, 0)
    finally:
        await other.aclose()
        await running_core.aclose()


async def test_votes_one_per_person_changeable_with_model_and_preset(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    target = ControlledTarget()
    await core.ask(Question(CHANNEL, DANA, "q"), target)
    (controls,) = target.controls.values()
    answer_id = controls.vote or ""
    assert await core.vote(answer_id, CHANNEL, DANA, up=True) == notices.voted(True, changed=False)
    assert await core.vote(answer_id, CHANNEL, DANA, up=True) == notices.voted(True, changed=False)
    assert await core.vote(answer_id, CHANNEL, DANA, up=False) == notices.voted(False, changed=True)
    assert await core.vote(answer_id, CHANNEL, EVE, up=False) == notices.voted(False, changed=False)
    assert await core.vote("f" * 32, CHANNEL, EVE, up=True) == notices.VOTE_CLOSED
    assert await core.vote(answer_id, Scope.of("test", "W2", "C1"), EVE, up=True) == notices.VOTE_CLOSED
    (tally,) = await core.store.feedback(CHANNEL.workspace_key, 0)
    resolved = await core.state.resolve(CHANNEL)
    assert (tally.model, tally.preset, tally.up, tally.down) == (resolved.model, resolved.preset.name, 0, 2)
    # Admins read it with `feedback`; members may not.
    report = await core.execute(CHANNEL, ADMIN, Command(Action.FEEDBACK))
    assert (
        report.ok and f"`{resolved.model}` · `{resolved.preset.name}`: 0 👍 / 2 👎 (0% good)" in report.text
    )
    refused = await core.execute(CHANNEL, DANA, Command(Action.FEEDBACK))
    assert not refused.ok
    empty = await core.execute(Scope.of("test", "W9", "C1"), ADMIN, Command(Action.FEEDBACK))
    assert "No answer here was rated" in empty.text
    usage = await core.execute(CHANNEL, ADMIN, Command(Action.USAGE))
    assert f"**Ratings:** `{resolved.model}` · `{resolved.preset.name}` 0 👍 / 2 👎" in usage.text


async def test_votes_and_stops_survive_a_restart(settings: Settings, fake_upstream: FakeUpstream) -> None:
    first = await ChatCore.open(settings)
    target = ControlledTarget()
    await first.ask(Question(CHANNEL, DANA, "q"), target)
    await first.aclose()
    (controls,) = target.controls.values()
    again = await ChatCore.open(dataclasses.replace(settings))
    try:
        assert await again.vote(controls.vote or "", CHANNEL, EVE, up=True) == notices.voted(
            True, changed=False
        )
        assert await again.stop(controls.vote or "", CHANNEL, EVE) is None
    finally:
        await again.aclose()


def test_suggested_first_questions_suit_the_preset() -> None:
    assert [t for t, _ in suggestions(BUILTIN_PRESETS["coder"])] == [
        "Debug an error",
        "Write a function",
        "Explain code",
    ]
    assert all(len(suggestions(p)) <= 4 for p in BUILTIN_PRESETS.values())
    custom = Preset("pirate", "Talks like a pirate " * 50, "Arr.", builtin=False)
    (first, second) = suggestions(custom)
    assert "pirate" in first[1] and len(second[1]) < 250


async def test_the_answer_and_feedback_rows_behave_alike_on_both_backends(store: Store) -> None:
    seen: list[Change] = []
    store.on_change(seen.append)
    old = AnswerRecord("a1", "s:W1:C1:-", "s:W1", "U1", "gpt-4o", "assistant", 1.0)
    new = AnswerRecord("a2", "s:W1:C1:-", "s:W1", "U1", "gpt-4o", "coder", time.time())
    for answer in (old, new):
        await store.start_answer(answer)
    assert await store.get_answer("a2") == new and await store.get_answer("zz") is None
    assert await store.running_answer("s:W1:C1:-") == "a2" and await store.running_answer("s:W1:C2:-") is None
    assert await store.request_stop("a2") and not await store.request_stop("a2"), "only a running one"
    assert seen == [Change("stop", "a2")]
    assert await store.stop_requests(["a1", "a2", "zz"]) == ["a2"] and await store.stop_requests([]) == []
    await store.end_answer(dataclasses.replace(new, state="stopped"))
    # An answer only written when it ends (one process on SQLite) gets its whole row then.
    await store.end_answer(dataclasses.replace(new, answer_id="a3", state="answered"))
    assert await store.get_answer("a3") == dataclasses.replace(new, answer_id="a3", state="answered")
    assert not await store.request_stop("a2") and await store.stop_requests(["a2"]) == []
    assert await store.vote(new, "U2", 1, 5.0) is None
    assert await store.vote(new, "U2", -1, 6.0) == 1
    assert await store.vote(old, "U3", 1, 7.0) is None
    tallies = await store.feedback("s:W1", 0)
    assert [(t.preset, t.up, t.down) for t in tallies] == [("assistant", 1, 0), ("coder", 0, 1)]
    assert await store.feedback("s:W1", 6.5) == [FeedbackTally("gpt-4o", "assistant", 1, 0)]
    # Answers go after 30 days (their buttons then do nothing); the votes stay.
    assert await store.prune(now=time.time() + 3 * 86400) >= 1
    assert await store.get_answer("a1") is None and await store.get_answer("a2") is not None
    assert len(await store.feedback("s:W1", 0)) == 2
