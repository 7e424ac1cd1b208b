"""The versioned SQLite schema: migrations applied in order, the version kept in the `meta` table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sqlite_utils import Database

from acechat.storage import controls_sql
from acechat.storage.errors import SchemaVersionError

Migration = Callable[[Database], None]


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """One write transaction; IMMEDIATE takes the write lock up front so a read-then-write
    never fails half way with SQLITE_BUSY when another process (a tool, a second bot) writes too."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise


def _v1_settings_and_conversations(db: Database) -> None:
    # WITHOUT ROWID: every lookup is by a text key, so the table is its own primary-key index.
    db.execute(
        """CREATE TABLE conversations (
            scope_key TEXT PRIMARY KEY, upstream_id TEXT, model TEXT NOT NULL, preset TEXT NOT NULL,
            turns INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE scope_settings (
            key TEXT PRIMARY KEY, preset TEXT, model TEXT, updated_at REAL
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE presets (
            workspace_key TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
            prompt TEXT NOT NULL, author_id TEXT NOT NULL, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, PRIMARY KEY (workspace_key, name)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT, workspace_key TEXT NOT NULL, scope_key TEXT NOT NULL,
            actor_id TEXT NOT NULL, actor_name TEXT NOT NULL, action TEXT NOT NULL,
            old TEXT, new TEXT, at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX audit_workspace ON audit (workspace_key, id)")


def _v2_transcripts_and_seen_events(db: Database) -> None:
    db.execute(
        """CREATE TABLE transcripts (
            id INTEGER PRIMARY KEY, scope_key TEXT NOT NULL, conversation_id TEXT,
            author_id TEXT NOT NULL, author_name TEXT NOT NULL, question TEXT NOT NULL,
            answer TEXT NOT NULL, outcome TEXT NOT NULL, trace_id TEXT,
            asked_at REAL NOT NULL, answered_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX transcripts_answered_at ON transcripts (answered_at)")
    db.execute("CREATE TABLE seen_events (key TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID")


def _v3_conversation_epochs(db: Database) -> None:
    db.execute("ALTER TABLE conversations ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")


def _v4_controls_usage_and_engaged_threads(db: Database) -> None:
    db.execute(
        """CREATE TABLE controls (
            key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (key, name)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY, workspace_key TEXT NOT NULL, channel_key TEXT NOT NULL,
            user_id TEXT NOT NULL, model TEXT NOT NULL, answer_chars INTEGER NOT NULL,
            upstream_seconds REAL NOT NULL, outcome TEXT NOT NULL, tokens INTEGER, at REAL NOT NULL,
            forgotten INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute("CREATE INDEX usage_workspace_at ON usage (workspace_key, at)")
    db.execute("CREATE INDEX usage_at ON usage (at)")
    db.execute(
        """CREATE TABLE engaged_threads (
            thread_key TEXT PRIMARY KEY, channel_key TEXT NOT NULL, at REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX engaged_threads_channel ON engaged_threads (channel_key)")


def _v5_ai_chat_v2(db: Database) -> None:
    """Issue 16: who may use tools, conversations to delete at the service, questions the model asked
    back. (Token usage goes into issue 17's `usage` table.)"""
    db.execute("ALTER TABLE scope_settings ADD COLUMN tools TEXT")
    db.execute(
        """CREATE TABLE upstream_deletes (
            conversation_id TEXT PRIMARY KEY, model TEXT NOT NULL, attempts INTEGER NOT NULL,
            next_at REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE pending_questions (
            id TEXT PRIMARY KEY, scope_key TEXT NOT NULL, conversation_id TEXT NOT NULL,
            turns INTEGER NOT NULL, tool_id TEXT NOT NULL, question TEXT NOT NULL, options TEXT NOT NULL,
            asker_id TEXT NOT NULL, created_at REAL NOT NULL, answered INTEGER NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX pending_questions_scope ON pending_questions (scope_key, created_at)")


def _v6_usage_counters_and_holds(db: Database) -> None:
    # Per-day counters for the quotas (read in O(1) per question) and the questions admitted under
    # a quota in flight, shared by every process on the file.
    db.execute(
        """CREATE TABLE usage_counts (
            key TEXT NOT NULL, day REAL NOT NULL, questions INTEGER NOT NULL, tokens INTEGER NOT NULL,
            PRIMARY KEY (key, day)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE usage_holds (
            key TEXT NOT NULL, hold TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (key, hold)
        ) WITHOUT ROWID"""
    )
    db.execute(controls_sql.backfill_counters(controls_sql.SQLITE_DAY))


def _v7_answers_and_feedback(db: Database) -> None:
    """Issue 18: answers (who asked, which model and preset, running or stopped) and their votes."""
    db.execute(
        """CREATE TABLE answers (
            answer_id TEXT PRIMARY KEY, scope_key TEXT NOT NULL, workspace_key TEXT NOT NULL,
            asker_id TEXT NOT NULL, model TEXT NOT NULL, preset TEXT NOT NULL,
            started_at REAL NOT NULL, state TEXT NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX answers_started_at ON answers (started_at)")
    db.execute(
        """CREATE TABLE feedback (
            answer_id TEXT NOT NULL, user_id TEXT NOT NULL, workspace_key TEXT NOT NULL,
            model TEXT NOT NULL, preset TEXT NOT NULL, vote INTEGER NOT NULL, at REAL NOT NULL,
            PRIMARY KEY (answer_id, user_id)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX feedback_workspace ON feedback (workspace_key, at)")


def _v8_question_messages(db: Database) -> None:
    """Issue 16: where a waiting question's buttons are, so whichever process skips it says so on them."""
    db.execute("ALTER TABLE pending_questions ADD COLUMN message TEXT")


# Append only: position + 1 is the schema version a migration produces. Never edit a released one.
MIGRATIONS: tuple[Migration, ...] = (
    _v1_settings_and_conversations,
    _v2_transcripts_and_seen_events,
    _v3_conversation_epochs,
    _v4_controls_usage_and_engaged_threads,
    _v5_ai_chat_v2,
    _v6_usage_counters_and_holds,
    _v7_answers_and_feedback,
    _v8_question_messages,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Database) -> int:
    """The version recorded in the file; 0 for a new, empty file."""
    has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def newer_schema(label: str, found: int, known: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"{label} has schema version {found} but this acechat knows up to {known}: "
        "it was written by a newer acechat; upgrade acechat or point ACECHAT_DB_PATH at another file"
    )


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS, *, label: str = "database") -> int:
    """Bring the file up to `len(migrations)` in one transaction (all or nothing); returns the version."""
    with write_transaction(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
        )
        found = schema_version(db)
        if found > len(migrations):
            raise newer_schema(label, found, len(migrations))
        for step in migrations[found:]:
            step(db)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(len(migrations)),),
        )
    return len(migrations)
