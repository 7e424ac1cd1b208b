"""The Store contract for admins' controls, usage rows and engaged threads, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from acechat.storage.protocol import Store
from acechat.storage.records import (
    AuditAction,
    AuditEntry,
    Change,
    TranscriptEntry,
    UsageCount,
    UsageHold,
    UsageRecord,
)
from tests.store_backends import Backend, PostgresBackend, backend, pg_database, pg_url, store
from tests.test_store_contract import conversation

__all__ = ["backend", "pg_database", "pg_url", "store"]  # fixtures

WS = "slack:T_1"
CHANNEL = f"{WS}:C1:-"
NOW = 1_800_000_000.0
DAY = 86400.0


def audit(action: AuditAction = AuditAction.CHANNEL, key: str = CHANNEL) -> AuditEntry:
    return AuditEntry(WS, key, "UADMIN", "ada", action, None, "x", NOW)


def usage(
    user: str = "U1",
    channel: str = CHANNEL,
    outcome: str = "answered",
    at: float = NOW,
    tokens: int | None = None,
    ws: str = WS,
) -> UsageRecord:
    return UsageRecord(ws, channel, user, "gpt-4o", 120, 1.5, outcome, at, tokens)


async def test_controls_are_set_replaced_and_removed_with_the_old_value_audited(store: Store) -> None:
    heard: list[Change] = []
    store.on_change(heard.append)
    assert await store.set_control(CHANNEL, "channel", "off", audit=audit()) is None
    assert await store.set_control(CHANNEL, "channel", "on", audit=audit()) == "off"
    await store.set_control(WS, "user:U9", "deny", audit=audit(AuditAction.USERS, WS))
    found = await store.get_controls([CHANNEL, WS, "slack:T_1:C2:-"])
    assert [(c.key, c.name, c.value) for c in found] == [(WS, "user:U9", "deny"), (CHANNEL, "channel", "on")]
    await store.set_control(f"{WS}:C2:-", "channel", "on", audit=audit())
    assert [c.key for c in await store.controls_set_to("channel", "on")] == [CHANNEL, f"{WS}:C2:-"]
    assert await store.set_control(WS, "user:U9", None, audit=audit(AuditAction.USERS, WS)) == "deny"
    assert [c.key for c in await store.get_controls([WS])] == []
    entries = await store.list_audit(WS)
    assert [(e.action, e.old) for e in entries] == [
        (AuditAction.USERS, "deny"),
        (AuditAction.CHANNEL, None),
        (AuditAction.USERS, None),
        (AuditAction.CHANNEL, "off"),
        (AuditAction.CHANNEL, None),
    ]
    assert Change("control", CHANNEL) in heard and Change("control", WS) in heard


async def test_usage_counts_answered_questions_and_reported_tokens_per_user_channel_workspace(
    store: Store,
) -> None:
    await store.record_usage(usage("U1", tokens=100))
    await store.record_usage(usage("U1", tokens=None))
    await store.record_usage(usage("U1", outcome="failed", tokens=5))
    await store.record_usage(usage("U2", channel=f"{WS}:C2:-", tokens=1000))
    await store.record_usage(usage("U1", at=NOW - DAY))  # yesterday
    await store.record_usage(usage("U1", ws="slack:T2", channel="slack:T2:C1:-"))  # another workspace
    counted = await store.count_usage(WS, CHANNEL, "U1", NOW - NOW % DAY, NOW)
    assert counted == UsageCount(
        user_questions=2,
        user_tokens=105,
        channel_questions=2,
        channel_tokens=105,
        workspace_questions=3,
        workspace_tokens=1105,
    )
    totals = await store.usage_totals(WS, NOW - 10)
    assert (totals.questions, totals.answered, totals.answer_chars, totals.tokens) == (4, 3, 480, 1105)
    assert totals.top_users == (("U1", 3), ("U2", 1))
    assert totals.top_channels == ((CHANNEL, 3), (f"{WS}:C2:-", 1))
    assert (await store.usage_totals(WS, NOW - 2 * DAY)).questions == 5


async def test_engaged_threads_survive_a_reopen_and_go_with_their_channel(backend: Backend) -> None:
    store = await backend.open()
    thread = f"{WS}:C1:111.2"
    await store.engage_thread(thread, CHANNEL, NOW)
    await store.engage_thread(thread, CHANNEL, NOW + 1)  # again: still one
    await store.engage_thread(f"{WS}:C2:3", f"{WS}:C2:-", NOW)
    await store.close()
    store = await backend.open()
    try:
        assert await store.is_engaged(thread)
        assert not await store.is_engaged(f"{WS}:C1:999")
        assert await store.disengage_threads(CHANNEL) == 1
        assert not await store.is_engaged(thread)
        assert await store.is_engaged(f"{WS}:C2:3")
    finally:
        await store.close()


async def test_forget_me_removes_transcripts_and_usage_but_today_still_counts(
    store: Store, backend: Backend
) -> None:
    def transcript(author: str, scope: str) -> TranscriptEntry:
        return TranscriptEntry(
            scope, "up", author, "a", "secret question", "answer", "answered", None, NOW, NOW
        )

    other_ws = "slack:T_10:C1:-"  # a workspace whose key starts with this one's
    for author, scope in (("U1", CHANNEL), ("U1", f"{WS}:C2:9.1"), ("U2", CHANNEL), ("U1", other_ws)):
        await store.queue_turn(conversation(scope), transcript(author, scope))
    day_start = NOW - NOW % DAY
    await store.record_usage(usage("U1", at=day_start - 5))
    await store.record_usage(usage("U1", at=day_start + 5))
    await store.record_usage(usage("U2", at=day_start + 5))
    entry = AuditEntry(WS, CHANNEL, "U1", "u1", AuditAction.FORGET, None, None, NOW)
    assert await store.forget_user(WS, "U1", day_start, audit=entry) == (2, 2)
    left = await backend.query("SELECT author_id, scope_key FROM transcripts ORDER BY author_id, scope_key")
    assert left == [("U1", other_ws), ("U2", CHANNEL)]
    # Today's row still counts against the quota, but no longer names the user in listings.
    assert (await store.count_usage(WS, CHANNEL, "U1", day_start, NOW)).user_questions == 1
    assert (await store.usage_totals(WS, day_start - DAY)).top_users == (("U2", 1),)
    logged = (await store.list_audit(WS))[0]
    assert logged.action is AuditAction.FORGET
    # How many rows went, never what they held.
    assert logged.new == "deleted 2 transcripts, 1 usage rows; 1 today's unnamed"
    assert "secret" not in repr(await backend.query("SELECT * FROM audit"))
    # After the day, pruning removes it.
    await store.prune(now=day_start + DAY + 1)
    assert await backend.query("SELECT user_id FROM usage") == [("U2",)]


# --- admission under quotas: per-day counters and holds shared by every process ------------------

TODAY = NOW - NOW % DAY


def hold(n: int, user: str = "U1", channel: str = CHANNEL, expires: float = NOW + 600) -> UsageHold:
    return UsageHold(f"h{n}", WS, channel, user, TODAY, expires)


def under(limit: int) -> Callable[[UsageCount], bool]:
    return lambda used: used.user_questions < limit


async def test_a_hold_counts_for_every_reader_until_its_question_is_recorded_or_released(
    store: Store,
) -> None:
    await store.record_usage(usage("U1"))
    assert await store.hold_usage(hold(1), NOW, under(3)) == (True, UsageCount(1, 0, 1, 0, 1, 0))
    taken, seen = await store.hold_usage(hold(2, channel=f"{WS}:C2:-"), NOW, under(3))
    # The second sees the first's hold on the user and workspace, not on its own channel.
    assert taken and seen == UsageCount(2, 0, 0, 0, 2, 0)
    assert (await store.count_usage(WS, CHANNEL, "U1", TODAY, NOW)).user_questions == 3
    # Full: refused, nothing taken, the count that refused it returned.
    assert await store.hold_usage(hold(3), NOW, under(3)) == (False, UsageCount(3, 0, 2, 0, 3, 0))
    # Answered: the hold becomes an answered question, with its tokens.
    await store.record_usage(usage("U1", tokens=50), hold(1))
    # Failed upstream: the hold goes and nothing counts but the tokens reported.
    await store.record_usage(usage("U1", channel=f"{WS}:C2:-", outcome="failed", tokens=5), hold(2))
    assert await store.count_usage(WS, CHANNEL, "U1", TODAY, NOW) == UsageCount(2, 55, 2, 50, 2, 55)
    # Refused after admission (a rate limit, a busy channel): released, it never counts.
    assert (await store.hold_usage(hold(4), NOW, under(3)))[0]
    await store.release_usage(hold(4))
    await store.release_usage(hold(4))  # twice is harmless
    assert (await store.count_usage(WS, CHANNEL, "U1", TODAY, NOW)).user_questions == 2
    # Another day starts from nothing.
    assert (await store.count_usage(WS, CHANNEL, "U1", TODAY + DAY, NOW + DAY)).user_questions == 0


async def test_a_hold_left_by_a_dead_process_stops_counting_when_it_expires(store: Store) -> None:
    assert (await store.hold_usage(hold(1, expires=NOW + 60), NOW, under(1)))[0]
    assert not (await store.hold_usage(hold(2), NOW + 59, under(1)))[0]
    assert (await store.hold_usage(hold(3), NOW + 61, under(1)))[0]
    # Pruning removes expired holds and counters of days gone.
    await store.record_usage(usage("U2", at=TODAY - 5))
    removed = await store.prune(now=NOW + 120)
    assert removed >= 4  # the expired hold's 3 rows and yesterday's usage row, with its counters
    assert (await store.count_usage(WS, CHANNEL, "U1", TODAY, NOW + 120)).user_questions == 1


async def test_counters_start_from_the_usage_rows_already_stored_on_upgrade(backend: Backend) -> None:
    # The schema just before the counters (shared version 6), whatever migrations came after them.
    migrations = backend.migrations()
    before = next(n for n in range(len(migrations)) if backend.version(migrations[:n]) == 5)
    await backend.migrate(migrations[:before])
    values = ", ".join(
        f"('{WS}', '{channel}', '{user}', 'm', 1, 1.0, '{outcome}', {tokens}, {at}, 0)"
        for user, channel, outcome, tokens, at in (
            ("U1", CHANNEL, "answered", 7, NOW),
            ("U1", CHANNEL, "failed", 3, NOW),
            ("U2", CHANNEL, "answered", "NULL", NOW),
            ("U1", CHANNEL, "answered", 1, NOW - DAY),
        )
    )
    await backend.query(
        "INSERT INTO usage (workspace_key, channel_key, user_id, model, answer_chars, upstream_seconds, "
        f"outcome, tokens, at, forgotten) VALUES {values}"
    )
    store = await backend.open()
    try:
        assert await store.count_usage(WS, CHANNEL, "U1", TODAY, NOW) == UsageCount(1, 10, 2, 10, 2, 10)
        assert (await store.count_usage(WS, CHANNEL, "U1", TODAY - DAY, NOW)).user_tokens == 1
    finally:
        await store.close()


async def test_admissions_at_once_from_two_processes_never_pass_a_quota(pg_url: str) -> None:
    """Two stores on one database, each its own pool of sessions, as two processes of one bot."""
    pg = PostgresBackend(pg_url)
    first, second = await pg.open(), await pg.open()
    try:
        attempts = [
            (first if n % 2 else second).hold_usage(hold(n, channel=f"{WS}:C{n % 3}:-"), NOW, under(5))
            for n in range(60)
        ]
        taken = [ok for ok, _ in await asyncio.gather(*attempts)]
        assert taken.count(True) == 5
        assert (await second.count_usage(WS, CHANNEL, "U1", TODAY, NOW)).user_questions == 5
    finally:
        await first.close()
        await second.close()
