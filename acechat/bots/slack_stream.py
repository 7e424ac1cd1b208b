"""Answers one person watches, streamed through Slack's own methods: `chat.startStream`, `chat.appendStream`
and `chat.stopStream`.

Used for agent sessions in direct messages (the app's Messages tab, `SLACK_AGENT`), where Slack shows its
own Stop; channels keep ThreadReply's paced edits, which everyone there sees the same way. The core drives
this target as any other and decides what each message says and when; this only translates:

- a message the core posts starts a stream, in the session's thread; an edit whose text extends what was
  streamed appends the new text; the answer's end stops each stream, the last with the feedback buttons
  under it (`settle_controls`). A word still arriving waits for the next call: an append can never be
  taken back.
- a rewrite (text that does not extend what was streamed) stops the stream and edits the message with
  `chat.update` from then on, as ThreadReply does; so does a call whose outcome is unknown.
- a workspace that refuses the methods (an app that is not an agent, a token or plan without them) is
  answered with ThreadReply's messages, and not asked again while the process runs (`StreamSupport`).
- a stream Slack closed (old or long: `message_not_in_streaming_state`) goes on in a new streamed message
  with what it had not shown; one a person's Stop closed (`agent_session_stopped`) is edited to its end.

The text is the core's Markdown, which is what `markdown_text` takes (not mrkdwn), defused once more
for what could still ping there (bots.slack_text.stream_markdown). The target shows tool steps apart
(`TargetLimits.steps_apart`): the core keeps the tool line out of the text and tells each step through
`status`, which becomes a step of Slack's own task timeline (a `task_update` chunk: in progress, then
complete when the next step or the step's end is told, or the stream stops). A step before any text
starts the stream, which the answer's first text then goes on in. Once a message is edited with
`chat.update` instead (a rewrite, streaming refused mid-answer) its steps are no longer shown: the
thread status Slack clears at each post could not show them reliably, and text that must be taken back
is what the timeline avoids. A workspace known to refuse streaming gets ThreadReply's tool line in the
text, as channels do.

Every stream this target started is stopped when the answer ends, however it ends (`close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.slack_rules import RULES
from acechat.bots.slack_targets import StreamLimits, ThreadReply, platform_errors
from acechat.bots.slack_text import MAX_STREAM_CHARS, stream_markdown
from acechat.bots.slack_ui import control_blocks
from acechat.core.cache import LRU
from acechat.core.interactions import NONE, Controls
from acechat.core.pacing.scheduler import Urgency
from acechat.core.platform import PlatformRules
from acechat.core.platform_errors import PlatformError, PlatformRateLimited, PlatformUnsure

log = logging.getLogger(__name__)

# Slack's ways of saying this app, token, workspace or conversation has no streaming.
REFUSED = frozenset(
    {
        "unknown_method",
        "not_allowed_token_type",
        "missing_scope",
        "channel_type_not_supported",
        "feature_not_enabled",
        "not_allowed",
        "no_permission",
        "access_denied",
    }
)
# A stream Slack no longer takes text for: stopped (by a person's Stop), or closed as too old or too long.
CLOSED = frozenset({"message_not_in_streaming_state"})
# Past this many characters without whitespace, all but these stream. What `stream_markdown` writes for a
# character depends on at most the 34 after it, and no character becomes more than two, so what comes
# before the last 80 is final; a change the core makes there still falls back to chat.update.
UNSETTLED_RUN = 80
# Slack stops the streams of a session whose Stop a person pressed and then sends the event saying so: a
# stream found closed waits this long for that event before it is taken as closed for its age or length.
STOP_GRACE = 1.0
# Workspaces and stopped streams remembered at once.
REMEMBERED = 10_000
# Longest an answer's end waits to stop the streams it left open (a platform refusing everything).
CLOSE_TIMEOUT = 10.0
# A task's title in Slack's timeline (a tool line is far shorter).
TASK_TITLE_CHARS = 200


class _Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Closed(Exception):
    pass


class StreamSupport:
    """What a process has learnt of Slack's streaming: which workspaces refuse it (told to the operator
    once, tried again after a restart), and which streams a person's Stop closed."""

    def __init__(self) -> None:
        self._refused: LRU[str, str] = LRU(REMEMBERED)
        self._stopped: LRU[tuple[str, str], bool] = LRU(REMEMBERED)
        self._news: asyncio.Event | None = None  # set when streams are reported stopped

    def available(self, workspace: str) -> bool:
        return workspace not in self._refused

    def refused(self, workspace: str, code: str) -> None:
        if workspace in self._refused:
            return
        self._refused.put(workspace, code)
        log.warning(
            "slack: workspace %s refused streaming (%s); its answers are edited with chat.update instead "
            "until acechat restarts",
            workspace or "?",
            code,
            extra={"platform": "slack"},
        )

    def stopped(self, channel: str, streams: list[str]) -> None:
        """Slack stopped these streams for a person's Stop (`agent_session_stopped`)."""
        for ts in streams:
            self._stopped.put((channel, ts), True)
        if self._news is not None:
            self._news.set()
            self._news = None

    def is_stopped(self, channel: str, ts: str) -> bool:
        return (channel, ts) in self._stopped

    async def was_stopped(self, channel: str, ts: str, within: float) -> bool:
        """Whether a person's Stop closed the stream, told within `within` seconds."""
        deadline = time.monotonic() + within
        while (channel, ts) not in self._stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._news is None:
                self._news = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), left)
        return True


class _Mode(enum.Enum):
    STREAMING = "streaming"  # its last Slack message takes appends
    CLOSED = "closed"  # Slack closed the last one before the core was done with it
    STOPPED = "stopped"  # stopped by this target, all the core wanted shown
    EDITED = "edited"  # edited with chat.update from now on


@dataclass(slots=True)
class _Streamed:
    """One of the core's messages, streamed: the Slack messages it took (more than one once Slack closed
    a stream and it went on in another), what they show, and what the core wants them to show."""

    parts: list[str]
    wanted: str  # the whole message, as streamed Markdown
    sent: str = ""  # what the last part shows
    earlier: str = ""  # what the parts before it show, together
    mode: _Mode = _Mode.STREAMING
    blocks: list[dict[str, Any]] = field(default_factory=list)  # under it once stopped
    # A call that may have landed or not (no answer, cancelled, refused in a way not foreseen): the
    # message is edited whole from then on rather than appended to twice.
    unsure: bool = False
    expired: bool = False  # its last stream closed, and not by a person's Stop
    task: tuple[str, str] | None = None  # the tool step in progress in its timeline: (id, title)


def settled(text: str) -> int:
    """How much of a message still being written may stream now: up to its last whitespace (a word, a
    mention or a tag may still be arriving), or, in text without whitespace (Chinese, Japanese, a long
    URL), all but its last `UNSETTLED_RUN` characters."""
    end = len(text)
    floor = max(0, end - UNSETTLED_RUN)
    while end > floor and not text[end - 1].isspace():
        end -= 1
    return end


def _task(task: tuple[str, str], status: str) -> dict[str, Any]:
    return {"type": "task_update", "id": task[0], "title": task[1], "status": status}


class StreamReply(ThreadReply):
    """ThreadReply's answer in an agent session, streamed where Slack lets it (see the module's doc)."""

    def __init__(
        self,
        client: AsyncWebClient,
        limits: StreamLimits,
        support: StreamSupport,
        *,
        workspace: str,
        team: str,
        channel: str,
        thread_ts: str,
        user: str,
        question_ts: str,
        session_title: str,
        rules: PlatformRules = RULES,
    ) -> None:
        super().__init__(
            client,
            limits.target,
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            question_ts=question_ts,
            session_title=session_title,
            rules=rules,
        )
        self._stops = limits.stops
        if support.available(workspace):
            self._limits = dataclasses.replace(self._limits, steps_apart=True)
        self._support = support
        self._workspace = workspace
        self._team = team
        self._streams: dict[str, _Streamed] = {}
        self._order: list[str] = []  # every message posted, streamed or not, oldest first
        self._steps = 0  # tool steps shown as tasks so far
        # A stream a tool step started before the answer had text: the core's first post goes on in it.
        self._opened: str | None = None
        # One Slack call at a time: the core tells steps while its text may be on its way.
        self._calls = asyncio.Lock()
        # The answer ended (`close`): anything the core still sends opens no stream.
        self._closed = False
        # Only an answer streams: a command's reply or a notice is posted as ThreadReply posts it.
        self._answering = False

    def set_controls(self, controls: Controls) -> None:
        self._answering = True
        super().set_controls(controls)

    async def post(self, text: str) -> str:
        async with self._calls:
            return await self._post(text)

    async def _post(self, text: str) -> str:
        opened, self._opened = self._opened, None
        if opened is not None and self._streams[opened].mode is not _Mode.EDITED:
            # The stream a tool step started is this message's.
            claimed = self._streams[opened]
            claimed.wanted = stream_markdown(text)
            await self._advance(claimed, final=False)
            return opened
        if not self._answering or self._closed or not self._support.available(self._workspace):
            return await self._post_plainly(text)
        await self._sync_session()
        # The core has moved on to a new message: the earlier ones are done.
        for handle in self._order:
            streamed = self._streams.get(handle)
            if streamed is not None:
                await self._advance(streamed, final=True)
        wanted = stream_markdown(text)
        shown = wanted[: settled(wanted)]
        try:
            ts = await self._start(shown, [])
        except _Refused as refused:
            self._support.refused(self._workspace, refused.code)
            return await self._post_plainly(text)
        self._streams[ts] = _Streamed([ts], wanted, sent=shown)
        self._order.append(ts)
        return ts

    async def status(self, text: str) -> None:
        """The tool step now running ("" for none), as a task of the newest message's timeline: in
        progress, the one before it complete. Before the answer has a message, a step starts its stream."""
        # A step names what the web or the model chose (a query, a page): defused as the streamed text is.
        line = stream_markdown(text.strip())[:TASK_TITLE_CHARS] or None
        async with self._calls:
            if not self._answering or self._closed or not self._support.available(self._workspace):
                return
            if not self._order:
                if line is not None:
                    await self._open(line)
                return
            streamed = self._streams.get(self._order[-1])
            if streamed is None or streamed.mode is not _Mode.STREAMING or streamed.unsure:
                return  # edited, stopped or closed: its steps no longer show
            chunks, task = self._task_changes(streamed, line)
            if not chunks:
                return
            try:
                await self._append(streamed.parts[-1], "", chunks)
            except PlatformUnsure:
                streamed.task = task  # taken as shown: the answer's end completes it either way
                raise
            except _Closed:
                streamed.mode = _Mode.CLOSED  # the text goes on in a new stream; this step is not shown
                return
            except _Refused as refused:
                self._support.refused(self._workspace, refused.code)  # the text finds out on its own
                return
            streamed.task = task

    async def _open(self, line: str) -> None:
        """Start the answer's stream with the step `line` in progress and no text yet."""
        await self._sync_session()
        task = self._new_task(line)
        if task is None:
            return
        try:
            ts = await self._start("", [_task(task, "in_progress")])
        except _Refused as refused:
            self._support.refused(self._workspace, refused.code)
            return
        self._streams[ts] = _Streamed([ts], "", task=task)
        self._order.append(ts)
        self._opened = ts

    def _new_task(self, line: str | None) -> tuple[str, str] | None:
        if line is None:
            return None
        self._steps += 1
        return f"step-{self._steps}", line

    def _task_changes(
        self, streamed: _Streamed, line: str | None
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """The task updates that take the message's timeline from its step in progress to `line`'s (none
        if that is the same step), and the step then in progress."""
        current = streamed.task
        if (current[1] if current else None) == line:
            return [], current
        task = self._new_task(line)
        chunks = [_task(current, "complete")] if current else []
        return chunks + ([_task(task, "in_progress")] if task else []), task

    async def _post_plainly(self, text: str) -> str:
        handle = await super().post(text)
        self._order.append(handle)
        return handle

    async def edit(self, handle: str, text: str) -> None:
        streamed = self._streams.get(handle)
        if streamed is None:
            await super().edit(handle, text)
            return
        async with self._calls:
            streamed.wanted = stream_markdown(text)
            await self._advance(streamed, final=False)

    async def settle_controls(self) -> None:
        async with self._calls:
            last = self._order[-1] if self._order else None
            wanted = self._buttons.board.wanted
            for handle in self._order:
                streamed = self._streams.get(handle)
                if streamed is None:
                    continue
                if handle == last and wanted:
                    streamed.blocks = control_blocks(wanted)
                await self._advance(streamed, final=True)
            finished = self._streams.get(last) if last is not None else None
            if finished is not None and finished.mode is not _Mode.EDITED:
                # The buttons went under the last streamed message; none belong under an edited one.
                self._buttons.board.wanted = NONE
        await super().settle_controls()

    async def close(self) -> None:
        """Stop every stream of the answer still open, however the answer ended (a platform error, a
        cancellation: `settle_controls` may never have come), as it stands; best effort, each once."""
        self._closed = True
        try:
            async with self._calls, asyncio.timeout(CLOSE_TIMEOUT):
                for streamed in self._streams.values():
                    ts = streamed.parts[-1]
                    if streamed.mode is not _Mode.STREAMING or self._support.is_stopped(self._channel, ts):
                        continue
                    streamed.mode = _Mode.STOPPED
                    chunks = [_task(streamed.task, "complete")] if streamed.task else []
                    try:
                        await self._stop(ts, "", [], chunks)
                    except (_Closed, _Refused, PlatformError, SlackApiError) as error:
                        log.warning("slack: could not stop a stream an answer left open: %s", error)
                    else:
                        log.info("slack: stopped a stream its answer left open")
        except TimeoutError:
            log.warning("slack: gave up stopping the streams an answer left open after %.0fs", CLOSE_TIMEOUT)

    # --- one message ---------------------------------------------------------------------------------

    async def _advance(self, streamed: _Streamed, *, final: bool) -> None:
        """Bring `streamed` to what the core wants it to show: all of it if `final`, else what has settled."""
        shown = streamed.earlier + streamed.sent
        if streamed.unsure or streamed.mode is _Mode.EDITED or not streamed.wanted.startswith(shown):
            await self._edit_instead(streamed)
            return
        end = len(streamed.wanted) if final else settled(streamed.wanted)
        more = streamed.wanted[len(shown) : max(end, len(shown))]
        if streamed.mode is _Mode.STOPPED:
            if more:
                await self._edit_instead(streamed)
            return
        if streamed.mode is _Mode.CLOSED:
            await self._go_on(streamed, more, final=final)
            return
        # The answer's end ends the step still in progress; between, steps are told (`status`).
        chunks, task = self._task_changes(streamed, None) if final else ([], streamed.task)
        if not final and not more:
            return
        streamed.unsure = True
        try:
            if final:
                await self._stop(streamed.parts[-1], more, streamed.blocks, chunks)
                streamed.mode = _Mode.STOPPED
            else:
                await self._append(streamed.parts[-1], more, chunks)
        except _Closed:
            streamed.unsure = False
            streamed.mode = _Mode.CLOSED
            await self._go_on(streamed, more, final=final)
            return
        except _Refused as refused:
            # Streaming was taken away mid-answer (a scope or the agent feature removed).
            self._support.refused(self._workspace, refused.code)
            streamed.unsure = False
            await self._edit_instead(streamed)
            return
        except PlatformRateLimited:
            streamed.unsure = False  # refused whole: the core waits and asks again
            raise
        except PlatformUnsure as error:
            # Slack may or may not have it: only a whole new text says for sure what the message shows.
            log.info("slack: a streaming call's outcome is unknown (%s); editing the message instead", error)
            await self._edit_instead(streamed)
            return
        streamed.unsure = False
        streamed.sent += more
        streamed.task = task

    async def _go_on(self, streamed: _Streamed, more: str, *, final: bool) -> None:
        """Slack closed the message's stream with `more` not shown: a new streamed message goes on from
        there, if this is the answer's newest and it was not a person's Stop; otherwise it is edited."""
        ts = streamed.parts[-1]
        newest = self._order[-1] == streamed.parts[0]
        if not newest or (
            not streamed.expired and await self._support.was_stopped(self._channel, ts, STOP_GRACE)
        ):
            await self._edit_instead(streamed)
            return
        streamed.expired = True
        if not more:
            if final and streamed.blocks:
                await self._edit_instead(streamed)  # the buttons, under the text it shows
            elif final:
                streamed.mode = _Mode.STOPPED
            return
        # The step in progress, if any, goes on in the new message's timeline.
        tasks = [_task(streamed.task, "in_progress")] if streamed.task else []
        try:
            started = await self._start(more, tasks)
        except _Refused:
            await self._edit_instead(streamed)
            return
        log.info("slack: a stream was closed before its answer was; it goes on in a new message")
        streamed.parts.append(started)
        streamed.earlier += streamed.sent
        streamed.sent = more
        streamed.mode = _Mode.STREAMING
        streamed.expired = False
        if final:
            await self._advance(streamed, final=True)

    async def _edit_instead(self, streamed: _Streamed) -> None:
        """Stop the message's stream and edit its last part with chat.update from now on, showing what its
        earlier parts do not (the whole message if they do not show the start of it)."""
        ts = streamed.parts[-1]
        if streamed.mode is _Mode.STREAMING:
            try:
                await self._stop(ts, "", [], [_task(streamed.task, "complete")] if streamed.task else [])
            except (_Closed, _Refused):
                pass
            except PlatformUnsure:
                log.info("slack: could not tell whether a stream stopped; editing its message all the same")
        if streamed.mode is not _Mode.EDITED and self._order[-1] == streamed.parts[0]:
            # The answer's newest message: its first edit carries the answer's buttons, as a post would.
            self._buttons.board.shown(ts, "", NONE)
        streamed.mode = _Mode.EDITED
        wanted = streamed.wanted
        rest = wanted[len(streamed.earlier) :] if wanted.startswith(streamed.earlier) else wanted
        await super().edit(ts, rest)

    # --- Slack's calls -------------------------------------------------------------------------------

    async def _start(self, text: str, chunks: list[dict[str, Any]]) -> str:
        first, rest = text[:MAX_STREAM_CHARS], text[MAX_STREAM_CHARS:]
        with _streaming_errors():
            reply = await self._client.chat_startStream(
                channel=self._channel,
                thread_ts=self._thread_ts or "",
                # Asked for outside direct messages, and by some workspaces even there.
                recipient_user_id=self._user,
                recipient_team_id=self._team,
                **_content(first, chunks),
            )
        ts = str(reply["ts"])
        if rest:  # never, with stream_length's measure; never lose text either
            await self._append(ts, rest, [])
        return ts

    async def _append(self, ts: str, text: str, chunks: list[dict[str, Any]]) -> None:
        pieces = [text[at : at + MAX_STREAM_CHARS] for at in range(0, len(text), MAX_STREAM_CHARS)] or [""]
        for n, piece in enumerate(pieces):
            with _streaming_errors():
                await self._client.chat_appendStream(
                    channel=self._channel, ts=ts, **_content(piece, chunks if n == len(pieces) - 1 else [])
                )

    async def _stop(
        self, ts: str, text: str, blocks: list[dict[str, Any]], chunks: list[dict[str, Any]]
    ) -> None:
        if len(text) > MAX_STREAM_CHARS:
            await self._append(ts, text[:-MAX_STREAM_CHARS], [])
            text = text[-MAX_STREAM_CHARS:]
        scheduler = self._limits.scheduler
        if scheduler is not None:
            await scheduler.call(Urgency.FINAL, self._stops)
        try:
            with _streaming_errors():
                await self._client.chat_stopStream(
                    channel=self._channel, ts=ts, blocks=blocks or None, **_content(text, chunks)
                )
        finally:
            if scheduler is not None:
                scheduler.done(self._stops)


def _content(text: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """A streaming call's text, and its task updates: as chunks, the text first, when there are any."""
    if not chunks:
        return {"markdown_text": text} if text else {}
    return {"chunks": ([{"type": "markdown_text", "text": text}] if text else []) + chunks}


@contextmanager
def _streaming_errors() -> Iterator[None]:
    """A streaming call's refusals in the core's terms, or as `_Refused` and `_Closed`."""
    with platform_errors():
        try:
            yield
        except SlackApiError as error:
            code = str(error.response.get("error") or "")
            if code in REFUSED:
                raise _Refused(code) from error
            if code in CLOSED:
                raise _Closed(code) from error
            raise
