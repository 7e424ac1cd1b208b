"""The one storage interface the core depends on; `storage.sqlite` and `storage.postgres` implement it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from acechat.storage.records import (
    AnswerRecord,
    AuditEntry,
    Change,
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

SettingField = Literal["preset", "model", "tools"]

Backend = Literal["sqlite", "postgresql"]


class Store(Protocol):
    """acechat's state: conversations, settings, presets, audit, transcripts, event ids, rate limits."""

    # "sqlite" or "postgresql", for logs and `acechat check`.
    backend: Backend

    async def close(self) -> None:
        """Finish the writes already queued, then release every connection; calling it again is a no-op."""

    async def ping(self) -> bool:
        """True if the database is reachable and takes writes; at most one real probe a second."""

    def scope_turn(self, scope_key: str) -> AbstractAsyncContextManager[None]:
        """`async with store.scope_turn(key):` runs the body once every earlier turn of `key` has ended,
        in arrival order, in this process and (PostgreSQL) across every process on the database.
        Different scopes never wait for each other."""

    # conversations

    async def get_conversation(self, scope_key: str) -> ConversationRecord | None:
        """The scope's record; its `upstream_id` is None after a reset (the epoch is still needed)."""

    async def save_conversation(self, record: ConversationRecord) -> bool:
        """Write `record` if the stored epoch equals `record.epoch` (no row counts as epoch 0);
        returns whether it was written."""

    def queue_turn(
        self,
        conversation: ConversationRecord,
        transcript: TranscriptEntry | None,
        answer: AnswerRecord | None = None,
    ) -> Awaitable[bool]:
        """Queue a finished turn's write and return at once; the awaitable settles once it is committed,
        with whether the conversation was written (as `save_conversation`). The transcript is written
        either way (the question was answered), unless transcripts are off; so is `answer`, as
        `end_answer` would."""

    async def reset_conversation(self, scope_key: str) -> bool:
        """Forget the scope's upstream conversation and start a new epoch; True if one was live."""

    # settings

    async def get_settings(self, keys: Sequence[str]) -> dict[str, ScopeSettings]:
        """The settings rows among `keys`; keys without a row are absent."""

    async def set_setting(
        self, key: str, field: SettingField, value: str | None, *, audit: AuditEntry
    ) -> str | None:
        """Set one field (None = inherit) and log `audit` in the same transaction, its `old` being the
        value actually replaced; returns that old value."""

    # custom presets

    async def list_presets(self, workspace_key: str) -> list[CustomPreset]:
        """The workspace's presets by name."""

    async def get_preset(self, workspace_key: str, name: str) -> CustomPreset | None: ...

    async def count_presets(self, workspace_key: str) -> int: ...

    async def put_preset(self, preset: CustomPreset, *, audit: AuditEntry) -> CustomPreset | None:
        """Create or replace a preset (keeping the original `created_at`) and log `audit` with it;
        returns the old one."""

    async def delete_preset(self, workspace_key: str, name: str, *, audit: AuditEntry) -> CustomPreset | None:
        """Delete a preset and log `audit` with it; returns it, or None (and logs nothing) if absent."""

    # audit

    async def list_audit(self, workspace_key: str, limit: int = 20, offset: int = 0) -> list[AuditEntry]:
        """The workspace's entries, newest first, skipping the `offset` newest."""

    async def count_audit(self, workspace_key: str) -> int: ...

    # housekeeping, de-duplication, rate limits, change notifications

    async def prune(self, now: float | None = None) -> int:
        """Delete transcripts past retention (all when transcripts are off), event ids older than a day
        and finished rate windows; returns the number of rows deleted."""

    async def first_sighting(self, key: str) -> bool:
        """Record a platform event key; True only for its first delivery, whichever process got it."""

    async def take_rate(self, checks: Sequence[RateCheck]) -> RateVerdict:
        """Sliding-window limits, all or nothing: a hit is recorded on every key only if none refuses."""

    def on_change(self, listener: Callable[[Change], None]) -> None:
        """Call `listener` on the event loop after every committed settings or preset change (this
        process's own at once; PostgreSQL: other processes' within a second, and a change with key
        `EVERYTHING` after a lost notification connection comes back)."""

    # admins' controls, usage and engaged threads (issue 17)

    async def get_controls(self, keys: Sequence[str]) -> list[Control]:
        """Every control set on `keys` (channel or workspace keys), by key and name."""

    async def controls_set_to(self, name: str, value: str) -> list[Control]:
        """Every control `name` set to `value`, wherever (e.g. the channels with autothread on)."""

    async def set_control(self, key: str, name: str, value: str | None, *, audit: AuditEntry) -> str | None:
        """Set a control (None removes it) and log `audit`, its `old` being the value replaced, in one
        transaction; returns that old value. Listeners hear `Change("control", key)`."""

    async def record_usage(self, usage: UsageRecord, hold: UsageHold | None = None) -> None:
        """Record one question that went upstream, adding it to its day's counts, and end its `hold`
        in the same transaction."""

    async def count_usage(
        self, workspace_key: str, channel_key: str, user_id: str, day: float, now: float
    ) -> UsageCount:
        """Answered questions (with the holds live at `now`) and reported tokens of the UTC day
        starting at `day`: the user's, the channel's, the workspace's. Reads three counters."""

    async def hold_usage(
        self, hold: UsageHold, now: float, admit: Callable[[UsageCount], bool]
    ) -> tuple[bool, UsageCount]:
        """Count the hold's user, channel and workspace as `count_usage` does and, if `admit` accepts
        the count, take the hold, atomically for every process sharing the database; (taken, count)."""

    async def release_usage(self, hold: UsageHold) -> None:
        """End a hold whose question did not go upstream (nothing if it was recorded)."""

    async def usage_totals(self, workspace_key: str, since: float, top: int = 5) -> UsageTotals: ...

    async def engage_thread(self, thread_key: str, channel_key: str, at: float) -> None:
        """Remember that the bot talks in this thread without a mention."""

    async def is_engaged(self, thread_key: str) -> bool: ...

    async def disengage_threads(self, channel_key: str) -> int:
        """Forget every engaged thread of the channel; returns how many there were."""

    async def forget_user(
        self, workspace_key: str, user_id: str, day_start: float, *, audit: AuditEntry
    ) -> tuple[int, int]:
        """Delete the user's transcripts in the workspace and their usage rows before `day_start`; rows
        since then lose their place in listings and go when pruned after the day (they still count
        today). Logs `audit` with how many rows went (never their text) as its new value; returns
        (transcripts, usage rows) removed or hidden."""

    # answers in flight, stop requests and feedback (issue 18)

    async def start_answer(self, answer: AnswerRecord) -> None:
        """Record an answer as running, before anything of it is shown."""

    async def get_answer(self, answer_id: str) -> AnswerRecord | None: ...

    async def request_stop(self, answer_id: str) -> bool:
        """Mark a running answer to be stopped and tell every process (a `Change("stop", answer_id)`);
        False if it is not running (ended, already stopping, or unknown)."""

    async def running_answer(self, scope_key: str) -> str | None:
        """The id of the answer running in a scope (its latest, should there be several), if any."""

    async def stop_requests(self, answer_ids: Sequence[str]) -> list[str]:
        """Those of `answer_ids` someone asked to stop: for a process that may have missed the notice."""

    def end_answer(self, answer: AnswerRecord) -> Awaitable[None]:
        """Queue the record of how an answer ended (`answer.state`; the whole row if `start_answer` did
        not write it) and return at once; settles once committed, and `close()` finishes it. A Stop
        pressed from then on changes nothing."""

    async def vote(self, answer: AnswerRecord, user_id: str, vote: int, at: float) -> int | None:
        """Record `user_id`'s vote (+1 or -1) on `answer`, with its model and preset, replacing their
        earlier one; returns the vote replaced."""

    async def feedback(self, workspace_key: str, since: float) -> list[FeedbackTally]:
        """Votes since `since` by model and preset, most voted first."""
    # --- AI Chat v2 (issue 16): conversations to delete at the service, questions asked back -------

    async def queue_delete(self, item: PendingDelete) -> None:
        """Remember a conversation to delete at the service (kept across restarts); idempotent."""

    async def due_deletes(self, now: float, limit: int = 20) -> list[PendingDelete]:
        """Pending deletes whose `next_at` has come, soonest first."""

    async def finish_delete(self, conversation_id: str) -> None:
        """The delete succeeded or was given up: forget it."""

    async def retry_delete(self, conversation_id: str, next_at: float) -> None:
        """The delete failed: count the attempt and try again at `next_at`."""

    async def save_question(self, question: PendingQuestion) -> None:
        """Keep a question the model asked back (kept across restarts, seen by every process)."""

    async def get_question(self, question_id: str) -> PendingQuestion | None: ...

    async def latest_question(self, scope_key: str) -> PendingQuestion | None:
        """The scope's newest question the model asked back, answered or not."""

    async def answer_question(self, question_id: str) -> bool:
        """Mark the question answered; True only for the one call that did (a double press gets False)."""

    async def show_question(self, question_id: str, message: str) -> None:
        """Where the question's buttons are: a platform's handle for its message (channel and id)."""

    async def skip_questions(self, scope_key: str) -> list[str]:
        """The scope's questions still waiting give up their buttons' handles, which are returned: a
        handle goes to one caller only, whichever process asks, so each message is edited once."""
