"""`acechat db copy`: every table of the SQLite file into a PostgreSQL database.

The target's schema is created or migrated first. All of the copy is one transaction, under the lock
migrations take. A target that already holds data is refused unless the operator says how to combine:

- merge: for a row with a key in both (conversations, settings, presets, event ids), the newer by the
  row's own time wins, and a conversation's reset count never goes back; audit entries and transcripts
  have no key of their own, so a row equal to one already there is skipped;
- replace: the target's rows are deleted first; what the file holds is what the target then holds.

What will happen is announced before it is done, and the copy is written to the audit log of every
workspace it touched. Rate-limit counters are not in the file (SQLite keeps them in memory).
"""

from __future__ import annotations

import asyncio
import enum
import getpass
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acechat.storage import controls_sql as csql
from acechat.storage import sqlite_schema
from acechat.storage.errors import StoreError
from acechat.storage.postgres import PostgresStore
from acechat.storage.postgres_connections import safe_label
from acechat.storage.postgres_notify import CHANNEL
from acechat.storage.records import EVERYTHING, AuditAction
from acechat.storage.sqlite import make_private

BATCH = 5_000
ACTOR = "acechat db copy"


class CopyMode(enum.StrEnum):
    MERGE = "merge"
    REPLACE = "replace"


class TargetNotEmpty(StoreError):
    """The target holds data and the operator did not say whether to merge or replace."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    in_file: int
    inserted: int
    updated: int

    def describe(self) -> str:
        kept = self.in_file - self.inserted - self.updated
        rest = f", {kept} kept as they were" if kept > 0 and self.table not in _ORDERED else ""
        return f"{self.table}: {self.in_file} in the file, {self.inserted} new, {self.updated} updated{rest}"


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # empty: no key of its own; rows equal in `same` are the same row
    same: tuple[str, ...] = ()
    time: str = ""  # the row's own time, for a merge
    never_back: tuple[str, ...] = ()  # counters a merge keeps at their highest

    def merge(self, mode: CopyMode | None) -> str:
        """INSERT ... SELECT from the staging table `src`, returning one row per row written, with
        `inserted` true for a new row."""
        cols = ", ".join(self.columns)
        if not self.key:
            match = " AND ".join(f"t.{c} IS NOT DISTINCT FROM s.{c}" for c in self.same)
            return (
                f"INSERT INTO {self.name} ({cols}) SELECT {', '.join(f's.{c}' for c in self.columns)} "
                f"FROM src s WHERE NOT EXISTS (SELECT 1 FROM {self.name} t WHERE {match}) "
                "ORDER BY s.source_id RETURNING true AS inserted"
            )
        rest = [c for c in self.columns if c not in self.key]
        sets = [
            f"{c} = greatest(t.{c}, excluded.{c})"
            if mode is CopyMode.MERGE and c in self.never_back
            else f"{c} = excluded.{c}"
            for c in rest
        ]
        changed = ", ".join(f"t.{c}" for c in rest)
        incoming = ", ".join(f"excluded.{c}" for c in rest)
        newer = (
            f" AND coalesce(excluded.{self.time}, 0) > coalesce(t.{self.time}, 0)"
            if mode is CopyMode.MERGE
            else ""
        )
        return (
            f"INSERT INTO {self.name} AS t ({cols}) SELECT {cols} FROM src "
            f"ON CONFLICT ({', '.join(self.key)}) DO UPDATE SET {', '.join(sets)} "
            f"WHERE ({changed}) IS DISTINCT FROM ({incoming}){newer} RETURNING (xmax = 0) AS inserted"
        )


_CONVERSATION = ("scope_key", "upstream_id", "model", "preset", "turns", "created_at", "updated_at", "epoch")
_SETTINGS = ("key", "preset", "model", "updated_at", "tools")
_PRESETS = ("workspace_key", "name", "description", "prompt", "author_id", "created_at", "updated_at")
_AUDIT = ("workspace_key", "scope_key", "actor_id", "actor_name", "action", "old", "new", "at")
_TRANSCRIPTS = (
    "scope_key",
    "conversation_id",
    "author_id",
    "author_name",
    "question",
    "answer",
    "outcome",
    "trace_id",
    "asked_at",
    "answered_at",
)
_USAGE = (
    "workspace_key",
    "channel_key",
    "user_id",
    "model",
    "answer_chars",
    "upstream_seconds",
    "outcome",
    "tokens",
    "at",
    "forgotten",
)
_ANSWERS = ("answer_id", "scope_key", "workspace_key", "asker_id", "model", "preset", "started_at", "state")
_FEEDBACK = ("answer_id", "user_id", "workspace_key", "model", "preset", "vote", "at")
_QUESTIONS = (
    "id",
    "scope_key",
    "conversation_id",
    "turns",
    "tool_id",
    "question",
    "options",
    "asker_id",
    "created_at",
    "answered",
    "message",
)
TABLES = (
    _Table("conversations", _CONVERSATION, ("scope_key",), time="updated_at", never_back=("epoch",)),
    _Table("scope_settings", _SETTINGS, ("key",), time="updated_at"),
    _Table("presets", _PRESETS, ("workspace_key", "name"), time="updated_at"),
    # Audit and transcripts keep the file's order (its ids), so "newest first" stays true.
    _Table("audit", _AUDIT, (), same=_AUDIT),
    _Table(
        "transcripts",
        _TRANSCRIPTS,
        (),
        same=("answered_at", "scope_key", "asked_at", "author_id", "question"),
    ),
    _Table("seen_events", ("key", "seen_at"), ("key",), time="seen_at"),
    # admins' controls, usage and engaged threads (issue 17)
    _Table("controls", ("key", "name", "value", "updated_at"), ("key", "name"), time="updated_at"),
    _Table("usage", _USAGE, (), same=_USAGE),
    _Table("engaged_threads", ("thread_key", "channel_key", "at"), ("thread_key",), time="at"),
    # Answers' owners and votes (issue 18): buttons keep working, ratings keep counting, after the move.
    # An answer's row only changes state; a later vote replaces an earlier one.
    _Table("answers", _ANSWERS, ("answer_id",), time="started_at"),
    _Table("feedback", _FEEDBACK, ("answer_id", "user_id"), time="at"),
    # AI Chat v2 (issue 16)
    _Table(
        "upstream_deletes",
        ("conversation_id", "model", "attempts", "next_at"),
        ("conversation_id",),
        time="next_at",
        never_back=("attempts",),
    ),
    _Table("pending_questions", _QUESTIONS, ("id",), time="created_at", never_back=("answered",)),
)
_ORDERED = {"audit", "transcripts", "usage"}
# Every key that names a place, in the tables that have one; its first two parts are the workspace.
_PLACES = (
    "SELECT scope_key FROM conversations UNION SELECT key FROM scope_settings UNION "
    "SELECT workspace_key FROM presets UNION SELECT workspace_key FROM audit UNION "
    "SELECT scope_key FROM transcripts UNION SELECT key FROM controls UNION "
    "SELECT workspace_key FROM usage"
)
_WHAT = {
    CopyMode.MERGE: "merging: for a row in both, the newer by its own time is kept, and audit entries, "
    "transcripts and usage not there yet are added",
    CopyMode.REPLACE: "replacing: every row there is deleted first, then the file's rows are copied",
}


def _open_source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"no SQLite database at {path} (set ACECHAT_DB_PATH to the file to copy)")
    # Brought to the current schema first, as the bot would on start, so every column exists.
    from sqlite_utils import Database

    make_private(path)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        sqlite_schema.migrate(Database(conn, execute_plugins=False), label=str(path))
    except BaseException:
        conn.close()
        raise
    return conn


class _DryRun(Exception):
    """Ends the copy's transaction without committing it."""


async def copy_to_postgres(
    db_path: Path,
    url: str,
    *,
    mode: CopyMode | None = None,
    dry_run: bool = False,
    announce: Callable[[str], None] = lambda line: None,
) -> list[TableCopy]:
    """Copy every table of the SQLite file at `db_path` into the PostgreSQL database at `url`.

    A target that holds data raises TargetNotEmpty unless `mode` says how to combine. `announce` hears
    what is about to happen before it happens; with `dry_run` all of it is undone at the end."""
    try:
        source = await asyncio.to_thread(_open_source, db_path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {db_path}: {exc}") from exc
    label = safe_label(url)
    results: list[TableCopy] = []
    try:
        target = await PostgresStore.connect(url, pool_size=1, listen=False)
        try:
            async with target.exclusive_transaction() as conn:
                held = {
                    table.name: await conn.fetchval(f"SELECT count(*) FROM {table.name}") for table in TABLES
                }
                if any(held.values()) and mode is None:
                    raise TargetNotEmpty(
                        f"{label} already holds acechat data ({_counts(held)}); copying over it would undo "
                        "what changed there since. Say how to combine: --merge (for a row in both, the "
                        "newer by its own time wins) or --replace (its rows are deleted first); "
                        "--dry-run shows the outcome and changes nothing"
                    )
                if any(held.values()) and mode is not None:
                    announce(f"{label} holds {_counts(held)}; {_WHAT[mode]}")
                else:
                    announce(f"{label} holds no acechat data; copying {db_path} into it")
                workspaces = _workspaces(await asyncio.to_thread(_places, source))
                if mode is CopyMode.REPLACE:
                    workspaces |= _workspaces(row[0] for row in await conn.fetch(_PLACES))
                    for table in TABLES:
                        await conn.execute(f"DELETE FROM {table.name}")
                results = [await _copy_table(source, conn, table, mode) for table in TABLES]
                # The quotas' day counters, rebuilt from the usage rows now there (holds are questions
                # in flight: not copied).
                await conn.execute("DELETE FROM usage_counts")
                await conn.execute(csql.backfill_counters(csql.POSTGRES_DAY))
                await _audit(conn, workspaces, mode, db_path, sum(held.values()))
                # Processes already running on the target drop whatever they cached.
                for kind in ("setting", "preset", "control"):
                    payload = json.dumps({"origin": "copy", "kind": kind, "key": EVERYTHING})
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
        finally:
            await target.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {db_path}: {exc}") from exc
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot copy into {label}: {exc}") from exc
    finally:
        source.close()
    return results


def _counts(held: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in held.items() if count)


def _places(source: sqlite3.Connection) -> list[str]:
    return [row[0] for row in source.execute(_PLACES)]


def _workspaces(keys: Any) -> set[str]:
    return {":".join(key.split(":")[:2]) for key in keys if key}


async def _audit(conn: Any, workspaces: set[str], mode: CopyMode | None, db_path: Path, held: int) -> None:
    """One entry in each workspace's audit log: an operator changed its state from outside the bot."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's user, say)
        who = "operator"
    done = f"{mode or 'copy'} from {db_path}"
    before = f"{held} rows" if held else "empty"
    rows = [
        (w, w, ACTOR, who, AuditAction.DATABASE_COPY.value, before, done, time.time())
        for w in sorted(workspaces)
    ]
    await conn.executemany(
        "INSERT INTO audit (workspace_key, scope_key, actor_id, actor_name, action, old, new, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rows,
    )


async def _copy_table(
    source: sqlite3.Connection, conn: Any, table: _Table, mode: CopyMode | None
) -> TableCopy:
    ordered = table.name in _ORDERED
    columns = (*table.columns, "source_id") if ordered else table.columns
    select = f"SELECT {', '.join(table.columns)}{', id' if ordered else ''} FROM {table.name}"
    await conn.execute(
        f"CREATE TEMP TABLE src AS SELECT {', '.join(table.columns)}"
        f"{', 0::bigint AS source_id' if ordered else ''} FROM {table.name} WITH NO DATA"
    )
    cursor = source.execute(select)
    in_file = 0
    while rows := await asyncio.to_thread(cursor.fetchmany, BATCH):
        in_file += len(rows)
        await conn.copy_records_to_table("src", records=rows, columns=list(columns))
    written = await conn.fetch(table.merge(mode))
    await conn.execute("DROP TABLE src")
    inserted = sum(1 for row in written if row["inserted"])
    return TableCopy(table.name, in_file, inserted, len(written) - inserted)
