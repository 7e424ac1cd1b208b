"""The Slack adapter: `/aichat`, mentions and direct messages over slack-bolt, in Socket Mode or HTTP mode.

It only translates. Slack requests become `Question`s and `Command`s for the core, and the core's
answers become Slack messages through `SlackReply`. The acknowledgement goes out as soon as a request
is read (HTTP: once its signature checks out; Socket Mode: as the envelope arrives), before bolt or the
core do any work, so a burst of requests is acknowledged at the speed they can be read. Bolt then runs
the listeners in a task the adapter tracks; they queue the real work in further tracked tasks, so
`idle()` can wait for it and `close()` can let answers finish.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bots.runtime import StartupError
from bots.slack_text import escape, from_slack, render
from core.cache import LRU
from core.chat import ChatCore, Outcome, Question
from core.commands import Action, parse_command
from core.ratelimit import TokenBucket
from core.sanitize import neutralize_mentions
from core.scope import Scope
from core.settings import SlackSettings
from core.target import Actor, PlatformRateLimited, TargetLimits

log = logging.getLogger(__name__)

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
# The core splits Markdown at this length; mrkdwn conversion keeps it well under MAX_MESSAGE_CHARS.
CHUNK_CHARS = 3500
# Per message: about one chat.update a second.
EDIT_BURST = 4
EDIT_WINDOW = 4.0
# chat.update is Tier 3, about 50 a minute per workspace, shared by every answer streaming there:
# stay under it with a small burst, leaving room for the final edits the streamer keeps in reserve.
UPDATE_BURST = 10
UPDATE_PER_SECOND = 45 / 60
# Admin status changes rarely; a few minutes of staleness spares one users.info call per question.
PEOPLE_TTL = 300.0
PEOPLE_CACHE = 10_000
ECHO_CHARS = 3000
# A burst of Slack requests opens a connection each; aiohttp's default queue of 128 would drop some.
LISTEN_BACKLOG = 1024
# Requests handed to bolt per turn of the event loop during a burst: a few milliseconds of work.
ADMIT_PER_TURN = 8
NOT_IN_CHANNEL = ("not_in_channel", "channel_not_found", "is_archived")
BAD_TOKEN = (
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
)

Notify = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Person:
    name: str
    is_admin: bool
    expires: float


def _rate_limited(error: SlackApiError) -> PlatformRateLimited | None:
    if error.response.status_code != 429:
        return None
    retry_after = next((v for k, v in error.response.headers.items() if k.lower() == "retry-after"), "1")
    try:
        return PlatformRateLimited(max(0.0, float(retry_after)))
    except ValueError:
        return PlatformRateLimited(1.0)


def _signed(verifier: SignatureVerifier, body: str, headers: Mapping[str, str]) -> bool:
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    # slack_sdk raises on a timestamp that is not a number: such a request is as unsigned as any.
    if not (timestamp.isascii() and timestamp.isdecimal()):
        return False
    return verifier.is_valid(body, timestamp, headers.get("X-Slack-Signature", ""))


def _maybe_answered_by_bolt(body: str) -> bool:
    """Cheap test: False unless the body could be one of Slack's endpoint checks."""
    return "url_verification" in body or "ssl_check" in body


def _answered_by_bolt(body: dict[str, Any]) -> bool:
    """Slack's endpoint checks, whose answer is the HTTP reply itself (the challenge) and runs no listener."""
    return body.get("type") == "url_verification" or body.get("ssl_check") == "1"


class _KnownBot(AsyncAuthorize):
    """Bolt's authorization from the `auth.test` the adapter makes at start. Bolt's own single-workspace
    authorization would call `auth.test` for every request until its first call returned: once per
    request in a burst that meets a freshly started bot."""

    def __init__(self, auth: AsyncSlackResponse, token: str) -> None:
        self._auth = auth
        self._token = token

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        auth = self._auth
        return AuthorizeResult(
            enterprise_id=auth.get("enterprise_id"),
            team_id=auth.get("team_id"),
            team=auth.get("team"),
            url=auth.get("url"),
            bot_id=auth.get("bot_id"),
            bot_user_id=auth.get("user_id"),
            bot_token=self._token,
            bot_scopes=auth.headers.get("x-oauth-scopes"),
            user_id=user_id,
        )


class SlackReply:
    """One answer's place: a channel, or a thread in it. Text arrives as Markdown and leaves as mrkdwn."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        limits: TargetLimits,
        notify: Notify,
    ) -> None:
        self._client = client
        self._channel = channel
        self._thread_ts = thread_ts
        self._limits = limits
        self._notify = notify
        self.posted: list[str] = []

    @property
    def limits(self) -> TargetLimits:
        return self._limits

    async def post(self, text: str) -> str:
        try:
            reply = await self._client.chat_postMessage(
                channel=self._channel,
                thread_ts=self._thread_ts,
                text=render(text),
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as error:
            raise (_rate_limited(error) or error) from error
        ts = str(reply["ts"])
        self.posted.append(ts)
        return ts

    async def edit(self, handle: str, text: str) -> None:
        try:
            await self._client.chat_update(channel=self._channel, ts=handle, text=render(text))
        except SlackApiError as error:
            raise (_rate_limited(error) or error) from error

    async def typing(self) -> None:
        """Slack has no typing indicator a bot can show in a channel."""

    async def notify(self, text: str) -> None:
        await self._notify(render(text))


class SlackAdapter:
    """Serves one Slack app. `start()` returns once it is connected (Socket Mode) or listening (HTTP).

    Call `close()` before the core's `aclose()`: it stops taking requests and lets answers finish.
    With `process_before_response`, each request is acknowledged only after bolt has run its listener
    (which only queues the work), as bolt's option of that name does; by default the acknowledgement
    goes out first.
    """

    name = "slack"

    def __init__(
        self,
        core: ChatCore,
        settings: SlackSettings,
        *,
        host: str = "0.0.0.0",
        process_before_response: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._settings = settings
        self._host = host
        self._process_before_response = process_before_response
        self._clock = clock
        self._people: LRU[tuple[str, str], _Person] = LRU(PEOPLE_CACHE)
        self._budgets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: deque[Coroutine[Any, Any, None]] = deque()
        self._admitting = False
        self._session: aiohttp.ClientSession | None = None
        self._socket: SocketModeClient | None = None
        self._verifier: SignatureVerifier | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False
        self.app: AsyncApp | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self._settings
        if settings.app_token is None and not settings.signing_secret:
            raise StartupError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode cannot tell Slack's requests from forgeries"
            )
        base_url = settings.api_url or AsyncWebClient.BASE_URL
        if not base_url.endswith("/"):
            base_url += "/"  # slack_sdk joins method names with urljoin
        self._session = aiohttp.ClientSession()
        retry_handlers = [
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ]
        # Ordinary calls ride out a 429 inside slack_sdk; the streaming client does not, because the
        # core paces edits and must hear about a 429 to back off (PlatformRateLimited).
        self._client = AsyncWebClient(
            token=settings.bot_token, base_url=base_url, session=self._session, retry_handlers=retry_handlers
        )
        self._stream_client = AsyncWebClient(
            token=settings.bot_token, base_url=base_url, session=self._session
        )
        auth = await self._check_tokens()
        app = AsyncApp(
            name="acechat",
            # No token here: bolt takes it from `authorize`, and would warn that one of the two is unused.
            client=AsyncWebClient(base_url=base_url, session=self._session, retry_handlers=retry_handlers),
            authorize=_KnownBot(auth, settings.bot_token),
            signing_secret=settings.signing_secret or "",
            # The listeners only queue work, so bolt may as well run them before it returns.
            process_before_response=True,
        )
        app.command(settings.command)(self._on_command)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        self.app = app
        if settings.app_token is not None:
            self._socket = SocketModeClient(
                app_token=settings.app_token, web_client=self._client, ping_interval=10
            )
            self._socket.socket_mode_request_listeners.append(self._on_envelope)
            await self._socket.connect()  # type: ignore[no-untyped-call]
            log.info("slack: connected in Socket Mode")
            return
        assert settings.signing_secret is not None
        self._verifier = SignatureVerifier(settings.signing_secret)
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, self._on_request)
        self._runner = web.AppRunner(
            web_app,
            access_log=None,
            shutdown_timeout=self._core.settings.shutdown_grace,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, settings.port, backlog=LISTEN_BACKLOG).start()
        self._port = int(self._runner.addresses[0][1])
        log.info("slack: listening for HTTP requests on %s:%d%s", self._host, self._port, EVENTS_PATH)

    async def _check_tokens(self) -> AsyncSlackResponse:
        """The bot's `auth.test`. Fail at once on a rejected token; Socket Mode would otherwise retry a
        doomed connection forever."""
        app_token = self._settings.app_token
        try:
            name = "SLACK_BOT_TOKEN"
            auth = await self._client.auth_test()
            if app_token is not None:
                name = "SLACK_APP_TOKEN"
                await self._client.apps_connections_open(app_token=app_token)
        except SlackApiError as error:
            code = error.response.get("error")
            if code not in BAD_TOKEN:
                raise
            raise StartupError(
                f"Slack rejected {name} ({code}): copy it again from the app's settings"
            ) from None
        return auth

    @property
    def port(self) -> int | None:
        """The HTTP port actually bound (useful with port 0); None in Socket Mode."""
        return self._port

    @property
    def connected(self) -> bool:
        if self._closing:
            return False
        if self._socket is not None:
            client = self._socket
            session = client.current_session
            return not client.closed and not client.stale and session is not None and not session.closed
        return self._runner is not None and self._port is not None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until every request taken so far has been fully handled."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._socket is not None:
            await self._socket.close()  # type: ignore[no-untyped-call]
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tasks:
            log.info("slack: letting %d requests finish", len(self._tasks))
            try:
                # idle(), not one wait: requests still being dispatched start more tasks.
                await asyncio.wait_for(self.idle(), self._core.settings.shutdown_grace)
            except TimeoutError:
                pending = set(self._tasks)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()

    # --- transport: acknowledge first, then let bolt dispatch ------------------------------------

    async def _on_request(self, request: web.Request) -> web.StreamResponse:
        """One HTTP request from Slack. Anything not signed with the app's secret gets 401 and runs nothing."""
        assert self._verifier is not None
        body = await request.text()
        if not _signed(self._verifier, body, request.headers):
            log.debug(
                "slack: Invalid request signature (timestamp %r): refused with 401",
                request.headers.get("X-Slack-Request-Timestamp"),
            )
            return web.Response(status=401)
        if self._closing:
            return web.Response(status=503)  # Slack tries again, and meets the next instance
        headers: dict[str, str | Sequence[str]] = dict(request.headers)
        if _maybe_answered_by_bolt(body):
            bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=headers)
            if _answered_by_bolt(bolt_request.body):
                return self._http_reply(await self._bolt(bolt_request))
        dispatch = self._dispatch_http(body, request.query_string, headers)
        if self._process_before_response:
            await dispatch
        else:
            self._admit(dispatch)
        return web.Response()

    async def _dispatch_http(self, body: str, query: str, headers: dict[str, str | Sequence[str]]) -> None:
        # Parsed here rather than before the acknowledgement: it is most of a request's cost until then.
        await self._dispatch(AsyncBoltRequest(body=body, query=query, headers=headers))

    @staticmethod
    def _http_reply(reply: BoltResponse) -> web.Response:
        content_type = reply.headers.get("content-type", ["text/plain"])[0].split(";")[0]
        return web.Response(status=reply.status, text=reply.body, content_type=content_type)

    async def _on_envelope(self, client: AsyncBaseSocketModeClient, envelope: SocketModeRequest) -> None:
        """One Socket Mode envelope: acknowledged on the socket, empty, exactly once."""
        if self._closing:
            return  # unacknowledged, so Slack delivers it again, to the next connection
        ack = SocketModeResponse(envelope_id=envelope.envelope_id)
        if self._process_before_response:
            await self._dispatch(envelope)
            await client.send_socket_mode_response(ack)
        else:
            await client.send_socket_mode_response(ack)
            self._admit(self._dispatch(envelope))

    def _admit(self, dispatch: Coroutine[Any, Any, None]) -> None:
        """Hand an acknowledged request to bolt soon: a few more on each turn of the event loop.

        Bolt's dispatch and the first steps of the work it starts cost about half a millisecond of CPU
        a request. Started all at once, a burst's dispatches would run back to back, and the
        acknowledgements of the requests read next (and every reply the loop is waiting for) would
        wait behind all of them.
        """
        self._queued.append(dispatch)
        if not self._admitting:
            self._admitting = True
            self._spawn(self._admit_queued())

    async def _admit_queued(self) -> None:
        try:
            while self._queued:
                for _ in range(min(ADMIT_PER_TURN, len(self._queued))):
                    self._spawn(self._queued.popleft())
                await asyncio.sleep(0)
        finally:
            self._admitting = False
            while self._queued:  # only when cancelled at the end of close()
                self._queued.popleft().close()

    async def _bolt(self, request: AsyncBoltRequest | SocketModeRequest) -> BoltResponse:
        assert self.app is not None
        if isinstance(request, SocketModeRequest):
            reply: BoltResponse = await run_async_bolt_app(self.app, request)
            return reply
        return await self.app.async_dispatch(request)

    async def _dispatch(self, request: AsyncBoltRequest | SocketModeRequest) -> None:
        reply = await self._bolt(request)
        # Slack already has its acknowledgement: a refusal from bolt can only be logged (bolt logs the
        # requests no listener takes itself).
        if reply.status not in (200, 404):
            log.warning("slack: bolt answered %d to a request: %s", reply.status, reply.body[:200])

    # --- bolt listeners: queue the work in a tracked task ----------------------------------------

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()  # Slack has its acknowledgement already; this only tells bolt the listener took it
        self._spawn(self._command(body, respond))

    async def _on_mention(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        thread_ts = event.get("thread_ts") or event["ts"]
        self._spawn(self._question(body, context.bot_user_id, thread_ts=thread_ts, scope_thread=thread_ts))

    async def _on_message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        # Only people's new direct messages: edits, deletions and bots (this one included) are not questions.
        if (
            event.get("channel_type") != "im"
            or event.get("subtype")
            or event.get("bot_id")
            or not event.get("user")
        ):
            return
        thread_ts = event.get("thread_ts")
        self._spawn(self._question(body, context.bot_user_id, thread_ts=thread_ts, scope_thread=thread_ts))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task `idle()` and `close()` wait for (requests refused at close never get here)."""
        task = asyncio.create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("slack: a request failed")

    # --- the work --------------------------------------------------------------------------------

    async def _command(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        team, channel, user = body["team_id"], body["channel_id"], body["user_id"]
        # A re-sent command has the same trigger id.
        first, actor = await self._sighting_and_actor(
            f"slack:command:{team}:{channel}:{user}:{body['trigger_id']}", team, user, body.get("user_name")
        )
        if not first:
            log.info("slack: ignoring a re-delivered command")
            return
        command = parse_command(from_slack(body.get("text", "")))
        scope = Scope.of(PLATFORM, team, channel)

        async def ephemeral(text: str) -> None:
            await respond(text=text, response_type="ephemeral")

        if command.action is not Action.ASK:
            reply = await self._core.execute(scope, actor, command)
            public = reply.public and reply.ok
            await respond(text=render(reply.text), response_type="in_channel" if public else "ephemeral")
            return

        question = command.text or ""
        shown = question if len(question) <= ECHO_CHARS else question[:ECHO_CHARS] + " …"
        try:
            echo = await self._client.chat_postMessage(
                channel=channel,
                text=f"*<@{user}>* asked: {escape(neutralize_mentions(shown))}",
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as error:
            if error.response.get("error") not in NOT_IN_CHANNEL:
                raise
            await ephemeral(
                "I can't post in this channel. Invite me first (`/invite @aichat`), or mention me."
            )
            return
        target = SlackReply(self._stream_client, channel, None, self._limits(team), ephemeral)
        outcome = await self._core.ask(Question(scope, actor, question), target)
        if outcome is Outcome.REFUSED and not target.posted:
            # The refusal went to the asker alone; leave no unanswered question in the channel.
            await self._client.chat_delete(channel=channel, ts=echo["ts"])

    async def _question(
        self,
        body: dict[str, Any],
        bot_user_id: str | None,
        *,
        thread_ts: str | None,
        scope_thread: str | None,
    ) -> None:
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel, user = event["channel"], event["user"]
        event_id = body.get("event_id") or f"{team}:{channel}:{event['ts']}"
        first, actor = await self._sighting_and_actor(f"slack:event:{event_id}", team, user, None)
        if not first:
            log.info("slack: ignoring a re-delivered event %s", event_id)
            return

        async def ephemeral(text: str) -> None:
            await self._client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)

        target = SlackReply(self._stream_client, channel, thread_ts, self._limits(team), ephemeral)
        text = from_slack(event.get("text", ""), bot_user_id)
        await self._core.ask(Question(Scope.of(PLATFORM, team, channel, scope_thread), actor, text), target)

    def _limits(self, team: str) -> TargetLimits:
        budget = self._budgets.get(team)
        if budget is None:
            budget = self._budgets[team] = TokenBucket(UPDATE_BURST, UPDATE_PER_SECOND, clock=self._clock)
        return TargetLimits(
            max_chars=CHUNK_CHARS,
            edit_burst=EDIT_BURST,
            edit_window=EDIT_WINDOW,
            typing_interval=None,
            shared=budget,
        )

    async def _sighting_and_actor(
        self, key: str, team: str, user: str, fallback_name: str | None
    ) -> tuple[bool, Actor]:
        """Whether this is the first delivery of `key` (Slack re-sends what it thinks was lost), and who
        sent it. Both at once: the database records the sighting while users.info, the slower, is out."""
        sighting = asyncio.ensure_future(self._core.store.first_sighting(key))
        try:
            actor = await self._actor(team, user, fallback_name)
        except BaseException:
            sighting.cancel()
            raise
        return await sighting, actor

    async def _actor(self, team: str, user: str, fallback_name: str | None) -> Actor:
        """Who `user` is, with the platform's admin facts (workspace admin or owner); unknown means no."""
        now = self._clock()
        known = self._people.get((team, user))
        if known is not None and known.expires > now:
            return Actor(user, known.name, known.is_admin)
        try:
            reply = await self._client.users_info(user=user)
        except Exception as error:
            log.warning("slack: users.info failed for %s: %s", user, error)
            return Actor(user, fallback_name or user, False)
        info: dict[str, Any] = reply["user"]
        profile: dict[str, Any] = info.get("profile") or {}
        name = (
            profile.get("display_name")
            or profile.get("real_name")
            or info.get("real_name")
            or info.get("name")
            or fallback_name
            or user
        )
        admin = any(bool(info.get(flag)) for flag in ("is_admin", "is_owner", "is_primary_owner"))
        self._people.put((team, user), _Person(str(name), admin, now + PEOPLE_TTL))
        return Actor(user, str(name), admin)
