"""The SQL of admins' controls, usage rows and engaged threads (issue 17), shared by both backends.

Statements use `?` placeholders; `postgres_sql` turns them into PostgreSQL's numbered ones. Both
databases read them the same way: FILTER clauses, ON CONFLICT upserts, `substr` for key prefixes (a
LIKE pattern would treat `_` and `%` in platform ids as wildcards).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from acechat.storage.records import Control, UsageCount, UsageRecord, UsageTotals

# How long usage rows and engaged threads are kept: past the longest `usage` period, with margin.
USAGE_DAYS = 90
ENGAGED_DAYS = 90

CONTROL_COLUMNS = "key, name, value, updated_at"
USAGE_COLUMNS = (
    "workspace_key, channel_key, user_id, model, answer_chars, upstream_seconds, outcome, tokens, at"
)
CONTROLS_NAMED = f"SELECT {CONTROL_COLUMNS} FROM controls WHERE name = ? AND value = ? ORDER BY key"
SELECT_CONTROL = "SELECT value FROM controls WHERE key = ? AND name = ?"
UPSERT_CONTROL = (
    f"INSERT INTO controls ({CONTROL_COLUMNS}) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
DELETE_CONTROL = "DELETE FROM controls WHERE key = ? AND name = ?"
INSERT_USAGE = f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# Questions count only when answered; tokens whenever the service reported them. Rows a user had
# forgotten today still count against quotas until the day ends (they hold no text, only counts).
COUNT_USAGE = (
    "SELECT count(*) FILTER (WHERE user_id = ? AND outcome = 'answered'), "
    "coalesce(sum(tokens) FILTER (WHERE user_id = ?), 0), "
    "count(*) FILTER (WHERE channel_key = ? AND outcome = 'answered'), "
    "coalesce(sum(tokens) FILTER (WHERE channel_key = ?), 0), "
    "count(*) FILTER (WHERE outcome = 'answered'), coalesce(sum(tokens), 0) "
    "FROM usage WHERE workspace_key = ? AND at >= ?"
)
TOTAL_USAGE = (
    "SELECT count(*), count(*) FILTER (WHERE outcome = 'answered'), coalesce(sum(answer_chars), 0), "
    "coalesce(sum(upstream_seconds), 0), coalesce(sum(tokens), 0) "
    "FROM usage WHERE workspace_key = ? AND at >= ?"
)
TOP_USERS = (
    "SELECT user_id, count(*) AS n FROM usage WHERE workspace_key = ? AND at >= ? AND forgotten = 0 "
    "GROUP BY user_id ORDER BY n DESC, user_id LIMIT ?"
)
TOP_CHANNELS = (
    "SELECT channel_key, count(*) AS n FROM usage WHERE workspace_key = ? AND at >= ? "
    "GROUP BY channel_key ORDER BY n DESC, channel_key LIMIT ?"
)
ENGAGE = (
    "INSERT INTO engaged_threads (thread_key, channel_key, at) VALUES (?, ?, ?) "
    "ON CONFLICT (thread_key) DO UPDATE SET at = excluded.at"
)
IS_ENGAGED = "SELECT 1 FROM engaged_threads WHERE thread_key = ?"
DISENGAGE = "DELETE FROM engaged_threads WHERE channel_key = ?"
# `forget me`: transcripts of the workspace's scopes, usage before today gone, today's kept nameless
# in the listings (and as counts for the quotas) until the day ends.
FORGET_TRANSCRIPTS = (
    "DELETE FROM transcripts WHERE author_id = ? "
    "AND substr(scope_key, 1, length(CAST(? AS TEXT)) + 1) = CAST(? AS TEXT) || ':'"
)
FORGET_OLD_USAGE = "DELETE FROM usage WHERE workspace_key = ? AND user_id = ? AND at < ?"
FORGET_TODAY_USAGE = (
    "UPDATE usage SET forgotten = 1 WHERE workspace_key = ? AND user_id = ? AND forgotten = 0"
)
PRUNE_USAGE = "DELETE FROM usage WHERE at < ? OR (forgotten = 1 AND at < ?)"
PRUNE_ENGAGED = "DELETE FROM engaged_threads WHERE at < ?"


def controls_select(count: int) -> str:
    return (
        f"SELECT {CONTROL_COLUMNS} FROM controls WHERE key IN ({', '.join('?' * count)}) ORDER BY key, name"
    )


def usage_row(u: UsageRecord) -> tuple[Any, ...]:
    return (
        u.workspace_key,
        u.channel_key,
        u.user_id,
        u.model,
        u.answer_chars,
        u.upstream_seconds,
        u.outcome,
        u.tokens,
        u.at,
    )


def control(row: Sequence[Any]) -> Control:
    return Control(str(row[0]), str(row[1]), str(row[2]), float(row[3]))


def usage_count(row: Sequence[Any]) -> UsageCount:
    return UsageCount(*(int(v or 0) for v in row))


def usage_totals(
    total: Sequence[Any], users: Sequence[Sequence[Any]], channels: Sequence[Sequence[Any]]
) -> UsageTotals:
    return UsageTotals(
        questions=int(total[0]),
        answered=int(total[1]),
        answer_chars=int(total[2]),
        upstream_seconds=float(total[3]),
        tokens=int(total[4]),
        top_users=tuple((str(r[0]), int(r[1])) for r in users),
        top_channels=tuple((str(r[0]), int(r[1])) for r in channels),
    )


def postgres_sql(statement: str) -> str:
    """`?` placeholders numbered `$1`, `$2`… in order (no statement here has a `?` inside a string)."""
    parts = statement.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
