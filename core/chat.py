"""ChatCore: every decision between a platform event and the upstream model.

Adapters call `ask` with a `Question` and a `ReplyTarget`, and `execute` with a `Command`. The core
validates, rate-limits, orders turns per scope, resolves the preset and model, streams the answer
onto the target, words every error for the user, and keeps state in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from core import metrics
from core.attachments import AttachmentChoice, choose_references
from core.cache import LRU
from core.command_runner import CommandRunner
from core.commands import Action, Command, CommandReply
from core.errors import UpstreamError
from core.permissions import is_admin, may_run
from core.presets import BUILTIN_PRESETS, Preset, resolve_preset_name
from core.ratelimit import SlidingWindow, retry_in_text
from core.sanitize import format_answer, parse_thinking_mode
from core.scope import Scope
from core.serial import ScopeQueue
from core.settings import Settings
from core.streaming import StreamingReply
from core.target import Actor, Attachment, ReplyTarget
from core.upstream import AIChatClient, Turn
from storage import Store
from storage.records import ConversationRecord, ScopeSettings, TranscriptEntry

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
NO_ATTACHMENTS = AttachmentChoice((), ())
PRUNE_INTERVAL = 3600.0


class Outcome(enum.Enum):
    ANSWERED = "answered"
    REFUSED = "refused"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Question:
    scope: Scope
    actor: Actor
    text: str
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a scope's next turn will use, and where each choice came from."""

    model: str
    model_source: str
    preset: Preset
    preset_source: str


class ChatCore:
    def __init__(self, settings: Settings, store: Store, client: AIChatClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self._commands = CommandRunner(self)
        self._turns = ScopeQueue()
        self._user_limit = SlidingWindow(settings.user_rate)
        self._channel_limit = SlidingWindow(settings.channel_rate)
        self._settings_cache: LRU[str, ScopeSettings | None] = LRU(CACHE_SIZE)
        self._conversations: LRU[str, ConversationRecord | None] = LRU(CACHE_SIZE)
        # What `resolve` made of each scope's settings, while it used only built-in presets (custom
        # ones are read afresh each time); dropped whole whenever a setting changes.
        self._resolved: LRU[str, Resolved] = LRU(CACHE_SIZE)
        self._settings_generation = 0
        self._thinking = parse_thinking_mode(settings.thinking)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._maintenance: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> ChatCore:
        store = await Store.open(settings.db_path, transcript_days=settings.transcript_days)
        core = cls(settings, store, AIChatClient(settings.upstream))
        core._maintenance = asyncio.create_task(core._prune_periodically())
        return core

    async def _prune_periodically(self) -> None:
        """Transcripts past their retention and old event ids go, at start and then every hour."""
        while True:
            try:
                removed = await self.store.prune()
                if removed:
                    log.info("pruned %d expired rows", removed)
            except Exception:
                log.exception("pruning the database failed; will try again")
            await asyncio.sleep(PRUNE_INTERVAL)

    @property
    def models(self) -> tuple[str, ...]:
        return self.settings.models

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def is_admin(self, scope: Scope, actor: Actor) -> bool:
        return is_admin(scope.platform, actor, self.settings.admin_users)

    async def drain(self) -> None:
        """Refuse new questions and wait, at most the shutdown grace, for answers in flight."""
        self._closing = True
        if self._in_flight:
            log.info(
                "waiting up to %.0fs for %d answers in flight", self.settings.shutdown_grace, self._in_flight
            )
            try:
                await asyncio.wait_for(self._idle.wait(), self.settings.shutdown_grace)
            except TimeoutError:
                log.warning("%d answers still running at shutdown; they are cut off", self._in_flight)

    async def aclose(self) -> None:
        """Drain, then close the upstream client and the store."""
        await self.drain()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self.client.close()
        await self.store.close()

    # --- questions -------------------------------------------------------------------------------

    async def ask(self, question: Question, target: ReplyTarget) -> Outcome:
        received = time.monotonic()
        outcome = Outcome.REFUSED
        refusal = self._refusal(question)
        if refusal is not None:
            await self._notify(target, refusal)
            metrics.count_question(question.scope.platform, outcome.value)
            return outcome
        self._in_flight += 1
        self._idle.clear()
        metrics.IN_FLIGHT.inc()
        reply = StreamingReply(target, render=self._render_partial)
        try:
            reply.start_typing()
            async with self._turns.turn(question.scope.key):
                outcome = await self._answer(question, reply)
        except Exception:
            # A platform call failed (permissions, network): log it, keep serving everyone else.
            log.exception(
                "could not deliver an answer",
                extra={"platform": question.scope.platform, "channel": question.scope.channel},
            )
            await reply.abort()
            outcome = Outcome.FAILED
            await self._notify(
                target,
                "I couldn't post my answer here; an admin should check my permissions in this channel.",
            )
        finally:
            self._in_flight -= 1
            metrics.IN_FLIGHT.dec()
            if self._in_flight == 0:
                self._idle.set()
        metrics.count_question(question.scope.platform, outcome.value)
        # A warning is not answer text: like upstream latency, time to first text is for answers only.
        if reply.first_text_at is not None and outcome is Outcome.ANSWERED:
            metrics.FIRST_TEXT_SECONDS.observe(reply.first_text_at - received)
        return outcome

    def _refusal(self, question: Question) -> str | None:
        text = question.text.strip()
        if self._closing:
            return "I'm restarting; ask again in a minute."
        if not text and not question.attachments:
            return "Ask me something after the mention, e.g. “how do I rotate a log file?”. Say `help` for commands."
        limit = self.settings.max_question_chars
        if len(text) > limit:
            return f"That question is {len(text):,} characters long; the limit is {limit:,}. Shorten it and ask again."
        now = time.monotonic()
        scope = question.scope
        if self.settings.user_rate.enabled:
            user_key = f"{scope.platform}:{scope.workspace}:{question.actor.user_id}"
            wait = self._user_limit.check(user_key, now)
            if wait > 0:
                metrics.RATE_LIMITED.labels("user").inc()
                return f"You're asking faster than this bot allows; {retry_in_text(wait)}."
        if self.settings.channel_rate.enabled:
            wait = self._channel_limit.check(scope.channel_scope.key, now)
            if wait > 0:
                metrics.RATE_LIMITED.labels("channel").inc()
                return f"This channel is asking faster than this bot allows; {retry_in_text(wait)}."
        return None

    async def _notify(self, target: ReplyTarget, text: str) -> None:
        try:
            await target.notify(text)
        except Exception:
            log.exception("could not send a notice")

    async def _answer(self, question: Question, reply: StreamingReply) -> Outcome:
        scope = question.scope
        resolved = await self.resolve(scope)
        conversation = await self._conversation(scope)
        if conversation is not None and (
            conversation.model != resolved.model or conversation.preset != resolved.preset.name
        ):
            # The preset or model changed since this conversation began (perhaps on the parent channel).
            conversation = None
        choice = choose_references(question.attachments) if question.attachments else NO_ATTACHMENTS
        author = question.actor.display_name or question.actor.user_id
        upstream_text = question.text.strip() or "(see the attached files)"
        if self.settings.author_prefix:
            upstream_text = f"{author}: {upstream_text}"
        turn = Turn(
            question=upstream_text,
            model=resolved.model,
            preset=resolved.preset.prompt,
            conversation_id=conversation.upstream_id if conversation else None,
            references=choice.references,
        )
        notes = [f"_Skipped {reason}._" for reason in choice.skipped]
        asked_at = time.time()

        async def remember(upstream_id: str) -> None:
            # Stored as soon as it is known, so a crash mid-answer cannot orphan a new conversation.
            now = time.time()
            early = ConversationRecord(
                scope.key, upstream_id, resolved.model, resolved.preset.name, 0, now, now
            )
            self._conversations.put(scope.key, early)
            await self.store.save_conversation(early)

        try:
            text, conversation_id, trace_id = await self._stream(turn, reply, notes, remember)
        except UpstreamError as error:
            if (
                error.status == 404
                and error.code == "not_found"
                and turn.conversation_id
                and not reply.started
            ):
                # The service forgot this conversation: start a new one rather than fail.
                log.info("upstream forgot conversation %s; starting a new one", turn.conversation_id)
                notes.insert(0, "_The previous conversation had expired, so this starts a new one._")
                try:
                    text, conversation_id, trace_id = await self._stream(
                        replace(turn, conversation_id=None), reply, notes, remember
                    )
                except UpstreamError as again:
                    return await self._failed(question, reply, again, turn.conversation_id)
            else:
                return await self._failed(question, reply, error, turn.conversation_id)

        now = time.time()
        created = (
            conversation.created_at if conversation and conversation.upstream_id == conversation_id else now
        )
        turns = conversation.turns + 1 if conversation and conversation.upstream_id == conversation_id else 1
        record = ConversationRecord(
            scope_key=scope.key,
            upstream_id=conversation_id,
            model=resolved.model,
            preset=resolved.preset.name,
            turns=turns,
            created_at=created,
            updated_at=now,
        )
        transcript = TranscriptEntry(
            scope_key=scope.key,
            conversation_id=conversation_id,
            author_id=question.actor.user_id,
            author_name=author,
            question=question.text,
            answer=text,
            outcome=Outcome.ANSWERED.value,
            trace_id=trace_id,
            asked_at=asked_at,
            answered_at=now,
        )
        self._conversations.put(scope.key, record)
        # The write overlaps the final edit, and is committed before the next turn of this scope starts.
        stored = self.store.queue_turn(record, transcript)
        final = format_answer(text, thinking_mode=self._thinking)
        if notes:
            final = f"{final.rstrip()}\n\n" + "\n".join(notes)
        try:
            await reply.finish(final)
        finally:
            try:
                await stored
            except Exception:
                # The user has the answer; only the operator can fix a database that refuses writes.
                log.exception("could not store a finished turn", extra={"platform": scope.platform})
        if log.isEnabledFor(logging.INFO):
            log.info(
                "answered",
                extra={
                    "platform": scope.platform,
                    "channel": scope.channel,
                    "conversation_id": conversation_id,
                    "trace_id": trace_id,
                    "chars": len(text),
                },
            )
        return Outcome.ANSWERED

    async def _stream(
        self,
        turn: Turn,
        reply: StreamingReply,
        notes: list[str],
        remember: Callable[[str], Awaitable[None]],
    ) -> tuple[str, str | None, str | None]:
        started = time.monotonic()
        answer = ""
        conversation_id = turn.conversation_id
        trace_id: str | None = None
        chunks = self.client.stream(turn)
        try:
            async with asyncio.timeout(self.settings.answer_timeout):
                try:
                    async for chunk in chunks:
                        answer = chunk.answer
                        trace_id = chunk.trace_id or trace_id
                        reply.update(answer)
                        if chunk.conversation_id and chunk.conversation_id != conversation_id:
                            conversation_id = chunk.conversation_id
                            await remember(conversation_id)
                finally:
                    # Closed here, not by the garbage collector: the connection goes back at once.
                    await chunks.aclose()
        except TimeoutError:
            if not answer:
                raise UpstreamError(
                    "The AI service took too long to answer.", detail="answer timeout", retryable=False
                ) from None
            notes.append("_The answer was stopped because it ran too long._")
        metrics.UPSTREAM_SECONDS.observe(time.monotonic() - started)
        return answer, conversation_id, trace_id

    async def _failed(
        self, question: Question, reply: StreamingReply, error: UpstreamError, conversation_id: str | None
    ) -> Outcome:
        scope = question.scope
        metrics.UPSTREAM_ERRORS.labels(error.code or (str(error.status) if error.status else "network")).inc()
        log.warning(
            "upstream error: %s",
            error,
            extra={
                "platform": scope.platform,
                "channel": scope.channel,
                "conversation_id": conversation_id,
                "trace_id": error.trace_id,
                "status": error.status,
                "code": error.code,
            },
        )
        message = error.user_message
        if error.trace_id and error.status is not None and error.status >= 500:
            message = f"{message} (trace `{error.trace_id}`)"
        await reply.fail(message)
        return Outcome.FAILED

    def _render_partial(self, raw: str) -> str:
        return format_answer(raw, thinking_mode=self._thinking, streaming=True)

    # --- state ----------------------------------------------------------------------------------

    async def _conversation(self, scope: Scope) -> ConversationRecord | None:
        key = scope.key
        if key in self._conversations:
            return self._conversations.get(key)
        record = await self.store.get_conversation(key)
        self._conversations.put(key, record)
        return record

    async def scope_settings(self, keys: tuple[str, ...]) -> list[ScopeSettings | None]:
        missing = [key for key in keys if key not in self._settings_cache]
        if missing:
            found = await self.store.get_settings(missing)
            for key in missing:
                self._settings_cache.put(key, found.get(key))
        return [self._settings_cache.get(key) for key in keys]

    def forget_setting_cache(self, key: str) -> None:
        self._settings_cache.pop(key)
        # A setting reaches every scope below its key; settings change rarely, so forget them all.
        self._resolved.clear()
        self._settings_generation += 1

    async def forget_conversation(self, scope: Scope) -> bool:
        self._conversations.pop(scope.key)
        return await self.store.forget_conversation(scope.key)

    async def find_preset(self, scope: Scope, name: str) -> Preset | None:
        builtin = BUILTIN_PRESETS.get(name)
        if builtin is not None:
            return builtin
        custom = await self.store.get_preset(scope.workspace_key, name)
        if custom is None:
            return None
        return Preset(custom.name, custom.description, custom.prompt, builtin=False)

    async def resolve(self, scope: Scope) -> Resolved:
        key = scope.key
        resolved = self._resolved.get(key)
        if resolved is not None:
            return resolved
        generation = self._settings_generation
        resolved, warned = await self._resolve(scope)
        # Not kept if a setting changed meanwhile, nor if it needed a warning (which is logged each time).
        if resolved.preset.builtin and not warned and generation == self._settings_generation:
            self._resolved.put(key, resolved)
        return resolved

    async def _resolve(self, scope: Scope) -> tuple[Resolved, bool]:
        """The resolution, and whether it had to warn about a stored choice."""
        warned = False
        lineage = scope.lineage()
        found = await self.scope_settings(lineage)
        labels = ("thread", "channel", "workspace") if scope.is_thread else ("channel", "workspace")

        model, model_source = self.settings.default_model, "default"
        for label, setting in zip(labels, found, strict=True):
            if setting is not None and setting.model:
                if setting.model in self.settings.models:
                    model, model_source = setting.model, label
                    break
                log.warning("stored model %r is no longer allowed; using the default", setting.model)
                warned = True

        preset_names = [s.preset if s is not None else None for s in found]
        name = resolve_preset_name(preset_names, self.settings.default_preset)
        source = next((lab for lab, value in zip(labels, preset_names, strict=True) if value), "default")
        preset = await self.find_preset(scope, name)
        if preset is None:
            log.warning("preset %r no longer exists; using the default", name)
            preset = BUILTIN_PRESETS.get(self.settings.default_preset) or BUILTIN_PRESETS["assistant"]
            source = "default"
            warned = True
        return Resolved(model, model_source, preset, source), warned

    async def conversation(self, scope: Scope) -> ConversationRecord | None:
        return await self._conversation(scope)

    # --- commands -------------------------------------------------------------------------------

    async def execute(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        if command.action is Action.ASK:
            return CommandReply("Questions need a place to answer in; mention me instead.", ok=False)
        if not may_run(command.action, scope.platform, actor, self.settings.admin_users):
            log.info(
                "refused %s to a non-admin",
                command.action.value,
                extra={"platform": scope.platform, "channel": scope.channel, "user": actor.user_id},
            )
            return CommandReply(
                f"Only admins can use `{command.action.value}` here. Ask a workspace or server admin.",
                ok=False,
            )
        return await self._commands.run(scope, actor, command)

    async def preset_names(self, scope: Scope) -> list[str]:
        custom = await self.store.list_presets(scope.workspace_key)
        return sorted({*BUILTIN_PRESETS, *(p.name for p in custom)})
