"""The PostgreSQL store: shared state for any number of acechat processes, through asyncpg.

Connections of one process: a pool of `pool_size` for queries, each held only while a query runs;
the connections of cross-process scope turns (`postgres_locks`); and one listener connection for other
processes' settings and preset changes (`postgres_notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from acechat.storage import controls_sql as csql
from acechat.storage.errors import StoreClosedError, StoreError
from acechat.storage.postgres_connections import CONNECT_TIMEOUT, close_pools, safe_label
from acechat.storage.postgres_locks import AdvisoryLockSession, SharedScopeTurn
from acechat.storage.postgres_notify import NotificationListener, notify
from acechat.storage.postgres_schema import MIGRATION_LOCK, migrate
from acechat.storage.postgres_v2 import AiChatV2Queries
from acechat.storage.probe import RecentProbe
from acechat.storage.protocol import Backend, SettingField, Store
from acechat.storage.records import (
    AnswerRecord,
    AuditAction,
    AuditEntry,
    Change,
    Control,
    ConversationRecord,
    CustomPreset,
    FeedbackTally,
    RateCheck,
    RateVerdict,
    ScopeSettings,
    TranscriptEntry,
    UsageCount,
    UsageHold,
    UsageRecord,
    UsageTotals,
)
from acechat.storage.scope_lock import ScopeQueue

log = logging.getLogger(__name__)

ANSWER_COLUMNS = "answer_id, scope_key, workspace_key, asker_id, model, preset, started_at, state"
# How long an answer can still be voted on (and its Stop pressed to no effect); votes themselves stay.
ANSWER_DAYS = 30

SEEN_EVENT_SECONDS = 86400.0
DAY_SECONDS = 86400.0
PING_TIMEOUT = 5.0
ALLOWED = RateVerdict(None, 0.0)

CONVERSATION_COLUMNS = "scope_key, upstream_id, model, preset, turns, created_at, updated_at, epoch"
_SAVE_CONVERSATION = (
    f"INSERT INTO conversations AS c ({CONVERSATION_COLUMNS}) "
    "SELECT $1, $2, $3, $4, $5, $6, $7, $8::bigint "
    "WHERE $8::bigint = 0 OR EXISTS (SELECT 1 FROM conversations WHERE scope_key = $1) "
    "ON CONFLICT (scope_key) DO UPDATE SET upstream_id = excluded.upstream_id, model = excluded.model, "
    "preset = excluded.preset, turns = excluded.turns, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at WHERE c.epoch = excluded.epoch RETURNING 1"
)
TRANSCRIPT_COLUMNS = (
    "scope_key, conversation_id, author_id, author_name, question, answer, outcome, trace_id, "
    "asked_at, answered_at"
)
# One statement, so one round trip: the conversation (if its epoch still holds) and the transcript.
_SAVE_TURN = (
    f"WITH saved AS ({_SAVE_CONVERSATION}) "
    f"INSERT INTO transcripts ({TRANSCRIPT_COLUMNS}) VALUES ($1, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
    "RETURNING (SELECT count(*) FROM saved)"
)
PRESET_COLUMNS = "workspace_key, name, description, prompt, author_id, created_at, updated_at"
AUDIT_COLUMNS = "workspace_key, scope_key, actor_id, actor_name, action, old, new, at"
SETTING_FIELDS = frozenset({"preset", "model", "tools"})


def _conversation_args(c: ConversationRecord) -> tuple[Any, ...]:
    return (c.scope_key, c.upstream_id, c.model, c.preset, c.turns, c.created_at, c.updated_at, c.epoch)


def _audit_args(e: AuditEntry) -> tuple[Any, ...]:
    return (e.workspace_key, e.scope_key, e.actor_id, e.actor_name, str(e.action), e.old, e.new, e.at)


def _audit_from_row(row: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        row["workspace_key"],
        row["scope_key"],
        row["actor_id"],
        row["actor_name"],
        AuditAction(row["action"]),
        row["old"],
        row["new"],
        row["at"],
        row["id"],
    )


def _preset(row: asyncpg.Record | None) -> CustomPreset | None:
    return CustomPreset(*row) if row is not None else None


_INSERT_AUDIT = f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"


class PostgresStore(AiChatV2Queries, Store):
    """Open with `await PostgresStore.connect(url)`; close with `await store.close()`."""

    backend: Backend = "postgresql"

    def __init__(
        self, url: str, pool: asyncpg.Pool, waiters: asyncpg.Pool, transcript_days: int, listen: bool
    ) -> None:
        self._url = url
        self._pool = pool
        self._waiters = waiters
        self._transcript_days = transcript_days
        self._origin = uuid.uuid4().hex
        self._local = ScopeQueue()
        self._locks = AdvisoryLockSession(url)
        self._listeners: list[Callable[[Change], None]] = []
        self._listener = NotificationListener(url, self._origin, self._deliver) if listen else None
        self._probe = RecentProbe(self._writable)
        self._writes: set[asyncio.Task[Any]] = set()
        self._close_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls, url: str, *, transcript_days: int = 30, pool_size: int = 10, listen: bool = True
    ) -> PostgresStore:
        """Connect, create or migrate the schema, and start listening for changes (unless `listen` is
        false: tools that only read or copy)."""
        if transcript_days < 0:
            raise ValueError("transcript_days must be 0 (never store) or more")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        label = safe_label(url)
        pool: asyncpg.Pool | None = None
        waiters: asyncpg.Pool | None = None
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT)
            async with pool.acquire() as conn:
                await migrate(conn, label=label)
            # One wait connection stays open, so a refused turn queues in the server's lock queue within
            # a round trip; the time to connect would let a later turn of another process go first.
            waiters = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT)
            store = cls(url, pool, waiters, transcript_days, listen)
            if store._listener is not None:
                await store._listener.start()
        except StoreError:
            await close_pools(pool, waiters)
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            await close_pools(pool, waiters)
            raise StoreError(f"cannot open the database {label}: {exc}") from exc
        except BaseException:
            await close_pools(pool, waiters)
            raise
        return store

    @contextlib.asynccontextmanager
    async def exclusive_transaction(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """One connection in one transaction, holding the migration lock: for a tool that rewrites whole
        tables (`acechat db copy`), so no migration or other such tool runs meanwhile. Everything done
        on it commits when the block ends, or nothing does."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *MIGRATION_LOCK)
            yield conn

    async def close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await self._close_task

    async def _close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._listener is not None:
            await self._listener.close()
        await self._locks.close()
        await close_pools(self._pool, self._waiters)

    async def ping(self) -> bool:
        if self._close_task is not None:
            return False
        return await self._probe()

    async def _writable(self) -> bool:
        # Reachable, and a primary that takes writes; checked without writing anything.
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                return bool(
                    await self._db().fetchval(
                        "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"
                    )
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False

    def _db(self) -> asyncpg.Pool:
        if self._close_task is not None:
            raise StoreClosedError("the store is closed")
        return self._pool

    def scope_turn(self, scope_key: str) -> SharedScopeTurn:
        if self._close_task is not None:
            raise StoreClosedError("the store is closed")
        return SharedScopeTurn(self._local, self._locks, self._waiters, scope_key)

    # conversations

    async def get_conversation(self, scope_key: str) -> ConversationRecord | None:
        row = await self._db().fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE scope_key = $1", scope_key
        )
        return ConversationRecord(*row) if row is not None else None

    async def save_conversation(self, record: ConversationRecord) -> bool:
        return await self._db().fetchval(_SAVE_CONVERSATION, *_conversation_args(record)) is not None

    def queue_turn(
        self,
        conversation: ConversationRecord,
        transcript: TranscriptEntry | None,
        answer: AnswerRecord | None = None,
    ) -> Awaitable[bool]:
        # The pool is taken now: a write queued before close() still runs while close() waits for it.
        task = asyncio.ensure_future(self._save_turn(self._db(), conversation, transcript, answer))
        # Kept until done, so close() can wait for it and it is never collected half way.
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _save_turn(
        self,
        pool: asyncpg.Pool,
        conversation: ConversationRecord,
        transcript: TranscriptEntry | None,
        answer: AnswerRecord | None,
    ) -> bool:
        if answer is not None:
            await self._end_answer(pool, answer)
        if transcript is None or not self._transcript_days:
            return await pool.fetchval(_SAVE_CONVERSATION, *_conversation_args(conversation)) is not None
        t = transcript
        saved = await pool.fetchval(
            _SAVE_TURN,
            *_conversation_args(conversation),
            t.conversation_id,
            t.author_id,
            t.author_name,
            t.question,
            t.answer,
            t.outcome,
            t.trace_id,
            t.asked_at,
            t.answered_at,
        )
        return bool(saved)

    async def reset_conversation(self, scope_key: str) -> bool:
        async with self._db().acquire() as conn, conn.transaction():
            # Locked first, so two resets at once each see what the other left.
            live = await conn.fetchval(
                "SELECT upstream_id IS NOT NULL FROM conversations WHERE scope_key = $1 FOR UPDATE", scope_key
            )
            await conn.execute(
                f"INSERT INTO conversations AS c ({CONVERSATION_COLUMNS}) VALUES ($1, NULL, '', '', 0, $2, $2, 1) "
                "ON CONFLICT (scope_key) DO UPDATE SET upstream_id = NULL, turns = 0, "
                "updated_at = excluded.updated_at, epoch = c.epoch + 1",
                scope_key,
                time.time(),
            )
        return bool(live)

    # settings

    async def get_settings(self, keys: Sequence[str]) -> dict[str, ScopeSettings]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        rows = await self._db().fetch(
            "SELECT key, preset, model, updated_at, tools FROM scope_settings WHERE key = ANY($1::text[])",
            wanted,
        )
        return {row["key"]: ScopeSettings(*row) for row in rows}

    async def set_setting(
        self, key: str, field: SettingField, value: str | None, *, audit: AuditEntry
    ) -> str | None:
        if field not in SETTING_FIELDS:
            raise ValueError(f"unknown setting {field!r}")
        async with self._db().acquire() as conn, conn.transaction():
            # A row to lock first, so two changes at once each log the value the other left.
            await conn.execute(
                "INSERT INTO scope_settings (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", key
            )
            old: str | None = await conn.fetchval(
                f"SELECT {field} FROM scope_settings WHERE key = $1 FOR UPDATE", key
            )
            await conn.execute(
                f"UPDATE scope_settings SET {field} = $2, updated_at = $3 WHERE key = $1",
                key,
                value,
                audit.at,
            )
            await conn.execute(_INSERT_AUDIT, *_audit_args(dataclasses.replace(audit, old=old)))
            await notify(conn, self._origin, "setting", key)
        self._deliver(Change("setting", key))
        return old

    # custom presets

    async def list_presets(self, workspace_key: str) -> list[CustomPreset]:
        rows = await self._db().fetch(
            f"SELECT {PRESET_COLUMNS} FROM presets WHERE workspace_key = $1 ORDER BY name", workspace_key
        )
        return [CustomPreset(*row) for row in rows]

    async def get_preset(self, workspace_key: str, name: str) -> CustomPreset | None:
        return _preset(
            await self._db().fetchrow(
                f"SELECT {PRESET_COLUMNS} FROM presets WHERE workspace_key = $1 AND name = $2",
                workspace_key,
                name,
            )
        )

    async def count_presets(self, workspace_key: str) -> int:
        return int(
            await self._db().fetchval("SELECT count(*) FROM presets WHERE workspace_key = $1", workspace_key)
        )

    async def put_preset(self, preset: CustomPreset, *, audit: AuditEntry) -> CustomPreset | None:
        p = preset
        async with self._db().acquire() as conn, conn.transaction():
            old = _preset(
                await conn.fetchrow(
                    f"SELECT {PRESET_COLUMNS} FROM presets WHERE workspace_key = $1 AND name = $2 FOR UPDATE",
                    p.workspace_key,
                    p.name,
                )
            )
            # An update keeps the original created_at.
            await conn.execute(
                f"INSERT INTO presets ({PRESET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (workspace_key, name) DO UPDATE SET description = excluded.description, "
                "prompt = excluded.prompt, author_id = excluded.author_id, updated_at = excluded.updated_at",
                p.workspace_key,
                p.name,
                p.description,
                p.prompt,
                p.author_id,
                p.created_at,
                p.updated_at,
            )
            await conn.execute(_INSERT_AUDIT, *_audit_args(audit))
            await notify(conn, self._origin, "preset", p.workspace_key)
        self._deliver(Change("preset", p.workspace_key))
        return old

    async def delete_preset(self, workspace_key: str, name: str, *, audit: AuditEntry) -> CustomPreset | None:
        async with self._db().acquire() as conn, conn.transaction():
            old = _preset(
                await conn.fetchrow(
                    f"DELETE FROM presets WHERE workspace_key = $1 AND name = $2 RETURNING {PRESET_COLUMNS}",
                    workspace_key,
                    name,
                )
            )
            if old is None:
                return None
            await conn.execute(_INSERT_AUDIT, *_audit_args(audit))
            await notify(conn, self._origin, "preset", workspace_key)
        self._deliver(Change("preset", workspace_key))
        return old

    # audit

    async def list_audit(self, workspace_key: str, limit: int = 20, offset: int = 0) -> list[AuditEntry]:
        rows = await self._db().fetch(
            f"SELECT {AUDIT_COLUMNS}, id FROM audit WHERE workspace_key = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
            workspace_key,
            max(limit, 0),
            max(offset, 0),
        )
        return [_audit_from_row(row) for row in rows]

    async def count_audit(self, workspace_key: str) -> int:
        return int(
            await self._db().fetchval("SELECT count(*) FROM audit WHERE workspace_key = $1", workspace_key)
        )

    # housekeeping, de-duplication, rate limits, change notifications

    async def prune(self, now: float | None = None) -> int:
        at = time.time() if now is None else now
        transcripts_before = (
            at - self._transcript_days * DAY_SECONDS if self._transcript_days else float("inf")
        )
        async with self._db().acquire() as conn, conn.transaction():
            transcripts = await conn.execute(
                "DELETE FROM transcripts WHERE answered_at < $1", transcripts_before
            )
            events = await conn.execute("DELETE FROM seen_events WHERE seen_at < $1", at - SEEN_EVENT_SECONDS)
            answers = await conn.execute(
                "DELETE FROM answers WHERE started_at < $1", at - ANSWER_DAYS * DAY_SECONDS
            )
            usage = await conn.execute(
                _PG_PRUNE_USAGE, at - csql.USAGE_DAYS * DAY_SECONDS, at - at % DAY_SECONDS
            )
            engaged = await conn.execute(_PG_PRUNE_ENGAGED, at - csql.ENGAGED_DAYS * DAY_SECONDS)
            counters = await conn.execute(_PG_PRUNE_COUNTERS, csql.day_of(at))
            holds = await conn.execute(_PG_PRUNE_HOLDS, at)
            # Windows on the server's clock, as their hits are, unless a time is given.
            await conn.execute(
                "DELETE FROM rate_windows WHERE expires_at < coalesce($1, extract(epoch FROM clock_timestamp()))",
                now,
            )
        return (
            _count(transcripts)
            + _count(events)
            + _count(usage)
            + _count(engaged)
            + _count(counters)
            + _count(holds)
            + _count(answers)
        )

    async def first_sighting(self, key: str) -> bool:
        inserted = await self._db().fetchval(
            "INSERT INTO seen_events (key, seen_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING RETURNING 1",
            key,
            time.time(),
        )
        return inserted is not None

    async def take_rate(self, checks: Sequence[RateCheck]) -> RateVerdict:
        if not any(c.count > 0 for c in checks):
            return ALLOWED
        row = await self._db().fetchrow(
            "SELECT refused, wait FROM acechat_take_rate($1::text[], $2::integer[], $3::double precision[])",
            [c.key for c in checks],
            [c.count for c in checks],
            [c.per_seconds for c in checks],
        )
        if row is None or row["refused"] is None:
            return ALLOWED
        return RateVerdict(int(row["refused"]), float(row["wait"]))

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _deliver(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("a change listener failed")

    # admins' controls, usage and engaged threads (issue 17)

    async def get_controls(self, keys: Sequence[str]) -> list[Control]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return []
        rows = await self._db().fetch(_PG_GET_CONTROLS, wanted)
        return [csql.control(tuple(row)) for row in rows]

    async def controls_set_to(self, name: str, value: str) -> list[Control]:
        rows = await self._db().fetch(_PG_CONTROLS_NAMED, name, value)
        return [csql.control(tuple(row)) for row in rows]

    async def set_control(self, key: str, name: str, value: str | None, *, audit: AuditEntry) -> str | None:
        async with self._db().acquire() as conn, conn.transaction():
            # Locked (or, when absent, serialised on the key's row insert), so two changes at once each
            # log the value the other left.
            old: str | None = await conn.fetchval(_PG_SELECT_CONTROL_FOR_UPDATE, key, name)
            if value is None:
                await conn.execute(_PG_DELETE_CONTROL, key, name)
            else:
                await conn.execute(_PG_UPSERT_CONTROL, key, name, value, audit.at)
            await conn.execute(_INSERT_AUDIT, *_audit_args(dataclasses.replace(audit, old=old)))
            await notify(conn, self._origin, "control", key)
        self._deliver(Change("control", key))
        return old

    async def record_usage(self, usage: UsageRecord, hold: UsageHold | None = None) -> None:
        async with self._db().acquire() as conn, conn.transaction():
            await conn.execute(_PG_INSERT_USAGE, *csql.usage_row(usage))
            # In key order, as admissions lock them: no two writers wait on each other in a cycle.
            await conn.executemany(_PG_ADD_TO_COUNTER, csql.counter_additions(usage))
            if hold is not None:
                await _end_hold(conn, hold)

    async def count_usage(
        self, workspace_key: str, channel_key: str, user_id: str, day: float, now: float
    ) -> UsageCount:
        keys = csql.counter_keys(workspace_key, channel_key, user_id)
        async with self._db().acquire() as conn:
            return await _count_usage(conn, keys, day, now, lock=False)

    async def hold_usage(
        self, hold: UsageHold, now: float, admit: Callable[[UsageCount], bool]
    ) -> tuple[bool, UsageCount]:
        keys = csql.hold_keys(hold)
        async with self._db().acquire() as conn, conn.transaction():
            # A hold lives minutes: a server crash that loses the newest costs at most the questions
            # then in flight, so its commit need not wait for the disk.
            await conn.execute(_PG_NO_SYNC)
            # The three counters locked in key order: admissions that share any of them, in any
            # process, take turns, and each counts the holds of those before it.
            await conn.execute(_PG_ENSURE_COUNTERS, sorted(keys), hold.day)
            count = await _count_usage(conn, keys, hold.day, now, lock=True)
            if not admit(count):
                return False, count
            await conn.execute(_PG_INSERT_HOLDS, list(keys), hold.id, hold.expires)
        return True, count

    async def release_usage(self, hold: UsageHold) -> None:
        async with self._db().acquire() as conn, conn.transaction():
            await conn.execute(_PG_NO_SYNC)
            await _end_hold(conn, hold)

    async def usage_totals(self, workspace_key: str, since: float, top: int = 5) -> UsageTotals:
        async with self._db().acquire() as conn:
            total = await conn.fetchrow(_PG_TOTAL_USAGE, workspace_key, since)
            users = await conn.fetch(_PG_TOP_USERS, workspace_key, since, top)
            channels = await conn.fetch(_PG_TOP_CHANNELS, workspace_key, since, top)
        assert total is not None  # an aggregate always has its one row
        return csql.usage_totals(tuple(total), [tuple(r) for r in users], [tuple(r) for r in channels])

    async def engage_thread(self, thread_key: str, channel_key: str, at: float) -> None:
        await self._db().execute(_PG_ENGAGE, thread_key, channel_key, at)

    async def is_engaged(self, thread_key: str) -> bool:
        return await self._db().fetchval(_PG_IS_ENGAGED, thread_key) is not None

    async def disengage_threads(self, channel_key: str) -> int:
        return _count(await self._db().execute(_PG_DISENGAGE, channel_key))

    async def forget_user(
        self, workspace_key: str, user_id: str, day_start: float, *, audit: AuditEntry
    ) -> tuple[int, int]:
        async with self._db().acquire() as conn, conn.transaction():
            transcripts = _count(
                await conn.execute(_PG_FORGET_TRANSCRIPTS, user_id, workspace_key, workspace_key)
            )
            old = _count(await conn.execute(_PG_FORGET_OLD_USAGE, workspace_key, user_id, day_start))
            today = _count(await conn.execute(_PG_FORGET_TODAY_USAGE, workspace_key, user_id))
            await conn.execute(_PG_FORGET_OLD_COUNTER, csql.user_counter(workspace_key, user_id), day_start)
            forgotten = dataclasses.replace(audit, new=csql.forgotten(transcripts, old, today))
            await conn.execute(_INSERT_AUDIT, *_audit_args(forgotten))
        return transcripts, old + today

    # answers in flight, stop requests and feedback (issue 18)

    async def start_answer(self, answer: AnswerRecord) -> None:
        a = answer
        await self._db().execute(
            f"INSERT INTO answers ({ANSWER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (answer_id) DO NOTHING",
            a.answer_id,
            a.scope_key,
            a.workspace_key,
            a.asker_id,
            a.model,
            a.preset,
            a.started_at,
            a.state,
        )

    async def get_answer(self, answer_id: str) -> AnswerRecord | None:
        row = await self._db().fetchrow(
            f"SELECT {ANSWER_COLUMNS} FROM answers WHERE answer_id = $1", answer_id
        )
        return AnswerRecord(*row) if row is not None else None

    async def request_stop(self, answer_id: str) -> bool:
        async with self._db().acquire() as conn, conn.transaction():
            stopping = await conn.fetchval(
                "UPDATE answers SET state = 'stopping' WHERE answer_id = $1 AND state = 'running' RETURNING 1",
                answer_id,
            )
            if stopping is not None:
                await notify(conn, self._origin, "stop", answer_id)
        if stopping is None:
            return False
        self._deliver(Change("stop", answer_id))
        return True

    async def running_answer(self, scope_key: str) -> str | None:
        found = await self._db().fetchval(
            "SELECT answer_id FROM answers WHERE scope_key = $1 AND state = 'running' "
            "ORDER BY started_at DESC LIMIT 1",
            scope_key,
        )
        return None if found is None else str(found)

    async def stop_requests(self, answer_ids: Sequence[str]) -> list[str]:
        if not answer_ids:
            return []
        rows = await self._db().fetch(
            "SELECT answer_id FROM answers WHERE state = 'stopping' AND answer_id = ANY($1::text[])",
            list(answer_ids),
        )
        return [str(row["answer_id"]) for row in rows]

    def end_answer(self, answer: AnswerRecord) -> Awaitable[None]:
        task = asyncio.ensure_future(self._end_answer(self._db(), answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _end_answer(self, pool: asyncpg.Pool, answer: AnswerRecord) -> None:
        a = answer
        await pool.execute(
            f"INSERT INTO answers ({ANSWER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (answer_id) DO UPDATE SET state = excluded.state",
            a.answer_id,
            a.scope_key,
            a.workspace_key,
            a.asker_id,
            a.model,
            a.preset,
            a.started_at,
            a.state,
        )

    async def vote(self, answer: AnswerRecord, user_id: str, vote: int, at: float) -> int | None:
        a = answer
        async with self._db().acquire() as conn, conn.transaction():
            old = await conn.fetchval(
                "SELECT vote FROM feedback WHERE answer_id = $1 AND user_id = $2 FOR UPDATE",
                a.answer_id,
                user_id,
            )
            await conn.execute(
                "INSERT INTO feedback (answer_id, user_id, workspace_key, model, preset, vote, at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (answer_id, user_id) "
                "DO UPDATE SET vote = excluded.vote, at = excluded.at",
                a.answer_id,
                user_id,
                a.workspace_key,
                a.model,
                a.preset,
                vote,
                at,
            )
        return int(old) if old is not None else None

    async def feedback(self, workspace_key: str, since: float) -> list[FeedbackTally]:
        rows = await self._db().fetch(
            "SELECT model, preset, count(*) FILTER (WHERE vote > 0) AS up, count(*) FILTER (WHERE vote < 0) AS down "
            "FROM feedback WHERE workspace_key = $1 AND at >= $2 GROUP BY model, preset "
            "ORDER BY count(*) DESC, model, preset",
            workspace_key,
            since,
        )
        return [FeedbackTally(r["model"], r["preset"], int(r["up"]), int(r["down"])) for r in rows]


async def _count_usage(
    conn: asyncpg.pool.PoolConnectionProxy, keys: tuple[str, str, str], day: float, now: float, *, lock: bool
) -> UsageCount:
    counters = await conn.fetch(_PG_READ_COUNTERS_FOR_UPDATE if lock else _PG_READ_COUNTERS, list(keys), day)
    holds: dict[str, int] = {row[0]: row[1] for row in await conn.fetch(_PG_LIVE_HOLDS, list(keys), now)}
    found = {key: (0, 0, 0) for key in keys}
    for key, questions, tokens in counters:
        found[key] = (int(questions), int(tokens), 0)
    return csql.counted(keys, {k: (q, t, int(holds.get(k, 0))) for k, (q, t, _) in found.items()})


async def _end_hold(conn: asyncpg.pool.PoolConnectionProxy, hold: UsageHold) -> None:
    await conn.execute(_PG_DELETE_HOLDS, list(csql.hold_keys(hold)), hold.id)


_PG_GET_CONTROLS = (
    f"SELECT {csql.CONTROL_COLUMNS} FROM controls WHERE key = ANY($1::text[]) ORDER BY key, name"
)
_PG_CONTROLS_NAMED = csql.postgres_sql(csql.CONTROLS_NAMED)
_PG_SELECT_CONTROL_FOR_UPDATE = csql.postgres_sql(csql.SELECT_CONTROL) + " FOR UPDATE"
_PG_UPSERT_CONTROL = csql.postgres_sql(csql.UPSERT_CONTROL)
_PG_DELETE_CONTROL = csql.postgres_sql(csql.DELETE_CONTROL)
_PG_INSERT_USAGE = csql.postgres_sql(csql.INSERT_USAGE)
# A question's three counters and holds in one statement each (arrays). Counter rows are inserted
# and locked in sorted key order, as every writer takes them, so no two wait on each other in a cycle.
_PG_NO_SYNC = "SET LOCAL synchronous_commit TO off"
_PG_ENSURE_COUNTERS = (
    "INSERT INTO usage_counts (key, day, questions, tokens) "
    "SELECT key, $2, 0, 0 FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n) ORDER BY n "
    "ON CONFLICT (key, day) DO NOTHING"
)
_PG_READ_COUNTERS = (
    "SELECT key, questions, tokens FROM usage_counts WHERE key = ANY($1::text[]) AND day = $2 ORDER BY key"
)
_PG_READ_COUNTERS_FOR_UPDATE = _PG_READ_COUNTERS + " FOR UPDATE"
_PG_ADD_TO_COUNTER = csql.postgres_sql(csql.ADD_TO_COUNTER)
_PG_LIVE_HOLDS = (
    "SELECT key, count(*) FROM usage_holds WHERE key = ANY($1::text[]) AND expires > $2 GROUP BY key"
)
_PG_INSERT_HOLDS = "INSERT INTO usage_holds (key, hold, expires) SELECT unnest($1::text[]), $2, $3"
_PG_DELETE_HOLDS = "DELETE FROM usage_holds WHERE key = ANY($1::text[]) AND hold = $2"
_PG_FORGET_OLD_COUNTER = csql.postgres_sql(csql.FORGET_OLD_COUNTER)
_PG_PRUNE_COUNTERS = csql.postgres_sql(csql.PRUNE_COUNTERS)
_PG_PRUNE_HOLDS = csql.postgres_sql(csql.PRUNE_HOLDS)
_PG_TOTAL_USAGE = csql.postgres_sql(csql.TOTAL_USAGE)
_PG_TOP_USERS = csql.postgres_sql(csql.TOP_USERS)
_PG_TOP_CHANNELS = csql.postgres_sql(csql.TOP_CHANNELS)
_PG_ENGAGE = csql.postgres_sql(csql.ENGAGE)
_PG_IS_ENGAGED = csql.postgres_sql(csql.IS_ENGAGED)
_PG_DISENGAGE = csql.postgres_sql(csql.DISENGAGE)
_PG_FORGET_TRANSCRIPTS = csql.postgres_sql(csql.FORGET_TRANSCRIPTS)
_PG_FORGET_OLD_USAGE = csql.postgres_sql(csql.FORGET_OLD_USAGE)
_PG_FORGET_TODAY_USAGE = csql.postgres_sql(csql.FORGET_TODAY_USAGE)
_PG_PRUNE_USAGE = csql.postgres_sql(csql.PRUNE_USAGE)
_PG_PRUNE_ENGAGED = csql.postgres_sql(csql.PRUNE_ENGAGED)


def _count(status: str) -> int:
    """The row count of a command status such as 'DELETE 3'."""
    return int(status.rsplit(" ", 1)[-1])
