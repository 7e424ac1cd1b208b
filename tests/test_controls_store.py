"""The Store contract for admins' controls, usage rows and engaged threads, against SQLite and PostgreSQL."""

from __future__ import annotations

from acechat.storage.protocol import Store
from acechat.storage.records import (
    AuditAction,
    AuditEntry,
    Change,
    TranscriptEntry,
    UsageCount,
    UsageRecord,
)
from tests.store_backends import Backend, backend, pg_database, store
from tests.test_store_contract import conversation

__all__ = ["backend", "pg_database", "store"]  # fixtures

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
    entry = AuditEntry(WS, CHANNEL, "U1", "u1", AuditAction.FORGET, None, "2 transcripts", NOW)
    assert await store.forget_user(WS, "U1", day_start, audit=entry) == (2, 2)
    left = await backend.query("SELECT author_id, scope_key FROM transcripts ORDER BY author_id, scope_key")
    assert left == [("U1", other_ws), ("U2", CHANNEL)]
    # Today's row still counts against the quota, but no longer names the user in listings.
    assert (await store.count_usage(WS, CHANNEL, "U1", day_start, NOW)).user_questions == 1
    assert (await store.usage_totals(WS, day_start - DAY)).top_users == (("U2", 1),)
    assert (await store.list_audit(WS))[0].action is AuditAction.FORGET
    # After the day, pruning removes it.
    await store.prune(now=day_start + DAY + 1)
    assert await backend.query("SELECT user_id FROM usage") == [("U2",)]
