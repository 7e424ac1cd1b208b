"""The SQLite store: one file, one process. Every sqlite call runs on one dedicated worker thread.

sqlite-utils (and sqlite3 under it) is synchronous. The connection is created on the worker thread and
keeps `check_same_thread`, so a stray call from the event loop fails loudly instead of blocking it.

This process is the only writer, so what a write leaves in the database is known when it is queued: a
write-through cache of conversations answers most `get_conversation` calls without a thread hop. Per-scope
order and rate limits live in this process's memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sqlite3
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from acechat.storage import controls_sql as csql
from acechat.storage.errors import StoreError
from acechat.storage.probe import RecentProbe
from acechat.storage.protocol import Backend, SettingField, Store
from acechat.storage.rate_windows import SlidingWindows
from acechat.storage.records import (
    AnswerRecord,
    AuditAction,
    AuditEntry,
    Change,
    ChangeKind,
    Control,
    ConversationRecord,
    CustomPreset,
    FeedbackTally,
    PendingDelete,
    PendingQuestion,
    RateCheck,
    RateVerdict,
    ScopeSettings,
    TranscriptEntry,
    UsageCount,
    UsageHold,
    UsageRecord,
    UsageTotals,
)
from acechat.storage.scope_lock import ScopeQueue, ScopeTurn
from acechat.storage.sqlite_schema import migrate, write_transaction
from acechat.storage.worker import DatabaseThread

log = logging.getLogger(__name__)

THREAD_NAME = "acechat-db"
BUSY_TIMEOUT_MS = 5000
SEEN_EVENT_SECONDS = 86400.0
DAY_SECONDS = 86400.0
CACHE_SIZE = 10_000
DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# How long an answer can still be voted on (and its Stop pressed to no effect); votes themselves stay.
ANSWER_DAYS = 30
ANSWER_COLUMNS = "answer_id, scope_key, workspace_key, asker_id, model, preset, started_at, state"

CONVERSATION_COLUMNS = "scope_key, upstream_id, model, preset, turns, created_at, updated_at, epoch"
# Written only over the same epoch, or as a new row at epoch 0: a turn that began before a reset
# cannot write its conversation back over the reset.
_SAVE_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 "
    "WHERE ?8 = 0 OR EXISTS (SELECT 1 FROM conversations WHERE scope_key = ?1) "
    "ON CONFLICT (scope_key) DO UPDATE SET upstream_id = excluded.upstream_id, model = excluded.model, "
    "preset = excluded.preset, turns = excluded.turns, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at WHERE conversations.epoch = excluded.epoch"
)
_RESET_CONVERSATION = (
    f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES (?1, NULL, '', '', 0, ?2, ?2, 1) "
    "ON CONFLICT (scope_key) DO UPDATE SET upstream_id = NULL, turns = 0, updated_at = excluded.updated_at, "
    "epoch = conversations.epoch + 1"
)
TRANSCRIPT_COLUMNS = (
    "scope_key, conversation_id, author_id, author_name, question, answer, outcome, trace_id, "
    "asked_at, answered_at"
)
_INSERT_TRANSCRIPT = f"INSERT INTO transcripts ({TRANSCRIPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
PRESET_COLUMNS = "workspace_key, name, description, prompt, author_id, created_at, updated_at"
AUDIT_COLUMNS = "workspace_key, scope_key, actor_id, actor_name, action, old, new, at"
SETTING_FIELDS = frozenset({"preset", "model", "tools"})

# A conversation's stored state as the cache knows it: the record, or None for no row.
_Cached = ConversationRecord | None


class _Unknown:
    """The cache cannot tell what a write leaves behind (the scope was not cached)."""


UNKNOWN = _Unknown()


def conversation_row(c: ConversationRecord) -> tuple[Any, ...]:
    return (c.scope_key, c.upstream_id, c.model, c.preset, c.turns, c.created_at, c.updated_at, c.epoch)


def transcript_row(t: TranscriptEntry) -> tuple[Any, ...]:
    return (
        t.scope_key,
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


def audit_row(e: AuditEntry) -> tuple[Any, ...]:
    return (e.workspace_key, e.scope_key, e.actor_id, e.actor_name, str(e.action), e.old, e.new, e.at)


def audit_from_row(row: Sequence[Any]) -> AuditEntry:
    """An entry from `AUDIT_COLUMNS, id`."""
    return AuditEntry(row[0], row[1], row[2], row[3], AuditAction(row[4]), *row[5:])


def _insert_audit(db: Database, e: AuditEntry) -> None:
    db.execute(f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", audit_row(e))


def _select_preset(db: Database, workspace_key: str, name: str) -> CustomPreset | None:
    row = db.execute(
        f"SELECT {PRESET_COLUMNS} FROM presets WHERE workspace_key = ? AND name = ?", (workspace_key, name)
    ).fetchone()
    return CustomPreset(*row) if row else None


def _end_answer(db: Database, a: AnswerRecord) -> None:
    db.execute(
        f"INSERT INTO answers ({ANSWER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (answer_id) DO UPDATE SET state = excluded.state",
        (a.answer_id, a.scope_key, a.workspace_key, a.asker_id, a.model, a.preset, a.started_at, a.state),
    )


def _select_conversation(db: Database, scope_key: str) -> ConversationRecord | None:
    row = db.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE scope_key = ?", (scope_key,)
    ).fetchone()
    return ConversationRecord(*row) if row else None


def make_private(path: Path) -> None:
    """Make the data directory (0700) if absent, and the database file and its -wal and -shm files 0600,
    before SQLite opens them: SQLite gives new -wal and -shm files the database file's mode, and files
    an older version left readable to others are made private too. A directory that exists is not ours
    to change."""
    if not path.parent.exists():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
        return
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & ~FILE_MODE:
                os.chmod(file, FILE_MODE)
                log.warning("%s was readable by others (mode %03o); it is now 0600", file, mode)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            log.warning("%s is readable by others and cannot be made private: %s", file, exc)


def _open_database(path: Path) -> Database:
    if str(path) != ":memory:":
        make_private(path)
    # isolation_level=None: no implicit transactions; writes are grouped by write_transaction only.
    conn = sqlite3.connect(str(path), isolation_level=None, cached_statements=256)
    try:
        # No sqlite-utils plugins: nothing outside this package should alter our connection.
        db = Database(conn, execute_plugins=False, recursive_triggers=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.enable_wal()
        # In WAL mode NORMAL keeps every commit across a killed process; only power loss can cost the last.
        db.execute("PRAGMA synchronous = NORMAL")
        migrate(db, label=str(path))
    except BaseException:
        conn.close()
        raise
    return db


def _close_database(db: Database) -> None:
    try:
        db.execute("PRAGMA optimize")  # SQLite's advice for long-lived connections, at close
    finally:
        db.close()


class SQLiteStore(Store):
    """Open with `await SQLiteStore.open(path)`; close with `await store.close()`."""

    backend: Backend = "sqlite"

    def __init__(self, worker: DatabaseThread, transcript_days: int, cache_size: int) -> None:
        self._worker = worker
        self._transcript_days = transcript_days
        self._close_task: asyncio.Task[None] | None = None
        self._turns = ScopeQueue()
        self._rates = SlidingWindows()
        self._listeners: list[Callable[[Change], None]] = []
        self._probe = RecentProbe(self._touch)
        self._cache_size = cache_size
        # The stored state of recently used scopes, kept equal to what the queued writes leave behind.
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        # The latest read in flight per scope; a write drops it, so an older read's result is not cached.
        self._reads: dict[str, asyncio.Future[_Cached]] = {}

    @classmethod
    async def open(
        cls, path: str | Path, *, transcript_days: int = 30, cache_size: int = CACHE_SIZE
    ) -> SQLiteStore:
        """Open (creating if needed) and migrate the database at `path`. `cache_size` conversations are
        kept in memory (0: none)."""
        if transcript_days < 0:
            raise ValueError("transcript_days must be 0 (never store) or more")
        path = Path(path)
        worker = DatabaseThread(THREAD_NAME)
        try:
            await worker.start(lambda: _open_database(path))
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        return cls(worker, transcript_days, cache_size)

    async def close(self) -> None:
        """Finish the work already queued, close the connection and stop the worker thread."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._worker.stop(_close_database))
        await self._close_task

    async def ping(self) -> bool:
        if self._close_task is not None:
            return False
        return await self._probe()

    async def _touch(self) -> bool:
        def touch(db: Database) -> None:
            with write_transaction(db):
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_ping', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (repr(time.time()),),
                )

        try:
            await self._worker.submit(touch)
        except (sqlite3.Error, StoreError):
            return False
        return True

    def scope_turn(self, scope_key: str) -> ScopeTurn:
        return self._turns.turn(scope_key)

    # conversations

    async def get_conversation(self, scope_key: str) -> ConversationRecord | None:
        cache = self._cache
        if scope_key in cache:
            cache.move_to_end(scope_key)
            return cache[scope_key]
        read = self._worker.submit(lambda db: _select_conversation(db, scope_key))
        self._reads[scope_key] = read
        try:
            record = await read
        finally:
            # Still ours only if no write to this scope was queued after the read.
            fresh = self._reads.get(scope_key) is read
            if fresh:
                del self._reads[scope_key]
        if fresh:
            self._remember(scope_key, record)
        return record

    async def save_conversation(self, record: ConversationRecord) -> bool:
        row = conversation_row(record)
        return await self._conversation_write(
            record.scope_key, lambda db: db.execute(_SAVE_CONVERSATION, row).rowcount == 1, record
        )

    def queue_turn(
        self,
        conversation: ConversationRecord,
        transcript: TranscriptEntry | None,
        answer: AnswerRecord | None = None,
    ) -> Awaitable[bool]:
        """Writes run in submission order, so anything submitted later (a reset, the next turn) sees it.
        Turns queued together, from several scopes, share one commit."""
        conversation_row_ = conversation_row(conversation)
        transcript_row_ = (
            transcript_row(transcript) if transcript is not None and self._transcript_days else None
        )

        def record(db: Database) -> bool:
            written = db.execute(_SAVE_CONVERSATION, conversation_row_).rowcount == 1
            if transcript_row_ is not None:
                db.execute(_INSERT_TRANSCRIPT, transcript_row_)
            if answer is not None:
                _end_answer(db, answer)
            return bool(written)

        return self._conversation_write(conversation.scope_key, record, conversation, grouped=True)

    async def reset_conversation(self, scope_key: str) -> bool:
        now = time.time()

        def reset(db: Database) -> bool:
            with write_transaction(db):
                live = db.execute(
                    "SELECT 1 FROM conversations WHERE scope_key = ? AND upstream_id IS NOT NULL",
                    (scope_key,),
                ).fetchone()
                db.execute(_RESET_CONVERSATION, (scope_key, now))
            return live is not None

        after: _Cached | _Unknown = UNKNOWN
        if scope_key in self._cache:
            before = self._cache[scope_key]
            after = (
                ConversationRecord(scope_key, None, "", "", 0, now, now, 1)
                if before is None
                else dataclasses.replace(
                    before, upstream_id=None, turns=0, updated_at=now, epoch=before.epoch + 1
                )
            )
        return await self._write(scope_key, reset, after)

    def _conversation_write(
        self,
        scope_key: str,
        write: Callable[[Database], bool],
        record: ConversationRecord,
        *,
        grouped: bool = False,
    ) -> asyncio.Future[bool]:
        after: _Cached | _Unknown = UNKNOWN
        if scope_key in self._cache:
            before = self._cache[scope_key]
            # The same rule the statement applies: no row counts as epoch 0.
            after = record if (before.epoch if before is not None else 0) == record.epoch else before
        return self._write(scope_key, write, after, grouped=grouped)

    def _write(
        self,
        scope_key: str,
        write: Callable[[Database], bool],
        after: _Cached | _Unknown,
        *,
        grouped: bool = False,
    ) -> asyncio.Future[bool]:
        """Queue a write to one scope's conversation, and bring the cache to the state it leaves behind
        (`after`, or UNKNOWN: not cached)."""
        future = self._worker.submit(write, grouped=grouped)
        self._reads.pop(scope_key, None)
        if isinstance(after, _Unknown):
            self._cache.pop(scope_key, None)
        else:
            self._remember(scope_key, after)
            future.add_done_callback(lambda f: self._forget_if_failed(scope_key, f))
        return future

    def _remember(self, scope_key: str, state: _Cached) -> None:
        if not self._cache_size:
            return
        cache = self._cache
        cache[scope_key] = state
        cache.move_to_end(scope_key)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)

    def _forget_if_failed(self, scope_key: str, future: asyncio.Future[bool]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._cache.pop(scope_key, None)

    # settings

    async def get_settings(self, keys: Sequence[str]) -> dict[str, ScopeSettings]:
        wanted = tuple(dict.fromkeys(keys))
        if not wanted:
            return {}

        def get(db: Database) -> dict[str, ScopeSettings]:
            marks = ", ".join("?" * len(wanted))
            rows = db.execute(
                f"SELECT key, preset, model, updated_at, tools FROM scope_settings WHERE key IN ({marks})",
                wanted,
            ).fetchall()
            return {row[0]: ScopeSettings(*row) for row in rows}

        return await self._worker.submit(get)

    async def set_setting(
        self, key: str, field: SettingField, value: str | None, *, audit: AuditEntry
    ) -> str | None:
        if field not in SETTING_FIELDS:
            raise ValueError(f"unknown setting {field!r}")

        def setting(db: Database) -> str | None:
            with write_transaction(db):
                row = db.execute(f"SELECT {field} FROM scope_settings WHERE key = ?", (key,)).fetchone()
                old: str | None = row[0] if row else None
                db.execute(
                    f"INSERT INTO scope_settings (key, {field}, updated_at) VALUES (?, ?, ?) "
                    f"ON CONFLICT (key) DO UPDATE SET {field} = excluded.{field}, "
                    "updated_at = excluded.updated_at",
                    (key, value, audit.at),
                )
                _insert_audit(db, dataclasses.replace(audit, old=old))
            return old

        old = await self._worker.submit(setting)
        self._changed("setting", key)
        return old

    # custom presets

    async def list_presets(self, workspace_key: str) -> list[CustomPreset]:
        def listing(db: Database) -> list[CustomPreset]:
            rows = db.execute(
                f"SELECT {PRESET_COLUMNS} FROM presets WHERE workspace_key = ? ORDER BY name",
                (workspace_key,),
            ).fetchall()
            return [CustomPreset(*row) for row in rows]

        return await self._worker.submit(listing)

    async def get_preset(self, workspace_key: str, name: str) -> CustomPreset | None:
        return await self._worker.submit(lambda db: _select_preset(db, workspace_key, name))

    async def count_presets(self, workspace_key: str) -> int:
        def count(db: Database) -> int:
            row = db.execute(
                "SELECT count(*) FROM presets WHERE workspace_key = ?", (workspace_key,)
            ).fetchone()
            return int(row[0])

        return await self._worker.submit(count)

    async def put_preset(self, preset: CustomPreset, *, audit: AuditEntry) -> CustomPreset | None:
        p = preset

        def put(db: Database) -> CustomPreset | None:
            with write_transaction(db):
                old = _select_preset(db, p.workspace_key, p.name)
                created_at = old.created_at if old else p.created_at
                db.execute(
                    f"INSERT INTO presets ({PRESET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (workspace_key, name) DO UPDATE SET description = excluded.description, "
                    "prompt = excluded.prompt, author_id = excluded.author_id, "
                    "created_at = excluded.created_at, updated_at = excluded.updated_at",
                    (p.workspace_key, p.name, p.description, p.prompt, p.author_id, created_at, p.updated_at),
                )
                _insert_audit(db, audit)
            return old

        old = await self._worker.submit(put)
        self._changed("preset", p.workspace_key)
        return old

    async def delete_preset(self, workspace_key: str, name: str, *, audit: AuditEntry) -> CustomPreset | None:
        def delete(db: Database) -> CustomPreset | None:
            with write_transaction(db):
                old = _select_preset(db, workspace_key, name)
                if old is None:
                    return None
                db.execute("DELETE FROM presets WHERE workspace_key = ? AND name = ?", (workspace_key, name))
                _insert_audit(db, audit)
            return old

        old = await self._worker.submit(delete)
        if old is not None:
            self._changed("preset", workspace_key)
        return old

    # audit

    async def list_audit(self, workspace_key: str, limit: int = 20, offset: int = 0) -> list[AuditEntry]:
        def listing(db: Database) -> list[AuditEntry]:
            rows = db.execute(
                f"SELECT {AUDIT_COLUMNS}, id FROM audit WHERE workspace_key = ? "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (workspace_key, max(limit, 0), max(offset, 0)),
            ).fetchall()
            return [audit_from_row(row) for row in rows]

        return await self._worker.submit(listing)

    async def count_audit(self, workspace_key: str) -> int:
        def count(db: Database) -> int:
            return int(
                db.execute("SELECT count(*) FROM audit WHERE workspace_key = ?", (workspace_key,)).fetchone()[
                    0
                ]
            )

        return await self._worker.submit(count)

    # housekeeping, de-duplication, rate limits, change notifications

    async def prune(self, now: float | None = None) -> int:
        at = time.time() if now is None else now
        transcripts_before = (
            at - self._transcript_days * DAY_SECONDS if self._transcript_days else float("inf")
        )

        def prune(db: Database) -> int:
            with write_transaction(db):
                deleted = db.execute(
                    "DELETE FROM transcripts WHERE answered_at < ?", (transcripts_before,)
                ).rowcount
                deleted += db.execute(
                    "DELETE FROM seen_events WHERE seen_at < ?", (at - SEEN_EVENT_SECONDS,)
                ).rowcount
                deleted += db.execute(
                    "DELETE FROM answers WHERE started_at < ?", (at - ANSWER_DAYS * DAY_SECONDS,)
                ).rowcount
                deleted += db.execute(
                    csql.PRUNE_USAGE, (at - csql.USAGE_DAYS * DAY_SECONDS, at - at % DAY_SECONDS)
                ).rowcount
                deleted += db.execute(csql.PRUNE_ENGAGED, (at - csql.ENGAGED_DAYS * DAY_SECONDS,)).rowcount
                deleted += db.execute(csql.PRUNE_COUNTERS, (csql.day_of(at),)).rowcount
                deleted += db.execute(csql.PRUNE_HOLDS, (at,)).rowcount
            return int(deleted)

        deleted = await self._worker.submit(prune)
        self._rates.forget_idle()
        return deleted

    async def first_sighting(self, key: str) -> bool:
        seen_at = time.time()

        def sight(db: Database) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO seen_events (key, seen_at) VALUES (?, ?)", (key, seen_at)
            )
            return cursor.rowcount == 1

        return await self._worker.submit(sight)

    async def take_rate(self, checks: Sequence[RateCheck]) -> RateVerdict:
        return self._rates.take(checks)

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    # admins' controls, usage and engaged threads (issue 17)

    async def get_controls(self, keys: Sequence[str]) -> list[Control]:
        wanted = tuple(dict.fromkeys(keys))
        if not wanted:
            return []
        rows = await self._worker.submit(
            lambda db: db.execute(csql.controls_select(len(wanted)), wanted).fetchall()
        )
        return [csql.control(row) for row in rows]

    async def controls_set_to(self, name: str, value: str) -> list[Control]:
        rows = await self._worker.submit(lambda db: db.execute(csql.CONTROLS_NAMED, (name, value)).fetchall())
        return [csql.control(row) for row in rows]

    async def set_control(self, key: str, name: str, value: str | None, *, audit: AuditEntry) -> str | None:
        def set_(db: Database) -> str | None:
            with write_transaction(db):
                row = db.execute(csql.SELECT_CONTROL, (key, name)).fetchone()
                old: str | None = row[0] if row else None
                if value is None:
                    db.execute(csql.DELETE_CONTROL, (key, name))
                else:
                    db.execute(csql.UPSERT_CONTROL, (key, name, value, audit.at))
                _insert_audit(db, dataclasses.replace(audit, old=old))
            return old

        old = await self._worker.submit(set_)
        self._changed("control", key)
        return old

    async def record_usage(self, usage: UsageRecord, hold: UsageHold | None = None) -> None:
        row = csql.usage_row(usage)

        def record(db: Database) -> None:
            db.execute(csql.INSERT_USAGE, row)
            for added in csql.counter_additions(usage):
                db.execute(csql.ADD_TO_COUNTER, added)
            if hold is not None:
                _end_hold(db, hold)

        # Grouped: committed with the writes queued beside it, all of its own or none.
        await self._worker.submit(record, grouped=True)

    async def count_usage(
        self, workspace_key: str, channel_key: str, user_id: str, day: float, now: float
    ) -> UsageCount:
        keys = csql.counter_keys(workspace_key, channel_key, user_id)
        return await self._worker.submit(lambda db: _count_usage(db, keys, day, now))

    async def hold_usage(
        self, hold: UsageHold, now: float, admit: Callable[[UsageCount], bool]
    ) -> tuple[bool, UsageCount]:
        keys = csql.hold_keys(hold)

        def take(db: Database) -> tuple[bool, UsageCount]:
            # IMMEDIATE: every process on the file admits one question at a time.
            with write_transaction(db):
                count = _count_usage(db, keys, hold.day, now)
                if not admit(count):
                    return False, count
                for key in keys:
                    db.execute(csql.INSERT_HOLD, (key, hold.id, hold.expires))
            return True, count

        return await self._worker.submit(take)

    async def release_usage(self, hold: UsageHold) -> None:
        await self._worker.submit(lambda db: _end_hold(db, hold), grouped=True)

    async def usage_totals(self, workspace_key: str, since: float, top: int = 5) -> UsageTotals:
        def totals(db: Database) -> UsageTotals:
            total = db.execute(csql.TOTAL_USAGE, (workspace_key, since)).fetchone()
            users = db.execute(csql.TOP_USERS, (workspace_key, since, top)).fetchall()
            channels = db.execute(csql.TOP_CHANNELS, (workspace_key, since, top)).fetchall()
            return csql.usage_totals(total, users, channels)

        return await self._worker.submit(totals)

    async def engage_thread(self, thread_key: str, channel_key: str, at: float) -> None:
        await self._worker.submit(lambda db: db.execute(csql.ENGAGE, (thread_key, channel_key, at)))

    async def is_engaged(self, thread_key: str) -> bool:
        row = await self._worker.submit(lambda db: db.execute(csql.IS_ENGAGED, (thread_key,)).fetchone())
        return row is not None

    async def disengage_threads(self, channel_key: str) -> int:
        return int(await self._worker.submit(lambda db: db.execute(csql.DISENGAGE, (channel_key,)).rowcount))

    async def forget_user(
        self, workspace_key: str, user_id: str, day_start: float, *, audit: AuditEntry
    ) -> tuple[int, int]:
        def forget(db: Database) -> tuple[int, int]:
            with write_transaction(db):
                transcripts = int(
                    db.execute(csql.FORGET_TRANSCRIPTS, (user_id, workspace_key, workspace_key)).rowcount
                )
                old = int(db.execute(csql.FORGET_OLD_USAGE, (workspace_key, user_id, day_start)).rowcount)
                today = int(db.execute(csql.FORGET_TODAY_USAGE, (workspace_key, user_id)).rowcount)
                db.execute(csql.FORGET_OLD_COUNTER, (csql.user_counter(workspace_key, user_id), day_start))
                _insert_audit(db, dataclasses.replace(audit, new=csql.forgotten(transcripts, old, today)))
            return transcripts, old + today

        return await self._worker.submit(forget)

    def _changed(self, kind: ChangeKind, key: str) -> None:
        change = Change(kind, key)
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("a change listener failed")

    # answers in flight, stop requests and feedback (issue 18)

    async def start_answer(self, answer: AnswerRecord) -> None:
        a = answer

        def start(db: Database) -> None:
            with write_transaction(db):
                db.execute(
                    f"INSERT OR REPLACE INTO answers ({ANSWER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        a.answer_id,
                        a.scope_key,
                        a.workspace_key,
                        a.asker_id,
                        a.model,
                        a.preset,
                        a.started_at,
                        a.state,
                    ),
                )

        await self._worker.submit(start)

    async def get_answer(self, answer_id: str) -> AnswerRecord | None:
        def get(db: Database) -> AnswerRecord | None:
            row = db.execute(
                f"SELECT {ANSWER_COLUMNS} FROM answers WHERE answer_id = ?", (answer_id,)
            ).fetchone()
            return AnswerRecord(*row) if row else None

        return await self._worker.submit(get)

    async def request_stop(self, answer_id: str) -> bool:
        def stop(db: Database) -> bool:
            with write_transaction(db):
                cursor = db.execute(
                    "UPDATE answers SET state = 'stopping' WHERE answer_id = ? AND state = 'running'",
                    (answer_id,),
                )
            return cursor.rowcount == 1

        stopping = await self._worker.submit(stop)
        if stopping:
            self._changed("stop", answer_id)
        return stopping

    async def running_answer(self, scope_key: str) -> str | None:
        def running(db: Database) -> str | None:
            row = db.execute(
                "SELECT answer_id FROM answers WHERE scope_key = ? AND state = 'running' "
                "ORDER BY started_at DESC LIMIT 1",
                (scope_key,),
            ).fetchone()
            return str(row[0]) if row else None

        return await self._worker.submit(running)

    async def stop_requests(self, answer_ids: Sequence[str]) -> list[str]:
        ids = list(answer_ids)

        def requested(db: Database) -> list[str]:
            found: list[str] = []
            # In slices: SQLite limits the number of parameters of one statement.
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ", ".join("?" * len(part))
                rows = db.execute(
                    f"SELECT answer_id FROM answers WHERE state = 'stopping' AND answer_id IN ({marks})", part
                ).fetchall()
                found += [str(row[0]) for row in rows]
            return found

        return await self._worker.submit(requested) if ids else []

    def end_answer(self, answer: AnswerRecord) -> Awaitable[None]:
        return self._worker.submit(lambda db: _end_answer(db, answer), grouped=True)

    async def vote(self, answer: AnswerRecord, user_id: str, vote: int, at: float) -> int | None:
        a = answer

        def record(db: Database) -> int | None:
            with write_transaction(db):
                row = db.execute(
                    "SELECT vote FROM feedback WHERE answer_id = ? AND user_id = ?", (a.answer_id, user_id)
                ).fetchone()
                db.execute(
                    "INSERT INTO feedback (answer_id, user_id, workspace_key, model, preset, vote, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (answer_id, user_id) "
                    "DO UPDATE SET vote = excluded.vote, at = excluded.at",
                    (a.answer_id, user_id, a.workspace_key, a.model, a.preset, vote, at),
                )
            return int(row[0]) if row else None

        return await self._worker.submit(record)

    async def feedback(self, workspace_key: str, since: float) -> list[FeedbackTally]:
        def tally(db: Database) -> list[FeedbackTally]:
            rows = db.execute(
                "SELECT model, preset, sum(vote > 0), sum(vote < 0) FROM feedback "
                "WHERE workspace_key = ? AND at >= ? GROUP BY model, preset "
                "ORDER BY count(*) DESC, model, preset",
                (workspace_key, since),
            ).fetchall()
            return [FeedbackTally(str(m), str(p), int(up), int(down)) for m, p, up, down in rows]

        return await self._worker.submit(tally)
    # --- AI Chat v2 (issue 16): conversations to delete at the service, questions asked back -------

    async def queue_delete(self, item: PendingDelete) -> None:
        args = (item.conversation_id, item.model, item.attempts, item.next_at)
        await self._worker.submit(
            lambda db: db.execute(
                "INSERT INTO upstream_deletes (conversation_id, model, attempts, next_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (conversation_id) DO NOTHING",
                args,
            )
        )

    async def due_deletes(self, now: float, limit: int = 20) -> list[PendingDelete]:
        def due(db: Database) -> list[PendingDelete]:
            rows = db.execute(
                "SELECT conversation_id, model, attempts, next_at FROM upstream_deletes "
                "WHERE next_at <= ? ORDER BY next_at LIMIT ?",
                (now, limit),
            ).fetchall()
            return [PendingDelete(*row) for row in rows]

        return await self._worker.submit(due)

    async def finish_delete(self, conversation_id: str) -> None:
        await self._worker.submit(
            lambda db: db.execute(
                "DELETE FROM upstream_deletes WHERE conversation_id = ?", (conversation_id,)
            )
        )

    async def retry_delete(self, conversation_id: str, next_at: float) -> None:
        await self._worker.submit(
            lambda db: db.execute(
                "UPDATE upstream_deletes SET attempts = attempts + 1, next_at = ? WHERE conversation_id = ?",
                (next_at, conversation_id),
            )
        )

    async def save_question(self, question: PendingQuestion) -> None:
        row = question_row(question)
        await self._worker.submit(
            lambda db: db.execute(
                f"INSERT OR REPLACE INTO pending_questions ({QUESTION_COLUMNS}) VALUES ({_QUESTION_MARKS})",
                row,
            )
        )

    async def get_question(self, question_id: str) -> PendingQuestion | None:
        def get(db: Database) -> PendingQuestion | None:
            found = db.execute(
                f"SELECT {QUESTION_COLUMNS} FROM pending_questions WHERE id = ?", (question_id,)
            ).fetchone()
            return pending_question(found) if found else None

        return await self._worker.submit(get)

    async def latest_question(self, scope_key: str) -> PendingQuestion | None:
        def latest(db: Database) -> PendingQuestion | None:
            found = db.execute(
                f"SELECT {QUESTION_COLUMNS} FROM pending_questions WHERE scope_key = ? "
                "ORDER BY created_at DESC LIMIT 1",
                (scope_key,),
            ).fetchone()
            return pending_question(found) if found else None

        return await self._worker.submit(latest)

    async def answer_question(self, question_id: str) -> bool:
        def answer(db: Database) -> bool:
            cursor = db.execute(
                "UPDATE pending_questions SET answered = 1 WHERE id = ? AND answered = 0", (question_id,)
            )
            return bool(cursor.rowcount == 1)

        return await self._worker.submit(answer)

    async def show_question(self, question_id: str, message: str) -> None:
        await self._worker.submit(
            lambda db: db.execute(
                "UPDATE pending_questions SET message = ? WHERE id = ?", (message, question_id)
            )
        )

    async def skip_questions(self, scope_key: str) -> list[str]:
        def skip(db: Database) -> list[str]:
            # Every new question asks this and almost always nothing waits: a read first, so no write
            # lock is taken for nothing.
            if db.execute(_WAITING_BUTTONS, (scope_key,)).fetchone() is None:
                return []
            with write_transaction(db):
                rows = db.execute(_WAITING_BUTTONS, (scope_key,)).fetchall()
                for row in rows:
                    db.execute("UPDATE pending_questions SET message = NULL WHERE id = ?", (row[0],))
            return [str(row[1]) for row in rows]

        return await self._worker.submit(skip)


_WAITING_BUTTONS = (
    "SELECT id, message FROM pending_questions WHERE scope_key = ? AND answered = 0 AND message IS NOT NULL"
)

QUESTION_COLUMNS = (
    "id, scope_key, conversation_id, turns, tool_id, question, options, asker_id, created_at, answered"
)
_QUESTION_MARKS = ", ".join("?" * 10)


def question_row(q: PendingQuestion) -> tuple[Any, ...]:
    options = json.dumps(list(q.options))
    return (
        q.id,
        q.scope_key,
        q.conversation_id,
        q.turns,
        q.tool_id,
        q.question,
        options,
        q.asker_id,
        q.created_at,
        int(q.answered),
    )


def pending_question(row: Sequence[Any]) -> PendingQuestion:
    id_, scope_key, conversation_id, turns, tool_id, question, options, asker_id, at, answered = row
    return PendingQuestion(
        id_,
        scope_key,
        conversation_id,
        turns,
        tool_id,
        question,
        tuple(json.loads(options)),
        asker_id,
        at,
        bool(answered),
    )


def _count_usage(db: Database, keys: tuple[str, str, str], day: float, now: float) -> UsageCount:
    found = {}
    for key in keys:
        row = db.execute(csql.READ_COUNTER, (key, day)).fetchone()
        held = db.execute(csql.LIVE_HOLDS, (key, now)).fetchone()
        questions, tokens = row if row is not None else (0, 0)
        found[key] = (int(questions), int(tokens), int(held[0]))
    return csql.counted(keys, found)


def _end_hold(db: Database, hold: UsageHold) -> None:
    for key in csql.hold_keys(hold):
        db.execute(csql.DELETE_HOLD, (key, hold.id))
