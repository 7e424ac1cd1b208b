"""PostgreSQL queries for AI Chat v2 (issue 16): conversations to delete at the service, questions the
model asked back. A mixin of `PostgresStore`, kept apart so the store's other queries can move freely."""

from __future__ import annotations

import json

import asyncpg

from acechat.storage.records import PendingDelete, PendingQuestion

_DELETE_COLUMNS = "conversation_id, model, attempts, next_at"


class AiChatV2Queries:
    def _db(self) -> asyncpg.Pool:
        raise NotImplementedError

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

    async def save_question(self, question: PendingQuestion) -> None:
        q = question
        await self._db().execute(
            f"INSERT INTO pending_questions ({_QUESTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (id) DO NOTHING",
            q.id,
            q.scope_key,
            q.conversation_id,
            q.turns,
            q.tool_id,
            q.question,
            json.dumps(list(q.options)),
            q.asker_id,
            q.created_at,
            int(q.answered),
        )

    async def get_question(self, question_id: str) -> PendingQuestion | None:
        row = await self._db().fetchrow(
            f"SELECT {_QUESTION_COLUMNS} FROM pending_questions WHERE id = $1", question_id
        )
        return _question(row) if row is not None else None

    async def latest_question(self, scope_key: str) -> PendingQuestion | None:
        row = await self._db().fetchrow(
            f"SELECT {_QUESTION_COLUMNS} FROM pending_questions WHERE scope_key = $1 "
            "ORDER BY created_at DESC LIMIT 1",
            scope_key,
        )
        return _question(row) if row is not None else None

    async def answer_question(self, question_id: str) -> bool:
        # One statement: of two processes pressing at once, exactly one sees its row updated.
        done = await self._db().fetchval(
            "UPDATE pending_questions SET answered = 1 WHERE id = $1 AND answered = 0 RETURNING 1",
            question_id,
        )
        return done is not None

    async def show_question(self, question_id: str, message: str) -> None:
        await self._db().execute(
            "UPDATE pending_questions SET message = $2 WHERE id = $1", question_id, message
        )

    async def skip_questions(self, scope_key: str) -> list[str]:
        # One statement: of two processes skipping at once, the second waits on the row locks and then
        # finds the messages gone, so each handle goes to one of them.
        rows = await self._db().fetch(
            "WITH taken AS (SELECT id, message FROM pending_questions WHERE scope_key = $1 AND answered = 0 "
            "AND message IS NOT NULL FOR UPDATE) "
            "UPDATE pending_questions AS q SET message = NULL FROM taken WHERE q.id = taken.id "
            "RETURNING taken.message",
            scope_key,
        )
        return [str(row["message"]) for row in rows]


_QUESTION_COLUMNS = (
    "id, scope_key, conversation_id, turns, tool_id, question, options, asker_id, created_at, answered"
)


def _question(row: asyncpg.Record) -> PendingQuestion:
    return PendingQuestion(
        row["id"],
        row["scope_key"],
        row["conversation_id"],
        row["turns"],
        row["tool_id"],
        row["question"],
        tuple(json.loads(row["options"])),
        row["asker_id"],
        row["created_at"],
        bool(row["answered"]),
    )
