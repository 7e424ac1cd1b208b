"""The versioned PostgreSQL schema: its own migration list, the version kept in the `meta` table.

Times are Unix seconds in double precision, as in SQLite, so rows copy across unchanged. Two functions
keep the hot paths to one round trip: `acechat_take_rate` (rate limits, on the server's clock) and
`acechat_lock_step` (release and try many advisory locks, in that order, on one connection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from acechat.storage import controls_sql
from acechat.storage.errors import SchemaVersionError

if TYPE_CHECKING:
    from asyncpg import Connection
    from asyncpg.pool import PoolConnectionProxy

    AnyConnection = Connection | PoolConnectionProxy

# Migrations and `acechat db copy` take this transaction-level advisory lock, so two processes starting
# at once migrate one after the other. The two-number form lives apart from the one-number locks of
# scope turns.
MIGRATION_LOCK = (0x61636563, 1)

_V1_TABLES = """
CREATE TABLE conversations (
    scope_key text PRIMARY KEY, upstream_id text, model text NOT NULL, preset text NOT NULL,
    turns integer NOT NULL, created_at double precision NOT NULL, updated_at double precision NOT NULL,
    epoch bigint NOT NULL DEFAULT 0
);
CREATE TABLE scope_settings (key text PRIMARY KEY, preset text, model text, updated_at double precision);
CREATE TABLE presets (
    workspace_key text NOT NULL, name text NOT NULL, description text NOT NULL, prompt text NOT NULL,
    author_id text NOT NULL, created_at double precision NOT NULL, updated_at double precision NOT NULL,
    PRIMARY KEY (workspace_key, name)
);
CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace_key text NOT NULL, scope_key text NOT NULL,
    actor_id text NOT NULL, actor_name text NOT NULL, action text NOT NULL, old text, new text,
    at double precision NOT NULL
);
CREATE INDEX audit_workspace ON audit (workspace_key, id);
CREATE TABLE transcripts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, scope_key text NOT NULL, conversation_id text,
    author_id text NOT NULL, author_name text NOT NULL, question text NOT NULL, answer text NOT NULL,
    outcome text NOT NULL, trace_id text, asked_at double precision NOT NULL,
    answered_at double precision NOT NULL
);
CREATE INDEX transcripts_answered_at ON transcripts (answered_at);
CREATE TABLE seen_events (key text PRIMARY KEY, seen_at double precision NOT NULL);
CREATE TABLE rate_windows (
    key text NOT NULL, per_seconds double precision NOT NULL, hits double precision[] NOT NULL,
    expires_at double precision NOT NULL, PRIMARY KEY (key, per_seconds)
);
CREATE INDEX rate_windows_expires_at ON rate_windows (expires_at);

CREATE FUNCTION acechat_take_rate(
    keys text[], counts integer[], windows double precision[], OUT refused integer, OUT wait double precision
) LANGUAGE plpgsql AS $$
DECLARE
    now_s double precision := extract(epoch FROM clock_timestamp());
    kept double precision[];
    n integer;
BEGIN
    refused := NULL;
    wait := 0;
    -- Rows are created, then locked, in one order, so calls on overlapping keys queue behind each
    -- other instead of deadlocking; the row locks make the check and the hit one atomic step.
    INSERT INTO rate_windows (key, per_seconds, hits, expires_at)
    SELECT t.k, t.w, '{}', 0 FROM unnest(keys, windows, counts) AS t(k, w, c) WHERE t.c > 0
    ORDER BY t.k, t.w
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM rate_windows r
    WHERE (r.key, r.per_seconds) IN (
        SELECT t.k, t.w FROM unnest(keys, windows, counts) AS t(k, w, c) WHERE t.c > 0
    )
    ORDER BY r.key, r.per_seconds FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        CONTINUE WHEN counts[i] <= 0;
        SELECT array(SELECT h FROM unnest(r.hits) AS h WHERE h > now_s - windows[i] ORDER BY h) INTO kept
        FROM rate_windows r WHERE r.key = keys[i] AND r.per_seconds = windows[i];
        n := coalesce(array_length(kept, 1), 0);
        IF n >= counts[i] THEN
            refused := i - 1;
            -- The hit that must leave the window for one more to fit.
            wait := greatest(kept[n - counts[i] + 1] + windows[i] - now_s, 0);
            RETURN;
        END IF;
    END LOOP;
    UPDATE rate_windows r
    SET hits = array(SELECT h FROM unnest(r.hits) AS h WHERE h > now_s - t.w ORDER BY h) || now_s,
        expires_at = now_s + t.w
    FROM unnest(keys, windows, counts) AS t(k, w, c)
    WHERE t.c > 0 AND r.key = t.k AND r.per_seconds = t.w;
END $$;

CREATE FUNCTION acechat_lock_step(unlock bigint[], try bigint[]) RETURNS boolean[]
LANGUAGE plpgsql AS $$
DECLARE
    k bigint;
    got boolean[] := '{}';
BEGIN
    -- Releases first: a waiter queued in another process gets the lock before this session can take
    -- it again, which keeps turns of a scope in arrival order across processes.
    FOREACH k IN ARRAY unlock LOOP
        PERFORM pg_advisory_unlock(k);
    END LOOP;
    FOREACH k IN ARRAY try LOOP
        BEGIN
            got := got || pg_try_advisory_lock(k);
        EXCEPTION WHEN out_of_memory THEN
            -- The server's lock table is full: NULL fails this turn alone, and the locks this
            -- session holds for the turns in flight stay held.
            got := got || NULL::boolean;
        END;
    END LOOP;
    RETURN got;
END $$;
"""

_V2_CONTROLS = """
CREATE TABLE controls (
    key text NOT NULL, name text NOT NULL, value text NOT NULL, updated_at double precision NOT NULL,
    PRIMARY KEY (key, name)
);
CREATE TABLE usage (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace_key text NOT NULL,
    channel_key text NOT NULL, user_id text NOT NULL, model text NOT NULL, answer_chars integer NOT NULL,
    upstream_seconds double precision NOT NULL, outcome text NOT NULL, tokens bigint,
    at double precision NOT NULL, forgotten integer NOT NULL DEFAULT 0
);
CREATE INDEX usage_workspace_at ON usage (workspace_key, at);
CREATE INDEX usage_at ON usage (at);
CREATE TABLE engaged_threads (
    thread_key text PRIMARY KEY, channel_key text NOT NULL, at double precision NOT NULL
);
CREATE INDEX engaged_threads_channel ON engaged_threads (channel_key);
"""

# Version 5 (issue 16): who may use tools, conversations to delete at the service, questions the model asked back.
_V5_AI_CHAT_V2 = """
ALTER TABLE scope_settings ADD COLUMN tools text;
CREATE TABLE upstream_deletes (
    conversation_id text PRIMARY KEY, model text NOT NULL, attempts integer NOT NULL,
    next_at double precision NOT NULL
);
CREATE TABLE pending_questions (
    id text PRIMARY KEY, scope_key text NOT NULL, conversation_id text NOT NULL, turns integer NOT NULL,
    tool_id text NOT NULL, question text NOT NULL, options text NOT NULL, asker_id text NOT NULL,
    created_at double precision NOT NULL, answered integer NOT NULL
);
CREATE INDEX pending_questions_scope ON pending_questions (scope_key, created_at);
"""

# Version 6: per-day counters for the quotas (read in O(1) per question) and the questions admitted under a
# quota in flight, shared by every process.
_V6_USAGE_COUNTERS = f"""
CREATE TABLE usage_counts (
    key text NOT NULL, day double precision NOT NULL, questions bigint NOT NULL, tokens bigint NOT NULL,
    PRIMARY KEY (key, day)
);
CREATE TABLE usage_holds (
    key text NOT NULL, hold text NOT NULL, expires double precision NOT NULL, PRIMARY KEY (key, hold)
);
{controls_sql.backfill_counters(controls_sql.POSTGRES_DAY)};
"""

# Version 7 (issue 18): answers (who asked, model, preset, running or stopped) and their votes.
_V7_ANSWERS_AND_FEEDBACK = """
CREATE TABLE answers (
    answer_id text PRIMARY KEY, scope_key text NOT NULL, workspace_key text NOT NULL, asker_id text NOT NULL,
    model text NOT NULL, preset text NOT NULL, started_at double precision NOT NULL, state text NOT NULL
);
CREATE INDEX answers_started_at ON answers (started_at);
CREATE TABLE feedback (
    answer_id text NOT NULL, user_id text NOT NULL, workspace_key text NOT NULL, model text NOT NULL,
    preset text NOT NULL, vote smallint NOT NULL, at double precision NOT NULL,
    PRIMARY KEY (answer_id, user_id)
);
CREATE INDEX feedback_workspace ON feedback (workspace_key, at);
"""

# Version 8 (issue 16): where a waiting question's buttons are, so whichever process skips it says so on them.
_V8_QUESTION_MESSAGES = """
ALTER TABLE pending_questions ADD COLUMN message text;
"""

# Schema versions are acechat's, not a backend's: one number means the same tables and columns on SQLite
# and PostgreSQL (`acechat check` reports it for either). PostgreSQL arrived at version 3, which its first
# migration creates whole; a later change gets the same next number on both.
FIRST_VERSION = 3
# Before versions were shared, PostgreSQL counted its own: what it recorded as 1 is version 3, 2 is 4.
_OWN_NUMBERING = {1: 3, 2: 4}

# Append only: position + FIRST_VERSION is the schema version a migration produces. Never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    _V1_TABLES,
    _V2_CONTROLS,
    _V5_AI_CHAT_V2,
    _V6_USAGE_COUNTERS,
    _V7_ANSWERS_AND_FEEDBACK,
    _V8_QUESTION_MESSAGES,
)


def version_after(migrations: Sequence[str]) -> int:
    """The schema version a database has once `migrations` have run."""
    return FIRST_VERSION - 1 + len(migrations) if migrations else 0


SCHEMA_VERSION = version_after(MIGRATIONS)


async def schema_version(conn: AnyConnection) -> int:
    """The version recorded in the database; 0 for a new, empty one."""
    if await conn.fetchval("SELECT to_regclass('meta')") is None:
        return 0
    value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
    found = int(value) if value is not None else 0
    return _OWN_NUMBERING.get(found, found)


def newer_schema(label: str, found: int, known: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"{label} has schema version {found} but this acechat knows up to {known}: "
        "it was written by a newer acechat; upgrade acechat or point ACECHAT_DATABASE_URL at another database"
    )


async def migrate(
    conn: AnyConnection, migrations: Sequence[str] = MIGRATIONS, *, label: str = "database"
) -> int:
    """Bring the database up to `version_after(migrations)` in one transaction (all or nothing); returns
    the version."""
    target = version_after(migrations)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)")
        found = await schema_version(conn)
        if found > target:
            raise newer_schema(label, found, target)
        for step in migrations[found - FIRST_VERSION + 1 if found else 0 :]:
            await conn.execute(step)
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            str(target),
        )
    return target
