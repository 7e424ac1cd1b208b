"""PostgreSQL queries for AI Chat v2 (issue 16): token usage per question, and conversations to delete
at the service. A mixin of `PostgresStore`, kept apart so the store's other queries can move freely."""

from __future__ import annotations

import asyncpg

from acechat.storage.records import PendingDelete, UsageRecord

USAGE_COLUMNS = (
    "workspace_key",
    "scope_key",
    "user_id",
    "conversation_id",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "at",
)
_USAGE = ", ".join(USAGE_COLUMNS)
_INSERT_USAGE = f"INSERT INTO token_usage ({_USAGE}) VALUES ({', '.join(f'${n}' for n in range(1, len(USAGE_COLUMNS) + 1))})"
_DELETE_COLUMNS = "conversation_id, model, attempts, next_at"


class AiChatV2Queries:
    def _db(self) -> asyncpg.Pool:
        raise NotImplementedError

    async def record_usage(self, record: UsageRecord) -> None:
        await self._db().execute(_INSERT_USAGE, *(getattr(record, name) for name in USAGE_COLUMNS))

    async def list_usage(self, workspace_key: str, since: float = 0.0) -> list[UsageRecord]:
        rows = await self._db().fetch(
            f"SELECT {_USAGE} FROM token_usage WHERE workspace_key = $1 AND at >= $2 ORDER BY at, id",
            workspace_key,
            since,
        )
        return [UsageRecord(*row) for row in rows]

    async def queue_delete(self, item: PendingDelete) -> None:
        await self._db().execute(
            f"INSERT INTO upstream_deletes ({_DELETE_COLUMNS}) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (conversation_id) DO NOTHING",
            item.conversation_id,
            item.model,
            item.attempts,
            item.next_at,
        )

    async def due_deletes(self, now: float, limit: int = 20) -> list[PendingDelete]:
        rows = await self._db().fetch(
            f"SELECT {_DELETE_COLUMNS} FROM upstream_deletes WHERE next_at <= $1 ORDER BY next_at LIMIT $2",
            now,
            limit,
        )
        return [PendingDelete(*row) for row in rows]

    async def finish_delete(self, conversation_id: str) -> None:
        await self._db().execute("DELETE FROM upstream_deletes WHERE conversation_id = $1", conversation_id)

    async def retry_delete(self, conversation_id: str, next_at: float) -> None:
        await self._db().execute(
            "UPDATE upstream_deletes SET attempts = attempts + 1, next_at = $2 WHERE conversation_id = $1",
            conversation_id,
            next_at,
        )
