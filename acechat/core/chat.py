"""ChatCore: every decision between a platform event and the upstream model.

Adapters hand the core what happened: a line typed to the bot (`run_line`: a command or a question), a
question (`ask`) or a structured command (`run_command`), each with a `ReplyTarget`. The core drops
re-deliveries, checks rights and limits, orders turns per scope, resolves the preset and model,
streams the answer onto the target, words every refusal and error, and keeps state in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from acechat.core import access, metrics, notices
from acechat.core.attachments import AttachmentChoice, choose_references
from acechat.core.cache import LRU
from acechat.core.command_runner import CommandRunner
from acechat.core.commands import Action, Command, CommandReply, parse_command
from acechat.core.controls import ControlCommands, ControlState, QuotaGate, direct_message_refusal
from acechat.core.errors import UpstreamError
from acechat.core.facts import Actor, Attachment
from acechat.core.pacing.scheduler import Scheduler, Urgency
from acechat.core.permissions import GENERIC_RIGHTS, Privilege, privilege_of, refusal, required
from acechat.core.platform import MentionRules
from acechat.core.platform_errors import PlatformError, PlatformForbidden
from acechat.core.reply_target import Mark, ReplyTarget
from acechat.core.sanitize import format_answer
from acechat.core.scope import DIRECT, Scope
from acechat.core.settings import Settings
from acechat.core.splitting import closing_fence, split_message
from acechat.core.state import ScopeState
from acechat.core.streaming import StreamingReply
from acechat.core.upstream import AIChatClient, AnswerText, Turn
from acechat.storage import RateCheck, Store, open_store
from acechat.storage.records import ConversationRecord, TranscriptEntry, UsageHold, UsageRecord

log = logging.getLogger(__name__)

NO_ATTACHMENTS = AttachmentChoice((), ())
PRUNE_INTERVAL = 3600.0
# Users told "slow down" in a channel recently, on platforms where that notice is public.
NOTICED_USERS = 10_000
# Where a refusal of a place or person is public (Discord mentions), it is said once an hour per user.
ACCESS_NOTICE_SECONDS = 3600.0


class Outcome(enum.Enum):
    ANSWERED = "answered"
    REFUSED = "refused"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    # Not addressed to the bot after all (a thread message in a thread it is not engaged in).
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Question:
    scope: Scope
    actor: Actor
    text: str
    attachments: tuple[Attachment, ...] = ()
    # The platform's id for this delivery: a re-delivery of an id already seen is dropped.
    delivery: str | None = None
    # Facts for admission (issue 17). `direct`: a direct message (Slack's have a workspace);
    # `roles`: the asker's platform roles (Discord); `mentioned` False: a message in a thread that did
    # not mention the bot, answered only where the thread is engaged; `mentions_others`: it names
    # someone else; `from_bot`: its author is a bot.
    direct: bool = False
    roles: tuple[str, ...] = ()
    mentioned: bool = True
    mentions_others: bool = False
    from_bot: bool = False
    # Whether the operator allows direct messages that belong to no workspace (Discord's); the adapter
    # reports its setting.
    operator_dms: bool = True


@dataclass(frozen=True, slots=True)
class _Refused:
    """Why a question is refused, and how: public notices repeat at most once per `window` seconds,
    then a mark on the question (`mark`) or silence."""

    text: str
    window: float
    mark: bool


class ChatCore:
    def __init__(self, settings: Settings, store: Store, client: AIChatClient) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.state = ScopeState(settings, store)
        self.controls = ControlState(store)
        self._commands = CommandRunner(self.state, ControlCommands(settings, store, self.controls))
        # Questions per scope that hold or wait for its turn in this process.
        self._queued: dict[str, int] = {}
        self._noticed: LRU[str, float] = LRU(NOTICED_USERS)
        self._quota = QuotaGate(settings, store)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._maintenance: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> ChatCore:
        store = await open_store(
            database_url=settings.database_url,
            db_path=settings.db_path,
            transcript_days=settings.transcript_days,
            pool_size=settings.database_pool,
        )
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

    # --- what adapters call -----------------------------------------------------------------------

    async def run_line(
        self,
        scope: Scope,
        actor: Actor,
        line: str,
        target: ReplyTarget,
        *,
        attachments: tuple[Attachment, ...] = (),
        delivery: str | None = None,
        direct: bool = False,
    ) -> Outcome:
        """A line typed to the bot (Slack's command, the console): a command if it has one's exact
        shape, otherwise a question. `direct`: typed in a direct message."""
        command = parse_command(line)
        if command.action is Action.ASK:
            question = Question(scope, actor, command.text or "", attachments, delivery, direct=direct)
            return await self.ask(question, target)
        reply = await self.run_command(scope, actor, command, target, delivery=delivery, direct=direct)
        if reply is None:
            return Outcome.DUPLICATE
        return Outcome.ANSWERED if reply.ok else Outcome.REFUSED

    async def run_command(
        self,
        scope: Scope,
        actor: Actor,
        command: Command,
        target: ReplyTarget,
        *,
        delivery: str | None = None,
        direct: bool = False,
    ) -> CommandReply | None:
        """Run a command and show its reply: to the channel when it announces a change, else to the
        asker alone. None for a re-delivery, which is dropped. `direct`: typed in a direct message."""
        try:
            if delivery is not None and not await self._first_delivery(delivery, scope):
                return None
            reply = await self.execute(scope, actor, command, rights=target.rules.rights, direct=direct)
        except Exception:
            log.exception("command %s failed", command.action.value, extra=_context(scope, actor))
            reply = CommandReply(notices.INTERNAL_ERROR, ok=False)
        say = target.announce if reply.in_channel else target.notify
        # A reply to the channel is a post like an answer's: it takes its turn on the channel's posts.
        posts = target.limits.posts if reply.in_channel else ()
        scheduler = target.limits.scheduler or Scheduler()
        try:
            for part in split_message(reply.text, target.limits.max_chars):
                await scheduler.call(Urgency.POST, posts)
                try:
                    await say(part)
                finally:
                    scheduler.done(posts)
        except Exception:
            log.exception("could not show a command's reply", extra=_context(scope, actor))
        return reply

    async def execute(
        self,
        scope: Scope,
        actor: Actor,
        command: Command,
        *,
        rights: Mapping[Privilege, str] = GENERIC_RIGHTS,
        direct: bool = False,
    ) -> CommandReply:
        """A command's reply, after checking the actor holds the level the command needs; a refusal
        names the rights as `rights` (the platform's rules) names them. `direct`: typed in a direct
        message, where a channel's own settings are refused."""
        if command.action is Action.ASK:
            return CommandReply(notices.NO_ASKING_HERE, ok=False)
        level = privilege_of(scope.platform, actor.user_id, actor.privilege, self.settings.admin_users)
        if level < required(command.action):
            log.info("refused %s: not enough rights", command.action.value, extra=_context(scope, actor))
            return CommandReply(refusal(command.action, rights), ok=False)
        channel_only = direct_message_refusal(scope, command, direct)
        if channel_only is not None:
            return channel_only
        return await self._commands.run(scope, actor, command)

    async def ask(self, question: Question, target: ReplyTarget) -> Outcome:
        received = time.monotonic()
        scope = question.scope
        try:
            if question.delivery is not None and not await self._first_delivery(question.delivery, scope):
                return Outcome.DUPLICATE
            reason, held = await self._refusal(question)
            if reason is Outcome.IGNORED:
                return Outcome.IGNORED
        except Exception:
            # The store failed before anything happened (a database gone away): say so, keep serving.
            log.exception("could not admit a question", extra=_context(scope, question.actor))
            await self._quietly(target.notify(notices.INTERNAL_ERROR))
            metrics.count_question(scope.platform, Outcome.FAILED.value)
            return Outcome.FAILED
        if isinstance(reason, _Refused):
            await self._refuse(question, target, reason)
            metrics.count_question(scope.platform, Outcome.REFUSED.value)
            return Outcome.REFUSED
        mentions = target.rules.mentions
        reply = StreamingReply(target, render=lambda raw: self._render_partial(raw, mentions))
        # The channel's line of answers still to be posted must clear in time with this one in it.
        busy = reply.join(question.actor.user_id, self.settings.max_answer_chars)
        if busy is not None:
            log.info(
                "refused a question: the channel's answers would not be shown in time",
                extra=_context(scope, question.actor),
            )
            await self._quota.release(held)
            window = self.settings.user_rate.per_seconds
            await self._refuse(question, target, _Refused(notices.channel_busy(busy), window, True))
            metrics.count_question(scope.platform, Outcome.REFUSED.value)
            return Outcome.REFUSED
        self._in_flight += 1
        self._idle.clear()
        metrics.IN_FLIGHT.inc()
        try:
            outcome = await self._take_turn(question, target, reply, held)
        finally:
            reply.leave()
            await self._quota.release(held)
            self._in_flight -= 1
            metrics.IN_FLIGHT.dec()
            if self._in_flight == 0:
                self._idle.set()
        metrics.count_question(scope.platform, outcome.value)
        # A warning is not answer text: like upstream latency, time to first text is for answers only.
        if reply.first_text_at is not None and outcome is Outcome.ANSWERED:
            metrics.FIRST_TEXT_SECONDS.observe(reply.first_text_at - received)
        return outcome

    async def follows_thread(self, scope: Scope) -> bool:
        """Whether thread messages without a mention may be for the bot here (an engaged thread of a
        channel set to `engage thread`): adapters ask before looking up who wrote them."""
        if not scope.is_thread:
            return False
        controls = await self.controls.of(scope)
        return controls.engages_threads and await self.store.is_engaged(scope.key)

    async def opens_thread(self, question: Question) -> bool:
        """Whether the answer to this mention goes into a new thread (Discord `autothread on`): only
        in a channel of a server, and only for a question that would not be refused there."""
        scope = question.scope
        if scope.is_thread or scope.workspace == DIRECT or question.direct:
            return False
        controls = await self.controls.of(scope)
        if not controls.autothread:
            return False
        refused, held = await self._controls_refusal(question, controls)
        await self._quota.release(held)
        return refused is None

    async def autothread_channels(self) -> list[Scope]:
        """The channels with autothread on, for the adapter's start-up check of its permissions."""
        found = await self.store.controls_set_to(access.AUTOTHREAD, "on")
        scopes = []
        for control in found:
            parts = control.key.split(":")
            if len(parts) == 4:
                scopes.append(Scope.of(parts[0], parts[1], parts[2]))
        return scopes

    # --- admission --------------------------------------------------------------------------------

    async def _first_delivery(self, delivery: str, scope: Scope) -> bool:
        if await self.store.first_sighting(delivery):
            return True
        log.info("ignoring a re-delivered event %s", delivery, extra={"platform": scope.platform})
        return False

    async def _refusal(self, question: Question) -> tuple[_Refused | Outcome | None, UsageHold | None]:
        """Why the question must not go upstream (or IGNORED: it was not for the bot), else None; and
        the quota hold it takes while admitted (recorded or released by the caller)."""
        scope = question.scope
        controls = await self.controls.of(scope)
        if not question.mentioned and not await self._engaged(question):
            return Outcome.IGNORED, None
        text = question.text.strip()
        window = self.settings.user_rate.per_seconds
        if self._closing:
            return _Refused(notices.RESTARTING, window, True), None
        if not text and not question.attachments:
            return _Refused(notices.EMPTY_QUESTION, window, True), None
        limit = self.settings.max_question_chars
        if len(text) > limit:
            return _Refused(notices.too_long(len(text), limit), window, True), None
        refused, held = await self._controls_refusal(question, controls)
        if refused is not None:
            return refused, None
        try:
            rated = await self._rate_refusal(question)
            if rated is None and question.mentioned and scope.is_thread and controls.engages_threads:
                await self.store.engage_thread(scope.key, scope.channel_scope.key, time.time())
        except BaseException:
            await self._quota.release(held)
            raise
        if rated is not None:
            await self._quota.release(held)
            return rated, None
        return None, held

    async def _engaged(self, question: Question) -> bool:
        """Whether a thread message without a mention is the bot's to answer: a person's, naming no one
        else, in a thread the bot was asked in, of a channel set to `engage thread`."""
        scope = question.scope
        if question.from_bot or question.mentions_others or not scope.is_thread:
            return False
        return await self.follows_thread(scope)

    async def _controls_refusal(
        self, question: Question, controls: access.Controls
    ) -> tuple[_Refused | None, UsageHold | None]:
        """Where, who and how much, in that order; admins (channel level and up) are never refused.
        An admitted question under quotas holds one count on its user, channel and workspace until it
        ends, in every process sharing the store, so questions asked at once cannot all slip under a
        quota before any is recorded."""
        scope, actor = question.scope, question.actor
        level = privilege_of(scope.platform, actor.user_id, actor.privilege, self.settings.admin_users)
        if level >= Privilege.CHANNEL_ADMIN:
            return None, None
        direct = question.direct or scope.workspace == DIRECT
        which = access.where_refusal(
            controls,
            direct=direct,
            workspaceless=scope.workspace == DIRECT,
            operator_dms=question.operator_dms,
        ) or (
            None if scope.workspace == DIRECT else access.who_refusal(controls, actor.user_id, question.roles)
        )
        if which is not None:
            log.info("refused a question: %s", which.value, extra=_context(scope, actor))
            metrics.count_refusal(which.value)
            return _Refused(access.REFUSALS[which], ACCESS_NOTICE_SECONDS, False), None
        if not controls.quotas:
            return None, None
        hit, held = await self._quota.admit(scope, actor.user_id, controls)
        if hit is None:
            return None, held
        log.info("refused a question: %s quota", hit.quota.name, extra=_context(scope, actor))
        metrics.count_refusal(f"quota {hit.quota.level}")
        return _Refused(access.quota_text(hit, time.time()), ACCESS_NOTICE_SECONDS, False), None

    async def _rate_refusal(self, question: Question) -> _Refused | None:
        scope = question.scope
        checks: list[tuple[str, RateCheck]] = []
        if self.settings.user_rate.enabled:
            key = f"user:{scope.platform}:{scope.workspace}:{question.actor.user_id}"
            checks.append(
                ("user", RateCheck(key, self.settings.user_rate.count, self.settings.user_rate.per_seconds))
            )
        if self.settings.channel_rate.enabled:
            rate = self.settings.channel_rate
            checks.append(
                ("channel", RateCheck(f"channel:{scope.channel_scope.key}", rate.count, rate.per_seconds))
            )
        if not checks:
            return None
        verdict = await self.store.take_rate([check for _, check in checks])
        if verdict.refused is None:
            return None
        which = checks[verdict.refused][0]
        metrics.RATE_LIMITED.labels(which).inc()
        text = notices.user_rate(verdict.wait) if which == "user" else notices.channel_rate(verdict.wait)
        return _Refused(text, self.settings.user_rate.per_seconds, True)

    async def _refuse(self, question: Question, target: ReplyTarget, reason: _Refused) -> None:
        """Tell the asker; where notices are public, once per user per window, then a mark or nothing."""
        if not target.limits.private_notices:
            key = f"{question.scope.channel_scope.key}:{question.actor.user_id}:{reason.window}"
            now = time.monotonic()
            last = self._noticed.get(key)
            if last is not None and now - last < reason.window:
                if reason.mark:
                    await self._quietly(target.mark(Mark.REFUSED))
                return
            self._noticed.put(key, now)
        await self._quietly(target.notify(reason.text))

    @staticmethod
    async def _quietly(call: Awaitable[None]) -> None:
        try:
            await call
        except Exception:
            log.exception("could not send a notice")

    # --- answering --------------------------------------------------------------------------------

    async def _take_turn(
        self, question: Question, target: ReplyTarget, reply: StreamingReply, held: UsageHold | None
    ) -> Outcome:
        """Wait for the scope's turn (bounded in number and time), then answer."""
        scope = question.scope
        key = scope.key
        queued = self._queued.get(key, 0)
        # The one being answered does not count as waiting.
        if queued > self.settings.max_waiting:
            await self._quietly(target.notify(notices.queue_full(queued - 1)))
            return Outcome.REFUSED
        self._queued[key] = queued + 1
        try:
            async with contextlib.AsyncExitStack() as turn:
                try:
                    # The bound holds however the turn is kept: behind this process's questions or,
                    # with PostgreSQL, another process's.
                    async with asyncio.timeout(self.settings.max_wait):
                        await turn.enter_async_context(self.store.scope_turn(key))
                except TimeoutError:
                    await self._quietly(target.notify(notices.queue_wait(self.settings.max_wait)))
                    return Outcome.REFUSED
                # Typing starts with the turn: a queued question shows nothing until it is answered.
                reply.start_typing()
                return await self._answer(question, reply, target.rules.mentions, held)
        except PlatformForbidden as error:
            log.warning("the platform refused the bot here: %s", error, extra=_context(scope, question.actor))
            await reply.abort()
            await self._quietly(target.notify(notices.CANNOT_POST))
        except PlatformError as error:
            log.warning("could not deliver an answer: %s", error, extra=_context(scope, question.actor))
            await reply.abort()
            await self._quietly(target.notify(notices.NOT_DELIVERED))
        except Exception:
            log.exception("could not deliver an answer", extra=_context(scope, question.actor))
            await reply.abort()
            await self._quietly(target.notify(notices.INTERNAL_ERROR))
        finally:
            left = self._queued[key] - 1
            if left:
                self._queued[key] = left
            else:
                del self._queued[key]
        return Outcome.FAILED

    async def _answer(
        self, question: Question, reply: StreamingReply, mentions: MentionRules, held: UsageHold | None
    ) -> Outcome:
        scope = question.scope
        resolved = await self.state.resolve(scope)
        stored = await self.state.conversation(scope)
        epoch = stored.epoch if stored is not None else 0
        conversation = stored if stored is not None and stored.upstream_id else None
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
        sent = time.monotonic()

        async def remember(upstream_id: str) -> None:
            # Stored as soon as it is known, so a crash mid-answer cannot orphan a new conversation;
            # a reset since the turn began wins (the epoch no longer matches).
            now = time.time()
            early = ConversationRecord(
                scope.key, upstream_id, resolved.model, resolved.preset.name, 0, now, now, epoch
            )
            await self.store.save_conversation(early)

        try:
            text, conversation_id, trace_id, tokens = await self._stream(turn, reply, notes, remember)
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
                    text, conversation_id, trace_id, tokens = await self._stream(
                        replace(turn, conversation_id=None), reply, notes, remember
                    )
                except UpstreamError as again:
                    await self._account(question, resolved.model, "", sent, Outcome.FAILED, None, held)
                    return await self._failed(question, reply, again, turn.conversation_id)
            else:
                await self._account(question, resolved.model, "", sent, Outcome.FAILED, None, held)
                return await self._failed(question, reply, error, turn.conversation_id)

        now = time.time()
        same = conversation is not None and conversation.upstream_id == conversation_id
        record = ConversationRecord(
            scope_key=scope.key,
            upstream_id=conversation_id,
            model=resolved.model,
            preset=resolved.preset.name,
            turns=conversation.turns + 1 if same and conversation is not None else 1,
            created_at=conversation.created_at if same and conversation is not None else now,
            updated_at=now,
            epoch=epoch,
        )
        keep = (await self.controls.of(scope)).keeps_transcripts
        transcript = (
            TranscriptEntry(
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
            if keep
            else None
        )
        # The writes overlap the final edit; the turn's is committed before the next turn of this scope
        # starts, and the usage record before the next question's quota is counted.
        written = self.store.queue_turn(record, transcript)
        accounted = asyncio.ensure_future(
            self._account(question, resolved.model, text, sent, Outcome.ANSWERED, tokens, held)
        )
        final = format_answer(text, thinking_mode=self.settings.thinking, mentions=mentions)
        if notes:
            final = f"{final.rstrip()}\n\n" + "\n".join(notes)
        try:
            await reply.finish(final)
        finally:
            try:
                await written
            except Exception:
                # The user has the answer; only the operator can fix a database that refuses writes.
                log.exception("could not store a finished turn", extra={"platform": scope.platform})
            await accounted
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
    ) -> tuple[str, str | None, str | None, int | None]:
        """The answer's text, conversation id, trace id and the tokens the service reported (if any)."""
        started = time.monotonic()
        answer: AnswerText | None = None
        cut = False
        cap = self.settings.max_answer_chars
        conversation_id = turn.conversation_id
        trace_id: str | None = None
        tokens: int | None = None
        chunks = self.client.stream(turn)
        try:
            async with asyncio.timeout(self.settings.answer_timeout):
                try:
                    async for chunk in chunks:
                        answer = chunk.text
                        trace_id = chunk.trace_id or trace_id
                        tokens = chunk.tokens if chunk.tokens is not None else tokens
                        if chunk.conversation_id and chunk.conversation_id != conversation_id:
                            conversation_id = chunk.conversation_id
                            await remember(conversation_id)
                        if len(answer) > cap:
                            cut = True
                            break
                        reply.update(answer)
                finally:
                    # Closed here, not by the garbage collector: the connection goes back at once.
                    await chunks.aclose()
        except TimeoutError:
            if answer is None or not len(answer):
                raise UpstreamError(
                    "The AI service took too long to answer.", detail="answer timeout", retryable=False
                ) from None
            notes.append("_The answer was stopped because it ran too long._")
        metrics.UPSTREAM_SECONDS.observe(time.monotonic() - started)
        text = str(answer) if answer is not None else ""
        if cut:
            text = text[:cap]
            text += closing_fence(text)
            notes.append(f"_The answer was cut here: it reached this bot's limit of {cap:,} characters._")
        return text, conversation_id, trace_id, tokens

    async def _account(
        self,
        question: Question,
        model: str,
        text: str,
        sent: float,
        outcome: Outcome,
        tokens: int | None,
        held: UsageHold | None,
    ) -> None:
        """Record a question that went upstream, for `usage`, the quotas (ending its hold) and the
        per-workspace metrics. A database that refuses the write costs the record, never the answer."""
        scope = question.scope
        record = UsageRecord(
            workspace_key=scope.workspace_key,
            channel_key=scope.channel_scope.key,
            user_id=question.actor.user_id,
            model=model,
            answer_chars=len(text),
            upstream_seconds=time.monotonic() - sent,
            outcome=outcome.value,
            at=time.time(),
            tokens=tokens,
        )
        metrics.count_workspace(scope.platform, scope.workspace, outcome.value, len(text), tokens)
        try:
            await self._quota.record(record, held)
        except Exception:
            log.exception("could not record usage", extra=_context(scope, question.actor))

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

    def _render_partial(self, raw: str, mentions: MentionRules) -> str:
        return format_answer(raw, thinking_mode=self.settings.thinking, mentions=mentions, streaming=True)


def _context(scope: Scope, actor: Actor) -> dict[str, str]:
    return {"platform": scope.platform, "channel": scope.channel, "user": actor.user_id}
