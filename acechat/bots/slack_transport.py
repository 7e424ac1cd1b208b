"""How Slack's requests reach bolt: acknowledged at once, handled afterwards ("ack now, work later").

HTTP mode answers 200 as soon as a request's signature checks out (a bad, stale or missing signature
gets 401 and runs nothing), then hands the request to bolt. Socket Mode acknowledges each envelope on
receipt, once. Bolt's listeners only queue work in tasks the transport tracks, so `idle()` can wait for
it and `close()` lets it finish. Bolt is authorized from the `auth.test` made at start-up.

One kind of request waits for bolt: a form's submission (`view_submission`), whose acknowledgement
may keep the form open with errors on its fields (`response_action: errors`). Its listener must
acknowledge by the time in the request's context under `ACK_BY`; should it not, the transport
acknowledges plainly itself, still inside Slack's 3 seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from acechat.bots.adapter import StartupError
from acechat.bots.slack_settings import SlackSettings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
# A burst of Slack requests opens a connection each; aiohttp's default queue of 128 would drop some.
LISTEN_BACKLOG = 1024
# Requests handed to bolt per turn of the event loop during a burst: a few milliseconds of work.
ADMIT_PER_TURN = 8
# A form's submission: its listener acknowledges within this many seconds of its arrival (the time is
# in the request's context under ACK_BY); past this many, the transport acknowledges plainly itself.
# Slack closes the form with an error of its own after 3 seconds without an answer.
SUBMISSION_LISTENER_SECONDS = 2.0
SUBMISSION_ACK_SECONDS = 2.5
ACK_BY = "acechat_ack_by"
BAD_TOKEN = (
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
)


def _signed(verifier: SignatureVerifier, body: str, headers: Mapping[str, str]) -> bool:
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    # slack_sdk raises on a timestamp that is not a number: such a request is as unsigned as any.
    if not (timestamp.isascii() and timestamp.isdecimal()):
        return False
    return verifier.is_valid(body, timestamp, headers.get("X-Slack-Signature", ""))


def _maybe_answered_by_bolt(body: str) -> bool:
    """Cheap test: False unless the body could be one of Slack's endpoint checks."""
    return "url_verification" in body or "ssl_check" in body


def _maybe_submission(body: str) -> bool:
    """Cheap test: False unless the body could be a form's submission (form-encoded, its type intact)."""
    return "view_submission" in body


def _is_submission(body: Mapping[str, Any]) -> bool:
    return body.get("type") == "view_submission"


def _answered_by_bolt(body: dict[str, Any]) -> bool:
    """Slack's endpoint checks, whose answer is the HTTP reply itself (the challenge) and runs no listener."""
    return body.get("type") == "url_verification" or body.get("ssl_check") == "1"


def _deadline(arrived: float) -> dict[str, Any]:
    """A submission's bolt context: when its listener must have acknowledged (time.monotonic())."""
    return {ACK_BY: arrived + SUBMISSION_LISTENER_SECONDS}


def _ack_payload(reply: BoltResponse) -> dict[str, Any] | None:
    """What a listener's acknowledgement says, as a Socket Mode acknowledgement carries it."""
    if reply.status != 200 or not reply.body:
        return None
    content_type = reply.headers.get("content-type", [""])[0]
    if content_type.startswith("application/json"):
        loaded = json.loads(reply.body)
        return loaded if isinstance(loaded, dict) else None
    return {"text": reply.body}


class StartupAuthorize(AsyncAuthorize):
    """Bolt's authorization from the `auth.test` made at start. Bolt's own single-workspace
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


async def check_tokens(client: AsyncWebClient, settings: SlackSettings) -> AsyncSlackResponse | None:
    """The bot's `auth.test` (none in OAuth mode, which has no one bot token), and for Socket Mode a
    first `apps.connections.open`. Fails at once, in one line, on a rejected token or an unreachable
    Slack: Socket Mode would otherwise retry forever."""
    name = "SLACK_BOT_TOKEN"
    auth = None
    try:
        if settings.bot_token:
            auth = await client.auth_test()
        if settings.app_token is not None:
            name = "SLACK_APP_TOKEN"
            await client.apps_connections_open(app_token=settings.app_token)
    except SlackApiError as error:
        code = error.response.get("error")
        if code in BAD_TOKEN:
            raise StartupError(
                f"Slack rejected {name} ({code}): copy it again from the app's settings"
            ) from None
        raise StartupError(f"Slack refused to start the bot: {code or error.response.status_code}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise StartupError(
            f"could not reach Slack ({client.base_url}): {error or type(error).__name__}"
        ) from None
    return auth


class SlackTransport:
    """Serves one bolt app over Socket Mode (with an app token) or HTTP (with a signing secret)."""

    def __init__(
        self, settings: SlackSettings, client: AsyncWebClient, *, host: str, shutdown_grace: float
    ) -> None:
        self._settings = settings
        self._client = client
        self._host = host
        self._shutdown_grace = shutdown_grace
        self._app: AsyncApp | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: deque[Coroutine[Any, Any, None]] = deque()
        self._admitting = False
        self._socket: SocketModeClient | None = None
        self._verifier: SignatureVerifier | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False

    async def start(self, app: AsyncApp, *, pages: Sequence[web.RouteDef] = ()) -> None:
        """Take requests for `app`: returns once connected (Socket Mode) or listening (HTTP, on the
        same port as `pages`: OAuth's install pages)."""
        self._app = app
        settings = self._settings
        if settings.app_token is not None:
            self._socket = SocketModeClient(
                app_token=settings.app_token, web_client=self._client, ping_interval=10
            )
            self._socket.socket_mode_request_listeners.append(self._on_envelope)
            await self._socket.connect()  # type: ignore[no-untyped-call]
            log.info("slack: connected in Socket Mode")
            return
        if not settings.signing_secret:
            raise StartupError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode cannot tell Slack's requests from forgeries"
            )
        self._verifier = SignatureVerifier(settings.signing_secret)
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, self._on_request)
        web_app.router.add_routes(pages)
        self._runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=self._shutdown_grace)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, settings.port, backlog=LISTEN_BACKLOG).start()
        except OSError as error:
            raise StartupError(
                f"cannot listen on {self._host}:{settings.port}: {error.strerror or error}"
            ) from None
        self._port = int(self._runner.addresses[0][1])
        log.info("slack: listening for HTTP requests on %s:%d%s", self._host, self._port, EVENTS_PATH)

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

    async def idle(self) -> None:
        """Wait until every request taken so far has been fully handled."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Stop taking requests, then let the ones taken finish (at most the shutdown grace)."""
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
                await asyncio.wait_for(self.idle(), self._shutdown_grace)
            except TimeoutError:
                pending = set(self._tasks)
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in a task `idle()` and `close()` wait for."""
        task = asyncio.create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            # The core words every failure it meets; this is a bug in the adapter itself.
            log.exception("slack: a request failed")

    # --- acknowledge first, then let bolt dispatch -------------------------------------------------

    async def _on_request(self, request: web.Request) -> web.StreamResponse:
        """One HTTP request from Slack. Anything not signed with the app's secret gets 401 and runs nothing."""
        assert self._verifier is not None
        arrived = time.monotonic()
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
        if _maybe_submission(body):
            bolt_request = AsyncBoltRequest(
                body=body, query=request.query_string, headers=headers, context=_deadline(arrived)
            )
            if _is_submission(bolt_request.body):
                reply = await self._answer_in_time(bolt_request, arrived)
                return web.Response() if reply is None else self._http_reply(reply)
        self._admit(self._dispatch_http(body, request.query_string, headers))
        return web.Response()

    async def _dispatch_http(self, body: str, query: str, headers: dict[str, str | Sequence[str]]) -> None:
        # Parsed here rather than before the acknowledgement: it is most of a request's cost until then.
        await self._dispatch(AsyncBoltRequest(body=body, query=query, headers=headers))

    @staticmethod
    def _http_reply(reply: BoltResponse) -> web.Response:
        content_type = reply.headers.get("content-type", ["text/plain"])[0].split(";")[0]
        return web.Response(status=reply.status, text=reply.body, content_type=content_type)

    async def _on_envelope(self, client: AsyncBaseSocketModeClient, envelope: SocketModeRequest) -> None:
        """One Socket Mode envelope: acknowledged on the socket exactly once; empty, but for a form's
        submission, whose acknowledgement carries what its listener answered."""
        if self._closing:
            return  # unacknowledged, so Slack delivers it again, to the next connection
        if envelope.type == "interactive" and _is_submission(envelope.payload):
            arrived = time.monotonic()
            request = AsyncBoltRequest(
                mode="socket_mode",
                body=envelope.payload,
                headers=build_headers(envelope),
                context=_deadline(arrived),
            )
            reply = await self._answer_in_time(request, arrived)
            payload = _ack_payload(reply) if reply is not None else None
            await client.send_socket_mode_response(
                SocketModeResponse(envelope_id=envelope.envelope_id, payload=payload)
            )
            return
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=envelope.envelope_id))
        self._admit(self._dispatch(envelope))

    async def _answer_in_time(self, request: AsyncBoltRequest, arrived: float) -> BoltResponse | None:
        """Bolt's answer to a form's submission, if its listener gives one in time; else None, to be
        acknowledged plainly, while the listener goes on in a tracked task."""
        answered: asyncio.Future[BoltResponse | None] = asyncio.get_running_loop().create_future()

        async def dispatch() -> None:
            reply: BoltResponse | None = None
            try:
                reply = await self._bolt(request)
            finally:
                # A failure (logged by `spawn`) is acknowledged plainly, as is a refusal from bolt.
                if reply is not None and reply.status != 200:
                    log.warning("slack: bolt answered %d to a form: %s", reply.status, reply.body[:200])
                    reply = None
                if not answered.done():
                    answered.set_result(reply)
                elif reply is not None and reply.body:
                    log.warning("slack: a form's answer came after Slack's 3 s; the form closed without it")

        self.spawn(dispatch())
        try:
            return await asyncio.wait_for(
                asyncio.shield(answered), max(0.0, arrived + SUBMISSION_ACK_SECONDS - time.monotonic())
            )
        except TimeoutError:
            if not answered.done():
                answered.set_result(None)
            log.warning(
                "slack: a form's submission took over %.1f s; acknowledged plainly", SUBMISSION_ACK_SECONDS
            )
            return None

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
            self.spawn(self._admit_queued())

    async def _admit_queued(self) -> None:
        try:
            while self._queued:
                for _ in range(min(ADMIT_PER_TURN, len(self._queued))):
                    self.spawn(self._queued.popleft())
                await asyncio.sleep(0)
        finally:
            self._admitting = False
            while self._queued:  # only when cancelled at the end of close()
                self._queued.popleft().close()

    async def _bolt(self, request: AsyncBoltRequest | SocketModeRequest) -> BoltResponse:
        assert self._app is not None
        if isinstance(request, SocketModeRequest):
            request = AsyncBoltRequest(
                mode="socket_mode", body=request.payload, headers=build_headers(request)
            )
        return await self._app.async_dispatch(request)

    async def _dispatch(self, request: AsyncBoltRequest | SocketModeRequest) -> None:
        reply = await self._bolt(request)
        # Slack already has its acknowledgement: a refusal from bolt can only be logged (bolt logs the
        # requests no listener takes itself).
        if reply.status not in (200, 404):
            log.warning("slack: bolt answered %d to a request: %s", reply.status, reply.body[:200])
