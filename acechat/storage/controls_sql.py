"""The SQL of admins' controls, usage rows and engaged threads (issue 17), shared by both backends.

Statements use `?` placeholders; `postgres_sql` turns them into PostgreSQL's numbered ones. Both
databases read them the same way: FILTER clauses, ON CONFLICT upserts, `substr` for key prefixes (a
LIKE pattern would treat `_` and `%` in platform ids as wildcards).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from acechat.storage.records import Control, UsageCount, UsageHold, UsageRecord, UsageTotals

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
# The quotas read per-day counters, kept in the transaction that adds each usage row, not the rows:
# one primary-key read per user, channel and workspace, however busy the day. Questions count only
# when answered; tokens whenever the service reported them. A user's `forget me` leaves today's
# counter (counts only, no text) until the day ends, so quotas still hold.
READ_COUNTER = "SELECT questions, tokens FROM usage_counts WHERE key = ? AND day = ?"
ADD_TO_COUNTER = (
    "INSERT INTO usage_counts (key, day, questions, tokens) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key, day) DO UPDATE SET questions = usage_counts.questions + excluded.questions, "
    "tokens = usage_counts.tokens + excluded.tokens"
)
# Questions admitted under a quota and not yet recorded, per counter; a hold whose process died
# stops counting when it expires.
LIVE_HOLDS = "SELECT count(*) FROM usage_holds WHERE key = ? AND expires > ?"
INSERT_HOLD = "INSERT INTO usage_holds (key, hold, expires) VALUES (?, ?, ?)"
DELETE_HOLD = "DELETE FROM usage_holds WHERE key = ? AND hold = ?"
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
FORGET_OLD_COUNTER = "DELETE FROM usage_counts WHERE key = ? AND day < ?"
PRUNE_USAGE = "DELETE FROM usage WHERE at < ? OR (forgotten = 1 AND at < ?)"
PRUNE_COUNTERS = "DELETE FROM usage_counts WHERE day < ?"
PRUNE_HOLDS = "DELETE FROM usage_holds WHERE expires < ?"
PRUNE_ENGAGED = "DELETE FROM engaged_threads WHERE at < ?"


DAY_SECONDS = 86400.0
# Counter keys by level; a question adds to its user's, channel's and workspace's.
_LEVEL_KEYS = (
    "'user:' || workspace_key || ':' || user_id",
    "'channel:' || channel_key",
    "'workspace:' || workspace_key",
)


# The UTC day start of a usage row's `at`, in each dialect (SQLite's % would truncate `at` first).
SQLITE_DAY = "CAST(at / 86400 AS INTEGER) * 86400.0"
POSTGRES_DAY = "floor(at / 86400) * 86400"


def backfill_counters(day: str) -> str:
    """The counters of the usage rows already stored (`day`: the dialect's UTC day start of `at`)."""
    return "INSERT INTO usage_counts (key, day, questions, tokens) " + " UNION ALL ".join(
        f"SELECT {key}, {day}, count(*) FILTER (WHERE outcome = 'answered'), coalesce(sum(tokens), 0) "
        "FROM usage GROUP BY 1, 2"
        for key in _LEVEL_KEYS
    )


def user_counter(workspace_key: str, user_id: str) -> str:
    return f"user:{workspace_key}:{user_id}"


def counter_keys(workspace_key: str, channel_key: str, user_id: str) -> tuple[str, str, str]:
    """The user's, channel's and workspace's counter keys (as `_LEVEL_KEYS` builds them)."""
    return user_counter(workspace_key, user_id), f"channel:{channel_key}", f"workspace:{workspace_key}"


def hold_keys(hold: UsageHold) -> tuple[str, str, str]:
    return counter_keys(hold.workspace_key, hold.channel_key, hold.user_id)


def day_of(at: float) -> float:
    return at - at % DAY_SECONDS


def counter_additions(u: UsageRecord) -> list[tuple[Any, ...]]:
    """ADD_TO_COUNTER's arguments for one usage row, in key order (the order every writer locks in)."""
    answered = 1 if u.outcome == "answered" else 0
    day = day_of(u.at)
    keys = sorted(counter_keys(u.workspace_key, u.channel_key, u.user_id))
    return [(key, day, answered, u.tokens or 0) for key in keys]


def counted(keys: tuple[str, str, str], found: dict[str, tuple[int, int, int]]) -> UsageCount:
    """A UsageCount from (questions, tokens, live holds) per counter key, `keys` as counter_keys gives."""
    (uq, ut, uh), (cq, ct, ch), (wq, wt, wh) = (found.get(k, (0, 0, 0)) for k in keys)
    return UsageCount(uq + uh, ut, cq + ch, ct, wq + wh, wt)


def forgotten(transcripts: int, old_usage: int, today_usage: int) -> str:
    """The audit's record of a `forget me`: how many rows, never what they held."""
    # Short enough for the audit listing's values; today's rows stay, unnamed, until the day ends.
    return f"deleted {transcripts} transcripts, {old_usage} usage rows; {today_usage} today's unnamed"


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
