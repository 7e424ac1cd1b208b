"""The async face of the database: every sqlite call runs on one dedicated worker thread.

sqlite-utils (and sqlite3 under it) is synchronous. The connection is created on the worker thread and
keeps `check_same_thread`, so a stray call from the event loop fails loudly instead of blocking it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from core.serial import ScopeQueue
from storage.errors import StoreError
from storage.records import (
    AuditEntry,
    Change,
    ConversationRecord,
    CustomPreset,
    RateCheck,
    RateVerdict,
    ScopeSettings,
    TranscriptEntry,
)
from storage.schema import migrate, write_transaction
from storage.worker import DatabaseThread

THREAD_NAME = "acechat-db"
BUSY_TIMEOUT_MS = 5000
SEEN_EVENT_SECONDS = 86400.0
DAY_SECONDS = 86400.0

_CONVERSATION_COLUMNS = "scope_key, upstream_id, model, preset, turns, created_at, updated_at"
_UPSERT_CONVERSATION = (
    f"INSERT INTO conversations ({_CONVERSATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (scope_key) DO UPDATE SET upstream_id = excluded.upstream_id, model = excluded.model, "
    "preset = excluded.preset, turns = excluded.turns, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at"
)
_INSERT_TRANSCRIPT = (
    "INSERT INTO transcripts (scope_key, conversation_id, author_id, author_name, question, answer, "
    "outcome, trace_id, asked_at, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_PRESET_COLUMNS = "workspace_key, name, description, prompt, author_id, created_at, updated_at"
_AUDIT_COLUMNS = "workspace_key, scope_key, actor_id, actor_name, action, old, new, at"
_SETTING_FIELDS = frozenset({"preset", "model"})


def _conversation_row(c: ConversationRecord) -> tuple[Any, ...]:
    return (c.scope_key, c.upstream_id, c.model, c.preset, c.turns, c.created_at, c.updated_at)


def _transcript_row(t: TranscriptEntry) -> tuple[Any, ...]:
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


def _insert_audit(db: Database, e: AuditEntry) -> None:
    db.execute(
        f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (e.workspace_key, e.scope_key, e.actor_id, e.actor_name, e.action, e.old, e.new, e.at),
    )


def _select_preset(db: Database, workspace_key: str, name: str) -> CustomPreset | None:
    row = db.execute(
        f"SELECT {_PRESET_COLUMNS} FROM presets WHERE workspace_key = ? AND name = ?", (workspace_key, name)
    ).fetchone()
    return CustomPreset(*row) if row else None


def _open_database(path: Path) -> Database:
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
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


class Store:
    """acechat's persistent state. Open with `await Store.open(path)`; close with `await store.close()`."""

    def __init__(self, path: Path, worker: DatabaseThread, transcript_days: int) -> None:
        self._path = path
        self._worker = worker
        self._transcript_days = transcript_days
        self._close_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[Change], None]] = []
        self._epochs: dict[str, int] = {}
        self._turns = ScopeQueue()
        self._hits: dict[str, deque[float]] = {}

    backend = "sqlite"

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _changed(self, kind: Literal["setting", "preset"], key: str) -> None:
        for listener in self._listeners:
            listener(Change(kind, key))

    def scope_turn(self, scope_key: str) -> Any:
        return self._turns.turn(scope_key)

    async def take_rate(self, checks: Sequence[RateCheck]) -> RateVerdict:
        now = time.monotonic()
        for index, check in enumerate(checks):
            hits = self._hits.setdefault(check.key, deque())
            while hits and hits[0] <= now - check.per_seconds:
                hits.popleft()
            if len(hits) >= check.count:
                return RateVerdict(index, hits[0] + check.per_seconds - now)
        for check in checks:
            self._hits[check.key].append(now)
        return RateVerdict(None, 0.0)

    async def reset_conversation(self, scope_key: str) -> bool:
        self._epochs[scope_key] = self._epochs.get(scope_key, 0) + 1
        return await self.forget_conversation(scope_key)

    async def count_audit(self, workspace_key: str) -> int:
        def count(db: Database) -> int:
            return int(
                db.execute("SELECT count(*) FROM audit WHERE workspace_key = ?", (workspace_key,)).fetchone()[
                    0
                ]
            )

        return await self._worker.submit(count)

    @classmethod
    async def open(cls, path: str | Path, *, transcript_days: int = 30) -> Store:
        """Open (creating if needed) and migrate the database at `path`."""
        if transcript_days < 0:
            raise ValueError("transcript_days must be 0 (never store) or more")
        path = Path(path)
        worker = DatabaseThread(THREAD_NAME)
        try:
            await worker.start(lambda: _open_database(path))
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        return cls(path, worker, transcript_days)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def transcript_days(self) -> int:
        return self._transcript_days

    async def close(self) -> None:
        """Finish the work already queued, close the connection and stop the worker thread."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._worker.stop(_close_database))
        await self._close_task

    async def ping(self) -> bool:
        """True if the database takes a write right now."""

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

    # conversations

    async def get_conversation(self, scope_key: str) -> ConversationRecord | None:
        epoch = self._epochs.get(scope_key, 0)

        def get(db: Database) -> ConversationRecord | None:
            row = db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE scope_key = ?", (scope_key,)
            ).fetchone()
            if row:
                return dataclasses.replace(ConversationRecord(*row), epoch=epoch)
            if epoch:
                return ConversationRecord(scope_key, None, "", "", 0, 0.0, 0.0, epoch)
            return None

        return await self._worker.submit(get)

    async def save_conversation(self, record: ConversationRecord) -> bool:
        if record.epoch != self._epochs.get(record.scope_key, 0):
            return False
        row = _conversation_row(record)

        def save(db: Database) -> None:
            db.execute(_UPSERT_CONVERSATION, row)

        await self._worker.submit(save)
        return True

    async def forget_conversation(self, scope_key: str) -> bool:
        def forget(db: Database) -> bool:
            return db.execute("DELETE FROM conversations WHERE scope_key = ?", (scope_key,)).rowcount > 0

        return await self._worker.submit(forget)

    async def record_turn(self, conversation: ConversationRecord, transcript: TranscriptEntry | None) -> None:
        """What a finished turn writes, in one thread hop and one transaction."""
        await self.queue_turn(conversation, transcript)

    def queue_turn(
        self, conversation: ConversationRecord, transcript: TranscriptEntry | None
    ) -> asyncio.Future[None]:
        """Queue a finished turn's write and return at once; the future settles when it is committed.

        Writes run in submission order, so anything submitted later (a reset, the next turn) sees it.
        """
        conversation_row = (
            _conversation_row(conversation)
            if conversation.epoch == self._epochs.get(conversation.scope_key, 0)
            else None
        )
        transcript_row = (
            _transcript_row(transcript) if transcript is not None and self._transcript_days else None
        )

        def record(db: Database) -> None:
            with write_transaction(db):
                if conversation_row is not None:
                    db.execute(_UPSERT_CONVERSATION, conversation_row)
                if transcript_row is not None:
                    db.execute(_INSERT_TRANSCRIPT, transcript_row)

        return self._worker.submit(record)

    # settings

    async def get_settings(self, keys: Sequence[str]) -> dict[str, ScopeSettings]:
        """The settings rows among `keys`; keys without a row are absent."""
        wanted = tuple(dict.fromkeys(keys))
        if not wanted:
            return {}

        def get(db: Database) -> dict[str, ScopeSettings]:
            marks = ", ".join("?" * len(wanted))
            rows = db.execute(
                f"SELECT key, preset, model, updated_at FROM scope_settings WHERE key IN ({marks})", wanted
            ).fetchall()
            return {row[0]: ScopeSettings(*row) for row in rows}

        return await self._worker.submit(get)

    async def set_setting(
        self, key: str, field: Literal["preset", "model"], value: str | None, *, audit: AuditEntry
    ) -> str | None:
        """Set one field (None = inherit) and log it; returns the old value.

        The audit row is written in the same transaction, its `old` set to the value actually replaced
        (a caller's earlier read may be stale)."""
        if field not in _SETTING_FIELDS:
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
                f"SELECT {_PRESET_COLUMNS} FROM presets WHERE workspace_key = ? ORDER BY name",
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
        """Create or replace a preset and log `audit` with it; returns the old one.

        An update keeps the original `created_at`."""
        p = preset

        def put(db: Database) -> CustomPreset | None:
            with write_transaction(db):
                old = _select_preset(db, p.workspace_key, p.name)
                created_at = old.created_at if old else p.created_at
                db.execute(
                    f"INSERT INTO presets ({_PRESET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (workspace_key, name) DO UPDATE SET description = excluded.description, "
                    "prompt = excluded.prompt, author_id = excluded.author_id, "
                    "created_at = excluded.created_at, updated_at = excluded.updated_at",
                    (p.workspace_key, p.name, p.description, p.prompt, p.author_id, created_at, p.updated_at),
                )
                _insert_audit(db, audit)
            return old

        old = await self._worker.submit(put)
        self._changed("preset", preset.workspace_key)
        return old

    async def delete_preset(self, workspace_key: str, name: str, *, audit: AuditEntry) -> CustomPreset | None:
        """Delete a preset and log `audit` with it; returns it, or None (and writes no audit) if absent."""

        def delete(db: Database) -> CustomPreset | None:
            with write_transaction(db):
                old = _select_preset(db, workspace_key, name)
                if old is None:
                    return None
                db.execute("DELETE FROM presets WHERE workspace_key = ? AND name = ?", (workspace_key, name))
                _insert_audit(db, audit)
            return old

        old = await self._worker.submit(delete)
        self._changed("preset", workspace_key)
        return old

    # audit

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._worker.submit(lambda db: _insert_audit(db, entry))

    async def list_audit(self, workspace_key: str, limit: int = 20, offset: int = 0) -> list[AuditEntry]:
        """The workspace's latest entries, newest first."""

        def listing(db: Database) -> list[AuditEntry]:
            rows = db.execute(
                f"SELECT {_AUDIT_COLUMNS}, id FROM audit WHERE workspace_key = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (workspace_key, max(limit, 0), max(offset, 0)),
            ).fetchall()
            return [AuditEntry(*row) for row in rows]

        return await self._worker.submit(listing)

    # transcripts and housekeeping

    async def add_transcript(self, entry: TranscriptEntry) -> None:
        """Store a transcript, unless transcripts are off (`transcript_days == 0`)."""
        if not self._transcript_days:
            return
        row = _transcript_row(entry)

        def add(db: Database) -> None:
            db.execute(_INSERT_TRANSCRIPT, row)

        await self._worker.submit(add)

    async def prune(self, now: float | None = None) -> int:
        """Delete transcripts past retention (all of them when transcripts are off) and seen events older
        than a day; returns the number of rows deleted."""
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
            return int(deleted)

        return await self._worker.submit(prune)

    async def first_sighting(self, key: str) -> bool:
        """Record a platform event key; True only the first time it is seen (re-deliveries give False)."""
        seen_at = time.time()

        def sight(db: Database) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO seen_events (key, seen_at) VALUES (?, ?)", (key, seen_at)
            )
            return cursor.rowcount == 1

        return await self._worker.submit(sight)
