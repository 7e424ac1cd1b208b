"""Where one answer or command reply goes on Slack, and the per-workspace budget answers share.

Text arrives as the core's Markdown and leaves as mrkdwn (bots.slack_text.render). Slack's refusals
become the core's `PlatformError`s.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.slack_blocks import choice_blocks
from acechat.bots.slack_rules import RULES
from acechat.bots.slack_text import MAX_MESSAGE_CHARS, escape, render, shown_length, stream_length
from acechat.bots.slack_ui import message_blocks
from acechat.core.choices import Choices
from acechat.core.interactions import ControlBoard, Controls, paced_edit
from acechat.core.pacing.limits import InFlightBucket, KeyedBudgets, Limits
from acechat.core.pacing.scheduler import Scheduler
from acechat.core.platform import PlatformRules
from acechat.core.platform_errors import MessageGone, PlatformForbidden, PlatformRateLimited, PlatformUnsure
from acechat.core.reply_target import Mark, TargetLimits

log = logging.getLogger(__name__)

# Per message: about one chat.update a second.
EDIT_BURST = 4
EDIT_WINDOW = 4.0
# chat.update is Tier 3, about 50 a minute per workspace, shared by every answer streaming there:
# stay under it with a small burst; the core pledges a call to each streaming answer's final edit.
UPDATE_BURST = 10
UPDATE_PER_SECOND = 45 / 60
# chat.postMessage allows about one message a second per channel, with short bursts: a little under.
POST_BURST = 3
POST_PER_SECOND = 0.9
# Slack's streaming methods (chat.startStream and chat.stopStream are Tier 2, about 20 a minute per
# workspace; chat.appendStream Tier 4, about 100): a little under each, shared by every streamed answer.
STREAM_ENDS_BURST = 6
STREAM_ENDS_PER_SECOND = 18 / 60
APPEND_BURST = 30
APPEND_PER_SECOND = 90 / 60
# An answer's post or edit that has not answered by then has an unknown outcome (see MarkedPosts).
ANSWER_CALL_TIMEOUT = 10
# Every post of an answer carries a marker in its metadata, to be found again when its outcome is unknown.
MARKER_EVENT = "acechat_message"
# How many of the newest messages a lookup for a marked post reads, and how often one is looked for (at
# once, and before the next post: a message may take a moment to be listed).
LOOKUP_MESSAGES = 50
LOOKUPS = 2
# Slack clears an assistant thread status after two minutes without a message.
STATUS_INTERVAL = 90.0
STATUS = "is thinking…"
# The thread status a tool line shows in: Slack's reference states no limit, so one short line under the
# thread (a progress line is about this long already).
STATUS_CHARS = 100
SESSION_TITLE_CHARS = 200
# A command's answer opens with who asked what; a long question is cut in that line.
QUESTION_CHARS = 200
MARKS = {Mark.REFUSED: "hourglass_flowing_sand"}
# Slack's ways of saying the bot may not post here.
FORBIDDEN = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "missing_scope",
        "no_permission",
        "ekm_access_denied",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "restricted_action_thread_locked",
    }
)

GONE = frozenset({"message_not_found", "cant_update_message"})

Respond = Callable[[str, bool], Awaitable[None]]


def _rate_limited(error: SlackApiError) -> PlatformRateLimited:
    retry_after = next((v for k, v in error.response.headers.items() if k.lower() == "retry-after"), "1")
    try:
        return PlatformRateLimited(max(0.0, float(retry_after)))
    except ValueError:
        return PlatformRateLimited(1.0)


@contextmanager
def platform_errors() -> Iterator[None]:
    """Slack's refusals in the core's terms; anything else propagates as it is."""
    try:
        yield
    except (TimeoutError, aiohttp.ClientError) as error:
        # Sent, perhaps delivered: the caller must look before it sends again.
        raise PlatformUnsure(f"Slack did not answer: {error!r}") from error
    except SlackApiError as error:
        if error.response.status_code == 429:
            raise _rate_limited(error) from error
        code = error.response.get("error")
        if code in FORBIDDEN:
            raise PlatformForbidden(f"Slack refused: {code}") from error
        if code in GONE:
            raise MessageGone(f"Slack: {code}") from error
        raise


class SlackLimits:
    """Slack's allowances answers share: `chat.update` per workspace, posts per channel, and for streamed
    answers the streaming methods per workspace.

    Slack counts a call when it arrives, which may be any time until its answer comes back: each
    allowance holds a call's token until then and refills from there (`InFlightBucket`), so a call
    slow on its way never lets the next one arrive too close behind it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._scheduler = Scheduler()
        self._updates: KeyedBudgets[InFlightBucket] = KeyedBudgets(
            lambda: InFlightBucket(UPDATE_BURST, UPDATE_PER_SECOND, clock=clock)
        )
        self._posts: KeyedBudgets[InFlightBucket] = KeyedBudgets(
            lambda: InFlightBucket(POST_BURST, POST_PER_SECOND, clock=clock)
        )
        self._starts: KeyedBudgets[InFlightBucket] = KeyedBudgets(
            lambda: InFlightBucket(STREAM_ENDS_BURST, STREAM_ENDS_PER_SECOND, clock=clock)
        )
        self._stops: KeyedBudgets[InFlightBucket] = KeyedBudgets(
            lambda: InFlightBucket(STREAM_ENDS_BURST, STREAM_ENDS_PER_SECOND, clock=clock)
        )
        self._appends: KeyedBudgets[InFlightBucket] = KeyedBudgets(
            lambda: InFlightBucket(APPEND_BURST, APPEND_PER_SECOND, clock=clock)
        )

    def limits(self, team: str, channel: str, *, typing_interval: float | None) -> TargetLimits:
        return TargetLimits(
            # Split on the length each message shows at once written as mrkdwn, entities and all.
            max_chars=MAX_MESSAGE_CHARS,
            measure=shown_length,
            edit_burst=EDIT_BURST,
            edit_window=EDIT_WINDOW,
            typing_interval=typing_interval,
            posts=(self._posts.get(f"{team}:{channel}"),),
            edits=(self._updates.get(team),),
            scheduler=self._scheduler,
        )

    def stream_limits(self, team: str, channel: str, *, typing_interval: float | None) -> StreamLimits:
        """A streamed answer's: a post starts a stream (`chat.startStream`, then the channel's posts: the
        channel's line stays last), an edit appends to it (`chat.appendStream`), `stops` end it. Split on
        what a message may hold streamed or, where streaming gives way, edited as mrkdwn."""
        limits = dataclasses.replace(
            self.limits(team, channel, typing_interval=typing_interval),
            measure=stream_length,
            posts=(self._starts.get(team), self._posts.get(f"{team}:{channel}")),
            edits=(self._appends.get(team),),
        )
        return StreamLimits(limits, (self._stops.get(team),))


@dataclasses.dataclass(frozen=True, slots=True)
class StreamLimits:
    """A streamed answer's limits, and the allowance `chat.stopStream` draws on."""

    target: TargetLimits
    stops: Limits


class Buttons:
    """The buttons of one answer's messages (core.interactions): the last message carries them, as
    Block Kit under its text. A target that never shows any sends plain text, as before."""

    def __init__(self) -> None:
        self.board = ControlBoard()

    def for_post(self, mrkdwn: str) -> tuple[dict[str, Any], Controls]:
        controls = self.board.for_post()
        return ({"blocks": message_blocks(mrkdwn, controls)} if controls else {}), controls

    def for_edit(self, handle: str, mrkdwn: str) -> tuple[dict[str, Any], Controls]:
        controls = self.board.for_edit(handle)
        # Once a message has blocks, an edit must send them again: Slack keeps the old ones otherwise.
        return ({"blocks": message_blocks(mrkdwn, controls)} if self.board.used else {}), controls


class MarkedPosts:
    """Posts to one place (a thread, or a channel's top level) that a retry never duplicates.

    Each post carries a marker in its message metadata. A post whose outcome is unknown (no answer in
    time, a broken connection) is looked for by its marker, at once and again before the next post: a
    message found is taken as posted (and edited to the text now wanted), so it is never sent twice.
    """

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str | None) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        # Markers of posts that may have been delivered, with how many more times each is looked for.
        self._unsure: dict[str, int] = {}

    async def post(self, text: str, **fields: Any) -> str:
        """Post `text` (already mrkdwn) with `fields`; the new message's ts."""
        found = await self._settle(text)
        if found is not None:
            return found
        marker = uuid.uuid4().hex
        try:
            with platform_errors():
                reply = await self._client.chat_postMessage(
                    channel=self._channel,
                    thread_ts=self._thread_ts,
                    text=text,
                    metadata={"event_type": MARKER_EVENT, "event_payload": {"id": marker}},
                    **fields,
                )
        except PlatformUnsure:
            self._unsure[marker] = LOOKUPS
            found = await self._settle(text)
            if found is None:
                raise
            return found
        return str(reply["ts"])

    async def _settle(self, text: str) -> str | None:
        """The ts of a post with an unknown outcome that did arrive, showing `text`; None if none did."""
        if not self._unsure:
            return None
        try:
            with platform_errors():
                if self._thread_ts is None:
                    page = await self._client.conversations_history(
                        channel=self._channel, limit=LOOKUP_MESSAGES, include_all_metadata=True
                    )
                else:
                    page = await self._client.conversations_replies(
                        channel=self._channel,
                        ts=self._thread_ts,
                        limit=LOOKUP_MESSAGES,
                        include_all_metadata=True,
                    )
        except (PlatformUnsure, SlackApiError) as error:
            log.warning("could not look for a post whose outcome is unknown: %s", error)
            raise PlatformUnsure("could not tell whether a post arrived") from error
        markers = self._unsure
        for message in page.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == MARKER_EVENT and payload.get("id") in markers:
                self._unsure.clear()
                ts = str(message["ts"])
                if message.get("text") != text:
                    with platform_errors():
                        await self._client.chat_update(channel=self._channel, ts=ts, text=text)
                log.info("a post whose outcome was unknown had arrived; not posting it again")
                return ts
        # Not there, each time it was looked for: it never arrived.
        self._unsure = {marker: left - 1 for marker, left in markers.items() if left > 1}
        return None


class ThreadReply:
    """Answers a mention in its thread, or a direct message in the DM.

    With `session_title` (an app declared an agent), the thread is an agent session: "processing"
    while the answer is on its way, which shows Slack's own Stop, then "active"; the title names a new
    session and never renames one (a title the user chose stays)."""

    def __init__(
        self,
        client: AsyncWebClient,
        limits: TargetLimits,
        *,
        channel: str,
        thread_ts: str | None,
        user: str,
        question_ts: str,
        session_title: str | None = None,
        rules: PlatformRules = RULES,
    ) -> None:
        self.rules = rules
        self._client = client
        # In a thread outside an agent session the thread status shows the tool line (see `status`).
        shows_status = thread_ts is not None and session_title is None
        self._limits = dataclasses.replace(limits, status_chars=STATUS_CHARS) if shows_status else limits
        self._channel = channel
        self._thread_ts = thread_ts
        self._user = user
        self._question_ts = question_ts
        self._posts = MarkedPosts(client, channel, thread_ts)
        self._buttons = Buttons()
        self._session_title = session_title if thread_ts is not None else None
        self._session_wanted: str | None = None
        self._session_shown: str | None = None

    @property
    def limits(self) -> TargetLimits:
        return self._limits

    async def post(self, text: str) -> str:
        await self._sync_session()
        mrkdwn = render(text)
        blocks, controls = self._buttons.for_post(mrkdwn)
        handle = await self._posts.post(mrkdwn, unfurl_links=False, unfurl_media=False, **blocks)
        self._buttons.board.shown(handle, text, controls)
        return handle

    async def edit(self, handle: str, text: str) -> None:
        mrkdwn = render(text)
        blocks, controls = self._buttons.for_edit(handle, mrkdwn)
        with platform_errors():
            await self._client.chat_update(channel=self._channel, ts=handle, text=mrkdwn, **blocks)
        self._buttons.board.shown(handle, text, controls)

    def set_controls(self, controls: Controls) -> None:
        if self._session_title is not None:
            # An agent session's Stop is Slack's own, shown while the session is processing.
            self._session_wanted = "processing" if controls.stop is not None else "active"
            controls = Controls(vote=controls.vote)
        self._buttons.board.wanted = controls

    async def settle_controls(self) -> None:
        for handle, text, _ in self._buttons.board.stale():
            await paced_edit(self._limits, partial(self.edit, handle, text))
        await self._sync_session()

    async def _sync_session(self) -> None:
        wanted = self._session_wanted
        if wanted is None or wanted == self._session_shown or self._session_title is None:
            return
        self._session_shown = wanted
        title = " ".join(self._session_title.split())[:SESSION_TITLE_CHARS] or None
        try:
            await self._client.agents_sessions_setStatus(
                channel_id=self._channel, thread_ts=self._thread_ts, status=wanted, title=title
            )
        except SlackApiError as error:
            # The session is decoration around the answer: an app not (yet) an agent still answers.
            log.warning("slack: could not set the agent session's status: %s", error.response.get("error"))

    async def typing(self) -> None:
        """Slack's "is thinking…" status under the thread; it clears when the answer is posted. An agent
        session shows "processing" instead."""
        if self._session_title is not None:
            await self._sync_session()
            return
        if self._thread_ts is None:
            return
        await self.status(STATUS)

    async def status(self, text: str) -> None:
        """`text` as the thread's status, where "is thinking…" shows; it clears when the answer is posted."""
        if self._thread_ts is None:
            return
        with platform_errors():
            await self._client.assistant_threads_setStatus(
                channel_id=self._channel, thread_ts=self._thread_ts, status=text
            )

    async def notify(self, text: str) -> None:
        with platform_errors():
            await self._client.chat_postEphemeral(
                channel=self._channel, user=self._user, text=render(text), thread_ts=self._thread_ts
            )

    async def announce(self, text: str) -> None:
        await self.post(text)

    async def mark(self, mark: Mark) -> None:
        with platform_errors():
            await self._client.reactions_add(
                channel=self._channel, timestamp=self._question_ts, name=MARKS[mark]
            )

    async def offer_choices(self, choices: Choices) -> str:
        """The options of a question the model asked back, as buttons under the answer."""
        with platform_errors():
            sent = await self._client.chat_postMessage(
                channel=self._channel,
                thread_ts=self._thread_ts,
                text=escape(choices.question[:MAX_MESSAGE_CHARS]),
                blocks=choice_blocks(choices),
                unfurl_links=False,
                unfurl_media=False,
            )
        return f"{self._channel}:{sent['ts']}"


class CommandAnswer:
    """Answers `/aichat`: notices and command replies through the command's `response_url`, the answer
    in the channel. Its first message opens with who asked what, since Slack shows nobody the command."""

    def __init__(
        self,
        client: AsyncWebClient,
        limits: TargetLimits,
        respond: Respond,
        *,
        channel: str,
        asker: str,
        question: str,
        rules: PlatformRules = RULES,
    ) -> None:
        self.rules = rules
        self._client = client
        self._respond = respond
        self._channel = channel
        shown = question if len(question) <= QUESTION_CHARS else question[:QUESTION_CHARS] + " …"
        self._header = (
            f"*{escape(asker)}* asked: {escape(rules.mentions.neutralize(' '.join(shown.split())))}\n\n"
        )
        # One limit serves every message of the answer, so each leaves room for the header the first carries.
        self._limits = dataclasses.replace(limits, max_chars=limits.max_chars - len(self._header))
        self._first: str | None = None
        self._typed = False
        self._posts = MarkedPosts(client, channel, None)
        self._buttons = Buttons()

    @property
    def limits(self) -> TargetLimits:
        return self._limits

    def _text(self, first: bool, text: str) -> str:
        if not first:
            return render(text)
        return self._header + render(text, MAX_MESSAGE_CHARS - len(self._header))

    async def post(self, text: str) -> str:
        mrkdwn = self._text(self._first is None, text)
        blocks, controls = self._buttons.for_post(mrkdwn)
        handle = await self._posts.post(mrkdwn, unfurl_links=False, unfurl_media=False, **blocks)
        if self._first is None:
            self._first = handle
        self._buttons.board.shown(handle, text, controls)
        return handle

    async def edit(self, handle: str, text: str) -> None:
        mrkdwn = self._text(handle == self._first, text)
        blocks, controls = self._buttons.for_edit(handle, mrkdwn)
        with platform_errors():
            await self._client.chat_update(channel=self._channel, ts=handle, text=mrkdwn, **blocks)
        self._buttons.board.shown(handle, text, controls)

    def set_controls(self, controls: Controls) -> None:
        self._buttons.board.wanted = controls

    async def settle_controls(self) -> None:
        for handle, text, _ in self._buttons.board.stale():
            await paced_edit(self._limits, partial(self.edit, handle, text))

    async def typing(self) -> None:
        """Nobody sees a slash command run: tell the asker, once, that the answer is on its way."""
        if not self._typed:
            self._typed = True
            await self._respond("_Thinking…_", False)

    async def status(self, text: str) -> None:
        """A command's answer has no thread to show a status under: its tool line is on the message."""

    async def notify(self, text: str) -> None:
        await self._respond(render(text), False)

    async def announce(self, text: str) -> None:
        await self._respond(render(text), True)

    async def mark(self, mark: Mark) -> None:
        """A slash command leaves no message of the asker's to react to."""

    async def offer_choices(self, choices: Choices) -> str:
        """The options of a question the model asked back, as buttons under the answer in the channel."""
        with platform_errors():
            sent = await self._client.chat_postMessage(
                channel=self._channel,
                text=escape(choices.question[:MAX_MESSAGE_CHARS]),
                blocks=choice_blocks(choices),
                unfurl_links=False,
                unfurl_media=False,
            )
        return f"{self._channel}:{sent['ts']}"


class FormReply:
    """Answers a form's submission, which has no message or `response_url` of its own: notices go to the
    submitter alone in the channel the form was opened from (or the app's DM), announcements to it."""

    def __init__(
        self,
        client: AsyncWebClient,
        limits: TargetLimits,
        *,
        channel: str | None,
        user: str,
        rules: PlatformRules = RULES,
    ) -> None:
        self.rules = rules
        self._client = client
        self._limits = limits
        self._channel = channel
        self._user = user

    @property
    def limits(self) -> TargetLimits:
        return self._limits

    async def post(self, text: str) -> str:
        with platform_errors():
            reply = await self._client.chat_postMessage(
                channel=self._channel or self._user, text=render(text), unfurl_links=False, unfurl_media=False
            )
        return str(reply["ts"])

    async def edit(self, handle: str, text: str) -> None:
        with platform_errors():
            await self._client.chat_update(channel=self._channel or self._user, ts=handle, text=render(text))

    async def typing(self) -> None:
        """A form's submission shows nothing while it runs."""

    async def status(self, text: str) -> None:
        """Nor does it have a status: its tool line is on the message."""

    async def notify(self, text: str) -> None:
        if self._channel is None:
            await self.post(text)
            return
        with platform_errors():
            await self._client.chat_postEphemeral(channel=self._channel, user=self._user, text=render(text))

    async def announce(self, text: str) -> None:
        await self.post(text)

    async def mark(self, mark: Mark) -> None:
        """A form leaves no message of the submitter's to react to."""
