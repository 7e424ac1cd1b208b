"""The Store contract: every test runs unchanged against SQLite and against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from acechat.storage import SchemaVersionError, StoreClosedError
from acechat.storage.protocol import Store
from acechat.storage.records import (
    AuditAction,
    AuditEntry,
    Change,
    ConversationRecord,
    CustomPreset,
    PendingDelete,
    PendingQuestion,
    RateCheck,
    RateVerdict,
    TranscriptEntry,
)
from tests.store_backends import Backend, backend, pg_database, store

__all__ = ["backend", "pg_database", "store"]  # fixtures

WS = "slack:T1"
KEY = "slack:T1:C1:-"
NOW = 1_800_000_000.0
DAY = 86400.0


def conversation(
    key: str = KEY, turns: int = 1, at: float = NOW, epoch: int = 0, upstream: str | None = None
) -> ConversationRecord:
    return ConversationRecord(key, upstream or f"up-{turns}", "gpt-4o", "assistant", turns, NOW, at, epoch)


def transcript(key: str = KEY, at: float = NOW, question: str = "hi") -> TranscriptEntry:
    return TranscriptEntry(key, "up-1", "U1", "ann", question, "hello", "answered", "trace-1", at - 1, at)


def audit(
    action: AuditAction = AuditAction.MODEL_SET, new: str | None = None, at: float = NOW, ws: str = WS
) -> AuditEntry:
    return AuditEntry(ws, f"{ws}:C1:-", "U1", "ann", action, None, new, at)


def preset(name: str = "pirate", prompt: str = "Talk like a pirate.", at: float = NOW) -> CustomPreset:
    return CustomPreset(WS, name, "arr", prompt, "U1", at, at)


async def count(backend: Backend, table: str) -> int:
    return int((await backend.query(f"SELECT count(*) FROM {table}"))[0][0])


# schema


async def test_a_new_database_gets_the_current_schema_and_keeps_it_on_reopen(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    version = [(str(backend.version(backend.migrations())),)]
    assert await backend.query("SELECT value FROM meta WHERE key = 'schema_version'") == version
    store = await backend.open()
    await store.close()
    assert await backend.query("SELECT value FROM meta WHERE key = 'schema_version'") == version


async def test_a_newer_schema_is_refused_in_one_line(backend: Backend) -> None:
    await (await backend.open()).close()
    newer = backend.version(backend.migrations()) + 1
    await backend.query(f"UPDATE meta SET value = '{newer}' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="newer acechat") as caught:
        await backend.open()
    message = str(caught.value)
    assert f"version {newer}" in message and "\n" not in message
    assert await backend.query("SELECT value FROM meta WHERE key = 'schema_version'") == [(str(newer),)]


async def test_a_failing_migration_changes_nothing(backend: Backend) -> None:
    known = backend.migrations()
    assert await backend.migrate(known) == backend.version(known)
    with pytest.raises(Exception, match=r"migration bug|division by zero"):
        await backend.migrate([*known, backend.broken_migration()])
    assert await backend.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(backend.version(known)),)
    ]
    with pytest.raises(Exception, match="half_done"):
        await backend.query("SELECT * FROM half_done")


async def test_everything_survives_a_restart(backend: Backend) -> None:
    store = await backend.open()
    assert await store.queue_turn(conversation(turns=3), transcript())
    await store.set_setting(WS, "model", "gpt-4o-mini", audit=audit(new="gpt-4o-mini"))
    await store.put_preset(preset(), audit=audit(AuditAction.PRESET_CREATE))
    assert await store.first_sighting("Ev1")
    await store.close()

    store = await backend.open()
    try:
        assert await store.get_conversation(KEY) == conversation(turns=3)
        assert (await store.get_settings([WS]))[WS].model == "gpt-4o-mini"
        assert await store.get_preset(WS, "pirate") == preset()
        assert [e.action for e in await store.list_audit(WS, 10)] == [
            AuditAction.PRESET_CREATE,
            AuditAction.MODEL_SET,
        ]
        assert not await store.first_sighting("Ev1")
    finally:
        await store.close()
    assert await backend.query("SELECT question, answer FROM transcripts") == [("hi", "hello")]


# conversations and epochs


async def test_conversations_are_saved_and_read_back(store: Store) -> None:
    assert await store.get_conversation(KEY) is None
    assert await store.save_conversation(conversation(turns=1))
    assert await store.save_conversation(conversation(turns=2, at=NOW + 5))
    assert await store.get_conversation(KEY) == conversation(turns=2, at=NOW + 5)
    assert await store.get_conversation("slack:T1:C2:-") is None


async def test_reset_starts_a_new_epoch_and_says_whether_a_conversation_was_live(store: Store) -> None:
    assert not await store.reset_conversation(KEY)  # nothing to forget: still a new epoch
    first = await store.get_conversation(KEY)
    assert first is not None and (first.upstream_id, first.turns, first.epoch) == (None, 0, 1)

    assert not await store.save_conversation(conversation(epoch=0))  # begun before the reset
    assert await store.save_conversation(conversation(turns=4, epoch=1))
    assert await store.reset_conversation(KEY)
    after = await store.get_conversation(KEY)
    assert after is not None
    assert (after.upstream_id, after.turns, after.epoch) == (None, 0, 2)
    assert (after.model, after.preset, after.created_at) == ("gpt-4o", "assistant", NOW)
    assert not await store.reset_conversation(KEY)  # no live conversation any more
    assert (await store.get_conversation(KEY)) is not None


async def test_a_turn_that_began_before_a_reset_cannot_undo_it(backend: Backend, store: Store) -> None:
    assert await store.save_conversation(conversation(turns=1))
    began = await store.get_conversation(KEY)
    assert began is not None
    # The answer streams; meanwhile someone resets the channel.
    assert await store.reset_conversation(KEY)
    finished = ConversationRecord(KEY, "up-1", "gpt-4o", "assistant", 2, NOW, NOW + 9, began.epoch)
    assert not await store.save_conversation(finished)  # the early save of a new conversation id
    assert not await store.queue_turn(finished, transcript(question="asked before the reset"))
    now = await store.get_conversation(KEY)
    assert now is not None and now.upstream_id is None and now.epoch == began.epoch + 1
    # The question was answered, so its transcript is kept all the same.
    assert await backend.query("SELECT question FROM transcripts") == [("asked before the reset",)]
    # The next turn reads the new epoch and continues from there.
    assert await store.queue_turn(conversation(turns=1, epoch=now.epoch, upstream="up-new"), None)
    assert (await store.get_conversation(KEY)) == conversation(turns=1, epoch=now.epoch, upstream="up-new")


async def test_a_write_with_a_later_epoch_than_stored_is_refused_too(store: Store) -> None:
    assert not await store.save_conversation(conversation(epoch=3))
    assert await store.get_conversation(KEY) is None
    await store.reset_conversation(KEY)
    assert not await store.queue_turn(conversation(epoch=2), None)


async def test_queue_turn_writes_conversation_and_transcript_and_settles_when_committed(
    backend: Backend, store: Store
) -> None:
    pending = [
        store.queue_turn(conversation(f"slack:T1:C{i}:-", turns=i), transcript(f"slack:T1:C{i}:-"))
        for i in range(20)
    ]
    assert await asyncio.gather(*pending) == [True] * 20
    assert await count(backend, "transcripts") == 20
    assert await store.queue_turn(conversation(turns=5), None)
    assert await store.get_conversation(KEY) == conversation(turns=5)
    assert await count(backend, "transcripts") == 20


async def test_transcripts_are_never_stored_when_retention_is_zero(backend: Backend) -> None:
    store = await backend.open()
    await store.queue_turn(conversation(), transcript(question="kept for now"))
    await store.close()

    store = await backend.open(transcript_days=0)
    try:
        assert await store.queue_turn(conversation(turns=2), transcript())
        assert await backend.query("SELECT question FROM transcripts") == [("kept for now",)]
        # Turning transcripts off also removes what an earlier run kept.
        assert await store.prune(now=NOW) == 1
        assert await store.get_conversation(KEY) == conversation(turns=2)
    finally:
        await store.close()
    assert await count(backend, "transcripts") == 0


# settings, presets, audit


async def test_set_setting_returns_the_old_value_and_audits_it(store: Store) -> None:
    channel = KEY
    assert await store.get_settings([channel, WS]) == {}
    assert await store.get_settings([]) == {}
    set_ = AuditAction.PRESET_SET
    assert await store.set_setting(channel, "preset", "coder", audit=audit(set_, "coder", at=NOW)) is None
    assert await store.set_setting(channel, "model", "gpt-4", audit=audit(new="gpt-4", at=NOW + 1)) is None
    assert (
        await store.set_setting(channel, "preset", "pirate", audit=audit(set_, "pirate", at=NOW + 2))
        == "coder"
    )
    settings = await store.get_settings([channel, WS, channel])
    assert list(settings) == [channel]
    assert (settings[channel].preset, settings[channel].model, settings[channel].updated_at) == (
        "pirate",
        "gpt-4",
        NOW + 2,
    )
    clear = AuditAction.PRESET_CLEAR
    assert await store.set_setting(channel, "preset", None, audit=audit(clear, at=NOW + 3)) == "pirate"
    assert (await store.get_settings([channel]))[channel].preset is None
    assert [(e.action, e.old, e.new) for e in await store.list_audit(WS, 10)] == [
        (clear, "pirate", None),
        (set_, "coder", "pirate"),
        (AuditAction.MODEL_SET, None, "gpt-4"),
        (set_, None, "coder"),
    ]
    with pytest.raises(ValueError, match="unknown setting"):
        await store.set_setting(channel, "colour", "red", audit=audit())  # type: ignore[arg-type]


async def test_a_change_is_not_made_when_its_audit_cannot_be_written(backend: Backend, store: Store) -> None:
    await store.set_setting(WS, "model", "gpt-4o", audit=audit(new="gpt-4o"))
    for statement in backend.refuse_audit():
        await backend.query(statement)
    with pytest.raises(Exception, match="audit refused"):
        await store.set_setting(WS, "model", "o3-mini", audit=audit(new="o3-mini"))
    with pytest.raises(Exception, match="audit refused"):
        await store.put_preset(preset(), audit=audit(AuditAction.PRESET_CREATE))
    assert (await store.get_settings([WS]))[WS].model == "gpt-4o"
    assert await store.get_preset(WS, "pirate") is None
    assert await store.ping()  # no transaction was left open


async def test_preset_crud_is_audited(store: Store) -> None:
    create, edit, delete = AuditAction.PRESET_CREATE, AuditAction.PRESET_EDIT, AuditAction.PRESET_DELETE
    assert await store.put_preset(preset("pirate", at=NOW), audit=audit(create, "pirate")) is None
    assert await store.put_preset(preset("critic", at=NOW), audit=audit(create, "critic")) is None
    assert await store.put_preset(
        preset("pirate", "Yo ho.", at=NOW + 9), audit=audit(edit, "Yo ho.")
    ) == preset("pirate", at=NOW)
    updated = await store.get_preset(WS, "pirate")
    assert updated is not None
    assert (updated.prompt, updated.created_at, updated.updated_at) == ("Yo ho.", NOW, NOW + 9)
    assert [p.name for p in await store.list_presets(WS)] == ["critic", "pirate"]
    assert await store.count_presets(WS) == 2
    assert await store.list_presets("discord:G1") == [] and await store.count_presets("discord:G1") == 0

    assert await store.delete_preset(WS, "critic", audit=audit(delete)) == preset("critic", at=NOW)
    assert await store.delete_preset(WS, "critic", audit=audit(delete)) is None
    assert await store.get_preset(WS, "critic") is None
    assert [(e.action, e.new) for e in await store.list_audit(WS, 10)] == [
        (delete, None),
        (edit, "Yo ho."),
        (create, "critic"),
        (create, "pirate"),
    ]


async def test_audit_pages_newest_first_per_workspace(store: Store) -> None:
    actions = list(AuditAction)
    for i in range(30):
        await store.set_setting(
            f"{WS}:C{i}:-", "model", f"m{i}", audit=audit(actions[i % len(actions)], f"m{i}")
        )
    await store.set_setting("discord:G1", "model", "x", audit=audit(new="elsewhere", ws="discord:G1"))
    assert await store.count_audit(WS) == 30 and await store.count_audit("discord:G1") == 1
    first = await store.list_audit(WS, 20)
    assert [e.new for e in first] == [f"m{i}" for i in range(29, 9, -1)]
    assert all(isinstance(e.action, AuditAction) for e in first)
    assert first[0].id is not None and first[1].id is not None and first[0].id > first[1].id
    second = await store.list_audit(WS, 20, offset=20)
    assert [e.new for e in second] == [f"m{i}" for i in range(9, -1, -1)]
    assert await store.list_audit(WS, 20, offset=40) == []
    assert [e.new for e in await store.list_audit(WS, 3)] == ["m29", "m28", "m27"]
    assert [e.new for e in await store.list_audit("discord:G1", 20)] == ["elsewhere"]
    assert (
        await store.list_audit("discord:nobody", 20) == [] and await store.count_audit("discord:nobody") == 0
    )


# change notifications


async def test_own_settings_and_preset_changes_are_announced_once_committed(store: Store) -> None:
    seen: list[Change] = []

    def listener(change: Change) -> None:
        seen.append(change)

    store.on_change(listener)
    await store.set_setting(KEY, "preset", "coder", audit=audit(AuditAction.PRESET_SET))
    assert seen == [Change("setting", KEY)]  # before set_setting returned
    await store.put_preset(preset(), audit=audit(AuditAction.PRESET_CREATE))
    await store.delete_preset(WS, "pirate", audit=audit(AuditAction.PRESET_DELETE))
    await store.delete_preset(WS, "pirate", audit=audit(AuditAction.PRESET_DELETE))  # absent: no change
    await store.save_conversation(conversation())  # not a settings change
    assert seen == [Change("setting", KEY), Change("preset", WS), Change("preset", WS)]


async def test_a_failing_listener_does_not_stop_the_others(store: Store) -> None:
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    store.on_change(broken)
    store.on_change(seen.append)
    await store.set_setting(WS, "model", "gpt-4", audit=audit())
    assert seen == [Change("setting", WS)]


# housekeeping, de-duplication, rate limits


async def test_prune_drops_old_transcripts_and_seen_events(backend: Backend) -> None:
    now = time.time()  # first_sighting stamps events with the real clock
    store = await backend.open(transcript_days=7)
    try:
        for age_days, question in [(10, "old"), (8, "older than a week"), (6, "recent"), (0, "new")]:
            await store.queue_turn(conversation(), transcript(at=now - age_days * DAY, question=question))
        assert await store.first_sighting("Ev1")
        assert await store.prune(now=now) == 2
        assert {q for (q,) in await backend.query("SELECT question FROM transcripts")} == {"recent", "new"}
        assert await store.prune(now=now + 8 * DAY) == 3  # both transcripts and the event
        assert await store.first_sighting("Ev1")
        assert await store.prune() == 0
    finally:
        await store.close()


async def test_first_sighting_is_true_once_even_among_many_at_once(store: Store) -> None:
    firsts = await asyncio.gather(*(store.first_sighting("T1:Ev1") for _ in range(50)))
    assert firsts.count(True) == 1
    assert not await store.first_sighting("T1:Ev1")
    assert await store.first_sighting("T1:Ev2")


async def test_rate_checks_are_all_or_nothing(store: Store) -> None:
    user, channel = RateCheck("user:U1", 3, 60.0), RateCheck("channel:C1", 2, 60.0)
    assert await store.take_rate([user, channel]) == RateVerdict(None, 0.0)
    assert (await store.take_rate([user, channel])).refused is None
    refused = await store.take_rate([user, channel])
    assert refused.refused == 1 and 0 < refused.wait <= 60.0
    # The refusal recorded nothing: the user still has one question left, elsewhere.
    assert (await store.take_rate([user, RateCheck("channel:C2", 2, 60.0)])).refused is None
    again = await store.take_rate([user, RateCheck("channel:C2", 2, 60.0)])
    assert again.refused == 0 and 0 < again.wait <= 60.0


async def test_rate_windows_are_per_key_and_count_zero_is_off(store: Store) -> None:
    off = RateCheck("user:U1", 0, 60.0)
    for _ in range(5):
        assert (await store.take_rate([off])).refused is None
    assert (await store.take_rate([])).refused is None
    one = RateCheck("user:U2", 1, 60.0)
    assert (await store.take_rate([off, one])).refused is None
    assert (await store.take_rate([off, one])).refused == 1
    assert (await store.take_rate([RateCheck("user:U3", 1, 60.0)])).refused is None
    # The same key under a different window is counted apart.
    assert (await store.take_rate([RateCheck("user:U2", 1, 30.0)])).refused is None


async def test_a_refused_check_passes_once_its_wait_is_over(store: Store) -> None:
    check = RateCheck("user:U1", 2, 0.3)
    assert (await store.take_rate([check])).refused is None
    assert (await store.take_rate([check])).refused is None
    refused = await store.take_rate([check])
    assert refused.refused == 0 and 0 < refused.wait <= 0.3
    await asyncio.sleep(refused.wait + 0.02)  # the wait it gave is enough, whenever we wake
    assert (await store.take_rate([check])).refused is None


async def test_concurrent_rate_checks_never_let_more_through_than_the_limit(store: Store) -> None:
    verdicts = await asyncio.gather(*(store.take_rate([RateCheck("user:U1", 7, 60.0)]) for _ in range(40)))
    assert sum(v.refused is None for v in verdicts) == 7


# per-scope turns


async def test_turns_of_one_scope_run_one_at_a_time_in_arrival_order(store: Store) -> None:
    log: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def turn(name: str, key: str = KEY) -> None:
        async with store.scope_turn(key):
            log.append(f"{name}>")
            if name == "first":
                entered.set()
                await release.wait()
            log.append(f"<{name}")

    tasks = [asyncio.create_task(turn("first"))]
    await entered.wait()
    tasks += [asyncio.create_task(turn(name)) for name in ("second", "third")]
    await turn("other scope", "slack:T1:C2:-")  # a different scope does not wait for the held one
    assert "second>" not in log
    release.set()
    await asyncio.gather(*tasks)
    assert [e for e in log if "other" not in e] == [
        "first>",
        "<first",
        "second>",
        "<second",
        "third>",
        "<third",
    ]


async def test_an_abandoned_turn_does_not_block_the_scope(store: Store) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with store.scope_turn(KEY):
            entered.set()
            await release.wait()

    held = asyncio.create_task(holder())
    await entered.wait()
    waiting = asyncio.create_task(store.scope_turn(KEY).__aenter__())
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await held
    async with asyncio.timeout(10):
        async with store.scope_turn(KEY):
            pass


# lifecycle


async def test_ping_close_and_calls_after_close(backend: Backend) -> None:
    store = await backend.open()
    assert await store.ping()
    assert await store.ping()  # the recent result
    pending = store.queue_turn(conversation(turns=9), None)
    await asyncio.gather(store.close(), store.close())
    await store.close()
    assert await pending
    assert not await store.ping()
    with pytest.raises(StoreClosedError):
        await store.get_conversation(KEY)
    assert await backend.query("SELECT turns FROM conversations") == [(9,)]


async def test_many_tasks_at_once_are_all_applied(store: Store) -> None:
    async def one(i: int) -> None:
        assert await store.save_conversation(conversation(f"slack:T1:C{i}:-", turns=i))
        await store.set_setting(f"slack:T1:C{i}:-", "model", "gpt-4", audit=audit(new=str(i)))

    await asyncio.gather(*(one(i) for i in range(100)))
    assert await store.count_audit(WS) == 100
    found = await asyncio.gather(*(store.get_conversation(f"slack:T1:C{i}:-") for i in range(100)))
    assert [c.turns if c else None for c in found] == list(range(100))


def test_both_backends_say_which_they_are() -> None:
    from acechat.storage.postgres import PostgresStore
    from acechat.storage.sqlite import SQLiteStore

    assert (SQLiteStore.backend, PostgresStore.backend) == ("sqlite", "postgresql")


# --- AI Chat v2 (issue 16): tools setting, conversations to delete at the service, questions back --


async def test_tools_is_a_setting_like_the_others(store: Store) -> None:
    entry = AuditEntry("w", KEY, "U1", "ann", AuditAction.TOOLS_SET, None, "off", NOW)
    assert await store.set_setting(KEY, "tools", "off", audit=entry) is None
    assert (await store.get_settings([KEY]))[KEY].tools == "off"
    assert [(e.action, e.new) for e in await store.list_audit("w")] == [(AuditAction.TOOLS_SET, "off")]


async def test_pending_deletes_are_kept_until_done_and_retried_later(store: Store) -> None:
    await store.queue_delete(PendingDelete("c1", "m", 0, NOW))
    await store.queue_delete(PendingDelete("c1", "m", 0, NOW))  # idempotent
    await store.queue_delete(PendingDelete("c2", "m", 0, NOW + 100))
    assert await store.due_deletes(NOW + 1) == [PendingDelete("c1", "m", 0, NOW)]
    await store.retry_delete("c1", NOW + 50)
    assert await store.due_deletes(NOW + 1) == []
    assert await store.due_deletes(NOW + 200) == [
        PendingDelete("c1", "m", 1, NOW + 50),
        PendingDelete("c2", "m", 0, NOW + 100),
    ]
    await store.finish_delete("c1")
    assert [d.conversation_id for d in await store.due_deletes(NOW + 200)] == ["c2"]


async def test_questions_asked_back_are_kept_and_answered_exactly_once(store: Store) -> None:
    first = PendingQuestion("q1", KEY, "c1", 1, "toolu_1", "Which?", ("A", "B"), "U1", NOW)
    second = dataclasses.replace(first, id="q2", turns=2, created_at=NOW + 1, options=())
    await store.save_question(first)
    await store.save_question(second)
    assert await store.get_question("q1") == first
    assert await store.latest_question(KEY) == second
    assert await store.latest_question("elsewhere") is None
    presses = await asyncio.gather(*(store.answer_question("q1") for _ in range(5)))
    assert presses.count(True) == 1
    assert (await store.get_question("q1")) == dataclasses.replace(first, answered=True)
    assert not await store.answer_question("missing")


async def test_where_a_question_s_buttons_are_is_taken_once_and_only_while_it_waits(store: Store) -> None:
    waiting = PendingQuestion("q1", KEY, "c1", 1, "toolu_1", "Which?", ("A", "B"), "U1", NOW)
    answered = dataclasses.replace(waiting, id="q2", created_at=NOW + 1)
    elsewhere = dataclasses.replace(waiting, id="q3", scope_key="slack:T1:C2:-")
    unshown = dataclasses.replace(waiting, id="q4", created_at=NOW + 2)
    for question in (waiting, answered, elsewhere, unshown):
        await store.save_question(question)
    for question, where in ((waiting, "C1:1.1"), (answered, "C1:1.2"), (elsewhere, "C2:1.3")):
        await store.show_question(question.id, where)
    assert await store.answer_question("q2")
    # Two processes skipping at once (a new question in one, a reset in another): one of them edits.
    taken = await asyncio.gather(*(store.skip_questions(KEY) for _ in range(5)))
    assert sorted(taken) == [[], [], [], [], ["C1:1.1"]]
    assert await store.skip_questions(KEY) == []
    assert await store.skip_questions("slack:T1:C2:-") == ["C2:1.3"]
    # The questions themselves are unchanged: a press still finds them.
    assert await store.get_question("q1") == waiting
    assert await store.skip_questions("nowhere") == []


async def test_questions_kept_before_version_8_are_still_read_and_skipped(backend: Backend) -> None:
    """Version 8 adds where a question's buttons are; a question kept before it has no such place."""
    before = backend.migrations()[:-1]
    assert await backend.migrate(before) == backend.version(backend.migrations()) - 1 == 7
    await backend.query(
        "INSERT INTO pending_questions (id, scope_key, conversation_id, turns, tool_id, question, options, "
        f"asker_id, created_at, answered) VALUES ('q1', '{KEY}', 'c1', 1, 'toolu_1', 'Which?', '[\"A\"]', "
        f"'U1', {NOW}, 0)"
    )
    store = await backend.open()
    try:
        kept = PendingQuestion("q1", KEY, "c1", 1, "toolu_1", "Which?", ("A",), "U1", NOW)
        assert await store.get_question("q1") == kept
        assert await store.skip_questions(KEY) == []
        await store.show_question("q1", "C1:1.1")
        assert await store.skip_questions(KEY) == ["C1:1.1"]
    finally:
        await store.close()
    assert await backend.query("SELECT value FROM meta WHERE key = 'schema_version'") == [("8",)]
