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
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from acechat.core import access, metrics, notices
from acechat.core.answer import AnswerView, one_line
from acechat.core.attachments import AttachmentChoice, choose_references
from acechat.core.cache import LRU
from acechat.core.choices import FORM_CHARS, Choices, Form, choices_for, form_for, parse_control
from acechat.core.command_runner import CommandRunner
from acechat.core.commands import Action, Command, CommandReply, parse_command
from acechat.core.controls import ControlCommands, ControlState, QuotaGate, direct_message_refusal
from acechat.core.errors import UpstreamError
from acechat.core.events import Finished
from acechat.core.facts import Actor, Attachment
from acechat.core.interactions import (
    NONE,
    WHOLE_FORM,
    Controls,
    Home,
    Interactive,
    PresetForm,
    StopSignal,
    interactive,
    is_answer_id,
)
from acechat.core.pacing.scheduler import Scheduler, Urgency
from acechat.core.permissions import GENERIC_RIGHTS, Privilege, privilege_of, refusal, required
from acechat.core.platform import MentionRules, PlatformRules
from acechat.core.platform_errors import PlatformError, PlatformForbidden, PlatformRateLimited
from acechat.core.presets import PresetError, suggestions, validate_preset_name
from acechat.core.reply_target import Mark, ReplyTarget
from acechat.core.sanitize import format_answer
from acechat.core.scope import DIRECT, Scope
from acechat.core.settings import Settings
from acechat.core.splitting import closing_fence, split_message
from acechat.core.state import ScopeState
from acechat.core.streaming import Draft, StreamingReply
from acechat.core.upstream import AIChatClient, AnswerUpdate, Turn
from acechat.storage import RateCheck, Store, open_store
from acechat.storage.records import (
    AnswerRecord,
    AnswerState,
    Change,
    ConversationRecord,
    PendingDelete,
    PendingQuestion,
    TranscriptEntry,
    UsageHold,
    UsageRecord,
)

log = logging.getLogger(__name__)

NO_ATTACHMENTS = AttachmentChoice((), ())
PRUNE_INTERVAL = 3600.0
# Conversations left by a reset are deleted at the service (v2) in the background: looked for this
# often, retried with back-off up to a day apart, and given up (logged) after this many attempts.
DELETE_INTERVAL = 60.0
DELETE_BACKOFF = 30.0
DELETE_BACKOFF_MAX = 86_400.0
DELETE_ATTEMPTS = 10
# Users told "slow down" in a channel recently, on platforms where that notice is public.
NOTICED_USERS = 10_000
# Where a refusal of a place or person is public (Discord mentions), it is said once an hour per user.
ACCESS_NOTICE_SECONDS = 3600.0
# How often running answers look for a Stop pressed in another process, should its notice be lost.
STOP_POLL = 2.0
# The most of a message "ask about this message" gives the model, in characters.
QUOTE_CHARS = 8000
FEEDBACK_DAYS = 7
# A question's buttons refused for the channel's post rate are tried again this often, this long apart
# at most: the platform's retry-after, within the turn they belong to.
OFFER_TRIES = 3
OFFER_WAIT = 5.0


class Outcome(enum.Enum):
    ANSWERED = "answered"
    REFUSED = "refused"
    FAILED = "failed"
    DUPLICATE = "duplicate"
    # Not addressed to the bot after all (a thread message in a thread it is not engaged in).
    IGNORED = "ignored"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Question:
    scope: Scope
    actor: Actor
    text: str
    attachments: tuple[Attachment, ...] = ()
    # The platform's id for this delivery: a re-delivery of an id already seen is dropped.
    delivery: str | None = None
    # A message the question is about ("ask about this message"): given to the model before the question.
    quoted: str = ""
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

    # Set when `text` answers a question the model asked back (v2): the turn resumes the paused call.
    resumes: PendingQuestion | None = None


@dataclass(frozen=True, slots=True)
class _Refused:
    """Why a question is refused, and how: public notices repeat at most once per `window` seconds,
    then a mark on the question (`mark`) or silence."""

    text: str
    window: float
    mark: bool


@dataclass(frozen=True, slots=True)
class PressResult:
    """What a press of one of the core's buttons came to: `form` to open (Other…), and `closed`, the text
    the buttons should show instead once their question cannot be answered any more."""

    outcome: Outcome
    form: Form | None = None
    closed: str | None = None


@runtime_checkable
class OffersChoices(Protocol):
    """A target that can show buttons under an answer (Slack, Discord); others show numbered lines."""

    async def offer_choices(self, choices: Choices) -> str | None:
        """Show the buttons; returns where they are (a handle for `ChatCore.register_closer`'s closer, kept
        in the store), if known."""
        ...


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
        # Answers this process is streaming, by id, with their Stop.
        self._running: dict[str, tuple[AnswerRecord, StopSignal]] = {}
        # Answers ended here whose row is still being written, so a press right away finds them.
        self._ending: dict[str, AnswerRecord] = {}
        # Only a database other processes share needs to know of an answer while it runs.
        self._shared = store.backend == "postgresql"
        self._stop_watch: asyncio.Task[None] | None = None
        store.on_change(self._changed)
        self.state.after_reset = self._reset_skips
        # Writes nobody waits for (token usage, answers' rows), kept so they are not collected mid-flight.
        self._background: set[asyncio.Task[None]] = set()
        self._deleter: asyncio.Task[None] | None = None
        self._closers: dict[str, Callable[[str, str, str], Coroutine[Any, Any, None]]] = {}
        self._delete_soon = asyncio.Event()

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
        if core.client.api_version == "v2":
            core.state.forgotten = core._forget_upstream
            core._deleter = asyncio.create_task(core._delete_periodically())
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

    # --- conversations deleted at the service (v2, issue 16 item 5) ------------------------------------

    async def _forget_upstream(self, record: ConversationRecord) -> None:
        """A reset left `record` behind: remember to delete it at the service. Never fails the reset."""
        if record.upstream_id is None:
            return
        try:
            await self.store.queue_delete(PendingDelete(record.upstream_id, record.model, 0, time.time()))
        except Exception:
            log.exception("could not remember to delete conversation %s at the service", record.upstream_id)
            return
        self._delete_soon.set()

    async def _delete_periodically(self) -> None:
        while True:
            try:
                await self.run_deletes()
            except Exception:
                log.exception("deleting conversations at the service failed; will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._delete_soon.wait(), DELETE_INTERVAL)
            self._delete_soon.clear()

    async def run_deletes(self, now: float | None = None) -> int:
        """Delete the conversations whose time has come; returns how many are done with (deleted, or
        given up after `DELETE_ATTEMPTS`). A failure is logged and tried again later, with back-off."""
        at = time.time() if now is None else now
        finished = 0
        for item in await self.store.due_deletes(at):
            try:
                await self.client.delete(item.conversation_id, item.model)
            except UpstreamError as error:
                attempts = item.attempts + 1
                log.warning(
                    "could not delete conversation %s at the service (attempt %d): %s",
                    item.conversation_id,
                    attempts,
                    error,
                    extra={"conversation_id": item.conversation_id, "trace_id": error.trace_id},
                )
                if attempts < DELETE_ATTEMPTS:
                    delay = min(DELETE_BACKOFF * 2**item.attempts, DELETE_BACKOFF_MAX)
                    await self.store.retry_delete(item.conversation_id, at + delay)
                    continue
                log.error("giving up deleting conversation %s at the service", item.conversation_id)
            else:
                log.info(
                    "deleted conversation at the service", extra={"conversation_id": item.conversation_id}
                )
            await self.store.finish_delete(item.conversation_id)
            finished += 1
        return finished

    # --- questions the model asks back (v2 ask_user_question) -----------------------------------------

    async def answer(
        self,
        scope: Scope,
        actor: Actor,
        text: str,
        target: ReplyTarget,
        *,
        question_id: str | None = None,
        delivery: str | None = None,
    ) -> Outcome:
        """Answer the question the model asked back here (`question_id`, or the scope's newest): a number
        picks that option, anything else is the answer in the asker's own words. Only the person who
        asked, or a channel admin, may answer; the answer resumes the paused turn and streams on `target`."""
        result = await self._reply_to_question(scope, actor, text, target, question_id, delivery)
        return result.outcome

    async def press(
        self, scope: Scope, actor: Actor, control_id: str, target: ReplyTarget, *, delivery: str | None = None
    ) -> PressResult:
        """A button an adapter rendered from `Choices` was pressed. The result says whether to open a
        form (`Other…`) and what the buttons should show instead, once they are done with."""
        pressed = parse_control(control_id)
        if pressed is None or pressed.kind == "form":
            log.info("ignoring a press of an unknown control", extra=_context(scope, actor))
            return PressResult(Outcome.REFUSED)
        if pressed.kind == "other":
            pending = await self.store.get_question(pressed.question_id)
            refusal = await self._may_answer(scope, actor, pending)
            if refusal is not None:
                await self._quietly(target.notify(refusal))
                return PressResult(Outcome.REFUSED, closed=await self._closed_text(scope, pending))
            return PressResult(Outcome.ANSWERED, form=form_for(pressed.question_id))
        return await self._reply_to_question(
            scope, actor, str((pressed.option or 0) + 1), target, pressed.question_id, delivery
        )

    async def submit(
        self, scope: Scope, actor: Actor, form_id: str, text: str, target: ReplyTarget
    ) -> PressResult:
        """A form from `press` came back with `text`: the answer in the asker's own words."""
        pressed = parse_control(form_id)
        if pressed is None or pressed.kind != "form":
            return PressResult(Outcome.REFUSED)
        words = " ".join(text.split())[:FORM_CHARS]
        # Typed words are never an option number, even if they look like one.
        return await self._reply_to_question(
            scope, actor, words, target, pressed.question_id, None, typed=True
        )

    async def _may_answer(self, scope: Scope, actor: Actor, pending: PendingQuestion | None) -> str | None:
        """Why `actor` may not answer `pending` now (a notice), or None."""
        if pending is None or pending.scope_key != scope.key:
            return notices.NO_OPEN_QUESTION
        if pending.answered:
            return notices.QUESTION_ANSWERED
        level = privilege_of(scope.platform, actor.user_id, actor.privilege, self.settings.admin_users)
        if actor.user_id != pending.asker_id and level < Privilege.CHANNEL_ADMIN:
            return notices.NOT_YOUR_QUESTION
        return await self._unanswerable(pending, await self.state.conversation(scope), claim=False)

    async def _reply_to_question(
        self,
        scope: Scope,
        actor: Actor,
        text: str,
        target: ReplyTarget,
        question_id: str | None,
        delivery: str | None,
        *,
        typed: bool = False,
    ) -> PressResult:
        pending = await (
            self.store.get_question(question_id) if question_id else self.store.latest_question(scope.key)
        )
        refusal = await self._may_answer(scope, actor, pending)
        if refusal is not None:
            await self._quietly(target.notify(refusal))
            return PressResult(Outcome.REFUSED, closed=await self._closed_text(scope, pending))
        assert pending is not None
        output = " ".join(text.split()) if typed else chosen(pending, text)
        if not output:
            await self._quietly(target.notify(notices.ANSWER_USAGE))
            return PressResult(Outcome.REFUSED)
        outcome = await self.ask(Question(scope, actor, output, delivery=delivery, resumes=pending), target)
        if outcome is Outcome.ANSWERED:
            who = actor.display_name or actor.user_id
            done = f"✅ {one_line(who, 40)} answered: {one_line(output, 80)}"
            return PressResult(outcome, closed=target.rules.mentions.neutralize(done))
        return PressResult(outcome, closed=await self._closed_text(scope, pending))

    async def _closed_text(self, scope: Scope, pending: PendingQuestion | None) -> str | None:
        """What a question's buttons should show once it cannot be answered any more; None while it can."""
        if pending is None:
            return None
        current = await self.store.get_question(pending.id)
        if current is None:
            return None
        if current.answered:
            return "✅ This question was answered."
        if await self._unanswerable(current, await self.state.conversation(scope), claim=False) is not None:
            return notices.BUTTONS_SKIPPED
        return None

    async def open_question(self, scope: Scope) -> PendingQuestion | None:
        """The scope's question still waiting for an answer, if any."""
        pending = await self.store.latest_question(scope.key)
        if pending is None or pending.answered:
            return None
        stored = await self.state.conversation(scope)
        return pending if await self._unanswerable(pending, stored, claim=False) is None else None

    async def _unanswerable(
        self, pending: PendingQuestion, stored: ConversationRecord | None, *, claim: bool = True
    ) -> str | None:
        """Why `pending` cannot be answered now, or None (and, with `claim`, it is now answered)."""
        if claim:
            # Read afresh: another press may have answered it while this one waited for the turn.
            current = await self.store.get_question(pending.id)
            if current is None or current.answered:
                return notices.QUESTION_ANSWERED
        if stored is None or stored.upstream_id != pending.conversation_id or stored.turns != pending.turns:
            # A later question or a reset moved the conversation on: the service skipped the call.
            return notices.QUESTION_SKIPPED
        if claim and not await self.store.answer_question(pending.id):
            return notices.QUESTION_ANSWERED
        return None

    def register_closer(
        self, platform: str, closer: Callable[[str, str, str], Coroutine[Any, Any, None]]
    ) -> None:
        """How an adapter replaces a question's buttons by a text: called with the workspace, where
        `offer_choices` said they are, and the text. Any process may call it for buttons another showed
        (or this one, before a restart): it needs only the handle and its own platform client."""
        self._closers[platform] = closer

    async def _offer(
        self, scope: Scope, kept: PendingQuestion, target: ReplyTarget, skipping: asyncio.Task[None] | None
    ) -> None:
        """Show the question's buttons, where the target can, as a post paced like the answer's own (it
        goes to the same channel right after them), and keep where they are."""
        if not isinstance(target, OffersChoices):
            return
        choices = choices_for(kept.id, kept.question, kept.options)
        posts = target.limits.posts
        scheduler = target.limits.scheduler or Scheduler()
        where: str | None = None
        for _ in range(OFFER_TRIES):
            await scheduler.call(Urgency.POST, posts)
            try:
                where = await target.offer_choices(choices)
                break
            except PlatformRateLimited as limited:
                # The channel's posts were taken meanwhile (another answer, another process): wait as told.
                scheduler.penalize(posts, limited.retry_after)
                wait = limited.retry_after
            except Exception:
                log.exception("could not show a question's buttons", extra={"platform": scope.platform})
                return
            finally:
                scheduler.done(posts)
            await asyncio.sleep(min(wait, OFFER_WAIT))
        else:
            log.warning("could not show a question's buttons: rate limited", extra={"platform": scope.platform})
            return
        if where is None or scope.platform not in self._closers:
            return
        if skipping is not None:
            # The questions this turn skipped give up their handles first, so this one's is not among them.
            await asyncio.wait([skipping])
        try:
            await self.store.show_question(kept.id, where)
        except Exception:
            # Its buttons still say so when pressed once it is skipped; only the edit at once is lost.
            log.exception("could not keep where a question's buttons are", extra={"platform": scope.platform})

    def _skip_waiting(self, scope: Scope, text: str) -> asyncio.Task[None] | None:
        """The scope's questions still waiting are skipped (the service skips a paused call once the
        conversation moves on): their buttons are replaced by `text` now, by this process whichever
        showed them. Off the caller's path: neither the new question nor the reset waits for it."""
        closer = self._closers.get(scope.platform)
        if closer is None:
            return None

        async def skip() -> None:
            for where in await self.store.skip_questions(scope.key):
                self._in_background(
                    self._say_skipped(scope, closer, where, text), "could not mark a question skipped"
                )

        return self._in_background(skip(), "could not find the questions a new turn skipped")

    @staticmethod
    async def _say_skipped(
        scope: Scope, closer: Callable[[str, str, str], Coroutine[Any, Any, None]], where: str, text: str
    ) -> None:
        try:
            await closer(scope.workspace, where, text)
        except Exception as error:
            # A deleted message, a removed app: the buttons say it when pressed instead.
            log.warning(
                "could not show that a question was skipped: %s",
                error,
                extra={"platform": scope.platform, "workspace": scope.workspace},
            )

    async def _reset_skips(self, scope: Scope) -> None:
        self._skip_waiting(scope, notices.SKIPPED_BY_RESET)

    async def _keep_question(
        self, question: Question, view: AnswerView, conversation_id: str, turns: int
    ) -> PendingQuestion | None:
        asked = view.question
        assert asked is not None
        pending = PendingQuestion(
            id=uuid.uuid4().hex[:16],
            scope_key=question.scope.key,
            conversation_id=conversation_id,
            turns=turns,
            tool_id=asked.tool_id,
            question=asked.question,
            options=asked.options,
            asker_id=question.actor.user_id,
            created_at=time.time(),
        )
        try:
            await self.store.save_question(pending)
        except Exception:
            log.exception(
                "could not keep a question the model asked", extra={"platform": question.scope.platform}
            )
            return None
        return pending

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
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for task in (self._maintenance, self._stop_watch, self._deleter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
        if command.action is Action.ANSWER:
            # An answer only while a question waits here; otherwise "answer …" is just a question.
            if await self.open_question(scope) is not None:
                return await self.answer(scope, actor, command.text or "", target, delivery=delivery)
            command = Command(Action.ASK, text=line.strip())
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
            if command.action is Action.ASK:
                # A question handed to a command's path: how to ask instead is the platform's to say.
                reply = CommandReply(notices.no_asking_here(target.rules), ok=False)
            else:
                reply = await self.execute(scope, actor, command, rights=target.rules.rights, direct=direct)
        except Exception:
            log.exception("command %s failed", command.action.value, extra=_context(scope, actor))
            reply = CommandReply(notices.INTERNAL_ERROR, ok=False)
        say = target.announce if reply.in_channel else target.notify
        # A reply to the channel is a post like an answer's: it takes its turn on the channel's posts.
        posts = target.limits.posts if reply.in_channel else ()
        scheduler = target.limits.scheduler or Scheduler()
        try:
            for part in split_message(reply.text, target.limits.max_chars, target.limits.measure):
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
        if question.resumes is None and question.text.lstrip()[:7].lower() == "answer ":
            # "@bot answer 2" answers the question waiting here, as `answer 2` does as a command.
            command = parse_command(question.text)
            if command.action is Action.ANSWER and await self.open_question(scope) is not None:
                return await self.answer(
                    scope, question.actor, command.text or "", target, delivery=question.delivery
                )
        try:
            if question.delivery is not None and not await self._first_delivery(question.delivery, scope):
                return Outcome.DUPLICATE
            reason, held = await self._refusal(question, target.rules)
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
        apart = target.limits.steps_apart
        reply = StreamingReply(target, render=lambda raw: self._render_partial(raw, mentions, apart))
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

    # --- presses: Stop and feedback ----------------------------------------------------------------

    async def stop(self, answer_id: str, scope: Scope, actor: Actor) -> str | None:
        """Someone pressed an answer's Stop. Returns what only they should read, or None: the answer
        stops (whichever process runs it) and its own message says so, or it had ended already and the
        press changes nothing."""
        here = self._running.get(answer_id)
        try:
            if here is not None:
                answer: AnswerRecord | None = here[0]
            else:
                answer = await self.store.get_answer(answer_id) if is_answer_id(answer_id) else None
            if answer is None or answer.state != "running" or answer.workspace_key != scope.workspace_key:
                return None
            if actor.user_id != answer.asker_id and self._level(scope, actor) < Privilege.CHANNEL_ADMIN:
                log.info("refused a stop: not the asker", extra=_context(scope, actor))
                return notices.ONLY_ASKER_STOPS
            if here is not None:
                here[1].request()
            else:
                await self.store.request_stop(answer_id)
        except Exception:
            log.exception("could not stop an answer", extra=_context(scope, actor))
            return notices.INTERNAL_ERROR
        return None

    async def stop_in(self, scope: Scope, actor: Actor) -> str | None:
        """A Stop that names a place rather than an answer (Slack's own Stop on an agent session): the
        answer running in `scope`, as `stop` would."""
        here = next((a for a, _ in self._running.values() if a.scope_key == scope.key), None)
        try:
            answer_id = here.answer_id if here is not None else await self.store.running_answer(scope.key)
        except Exception:
            log.exception("could not find the answer to stop", extra=_context(scope, actor))
            return notices.INTERNAL_ERROR
        return None if answer_id is None else await self.stop(answer_id, scope, actor)

    async def vote(self, answer_id: str, scope: Scope, actor: Actor, *, up: bool) -> str:
        """Someone rated an answer: one vote per person per answer, the last one counts. Returns what
        only they should read."""
        try:
            answer = self._ending.get(answer_id)
            if answer is None and is_answer_id(answer_id):
                answer = await self.store.get_answer(answer_id)
            if answer is None or answer.workspace_key != scope.workspace_key:
                return notices.VOTE_CLOSED
            value = 1 if up else -1
            old = await self.store.vote(answer, actor.user_id, value, time.time())
        except Exception:
            log.exception("could not record a vote", extra=_context(scope, actor))
            return notices.INTERNAL_ERROR
        return notices.voted(up, changed=old is not None and old != value)

    async def preset_form(
        self,
        scope: Scope,
        actor: Actor,
        *,
        editing: bool,
        name: str | None,
        rights: Mapping[Privilege, str] = GENERIC_RIGHTS,
    ) -> PresetForm | CommandReply:
        """The form `preset create` or `preset edit` opens, filled in; or why it does not open."""
        action = Action.PRESET_EDIT if editing else Action.PRESET_CREATE
        if self._level(scope, actor) < required(action):
            return CommandReply(refusal(action, rights), ok=False)
        limit = self.settings.max_preset_chars
        if not editing:
            return PresetForm(False, (name or "").strip(), "", "", limit)
        try:
            # A name no preset can have is said so, quoted in part: it is whatever was typed.
            slug = validate_preset_name(name or "")
        except PresetError as error:
            return CommandReply(error.user_message, ok=False)
        try:
            existing = await self.store.get_preset(scope.workspace_key, slug)
        except Exception:
            log.exception("could not read a preset for its form", extra=_context(scope, actor))
            return CommandReply(notices.INTERNAL_ERROR, ok=False)
        if existing is None:
            return CommandReply(f"There is no custom preset `{slug}` to edit; see `preset list`.", ok=False)
        return PresetForm(True, existing.name, existing.description, existing.prompt, limit)

    async def preset_problems(
        self,
        scope: Scope,
        actor: Actor,
        command: Command,
        *,
        rights: Mapping[Privilege, str] = GENERIC_RIGHTS,
    ) -> dict[str, str]:
        """What keeps a preset form's submission (`preset create` or `preset edit`) from saving, by field
        (interactions.NAME_FIELD, …; WHOLE_FORM: the submitter may not, or no longer, change presets),
        so a form can say it on its fields before it closes. Empty: it would save (checked again then)."""
        action = command.action
        if action not in (Action.PRESET_CREATE, Action.PRESET_EDIT):
            return {}
        if self._level(scope, actor) < required(action):
            return {WHOLE_FORM: refusal(action, rights)}
        try:
            return await self._commands.preset_problems(
                scope, command, creating=action is Action.PRESET_CREATE
            )
        except Exception:
            # The save runs the same checks and words the failure; the form just closes.
            log.exception("could not check a preset form", extra=_context(scope, actor))
            return {}

    async def home(
        self, scope: Scope, actor: Actor, *, rights: Mapping[Privilege, str] = GENERIC_RIGHTS
    ) -> Home:
        """`actor`'s home page for the workspace of `scope`: its presets (prompts folded) and defaults;
        for workspace admins also the last 7 days' usage, how answers were rated and the recent changes."""
        presets = await self.execute(scope, actor, Command(Action.PRESET_LIST), rights=rights)
        resolved = await self.state.resolve(scope)
        defaults = (
            f"**This workspace's defaults**\nModel `{resolved.model}` ({resolved.model_source}) · "
            f"preset `{resolved.preset.name}` ({resolved.preset_source}). Channels and threads may choose "
            "their own with `preset set` and `model set`."
        )
        sections = [defaults, presets.text]
        admin = self._level(scope, actor) >= Privilege.WORKSPACE_ADMIN
        if not admin:
            return Home(tuple(sections), False)
        for command in (Command(Action.USAGE, name="7d"), Command(Action.FEEDBACK), Command(Action.AUDIT)):
            sections.append((await self.execute(scope, actor, command, rights=rights)).text)
        custom = await self.store.list_presets(scope.workspace_key)
        return Home(tuple(sections), True, tuple(p.name for p in custom))

    async def suggested_prompts(self, scope: Scope) -> tuple[tuple[str, str], ...]:
        """(title, message) first questions for a new conversation in `scope`, from its preset in force."""
        return suggestions((await self.state.resolve(scope)).preset)

    def _level(self, scope: Scope, actor: Actor) -> Privilege:
        return privilege_of(scope.platform, actor.user_id, actor.privilege, self.settings.admin_users)

    def _changed(self, change: Change) -> None:
        if change.kind == "stop":
            running = self._running.get(change.key)
            if running is not None:
                running[1].request()

    def _ended(self, answer_id: str, written: asyncio.Future[None]) -> None:
        del self._ending[answer_id]
        if not written.cancelled() and written.exception() is not None:
            log.error("could not record how an answer ended", exc_info=written.exception())

    def _watch_stops(self) -> None:
        if self._stop_watch is None or self._stop_watch.done():
            self._stop_watch = asyncio.create_task(self._poll_stops())

    async def _poll_stops(self) -> None:
        """While answers run here, look for Stops pressed elsewhere whose notice did not arrive."""
        while self._running:
            await asyncio.sleep(STOP_POLL)
            try:
                for answer_id in await self.store.stop_requests(list(self._running)):
                    self._changed(Change("stop", answer_id))
            except Exception:
                log.exception("could not look for stopped answers; will try again")

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

    async def _refusal(
        self, question: Question, rules: PlatformRules
    ) -> tuple[_Refused | Outcome | None, UsageHold | None]:
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
            return _Refused(notices.empty_question(rules), window, True), None
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
                return await self._answer(question, reply, target, held)
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
        self, question: Question, reply: StreamingReply, target: ReplyTarget, held: UsageHold | None
    ) -> Outcome:
        scope = question.scope
        mentions = target.rules.mentions
        resolved = await self.state.resolve(scope)
        stored = await self.state.conversation(scope)
        resumes = question.resumes
        if resumes is not None:
            # Checked in the scope's turn: nothing can be asked between the check and the resumed turn.
            refusal = await self._unanswerable(resumes, stored)
            if refusal is not None:
                await reply.abort()
                await self._quietly(target.notify(refusal))
                return Outcome.REFUSED
        epoch = stored.epoch if stored is not None else 0
        conversation = stored if stored is not None and stored.upstream_id else None
        if conversation is not None and (
            conversation.model != resolved.model or conversation.preset != resolved.preset.name
        ):
            # The preset or model changed since this conversation began (perhaps on the parent channel).
            conversation = None
        choice = choose_references(question.attachments) if question.attachments else NO_ATTACHMENTS
        if not question.text.strip() and not choice.blocks:
            # Files alone, none of them readable by the service: say why, and ask nothing.
            await reply.finish("\n".join(f"_Skipped {reason}._" for reason in choice.skipped))
            return Outcome.REFUSED
        # Sending a new question skips the one the model asked here, whatever becomes of the answer. Only
        # a live conversation can be waiting for an answer (a reset took the handles of its questions).
        skipping = None
        if resumes is None and stored is not None and stored.upstream_id:
            skipping = self._skip_waiting(scope, notices.SKIPPED_BY_QUESTION)
        author = question.actor.display_name or question.actor.user_id
        upstream_text = question.text.strip() or "(see the attached files)"
        if self.settings.author_prefix and resumes is None:
            upstream_text = f"{author}: {upstream_text}"
        if question.quoted:
            upstream_text = f"{quote(question.quoted)}\n\n{upstream_text}"
        turn = Turn(
            question=upstream_text,
            model=resolved.model,
            preset=resolved.preset.prompt,
            conversation_id=conversation.upstream_id if conversation else None,
            blocks=choice.blocks,
            tools=resolved.tools,
            # Exactly the paused call's id, as the service requires.
            tool_results=((resumes.tool_id, question.text.strip()),) if resumes is not None else (),
        )
        notes = [f"_Skipped {reason}._" for reason in choice.skipped]
        asked_at = time.time()
        answer_id = new_answer_id()
        # Written beside the upstream request rather than before it: the row is needed only once a Stop
        # or a vote can be pressed, long after the write (and SQLite's one writer keeps them in order).
        answer = AnswerRecord(
            answer_id,
            scope.key,
            scope.workspace_key,
            question.actor.user_id,
            resolved.model,
            resolved.preset.name,
            asked_at,
        )
        if self._shared:
            self._in_background(self.store.start_answer(answer), "could not record a started answer")
        stop = StopSignal()
        self._running[answer_id] = (answer, stop)
        if self._shared:
            self._watch_stops()
        controls = interactive(target)
        if controls is not None:
            controls.set_controls(Controls(stop=answer_id))
        ended: AnswerState = "failed"
        sent = time.monotonic()

        async def remember(upstream_id: str) -> None:
            # Stored as soon as it is known, so a crash mid-answer cannot orphan a new conversation;
            # a reset since the turn began wins (the epoch no longer matches).
            now = time.time()
            early = ConversationRecord(
                scope.key, upstream_id, resolved.model, resolved.preset.name, 0, now, now, epoch
            )
            await self.store.save_conversation(early)

        view = AnswerView(self.settings.thinking, mentions)
        try:
            try:
                conversation_id, trace_id, stopped = await self._stream(turn, reply, view, notes, remember, stop)
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
                    view = AnswerView(self.settings.thinking, mentions)
                    try:
                        conversation_id, trace_id, stopped = await self._stream(
                            replace(turn, conversation_id=None), reply, view, notes, remember, stop
                        )
                    except UpstreamError as again:
                        await self._account(question, resolved.model, "", sent, Outcome.FAILED, None, held)
                        return await self._failed(question, reply, view, again, turn.conversation_id, controls)
                else:
                    await self._account(question, resolved.model, "", sent, Outcome.FAILED, None, held)
                    return await self._failed(question, reply, view, error, turn.conversation_id, controls)
            text = view.text
            tokens = view.usage.total_tokens if view.usage is not None else None

            outcome = Outcome.STOPPED if stopped else Outcome.ANSWERED
            ended = "stopped" if stopped else "answered"
            if stopped:
                notes.insert(0, notices.STOPPED)
                log.info("stopped an answer on request", extra=_context(scope, question.actor))
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
                    outcome=outcome.value,
                    trace_id=trace_id,
                    asked_at=asked_at,
                    answered_at=now,
                )
                if keep
                else None
            )
            # The writes overlap the final edit; the turn's is committed before the next turn of this scope
            # starts, and the usage record before the next question's quota is counted.
            self._ending[answer_id] = replace(answer, state=ended)
            written = self.store.queue_turn(record, transcript, self._ending[answer_id])
            kept = None
            if view.question is not None and conversation_id is not None and not stopped:
                # Kept before the question shows, so an answer given at once finds it.
                kept = await self._keep_question(question, view, conversation_id, record.turns)
            accounted = asyncio.ensure_future(
                self._account(question, resolved.model, text, sent, Outcome.ANSWERED, tokens, held)
            )
            final = view.render(streaming=False)
            if notes:
                final = f"{final.rstrip()}\n\n" + "\n".join(notes) if final.strip() else "\n".join(notes)
            if controls is not None:
                controls.set_controls(Controls(vote=answer_id))
            try:
                await reply.finish(final)
                if controls is not None:
                    await controls.settle_controls()
                if kept is not None:
                    await self._offer(scope, kept, target, skipping)
            finally:
                try:
                    await written
                except Exception:
                    # The user has the answer; only the operator can fix a database that refuses writes.
                    log.exception("could not store a finished turn", extra={"platform": scope.platform})
                finally:
                    del self._ending[answer_id]
                await accounted
        finally:
            del self._running[answer_id]
            if ended == "failed":
                # A failed answer wrote no turn: its row goes on its own, off the scope's turn.
                self._ending[answer_id] = replace(answer, state=ended)
                ending = asyncio.ensure_future(self.store.end_answer(self._ending[answer_id]))
                ending.add_done_callback(lambda done: self._ended(answer_id, done))
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
        return outcome

    async def _stream(
        self,
        turn: Turn,
        reply: StreamingReply,
        view: AnswerView,
        notes: list[str],
        remember: Callable[[str], Awaitable[None]],
        stop: StopSignal,
    ) -> tuple[str | None, str | None, bool]:
        """Stream the turn into `view` (and onto `reply`); (conversation id, trace id, whether someone
        stopped it)."""
        started = time.monotonic()
        cut = False
        cap = self.settings.max_answer_chars
        conversation_id = turn.conversation_id
        trace_id: str | None = None
        items = self.client.stream(turn)
        reading = asyncio.current_task()
        stop.reading = reading
        stopped = False
        try:
            async with asyncio.timeout(self.settings.answer_timeout):
                try:
                    if not stop.requested:
                        async for item in items:
                            if isinstance(item, AnswerUpdate):
                                view.on_text(item.text)
                                trace_id = item.trace_id or trace_id
                                if item.conversation_id and item.conversation_id != conversation_id:
                                    conversation_id = item.conversation_id
                                    await remember(conversation_id)
                                if len(item.text) > cap:
                                    cut = True
                                    break
                            else:
                                view.on_event(item)
                                if (
                                    isinstance(item, Finished)
                                    and item.conversation_id
                                    and item.conversation_id != conversation_id
                                ):
                                    conversation_id = item.conversation_id
                                    await remember(conversation_id)
                            reply.update(view)
                finally:
                    # Closed here, not by the garbage collector: the connection goes back at once (and a
                    # stopped answer's upstream request ends with it).
                    await items.aclose()
        except TimeoutError:
            if not len(view):
                raise UpstreamError(
                    "The AI service took too long to answer.", detail="answer timeout", retryable=False
                ) from None
            notes.append("_The answer was stopped because it ran too long._")
        except asyncio.CancelledError:
            # A Stop cancels this task; any other cancellation (a shutdown) goes on as it was.
            if not stop.requested or reading is None or reading.uncancel() > 0:
                raise
            stopped = True
        finally:
            stop.reading = None
        stopped = stopped or stop.requested
        metrics.UPSTREAM_SECONDS.observe(time.monotonic() - started)
        if cut:
            text = view.text[:cap]
            view.replace_text(text + closing_fence(text))
            notes.append(f"_The answer was cut here: it reached this bot's limit of {cap:,} characters._")
        elif stopped:
            view.replace_text(view.text + closing_fence(view.text))
        return conversation_id, trace_id, stopped

    def _in_background(self, work: Coroutine[Any, Any, None], failure: str) -> asyncio.Task[None]:
        """Run a write the user need not wait for; `aclose` waits for it before closing the store."""
        task = asyncio.create_task(work)
        self._background.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._background.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("%s: %s", failure, task.exception())

        task.add_done_callback(done)
        return task

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
        self,
        question: Question,
        reply: StreamingReply,
        view: AnswerView,
        error: UpstreamError,
        conversation_id: str | None,
        controls: Interactive | None,
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
        # The service's own failures carry the id its operators trace them by: a 5xx, and an error
        # inside a stream (the request itself succeeded, 200). Refusals of ours (4xx) need no trace.
        if error.trace_id and error.status is not None and (error.status >= 500 or error.status == 200):
            message = f"{message} (trace `{error.trace_id}`)"
        if controls is not None:
            controls.set_controls(NONE)
        shown = view.render(streaming=False) if len(view) else ""
        if shown.strip():
            # What was shown stays, with its sources, and says plainly that it is not the whole answer.
            await reply.finish(f"{shown.rstrip()}\n\n⚠️ {message} _(The answer above is incomplete.)_")
        else:
            await reply.fail(message)
        if controls is not None:
            await controls.settle_controls()
        return Outcome.FAILED

    def _render_partial(self, raw: str | Draft, mentions: MentionRules, steps_apart: bool) -> str:
        if isinstance(raw, AnswerView):
            return raw.render(streaming=True, tool_line=not steps_apart)
        return format_answer(
            str(raw), thinking_mode=self.settings.thinking, mentions=mentions, streaming=True
        )


def chosen(pending: PendingQuestion, text: str) -> str:
    """The answer to send: option N for "N" (1-based), else the words themselves."""
    words = " ".join(text.split())
    if words.isascii() and words.isdecimal() and len(words) <= 3 and 1 <= int(words) <= len(pending.options):
        return pending.options[int(words) - 1]
    return words


def new_answer_id() -> str:
    """An answer's id: unguessable, so a forged press cannot name someone else's answer."""
    return secrets.token_hex(16)


def quote(text: str) -> str:
    """A message the question is about, as the model reads it: a Markdown quote before the question."""
    cut = text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + " …"
    lines = cut.strip().splitlines() or [""]
    return "About this message:\n" + "\n".join(f"> {line}" for line in lines)


def _context(scope: Scope, actor: Actor) -> dict[str, str]:
    return {"platform": scope.platform, "channel": scope.channel, "user": actor.user_id}
