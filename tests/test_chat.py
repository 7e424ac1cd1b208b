"""ChatCore end to end against the fake upstream, a real SQLite file and a recording target."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from acechat.core import notices
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.commands import Action, Command, parse_command
from acechat.core.facts import Actor, Attachment
from acechat.core.pacing.limits import TokenBucket
from acechat.core.pacing.scheduler import Scheduler, Urgency
from acechat.core.permissions import Privilege, privilege_of
from acechat.core.platform_errors import PlatformError, PlatformForbidden
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.reply_target import TargetLimits
from acechat.core.scope import Scope
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.target import RecordingTarget
from tests.fakes.upstream import Behaviour, FakeUpstream

CHANNEL = Scope.of("test", "W1", "C1")
THREAD = Scope.of("test", "W1", "C1", "T1")
OTHER = Scope.of("test", "W1", "C2")
DANA = Actor(
    "U1",
    "Dana",
)
ADMIN = Actor("U9", "Ada", privilege=Privilege.WORKSPACE_ADMIN)


def make_settings(upstream: UpstreamSettings, db: Path, **changes: object) -> Settings:
    base = Settings(
        upstream=upstream,
        db_path=db,
        shutdown_grace=2.0,
        user_rate=RateLimit(0, 60),
        channel_rate=RateLimit(0, 60),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for a state the test cannot be told about, checking every few milliseconds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def ask(
    core: ChatCore, text: str, scope: Scope = CHANNEL, actor: Actor = DANA, **kw: object
) -> RecordingTarget:
    target = RecordingTarget(**kw)  # type: ignore[arg-type]
    await core.ask(Question(scope, actor, text), target)
    return target


async def test_first_turn_and_follow_up_share_the_upstream_conversation(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    first = await ask(core, "hello")
    second = await ask(core, "and again", actor=Actor("U2", "Lee"))

    one, two = fake_upstream.bodies
    assert one is not None and two is not None
    assert one["stateful"] is True and "id" not in one
    assert one["question"] == "Dana: hello"
    assert one["model"] == "claude-sonnet-4-6"
    assert one["preset"] == BUILTIN_PRESETS["assistant"].prompt
    conversation_id = next(iter(fake_upstream.conversations))
    assert two["id"] == conversation_id and two["stateful"] is True
    assert two["preset"] == one["preset"], "the preset is sent on every turn"
    assert first.text == "Answer 1 to: Dana: hello"
    assert second.text == "Answer 2 to: Lee: and again"
    status = await core.execute(CHANNEL, DANA, Command(Action.STATUS))
    assert "2 turns" in status.text


async def test_author_prefix_can_be_turned_off(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    chat = await ChatCore.open(make_settings(upstream_settings, tmp_path / "a.db", author_prefix=False))
    try:
        await ask(chat, "hello")
    finally:
        await chat.aclose()
    assert fake_upstream.bodies[0]["question"] == "hello"  # type: ignore[index]


async def test_turns_in_one_scope_run_one_at_a_time_in_arrival_order(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(gate=gate))
    targets = [RecordingTarget() for _ in range(3)]
    tasks = []
    for index, target in enumerate(targets):
        tasks.append(asyncio.create_task(core.ask(Question(CHANNEL, DANA, f"q{index}"), target)))
        await until(lambda n=index: core._queued.get(CHANNEL.key) == n + 1)
    await fake_upstream.wait_for_requests(1)
    # All three hold or wait for the channel's turn, and the first holds it: nothing else can be asked.
    assert len(fake_upstream.requests) == 1, "the second question waits for the first answer"
    gate.set()
    assert await asyncio.gather(*tasks) == [Outcome.ANSWERED] * 3
    questions = [b["question"] for b in fake_upstream.bodies]  # type: ignore[index]
    assert questions == ["Dana: q0", "Dana: q1", "Dana: q2"]
    assert [t.text for t in targets] == [f"Answer {i + 1} to: Dana: q{i}" for i in range(3)]
    assert not core._queued, "idle scopes keep no queue"


async def test_different_scopes_run_in_parallel(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    # No answer comes until all twenty questions are at the service at once, which only scopes that run
    # in parallel can do (however slowly a busy machine gets them there).
    gate = asyncio.Event()
    fake_upstream.set_default(gate=gate)
    scopes = [Scope.of("test", "W1", f"C{i}") for i in range(20)]
    asked = asyncio.gather(*(core.ask(Question(s, DANA, "hi"), RecordingTarget()) for s in scopes))
    await until(lambda: fake_upstream.active == 20, seconds=10)
    gate.set()
    assert await asked == [Outcome.ANSWERED] * 20


async def test_presets_resolve_thread_then_channel_then_workspace_then_default(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    reply = await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_SET, name="coder"))
    assert reply.ok and reply.public and "new conversation" in reply.text.lower()
    await ask(core, "in channel")
    await ask(core, "in thread", scope=THREAD)
    await core.execute(OTHER, ADMIN, Command(Action.PRESET_DEFAULT, name="writer"))
    await ask(core, "elsewhere", scope=OTHER)
    await core.execute(THREAD, ADMIN, Command(Action.PRESET_SET, name="reviewer"))
    await ask(core, "thread again", scope=THREAD)
    await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_CLEAR))
    await ask(core, "channel after clear")

    presets = [b["preset"] for b in fake_upstream.bodies]  # type: ignore[index]
    assert presets == [
        BUILTIN_PRESETS["coder"].prompt,
        BUILTIN_PRESETS["coder"].prompt,  # the thread inherits its channel
        BUILTIN_PRESETS["writer"].prompt,  # the workspace default
        BUILTIN_PRESETS["reviewer"].prompt,  # the thread's own
        BUILTIN_PRESETS["writer"].prompt,  # the channel fell back to the workspace default
    ]


async def test_changing_the_preset_starts_a_fresh_conversation(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await ask(core, "one")
    await ask(core, "two")
    await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_SET, name="coder"))
    await ask(core, "three")
    await ask(core, "four", scope=THREAD)
    bodies = fake_upstream.bodies
    assert "id" not in bodies[0] and "id" in bodies[1]  # type: ignore[operator]
    assert "id" not in bodies[2], "a new preset means a new upstream conversation"  # type: ignore[operator]
    assert "id" not in bodies[3], "a thread is a conversation of its own"  # type: ignore[operator]


async def test_an_inherited_change_also_starts_fresh(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await ask(core, "one", scope=THREAD)
    await ask(core, "two", scope=THREAD)
    await core.execute(CHANNEL, ADMIN, Command(Action.MODEL_SET, name="grok-4"))
    await ask(core, "three", scope=THREAD)
    last = fake_upstream.bodies[-1]
    assert last is not None and "id" not in last and last["model"] == "grok-4"


async def test_reset_forgets_the_conversation(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await ask(core, "one")
    reply = await core.execute(CHANNEL, DANA, Command(Action.RESET))
    assert reply.ok and reply.public
    await ask(core, "two")
    assert "id" not in fake_upstream.bodies[1]  # type: ignore[operator]
    again = await core.execute(Scope.of("test", "W1", "C-new"), DANA, Command(Action.RESET))
    assert "no conversation" in again.text


async def test_unknown_model_is_refused_with_the_list(core: ChatCore) -> None:
    reply = await core.execute(CHANNEL, ADMIN, Command(Action.MODEL_SET, name="gpt-99"))
    assert not reply.ok
    assert "gpt-99" in reply.text and "gpt-5.4-mini" in reply.text
    ok = await core.execute(CHANNEL, ADMIN, Command(Action.MODEL_SET, name="GPT-5.4-MINI"))
    assert ok.ok and "gpt-5.4-mini" in ok.text


async def test_unknown_preset_is_refused(core: ChatCore) -> None:
    reply = await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_SET, name="pirate"))
    assert not reply.ok and "pirate" in reply.text and "coder" in reply.text


@pytest.mark.parametrize(
    "action",
    [
        a
        for a in Action
        if a.value.split()[-1] in {"set", "clear", "default", "create", "edit", "delete", "audit"}
    ],
)
async def test_non_admins_are_refused_every_admin_command_and_nothing_is_written(
    core: ChatCore, action: Action
) -> None:
    for who in (DANA, Actor("U3", "Unknown")):
        command = Command(
            action, name="grok-4" if action.value.startswith("model") else "mine", text="Be brief."
        )
        reply = await core.execute(CHANNEL, who, command)
        assert not reply.ok and not reply.public and "admin" in reply.text.lower()
    assert await core.store.list_audit(CHANNEL.workspace_key) == []
    assert await core.store.get_settings([CHANNEL.key, CHANNEL.workspace_key]) == {}
    assert await core.store.list_presets(CHANNEL.workspace_key) == []


async def test_configured_admins_and_audit_log(upstream_settings: UpstreamSettings, tmp_path: Path) -> None:
    chat = await ChatCore.open(
        make_settings(upstream_settings, tmp_path / "a.db", admin_users=frozenset({"test:U1"}))
    )
    try:
        admins = chat.settings.admin_users
        assert privilege_of("test", DANA.user_id, DANA.privilege, admins) is Privilege.WORKSPACE_ADMIN
        assert privilege_of("other", DANA.user_id, DANA.privilege, admins) is Privilege.MEMBER, (
            "qualified ids apply to their platform"
        )
        assert (await chat.execute(CHANNEL, DANA, Command(Action.MODEL_SET, name="grok-4"))).ok
        assert (await chat.execute(CHANNEL, DANA, Command(Action.MODEL_SET, name="o3"))).ok
        entries = await chat.store.list_audit(CHANNEL.workspace_key)
        assert [(e.action, e.old, e.new, e.actor_name) for e in entries] == [
            ("model set", "grok-4", "o3", "Dana"),
            ("model set", None, "grok-4", "Dana"),
        ]
        audit = await chat.execute(CHANNEL, DANA, Command(Action.AUDIT))
        assert "o3" in audit.text and "Dana" in audit.text
    finally:
        await chat.aclose()


async def test_custom_presets_create_use_edit_delete(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    created = await core.execute(
        CHANNEL, ADMIN, parse_command('preset create pirate "Talks like a pirate" Arr. Be a pirate.')
    )
    assert created.ok, created.text
    assert "pirate" in await core.state.preset_names(CHANNEL)
    assert "pirate" not in await core.state.preset_names(Scope.of("test", "W2", "C1")), (
        "presets are per workspace"
    )
    assert (await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_SET, name="pirate"))).ok
    await ask(core, "ahoy")
    assert fake_upstream.bodies[-1]["preset"] == "Arr. Be a pirate."  # type: ignore[index]
    assert (await core.execute(CHANNEL, ADMIN, parse_command("preset edit pirate Arr, briefly."))).ok
    await ask(core, "again")
    assert fake_upstream.bodies[-1]["preset"] == "Arr, briefly."  # type: ignore[index]
    dup = await core.execute(CHANNEL, ADMIN, parse_command("preset create pirate Other."))
    assert not dup.ok
    shadow = await core.execute(CHANNEL, ADMIN, parse_command("preset create coder Other."))
    assert not shadow.ok and "built-in" in shadow.text
    too_long = await core.execute(
        CHANNEL, ADMIN, Command(Action.PRESET_CREATE, name="big", text="x" * 100_000)
    )
    assert not too_long.ok and "4,000" in too_long.text.replace("4000", "4,000")
    assert (await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_DELETE, name="pirate"))).ok
    await ask(core, "after delete")
    assert fake_upstream.bodies[-1]["preset"] == BUILTIN_PRESETS["assistant"].prompt  # type: ignore[index]
    actions = [e.action for e in await core.store.list_audit(CHANNEL.workspace_key)]
    assert actions[:3] == ["preset delete", "preset edit", "preset set"]


async def test_state_survives_a_restart(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    settings = make_settings(upstream_settings, tmp_path / "acechat.db")
    first = await ChatCore.open(settings)
    await first.execute(CHANNEL, ADMIN, Command(Action.PRESET_SET, name="coder"))
    await ask(first, "before restart")
    await first.aclose()

    second = await ChatCore.open(settings)
    try:
        target = await ask(second, "after restart")
    finally:
        await second.aclose()
    _, after = fake_upstream.bodies
    assert after["id"] == next(iter(fake_upstream.conversations))  # type: ignore[index]
    assert after["preset"] == BUILTIN_PRESETS["coder"].prompt  # type: ignore[index]
    assert target.text.startswith("Answer 2 to:")


ERRORS = [
    (Behaviour.fail(401, "invalid_token"), "rejected this bot's API token"),
    (Behaviour.fail(403, "used_up"), "balance is used up"),
    (Behaviour.fail(403, "disabled"), "disabled"),
    (Behaviour.fail(400, "bad_request"), "could not accept"),
    (Behaviour.fail(500, "api_error"), "failed to answer"),
    (Behaviour.fail(429, "too_many_requests"), "busy"),
    (Behaviour(garbage_after=0, answer="x"), "malformed reply"),
    (Behaviour(cut_after=1, answer="a long enough answer to be cut", fragment_size=4), "cut off"),
    (Behaviour(error_after=1, answer="partial answer here", fragment_size=4), "failed"),
    (Behaviour(answer=""), "empty"),
]


@pytest.mark.parametrize(("behaviour", "expected"), ERRORS, ids=[e[1] for e in ERRORS])
async def test_every_upstream_failure_gives_the_user_a_short_clear_message(
    core: ChatCore, fake_upstream: FakeUpstream, behaviour: Behaviour, expected: str
) -> None:
    # Retries would consume the queued failure and then succeed: queue enough for every attempt.
    fake_upstream.queue(*([behaviour] * 3))
    target = await ask(core, "hi")
    assert expected.lower() in target.text.lower()
    assert "⚠️" in target.text
    assert "Traceback" not in target.text and fake_upstream.token not in target.text
    fake_upstream.script.clear()
    after = await ask(core, "still there?")
    assert "Answer" in after.text, "the core keeps serving after a failure"


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour.fail(500, "api_error"),
        Behaviour(error_after=1, answer="partial answer here", fragment_size=4),
        Behaviour(error_after=0, error_line_code="api_error"),
        Behaviour(garbage_after=1, answer="partial answer here", fragment_size=4),
    ],
    ids=["http-500", "error-line-after-text", "error-line-first", "malformed-line"],
)
async def test_a_failure_of_the_service_shows_its_trace_id_in_a_stream_as_over_http(
    core: ChatCore, fake_upstream: FakeUpstream, behaviour: Behaviour
) -> None:
    fake_upstream.queue(*([behaviour] * 3))
    target = await ask(core, "hi")
    traces = [request["trace_id"] for request in fake_upstream.requests]
    assert f"(trace `{traces[-1]}`)" in target.text, target.text


async def test_a_refusal_shows_no_trace_id(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour.fail(403, "used_up"))
    target = await ask(core, "hi")
    assert "balance is used up" in target.text and "trace" not in target.text


async def test_connection_refused_and_timeouts(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    dead = dataclasses.replace(upstream_settings, base_url="http://127.0.0.1:9", retries=0)
    chat = await ChatCore.open(make_settings(dead, tmp_path / "a.db"))
    try:
        target = await ask(chat, "hi")
    finally:
        await chat.aclose()
    assert "cannot be reached" in target.text

    slow = dataclasses.replace(upstream_settings, read_timeout=0.2, retries=0)
    chat = await ChatCore.open(make_settings(slow, tmp_path / "b.db"))
    fake_upstream.queue(Behaviour(latency=1.0))
    try:
        target = await ask(chat, "hi")
    finally:
        await chat.aclose()
    assert "took too long" in target.text


async def test_an_answer_that_runs_too_long_is_stopped(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    chat = await ChatCore.open(make_settings(upstream_settings, tmp_path / "a.db", answer_timeout=1.0))
    fake_upstream.queue(Behaviour(answer="word " * 200, fragment_size=5, fragment_delay=0.05))
    started = time.monotonic()
    try:
        target = await ask(chat, "go on forever")
    finally:
        await chat.aclose()
    assert time.monotonic() - started < 3
    assert target.text.startswith("word word")
    assert "stopped because it ran too long" in target.text


async def test_retries_happen_before_any_text_and_succeed(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(
        Behaviour.fail(429, "too_many_requests", retry_after="0"), Behaviour.fail(429, retry_after="0")
    )
    target = await ask(core, "hi")
    assert target.text == "Answer 1 to: Dana: hi"
    assert len(fake_upstream.requests) == 3


async def test_a_forgotten_conversation_starts_a_new_one(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await ask(core, "one")
    fake_upstream.conversations.clear()
    target = await ask(core, "two")
    assert target.text.startswith("Answer 1 to: Dana: two")
    assert "expired" in target.text
    assert "id" not in fake_upstream.bodies[-1]  # type: ignore[operator]
    await ask(core, "three")
    assert fake_upstream.bodies[-1]["id"] == next(iter(fake_upstream.conversations))  # type: ignore[index]


async def test_model_output_cannot_ping_anyone(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour(answer="Hey @everyone and @here, ping <@123> <@&456> <!channel>"))
    target = await ask(core, "hi")
    for live in ("@everyone", "@here", "<@123>", "<@&456>", "<!channel>"):
        assert live not in target.text
    assert "everyone" in target.text


async def test_reasoning_is_folded_by_default(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour(answer="<think>secret chain of thought</think>The answer is 4."))
    target = await ask(core, "2+2?")
    assert target.text.endswith("The answer is 4.")
    assert "<think>" not in target.text


async def test_long_answers_stream_into_several_messages(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    answer = "\n".join(f"Line {i}: " + "lorem ipsum " * 6 for i in range(80))
    # Fragments spread over about a second, so the answer is seen growing however busy the machine is.
    fake_upstream.queue(Behaviour(answer=answer, fragment_size=50, fragment_delay=0.01))
    target = await ask(core, "long please")
    posts = target.kinds("post")
    assert len(posts) >= 3
    assert all(len(text) <= 2000 for text in target.messages.values())
    assert target.text.split() == answer.split(), "nothing lost or repeated at the splits"
    assert target.kinds("edit"), "the answer is edited as it streams"


async def test_edits_are_paced_and_the_last_one_does_not_wait(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="x" * 400, fragment_size=4, fragment_delay=0.01))
    limits = TargetLimits(max_chars=2000, edit_burst=3, edit_window=0.6)
    target = await ask(core, "stream", limits=limits)
    edits = [c.at for c in target.kinds("edit")]
    assert target.text == "x" * 400
    # No sliding window of 0.6 s ever holds more than 3 edits.
    for i, at in enumerate(edits):
        assert len([t for t in edits[i:] if t - at < 0.6]) <= 3
    assert len(edits) <= 6


async def test_platform_rate_limits_are_honoured_and_the_final_text_arrives(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="y" * 300, fragment_size=10, fragment_delay=0.01))
    target = await ask(core, "go", rate_limit_edits=2, retry_after=0.1)
    assert len(target.kinds("rate_limited")) == 2
    assert target.text == "y" * 300


async def test_typing_is_shown_while_waiting_for_the_first_text(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(latency=0.3))
    target = await ask(core, "slow")
    typing = target.kinds("typing")
    first_post = target.kinds("post")[0].at
    assert len(typing) >= 3
    assert all(t.at <= first_post for t in typing), "typing stops once text is visible"


async def test_bad_questions_are_refused_with_a_notice(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    empty = await ask(core, "   ")
    huge = await ask(core, "x" * 1_000_000)
    assert "Ask me something" in empty.notices[0]
    assert "1,000,000 characters" in huge.notices[0] and "8,000" in huge.notices[0]
    assert fake_upstream.requests == []
    assert not empty.kinds("post") and not huge.kinds("post")


async def test_rate_limits_per_user_and_channel(upstream_settings: UpstreamSettings, tmp_path: Path) -> None:
    settings = make_settings(
        upstream_settings, tmp_path / "a.db", user_rate=RateLimit(2, 60), channel_rate=RateLimit(3, 60)
    )
    chat = await ChatCore.open(settings)
    try:
        assert (await chat.ask(Question(CHANNEL, DANA, "1"), RecordingTarget())) is Outcome.ANSWERED
        assert (await chat.ask(Question(CHANNEL, DANA, "2"), RecordingTarget())) is Outcome.ANSWERED
        third = RecordingTarget()
        assert (await chat.ask(Question(CHANNEL, DANA, "3"), third)) is Outcome.REFUSED
        assert "try again in" in third.notices[0]
        assert (await chat.ask(Question(CHANNEL, ADMIN, "4"), RecordingTarget())) is Outcome.ANSWERED
        busy = RecordingTarget()
        assert (await chat.ask(Question(CHANNEL, Actor("U7", "Kim"), "5"), busy)) is Outcome.REFUSED
        assert "channel" in busy.notices[0]
    finally:
        await chat.aclose()


async def test_attachments_become_message_blocks_in_order_and_skips_are_explained(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    files = (
        Attachment("https://cdn.example/cat.png", "cat.png", "image/png", 1000),
        Attachment("https://cdn.example/tool.exe", "tool.exe", "application/octet-stream", 1000),
        Attachment("https://cdn.example/notes.pdf", "notes.pdf", "application/pdf", 1000),
        Attachment("https://cdn.example/dog.jpg", "dog.jpg", None, None),
    )
    target = RecordingTarget()
    await core.ask(Question(CHANNEL, DANA, "what is this?", files), target)
    body = fake_upstream.bodies[0]
    assert body is not None and "question" not in body and "references" not in body
    assert body["message"] == [
        {"type": "text", "text": "Dana: what is this?"},
        {"type": "image_url", "image_url": {"url": "https://cdn.example/cat.png"}},
        {"type": "file_url", "file_url": {"url": "https://cdn.example/notes.pdf"}},
        {"type": "image_url", "image_url": {"url": "https://cdn.example/dog.jpg"}},
    ]
    assert "tool.exe" in target.text and "Skipped" in target.text


async def test_shutdown_waits_for_answers_in_flight(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    chat = await ChatCore.open(make_settings(upstream_settings, tmp_path / "a.db"))
    fake_upstream.queue(Behaviour(latency=0.3))
    target = RecordingTarget()
    task = asyncio.create_task(chat.ask(Question(CHANNEL, DANA, "slow"), target))
    await fake_upstream.wait_for_requests(1)
    await chat.drain()
    late = RecordingTarget()
    assert await chat.ask(Question(CHANNEL, DANA, "late"), late) is Outcome.REFUSED
    await chat.aclose()
    assert await task is Outcome.ANSWERED
    assert target.text.startswith("Answer 1")
    assert "restarting" in late.notices[0]


async def test_a_failing_platform_does_not_crash_the_core(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    class Broken(RecordingTarget):
        async def post(self, text: str) -> str:
            raise RuntimeError("something unexpected")

    class Forbidden(RecordingTarget):
        async def post(self, text: str) -> str:
            raise PlatformForbidden("the bot may not post here")

    class Refusing(RecordingTarget):
        async def post(self, text: str) -> str:
            raise PlatformError("the platform said no")

    broken, forbidden, refusing = Broken(), Forbidden(), Refusing()
    assert await core.ask(Question(CHANNEL, DANA, "hi"), broken) is Outcome.FAILED
    assert await core.ask(Question(CHANNEL, DANA, "hi"), forbidden) is Outcome.FAILED
    assert await core.ask(Question(CHANNEL, DANA, "hi"), refusing) is Outcome.FAILED
    # Only the platform saying "not allowed" is blamed on permissions.
    assert broken.notices == [notices.INTERNAL_ERROR]
    assert forbidden.notices == [notices.CANNOT_POST] and "permissions" in notices.CANNOT_POST
    assert refusing.notices == [notices.NOT_DELIVERED] and "permissions" not in notices.NOT_DELIVERED
    assert (await ask(core, "next")).text.startswith("Answer")


async def test_a_change_that_changes_nothing_writes_nothing(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await ask(core, "one")
    cleared = await core.execute(CHANNEL, ADMIN, Command(Action.PRESET_CLEAR))
    assert "nothing to clear" in cleared.text and not cleared.public
    assert (await core.execute(CHANNEL, ADMIN, Command(Action.MODEL_SET, name="grok-4"))).public
    again = await core.execute(CHANNEL, ADMIN, Command(Action.MODEL_SET, name="grok-4"))
    assert "already" in again.text and not again.public
    assert len(await core.store.list_audit(CHANNEL.workspace_key)) == 1


async def test_expired_transcripts_are_pruned_at_start(
    upstream_settings: UpstreamSettings, tmp_path: Path
) -> None:
    settings = make_settings(upstream_settings, tmp_path / "a.db", transcript_days=1)
    chat = await ChatCore.open(settings)
    await ask(chat, "old question")
    await chat.aclose()
    old = time.time() - 3 * 86400
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("UPDATE transcripts SET asked_at = ?, answered_at = ?", (old, old))

    def remaining() -> int:
        with sqlite3.connect(tmp_path / "a.db") as db:
            return int(db.execute("SELECT count(*) FROM transcripts").fetchone()[0])

    chat = await ChatCore.open(settings)
    try:
        await until(lambda: remaining() == 0)
    finally:
        await chat.aclose()


async def test_a_failing_database_write_is_logged_not_blamed_on_the_platform(
    core: ChatCore, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()

    def refuse(record: object, transcript: object, answer: object = None) -> asyncio.Future[None]:
        failed: asyncio.Future[None] = loop.create_future()
        failed.set_exception(OSError("disk full"))
        return failed

    core.store.queue_turn = refuse  # type: ignore[method-assign]
    target = RecordingTarget()
    assert await core.ask(Question(CHANNEL, DANA, "hi"), target) is Outcome.ANSWERED
    assert target.text == "Answer 1 to: Dana: hi" and target.notices == []
    assert "could not store a finished turn" in caplog.text


# --- hostile use (issue: nothing a user or the model writes can act past the asker's rights) -----------

CHANNEL_ADMIN = Actor("U5", "Cam", privilege=Privilege.CHANNEL_ADMIN)


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (Command(Action.PRESET_SET, name="coder"), True),
        (Command(Action.PRESET_CLEAR), True),
        (Command(Action.MODEL_SET, name="grok-4"), True),
        (Command(Action.PRESET_DEFAULT, name="coder"), False),
        (Command(Action.MODEL_DEFAULT, name="grok-4"), False),
        (Command(Action.PRESET_CREATE, name="mine", text="Be brief."), False),
        (Command(Action.PRESET_EDIT, name="mine", text="Be brief."), False),
        (Command(Action.PRESET_DELETE, name="mine"), False),
        (Command(Action.AUDIT), False),
    ],
    ids=lambda c: c.action.value if isinstance(c, Command) else str(c),
)
async def test_a_channel_admin_changes_the_channel_but_not_the_workspace(
    core: ChatCore, command: Command, allowed: bool
) -> None:
    reply = await core.execute(CHANNEL, CHANNEL_ADMIN, command)
    if allowed:
        assert "needs" not in reply.text, reply.text
    else:
        assert not reply.ok and "needs workspace admin rights" in reply.text, reply.text
    assert (await core.execute(CHANNEL, ADMIN, command)).text != reply.text or allowed


async def test_a_reset_during_a_streaming_answer_is_not_undone(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await ask(core, "start a conversation")
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(answer="still answering " * 20, fragment_size=8, gate=gate))
    target = RecordingTarget()
    answering = asyncio.create_task(core.ask(Question(CHANNEL, DANA, "a long one"), target))
    await fake_upstream.wait_for_requests(2)
    reset = await core.execute(CHANNEL, DANA, Command(Action.RESET))
    assert reset.ok and reset.public
    gate.set()
    assert await answering is Outcome.ANSWERED
    assert target.text.startswith("still answering")
    # The answer in flight did not write the old conversation back: the next question starts anew.
    await ask(core, "after the reset")
    assert "id" not in fake_upstream.bodies[-1]  # type: ignore[operator]
    status = await core.execute(CHANNEL, DANA, Command(Action.STATUS))
    assert "1 turn," in status.text


async def test_a_reset_before_a_new_conversation_id_arrives_also_wins(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(latency=0.0, gate=gate))
    answering = asyncio.create_task(core.ask(Question(CHANNEL, DANA, "first ever"), RecordingTarget()))
    await fake_upstream.wait_for_requests(1)
    await core.execute(CHANNEL, DANA, Command(Action.RESET))
    gate.set()
    await answering
    await ask(core, "next")
    assert "id" not in fake_upstream.bodies[-1]  # type: ignore[operator]


async def test_refusals_where_notices_are_public_are_one_reply_then_a_mark(
    upstream_settings: UpstreamSettings, tmp_path: Path
) -> None:
    public = TargetLimits(max_chars=2000, typing_interval=None, private_notices=False)
    chat = await ChatCore.open(
        make_settings(upstream_settings, tmp_path / "a.db", user_rate=RateLimit(1, 60))
    )
    try:
        assert await chat.ask(Question(CHANNEL, DANA, "one"), RecordingTarget(public)) is Outcome.ANSWERED
        refused = [RecordingTarget(public) for _ in range(4)]
        for target in refused:
            assert await chat.ask(Question(CHANNEL, DANA, "again"), target) is Outcome.REFUSED
        assert [len(t.notices) for t in refused] == [1, 0, 0, 0]
        assert [len(t.kinds("mark")) for t in refused] == [0, 1, 1, 1]
        assert not any(t.kinds("post") or t.kinds("typing") for t in refused), "nothing posted for a refusal"
        # Where notices reach the asker alone, every refusal says why.
        private = [RecordingTarget() for _ in range(2)]
        for target in private:
            await chat.ask(Question(CHANNEL, DANA, "again"), target)
        assert [len(t.notices) for t in private] == [1, 1]
    finally:
        await chat.aclose()


async def test_a_channel_queue_is_bounded_and_queued_questions_show_no_typing(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    chat = await ChatCore.open(make_settings(upstream_settings, tmp_path / "a.db", max_waiting=2))
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(gate=gate))
    try:
        targets = [RecordingTarget() for _ in range(5)]
        tasks = [
            asyncio.create_task(chat.ask(Question(CHANNEL, DANA, f"q{i}"), t)) for i, t in enumerate(targets)
        ]
        await fake_upstream.wait_for_requests(1)
        # The first is answered, two wait: the rest are turned away at once, saying why.
        await asyncio.wait(tasks[3:], timeout=5)
        assert [t.result() for t in tasks[3:]] == [Outcome.REFUSED, Outcome.REFUSED]
        assert all("2 questions here are already waiting" in t.notices[0] for t in targets[3:])
        # The one being answered shows it is coming; queued questions show nothing until their turn.
        await until(lambda: len(targets[0].kinds("typing")) >= 2)
        assert not targets[1].kinds("typing") and not targets[2].kinds("typing")
        gate.set()
        assert await asyncio.gather(*tasks[:3]) == [Outcome.ANSWERED] * 3
    finally:
        await chat.aclose()


async def test_a_question_waits_at_most_the_configured_time_for_its_turn(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    chat = await ChatCore.open(make_settings(upstream_settings, tmp_path / "a.db", max_wait=1.0))
    gate = asyncio.Event()
    fake_upstream.queue(Behaviour(gate=gate))
    try:
        first = asyncio.create_task(chat.ask(Question(CHANNEL, DANA, "slow"), RecordingTarget()))
        await fake_upstream.wait_for_requests(1)
        waiting = RecordingTarget()
        assert await chat.ask(Question(CHANNEL, DANA, "behind it"), waiting) is Outcome.REFUSED
        assert "waited 1 s" in waiting.notices[0]
        gate.set()
        assert await first is Outcome.ANSWERED
        assert len(fake_upstream.requests) == 1
    finally:
        await chat.aclose()


async def test_an_answer_past_the_cap_is_cut_closed_and_says_so(
    upstream_settings: UpstreamSettings, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    code = "Here:\n\n```python\n" + "\n".join(f"print({i})" for i in range(20_000)) + "\n```\n"
    fake_upstream.queue(Behaviour(answer=code, fragment_size=500))
    chat = await ChatCore.open(make_settings(upstream_settings, tmp_path / "a.db", max_answer_chars=5000))
    try:
        target = await ask(chat, "the whole thing")
    finally:
        await chat.aclose()
    shown = target.text
    assert len(target.messages) <= 4, "a flood of messages is cut short"
    assert shown.rstrip().endswith("it reached this bot's limit of 5,000 characters._")
    # The open code block is closed before the note, so the note is prose, not code.
    before_note = shown.rsplit("\n\n", 1)[0]
    assert before_note.rstrip().endswith("```")
    assert before_note.count("```") % 2 == 0


async def test_audit_shows_who_by_id_and_pages_through_every_change(core: ChatCore) -> None:
    """Display names are anyone's to choose: the id beside one tells two "Ada"s apart."""
    impostor = Actor("U666", "Ada", privilege=Privilege.WORKSPACE_ADMIN)
    for n in range(20):
        who = ADMIN if n % 2 else impostor
        assert (await core.execute(CHANNEL, who, Command(Action.MODEL_SET, name=("grok-4", "o3")[n % 2]))).ok
    first = await core.execute(CHANNEL, ADMIN, Command(Action.AUDIT))
    lines = first.text.splitlines()
    assert lines[0] == "**Admin changes, newest first** (page 1 of 2)"
    assert len([line for line in lines if " UTC · " in line]) == 15
    assert "Ada (`U9`) · model set · channel C1 · `grok-4` → `o3`" in lines[1]
    assert "Ada (`U666`) · model set · channel C1 · `o3` → `grok-4`" in lines[2]
    assert lines[-1] == "_Older: `audit 2`_"
    second = await core.execute(CHANNEL, ADMIN, Command(Action.AUDIT, page=2))
    assert second.text.splitlines()[0] == "**Admin changes, newest first** (page 2 of 2)"
    assert len([line for line in second.text.splitlines() if " UTC · " in line]) == 5
    beyond = await core.execute(CHANNEL, ADMIN, Command(Action.AUDIT, page=3))
    assert not beyond.ok and beyond.text == "There are only 2 pages of admin changes."


async def test_a_store_that_fails_before_the_turn_gets_the_same_short_message(
    core: ChatCore, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A database gone away while a question is admitted: the asker hears what every failure says."""

    async def broken(*_: object) -> object:
        raise OSError("the database went away")

    core.store.first_sighting = broken  # type: ignore[method-assign]
    target = RecordingTarget()
    assert await core.ask(Question(CHANNEL, DANA, "hi", delivery="slack:event:E1"), target) is Outcome.FAILED
    assert target.notices == [notices.INTERNAL_ERROR] and not target.kinds("post")
    reply = await core.run_command(CHANNEL, ADMIN, Command(Action.STATUS), target, delivery="slack:command:1")
    assert reply is not None and reply.text == notices.INTERNAL_ERROR
    assert "could not admit a question" in caplog.text and fake_upstream.requests == []


async def test_a_question_whose_channel_cannot_show_it_in_time_is_refused_up_front(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    # One post per 100 s: an answer of the default cap (six messages here) would wait minutes to show.
    posts = TokenBucket(1, 0.01)
    target = RecordingTarget(TargetLimits(max_chars=2000, posts=(posts,), scheduler=Scheduler()))
    outcome = await core.ask(Question(CHANNEL, DANA, "write me a novel"), target)
    assert outcome is Outcome.REFUSED
    assert target.notices == [notices.channel_busy(440.0)]
    assert "one message a second" in target.notices[0] and "try again in 8 min" in target.notices[0]
    assert fake_upstream.requests == [], "refused before anything was asked or posted"
    assert not target.kinds("post")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_command_reply_to_the_channel_takes_its_turn_on_the_channels_posts(core: ChatCore) -> None:
    clock = FakeClock()
    posts = TokenBucket(1, 1.0, clock=clock)
    scheduler = Scheduler()
    await scheduler.call(Urgency.POST, (posts,))  # an answer took the channel's post
    target = RecordingTarget(TargetLimits(max_chars=2000, posts=(posts,), scheduler=scheduler))
    setting = Command(Action.PRESET_SET, name="coder")  # said to the whole channel
    running = asyncio.create_task(core.run_command(CHANNEL, ADMIN, setting, target))
    await until(lambda: scheduler.delay(Urgency.EDIT, (posts,)) == math.inf)  # the reply is queued
    assert not target.kinds("announce"), "it waits for the channel's next post"
    clock.now += 1.0
    scheduler.done(())
    reply = await asyncio.wait_for(running, 5)
    assert reply is not None and reply.in_channel
    assert [c.text for c in target.kinds("announce")] == [reply.text]


async def test_a_target_showing_steps_apart_is_told_the_tool_steps_and_its_text_never_holds_them(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    search = {"type": "tool_use", "tool_id": "t1", "tool_name": "web_search", "input": {"query": "q"}}
    done = {"type": "tool_result", "tool_id": "t1", "output": "x", "is_error": False}
    fake_upstream.queue(
        Behaviour(answer="Found it, in words.", fragment_size=5, fragment_delay=0.3, before=(search, done))
    )
    limits = TargetLimits(max_chars=2000, edit_burst=5, edit_window=0.2, steps_apart=True)
    target = await ask(core, "look it up", limits=limits)
    assert [c.text for c in target.kinds("status")][:1] == ["🔎 Searching the web for “q”…"]
    written = [c.text for c in target.calls if c.kind in ("post", "edit")]
    assert written and not any("Searching" in text for text in written)
    assert target.text == "Found it, in words."
