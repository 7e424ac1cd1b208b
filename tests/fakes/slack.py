"""A local stand-in for Slack: the Web API, Socket Mode's WebSocket and `response_url`, on one port.

Slack's limits that matter to a streaming bot are enforced, so tests and benchmarks catch abuse:

- `chat.update` is a Tier 3 method ("50+ per minute", with occasional bursts tolerated) counted per
  workspace. The fake models it as a token bucket holding `update_burst` calls (20) that refills at
  `update_per_minute` (50) a minute; a call with no token left gets HTTP 429, `{"ok": false,
  "error": "ratelimited"}` and a whole-second `Retry-After`, as Slack sends it.
- A message text longer than 4,000 characters gets `{"ok": false, "error": "msg_too_long"}`: that is
  where Slack really starts refusing, well below the documented 40,000.

Every Web API call is recorded with its arrival time (`calls`), as are Socket Mode acks (`acks`) and
`respond()` posts (`responses`). The helpers at the bottom build signed slash-command and event
requests the way Slack sends them, for HTTP mode (`deliver_http`) or Socket Mode (`deliver_socket`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_USER_ID = "UBOT"
BOT_ID = "B0001"
MAX_TEXT_CHARS = 4000


@dataclass(frozen=True)
class ApiCall:
    method: str
    params: dict[str, Any]
    at: float
    status: int
    reply: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.reply.get("ok"))


@dataclass
class Message:
    """A message the bot posted, as the channel shows it now."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None
    versions: list[str] = field(default_factory=list)  # every text it has shown, oldest first


@dataclass(frozen=True)
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    at: float


@dataclass(frozen=True)
class Response:
    """One POST to a `response_url` (what bolt's `respond()` sends)."""

    key: str
    body: dict[str, Any]
    at: float

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def ephemeral(self) -> bool:
        return bool(self.body.get("response_type", "ephemeral") == "ephemeral")


@dataclass(frozen=True)
class Delivery:
    """What the bot's HTTP endpoint answered to one request."""

    status: int
    body: str
    elapsed: float


class _Bucket:
    def __init__(self, capacity: int, per_second: float, clock: Callable[[], float]) -> None:
        self._capacity = float(capacity)
        self._rate = per_second
        self._tokens = float(capacity)
        self._clock = clock
        self._at = clock()

    def take(self) -> float:
        """Spend one token; 0 on success, otherwise the seconds until one is available."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class FakeSlack:
    def __init__(
        self,
        *,
        team_id: str = TEAM_ID,
        admins: Iterable[str] = (),
        owners: Iterable[str] = (),
        update_burst: int = 20,
        update_per_minute: float = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.team_id = team_id
        self.admins = set(admins)
        self.owners = set(owners)
        self.users_info_fails = False
        # Users of other organisations (Slack Connect): their own team id, as users.info reports it.
        self.home_teams: dict[str, str] = {}
        self.calls: list[ApiCall] = []
        self.messages: list[Message] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[Response] = []
        self.acks: dict[str, Ack] = {}
        self.rate_limited = 0
        self.too_long = 0
        self.socket_connections = 0
        self.url = ""
        self._clock = clock
        self._updates = _Bucket(update_burst, update_per_minute / 60.0, clock)
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._socket: web.WebSocketResponse | None = None
        self._changed = asyncio.Condition()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link", self._link)
        app.router.add_post("/response_url/{key}", self._respond)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        await self.drop_socket()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def api_url(self) -> str:
        """The Web API base URL for `AsyncWebClient(base_url=...)` (with the slash slack_sdk needs)."""
        return f"{self.url}/api/"

    def response_url(self, key: str) -> str:
        return f"{self.url}/response_url/{key}"

    # --- what happened ---------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def in_channel(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Bot messages in a channel (top level when `thread_ts` is None) or in one thread."""
        return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def responses_to(self, key: str) -> list[Response]:
        return [r for r in self.responses if r.key == key]

    async def wait_until(self, predicate: Callable[[], object], within: float = 5.0) -> None:
        """Wait until `predicate()` is true; it is checked again after every recorded call."""
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def _record(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- Web API ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        status, reply, headers = self._dispatch(method, params, token)
        self.calls.append(ApiCall(method, params, self._clock(), status, reply))
        await self._record()
        return web.json_response(reply, status=status, headers=headers)

    def _dispatch(
        self, method: str, params: dict[str, Any], token: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        result: tuple[int, dict[str, Any], dict[str, str]] = handler(params)
        return result

    def _ok(self, **fields: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"ok": True, **fields}, {}

    def _error(self, error: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"ok": False, "error": error}, {}

    def _too_long(self, text: str) -> bool:
        if len(text) > MAX_TEXT_CHARS:
            self.too_long += 1
            return True
        return False

    def next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _api_auth_test(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self._ok(
            url="https://fake.slack.com/",
            team="Fake",
            user="aichat",
            team_id=self.team_id,
            user_id=BOT_USER_ID,
            bot_id=BOT_ID,
            is_enterprise_install=False,
        )

    def _api_apps_connections_open(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self._ok(url=self.url.replace("http", "ws", 1) + "/link?ticket=t")

    def _api_chat_postMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        text = str(params.get("text", ""))
        if self._too_long(text):
            return self._error("msg_too_long")
        message = Message(
            str(params["channel"]), self.next_ts(), text, params.get("thread_ts") or None, [text]
        )
        self.messages.append(message)
        return self._ok(channel=message.channel, ts=message.ts, message={"text": text, "user": BOT_USER_ID})

    def _api_chat_update(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        wait = self._updates.take()
        if wait > 0:
            self.rate_limited += 1
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(math.ceil(wait))}
        text = str(params.get("text", ""))
        if self._too_long(text):
            return self._error("msg_too_long")
        found = [m for m in self.messages if m.channel == params.get("channel") and m.ts == params.get("ts")]
        if not found:
            return self._error("message_not_found")
        found[0].text = text
        found[0].versions.append(text)
        return self._ok(channel=found[0].channel, ts=found[0].ts, text=text)

    def _api_chat_delete(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        found = [m for m in self.messages if m.channel == params.get("channel") and m.ts == params.get("ts")]
        if not found:
            return self._error("message_not_found")
        self.messages.remove(found[0])
        return self._ok(channel=found[0].channel, ts=found[0].ts)

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self._too_long(str(params.get("text", ""))):
            return self._error("msg_too_long")
        self.ephemerals.append(params)
        return self._ok(message_ts=self.next_ts())

    def _api_users_info(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.users_info_fails:
            return self._error("fatal_error")
        user = str(params.get("user", ""))
        if not user.startswith("U"):
            return self._error("user_not_found")
        return self._ok(
            user={
                "id": user,
                "team_id": self.home_teams.get(user, self.team_id),
                "name": user.lower(),
                "real_name": f"Real {user}",
                "profile": {"display_name": f"{user.lower()}-display", "real_name": f"Real {user}"},
                "is_admin": user in self.admins or user in self.owners,
                "is_owner": user in self.owners,
                "is_primary_owner": False,
                "is_bot": False,
            }
        )

    def _api_conversations_info(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel = str(params.get("channel", ""))
        return self._ok(
            channel={"id": channel, "is_im": channel.startswith("D"), "is_channel": channel.startswith("C")}
        )

    # --- response_url ----------------------------------------------------------------------------

    async def _respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append(Response(request.match_info["key"], body, self._clock()))
        await self._record()
        return web.Response(text="ok")

    # --- Socket Mode -----------------------------------------------------------------------------

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._socket = ws
        self.socket_connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake"},
                "connection_info": {"app_id": APP_ID},
            }
        )
        await self._record()
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            envelope_id = str(data.get("envelope_id", ""))
            self.acks[envelope_id] = Ack(envelope_id, data.get("payload"), self._clock())
            await self._record()
        if self._socket is ws:
            self._socket = None
        return ws

    @property
    def socket_open(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def wait_for_socket(self, connections: int = 1, within: float = 5.0) -> None:
        await self.wait_until(lambda: self.socket_connections >= connections and self.socket_open, within)

    async def drop_socket(self) -> None:
        """Close the Socket Mode connection from Slack's side (the client is expected to reconnect)."""
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close()

    async def push(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Send one envelope (`slash_commands`, `events_api`, …) down the socket; return its id."""
        if self._socket is None:
            raise RuntimeError("no Socket Mode connection")
        envelope_id = f"env-{next(self._ids)}"
        await self._socket.send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_attempt,
                "retry_reason": "timeout" if retry_attempt else "",
            }
        )
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, within: float = 5.0) -> Ack:
        await self.wait_until(lambda: envelope_id in self.acks, within)
        return self.acks[envelope_id]

    # --- what users do ---------------------------------------------------------------------------

    def command(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        command: str = "/aichat",
        trigger_id: str | None = None,
    ) -> dict[str, str]:
        """The form fields of one slash command, with a `response_url` served by this fake."""
        n = next(self._ids)
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": self.response_url(f"r{n}"),
            "trigger_id": trigger_id or f"trigger-{n}",
        }

    def event(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """An Events API `event_callback` body around `event`."""
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.team_id,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }

    def mention(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        thread_ts: str | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Someone mentions the bot: `text` should contain `<@UBOT>` as Slack writes it."""
        ts = self.next_ts()
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": self.team_id,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return self.event(event, event_id=event_id)

    def direct_message(
        self, text: str, *, user: str = "U1", channel: str = "D1", **extra: Any
    ) -> dict[str, Any]:
        ts = self.next_ts()
        event = {
            "type": "message",
            "channel_type": "im",
            "user": user,
            "text": text,
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
            "team": self.team_id,
            **extra,
        }
        return self.event(event)

    async def deliver_http(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        secret: str = SIGNING_SECRET,
        timestamp: float | None = None,
        retry_num: int | None = None,
        signed: bool = True,
    ) -> Delivery:
        """POST a command or event to the bot's `/slack/events`, signed the way Slack signs it."""
        if "command" in payload:
            body, content_type = urllib.parse.urlencode(payload), "application/x-www-form-urlencoded"
        else:
            body, content_type = json.dumps(payload), "application/json"
        headers = {"Content-Type": content_type}
        if signed:
            headers.update(sign(body, secret, timestamp))
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        started = time.monotonic()
        async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
            text = await reply.text()
        return Delivery(reply.status, text, time.monotonic() - started)

    async def deliver_socket(self, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Send a command or event down the Socket Mode connection; return the envelope id."""
        kind = "slash_commands" if "command" in payload else "events_api"
        return await self.push(kind, payload, retry_attempt=retry_attempt)


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: float | None = None) -> dict[str, str]:
    """Slack's request signature headers for `body` (v0 HMAC-SHA256 over `v0:TIMESTAMP:BODY`)."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}
