"""A local stand-in for Slack: the Web API, Socket Mode's WebSocket and `response_url`, on one port.

Slack's limits that matter to a streaming bot are enforced first, before a call does anything, so
tests and benchmarks catch abuse. One `FakeSlack` is one workspace unless OAuth installs add more (see
below), each with its own limits as on Slack; a call past a limit gets HTTP 429,
`{"ok": false, "error": "ratelimited"}` and a whole-second `Retry-After`, as Slack sends it.

- Tiered methods (https://docs.slack.dev/apis/web-api/rate-limits: Tier 2 "20+ per minute", Tier 3
  "50+", Tier 4 "100+", each tolerating bursts) are token buckets per method per workspace, holding a
  burst and refilling at the tier's rate a minute. `TIERS` and `METHOD_TIERS` below are the one place
  these numbers live: `chat.update`, `chat.delete`, `reactions.add`, `conversations.history` and
  `conversations.replies` are Tier 3; `chat.postEphemeral` and `chat.appendStream` Tier 4;
  `chat.startStream` and `chat.stopStream` Tier 2.
- `chat.postMessage` is "special": "generally one message per second per channel", with short bursts.
  The fake models it as a token bucket per channel (threads included) holding `post_burst` (3) and
  refilling at `post_per_second` (1). Slack's unstated workspace-wide cap on posts is not modelled.
- `assistant.threads.setStatus` ("special") is accepted freely and recorded (`statuses`); a thread's
  status (`status_of`) clears when the app posts in that thread, when it is set to "", or two minutes
  after it was set, as the method's reference says.
- `chat.startStream` / `appendStream` / `stopStream` build one message like `chat.postMessage` and
  `chat.update` do, so a streamed message's text is visible to the same helpers (`in_channel`, ...).
  Outside a DM a stream needs `recipient_user_id` and `recipient_team_id` ("required when streaming to
  channels"); in a DM it must be a thread reply (top-level streams are for channels only). Appending to
  or stopping a stream no longer streaming gets `message_not_in_streaming_state`; one call's
  `markdown_text` may hold 12,000 characters (`msg_too_long`). Slack closes a stream by itself when it
  grows old or long: `stream_max_seconds` (its age) and `stream_max_chars` (its text with the call's)
  do that here, answering the call that meets the cap `message_not_in_streaming_state`. `chat.stopStream`
  puts its `blocks` under the streamed text; `chat.update` of a message still streaming answers
  `cant_update_message`. `streaming_refused = "code"` makes the workspace refuse all three with that
  error (an app that is not an agent, a token without them). `agent_session_stopped` stops the thread's
  streams as Slack's Stop does, and lists them in `streaming_message_ts`. `chunks` may hold
  `markdown_text`, `task_update` (id, title, a status of pending, in_progress, complete or error: each
  message keeps its timeline in `Message.tasks`), `plan_update` and `blocks` chunks; others answer
  `invalid_chunks`.
- A message text longer than 4,000 characters gets `{"ok": false, "error": "msg_too_long"}`: that is
  where Slack really starts refusing, well below the documented 40,000.
- `chat.postMessage` keeps a message's `metadata`; `conversations.history` (a channel's top level) and
  `conversations.replies` (a thread) list the bot's messages newest first, with their metadata when
  asked (`include_all_metadata`).
- A network that fails after delivery: `drop_after_delivery[method] = n` makes the next n calls of a
  method take effect and then break their connection without an answer; `drop_before_delivery` breaks
  it before they take effect (and records nothing).
- A slow network: `delay_next[method]` lists, in seconds, how long each of the next calls of a method
  takes to reach Slack (it takes effect, is recorded and answered only then).
- Not limited: `auth.test`, `apps.connections.open`, `conversations.info` and `users.info` (Tier 4; a
  burst of hundreds of distinct askers would meet it on real Slack).

OAuth (many workspaces, one app): `grant(team_id)` stands for a person approving the install on Slack's
authorize page and returns the `code` the redirect brings; `oauth.v2.access` takes it once, with the
app's client id and secret (HTTP Basic, as slack_sdk sends them), and answers as Slack does: `access_token`,
`token_type: "bot"`, `scope`, `bot_user_id`, `app_id`, `team` (null for an org-wide install), `enterprise`,
`is_enterprise_install`, and with `rotation` on, `refresh_token` and `expires_in` (`xoxe.xoxb-` tokens).
`grant_type=refresh_token` trades a refresh token, once, for new tokens; the old access token keeps working
until it expires. Each workspace's token works only for its workspace (`token_team`); `uninstall()`
revokes a workspace's tokens (`token_revoked`), an expired one answers `token_expired`.

Every Web API call is recorded with its arrival time and token (`calls`), 429s by method (`limited`, and their
total `rate_limited`), every text a message has shown with its time (`Message.versions` / `Message.at`,
deleted messages in `deleted`), as are Socket Mode acks (`acks`) and `respond()` posts (`responses`).
The helpers at the bottom build signed slash-command and event requests the way Slack sends them,
for HTTP mode (`deliver_http`) or Socket Mode (`deliver_socket`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import math
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import aiohttp
from aiohttp import web

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_USER_ID = "UBOT"
BOT_ID = "B0001"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "test-client-secret"
BOT_SCOPES = "app_mentions:read,chat:write,commands,im:history,users:read"
TOKEN_LIFETIME = 43200
MAX_TEXT_CHARS = 4000
# Block Kit: a section's text, blocks in a message, a modal's title; how long a trigger id lives.
MAX_SECTION_CHARS = 3000
MAX_BLOCKS = 50
MAX_MODAL_TITLE_CHARS = 24
TRIGGER_SECONDS = 3.0
# Block Kit: an actions block's elements, a button's text, an action id.
MAX_ACTIONS = 25
MAX_BUTTON_CHARS = 75
MAX_ACTION_ID_CHARS = 255
INTERACTIVE = frozenset({"block_actions", "message_action", "shortcut", "view_submission", "view_closed"})
MAX_STREAM_CHUNK_CHARS = 12000
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
STATUS_TIMEOUT = 120.0


@dataclass(frozen=True)
class Tier:
    """A rate tier as the fake enforces it: a bucket of `burst` calls refilled at `per_minute`."""

    per_minute: float
    burst: int


# Slack documents each tier's rate as a floor ("20+ per minute") and its bursts only in words, so
# the fake takes the floor and a burst of 40% of it (Tier 3: 20 calls, then 50 a minute).
TIERS: dict[str, Tier] = {
    "t2": Tier(per_minute=20, burst=8),
    "t3": Tier(per_minute=50, burst=20),
    "t4": Tier(per_minute=100, burst=40),
}
# Each method's tier, as its reference page on docs.slack.dev gives it.
METHOD_TIERS: dict[str, str] = {
    "chat.update": "t3",
    "chat.delete": "t3",
    "reactions.add": "t3",
    "conversations.history": "t3",
    "conversations.replies": "t3",
    "chat.postEphemeral": "t4",
    "chat.startStream": "t2",
    "chat.appendStream": "t4",
    "chat.stopStream": "t2",
}
# chat.postMessage, per channel: "1 per second", "short bursts >1 allowed".
POST_BURST = 3
POST_PER_SECOND = 1.0


@dataclass(frozen=True)
class ApiCall:
    method: str
    params: dict[str, Any]
    at: float
    status: int
    reply: dict[str, Any]
    token: str = ""

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
    at: list[float] = field(default_factory=list)  # when it started showing each of them
    streaming: bool = False  # a chat.startStream message not stopped yet
    streamed_at: float | None = None  # when chat.startStream began it
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # its task timeline, by task id
    deleted_at: float | None = None
    metadata: dict[str, Any] | None = None  # as chat.postMessage's `metadata` gave it
    blocks: list[dict[str, Any]] = field(default_factory=list)  # what Slack shows instead of `text`

    @property
    def action_ids(self) -> list[str]:
        """The action ids of the buttons the message shows now."""
        return [
            str(e.get("action_id")) for b in self.blocks for e in b.get("elements") or () if "action_id" in e
        ]

    def show(self, text: str, at: float) -> None:
        self.text = text
        self.versions.append(text)
        self.at.append(at)


@dataclass(frozen=True)
class Status:
    """One `assistant.threads.setStatus` call ("is thinking…" under a thread)."""

    channel: str
    thread_ts: str
    status: str
    loading_messages: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class Change:
    """What a thread showed from `at` on: message `ts` now reads `text` (None: it was deleted)."""

    at: float
    ts: str
    text: str | None


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
    """One workspace. `update_burst`/`update_per_minute` override chat.update's Tier 3 bucket,
    `tiers` any method's (by method name), `post_burst`/`post_per_second` chat.postMessage's
    per-channel bucket."""

    def __init__(
        self,
        *,
        team_id: str = TEAM_ID,
        admins: Iterable[str] = (),
        owners: Iterable[str] = (),
        update_burst: int = TIERS["t3"].burst,
        update_per_minute: float = TIERS["t3"].per_minute,
        post_burst: int = POST_BURST,
        post_per_second: float = POST_PER_SECOND,
        tiers: Mapping[str, Tier] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.team_id = team_id
        self.admins = set(admins)
        self.owners = set(owners)
        self.users_info_fails = False
        # Slack's streaming methods: refused outright (the error), and when Slack closes a stream itself.
        self.streaming_refused: str | None = None
        self.stream_max_seconds: float | None = None
        self.stream_max_chars: int | None = None
        # Calls (by method) to carry out and then answer with a broken connection, as a network that
        # fails after delivery does: the next so many such calls take effect, their callers hear nothing.
        self.drop_after_delivery: Counter[str] = Counter()
        # Calls (by method) whose connection breaks before they reach Slack: nothing happens, nothing
        # is recorded, the caller hears nothing.
        self.drop_before_delivery: Counter[str] = Counter()
        # Errors (by method) the next calls of a method are answered with, nothing done: a channel
        # archived or a permission lost mid-answer.
        self.fail_next: dict[str, list[str]] = {}
        # Seconds each call of a method takes before Slack answers it (a slow Slack), by method.
        self.latency: dict[str, float] = {}
        # Seconds each of the next calls (by method) spends on its way before it takes effect.
        self.delay_next: dict[str, list[float]] = {}
        # Channel-level rights (issue 17): who created each channel, and user groups by id.
        self.creators: dict[str, str] = {}
        self.usergroups: dict[str, tuple[str, list[str]]] = {}  # id -> (handle, members)
        # Users of other organisations (Slack Connect): their own team id, as users.info reports it.
        self.home_teams: dict[str, str] = {}
        self.calls: list[ApiCall] = []
        self.messages: list[Message] = []
        self.deleted: list[Message] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.reactions: list[tuple[str, str, str, float]] = []  # channel, message ts, name, when
        self.statuses: list[Status] = []
        self.responses: list[Response] = []
        self.acks: dict[str, Ack] = {}
        self.limited: Counter[str] = Counter()  # 429s answered, by method
        self.too_long = 0
        self.socket_connections = 0
        self.url = ""
        self._clock = clock
        methods = {m: TIERS[t] for m, t in METHOD_TIERS.items()}
        methods["chat.update"] = Tier(update_per_minute, update_burst)
        methods.update(tiers or {})
        self._tiers = methods
        # Slack's limits are per workspace: each token's workspace (or org) has buckets of its own.
        self._buckets: dict[str, dict[str, _Bucket]] = {}
        self._post_burst = post_burst
        self._post_rate = post_per_second
        self._posts: dict[tuple[str, str], _Bucket] = {}
        self._status: dict[tuple[str, str], Status] = {}
        self._caller = ""  # the token of the call being answered
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._socket: web.WebSocketResponse | None = None
        self._changed = asyncio.Condition()
        # OAuth: the token each workspace (or org) has, what each code and refresh token is worth.
        self.token_team: dict[str, str] = {BOT_TOKEN: team_id}
        self.token_expires: dict[str, float] = {}
        self.revoked: set[str] = set()
        self.rotation = False
        self.token_lifetime = TOKEN_LIFETIME
        self.enterprises: dict[str, str] = {}  # team (or org) id -> its Enterprise Grid org id
        self._codes: dict[str, tuple[str, str | None, bool]] = {}
        self._refresh: dict[str, str] = {}
        self._minted = itertools.count(1)

        # The scopes the bot's tokens carry (auth.test's x-oauth-scopes header, oauth.v2.access's scope):
        # add assistant:write for an app declared an agent.
        self.bot_scopes = BOT_SCOPES
        self.views: list[dict[str, Any]] = []  # modals opened (views.open), with their "id"
        self._triggers: dict[str, float] = {}  # trigger ids handed to the app, by when
        # Added to the clock when views.open weighs a trigger's age: a test makes the app late by this
        # much (past TRIGGER_SECONDS: expired_trigger_id) without sleeping.
        self.trigger_delay = 0.0
        self._used_triggers: set[str] = set()
        self.homes: dict[str, dict[str, Any]] = {}  # the Home tab each user sees (views.publish)
        # Agent sessions by (channel, thread): their status, and the title they were created with.
        self.sessions: dict[tuple[str, str], dict[str, str]] = {}
        self.suggested: dict[str, list[dict[str, str]]] = {}  # an agent conversation's suggested prompts

    # --- OAuth -----------------------------------------------------------------------------------

    def grant(self, team_id: str, *, enterprise_id: str | None = None, org_install: bool = False) -> str:
        """Someone approved the install for `team_id` (an org-wide install: `enterprise_id`): the code."""
        code = f"code-{next(self._minted)}-{team_id}"
        self._codes[code] = (team_id, enterprise_id, org_install)
        if enterprise_id is not None:
            self.enterprises[enterprise_id if org_install else team_id] = enterprise_id
        return code

    def tokens_of(self, team: str) -> list[str]:
        return [t for t, owner in self.token_team.items() if owner == team and t not in self.revoked]

    def uninstall(self, team: str) -> None:
        """The workspace (or org) removed the app: its tokens stop working at once."""
        self.revoked.update(t for t, owner in self.token_team.items() if owner == team)
        self._refresh = {r: owner for r, owner in self._refresh.items() if owner != team}

    def _mint(self, team: str) -> dict[str, Any]:
        n = next(self._minted)
        prefix = "xoxe.xoxb-" if self.rotation else "xoxb-"
        token = f"{prefix}{team}-{n}-{'x' * 8}"
        self.token_team[token] = team
        fields: dict[str, Any] = {"access_token": token, "token_type": "bot", "scope": self.bot_scopes}
        if self.rotation:
            refresh = f"xoxe-1-{team}-{n}-{'r' * 8}"
            self._refresh[refresh] = team
            self.token_expires[token] = time.time() + self.token_lifetime
            fields.update(refresh_token=refresh, expires_in=self.token_lifetime)
        return fields

    def _oauth_v2_access(
        self, params: dict[str, Any], basic: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        credentials = (params.get("client_id"), params.get("client_secret"))
        if basic:
            try:
                user, _, password = base64.b64decode(basic).decode().partition(":")
            except ValueError:
                return self._error("invalid_client_id")
            credentials = (user, password)
        if credentials[0] != CLIENT_ID:
            return self._error("invalid_client_id")
        if credentials[1] != CLIENT_SECRET:
            return self._error("bad_client_secret")
        if params.get("grant_type") == "refresh_token":
            team = self._refresh.pop(str(params.get("refresh_token")), None)
            if team is None:
                return self._error("invalid_refresh_token")
            return self._ok(**self._mint(team))
        grant = self._codes.pop(str(params.get("code")), None)
        if grant is None:
            return self._error("invalid_code")
        team_id, enterprise_id, org_install = grant
        owner = enterprise_id if org_install and enterprise_id else team_id
        enterprise = {"id": enterprise_id, "name": f"Org {enterprise_id}"} if enterprise_id else None
        return self._ok(
            **self._mint(owner),
            bot_user_id=BOT_USER_ID,
            app_id=APP_ID,
            team=None if org_install else {"id": team_id, "name": f"Team {team_id}"},
            enterprise=enterprise,
            is_enterprise_install=org_install,
            authed_user={"id": "U1"},
        )

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

    @property
    def rate_limited(self) -> int:
        """429s answered, all methods together."""
        return sum(self.limited.values())

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def in_channel(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Bot messages in a channel (top level when `thread_ts` is None) or in one thread."""
        return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts]

    def changes_in(self, channel: str, thread_ts: str | None = None) -> list[Change]:
        """Everything the bot's messages there have shown, deleted ones included, in time order."""
        found: list[Change] = []
        for m in self.messages + self.deleted:
            if m.channel == channel and m.thread_ts == thread_ts:
                found += [Change(at, m.ts, text) for at, text in zip(m.at, m.versions, strict=True)]
                if m.deleted_at is not None:
                    found.append(Change(m.deleted_at, m.ts, None))
        return sorted(found, key=lambda c: c.at)

    def statuses_in(self, channel: str, thread_ts: str) -> list[Status]:
        return [s for s in self.statuses if s.channel == channel and s.thread_ts == thread_ts]

    def status_of(self, channel: str, thread_ts: str) -> str:
        """The status a thread shows now ("" for none)."""
        status = self._status.get((channel, thread_ts))
        if status is None or self._clock() - status.at >= STATUS_TIMEOUT:
            return ""
        return status.status

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
        authorization = request.headers.get("Authorization", "")
        if self.latency.get(method):
            await asyncio.sleep(self.latency[method])
        if self.drop_before_delivery[method] > 0:
            self.drop_before_delivery[method] -= 1
            self._drop(request)
        if self.delay_next.get(method):
            await asyncio.sleep(self.delay_next[method].pop(0))
        if method == "oauth.v2.access":
            token = ""
            status, reply, headers = self._oauth_v2_access(
                params, authorization.removeprefix("Basic ").strip()
            )
        else:
            token = authorization.removeprefix("Bearer ").strip()
            status, reply, headers = self._dispatch(method, params, token)
        self.calls.append(ApiCall(method, params, self._clock(), status, reply, token))
        await self._record()
        if self.drop_after_delivery[method] > 0:
            self.drop_after_delivery[method] -= 1
            self._drop(request)
        return web.json_response(reply, status=status, headers=headers)

    @staticmethod
    def _drop(request: web.Request) -> NoReturn:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("the fake broke the connection")

    def _dispatch(
        self, method: str, params: dict[str, Any], token: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "apps.connections.open":
            if token != APP_TOKEN:
                return self._error("invalid_auth")
        elif token in self.revoked:
            return self._error("token_revoked")
        elif token not in self.token_team:
            return self._error("invalid_auth")
        elif self.token_expires.get(token, math.inf) <= time.time():
            return self._error("token_expired")
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        self._caller = token
        if self.fail_next.get(method):
            return self._error(self.fail_next[method].pop(0))
        bucket = self._bucket(method, params)
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                self.limited[method] += 1
                # Whole seconds, rounded up; the rounding first keeps float noise from adding a second.
                retry_after = math.ceil(round(wait, 6))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
        result: tuple[int, dict[str, Any], dict[str, str]] = handler(params)
        return result

    def _bucket(self, method: str, params: dict[str, Any]) -> _Bucket | None:
        team = self.token_team.get(self._caller, self.team_id)
        if method != "chat.postMessage":
            tier = self._tiers.get(method)
            if tier is None:
                return None
            buckets = self._buckets.setdefault(team, {})
            if method not in buckets:
                buckets[method] = _Bucket(tier.burst, tier.per_minute / 60.0, self._clock)
            return buckets[method]
        where = (team, str(params.get("channel", "")))
        bucket = self._posts.get(where)
        if bucket is None:
            bucket = self._posts[where] = _Bucket(self._post_burst, self._post_rate, self._clock)
        return bucket

    def _ok(self, **fields: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"ok": True, **fields}, {}

    def _error(self, error: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        return 200, {"ok": False, "error": error}, {}

    def _too_long(self, text: str, limit: int = MAX_TEXT_CHARS) -> bool:
        if len(text) > limit:
            self.too_long += 1
            return True
        return False

    def next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _find(self, params: dict[str, Any]) -> Message | None:
        channel, ts = params.get("channel"), params.get("ts")
        return next((m for m in self.messages if m.channel == channel and m.ts == ts), None)

    def _new_message(self, params: dict[str, Any], text: str, *, streaming: bool = False) -> Message:
        message = Message(
            str(params["channel"]), self.next_ts(), "", params.get("thread_ts") or None, streaming=streaming
        )
        message.show(text, self._clock())
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        message.metadata = metadata if isinstance(metadata, dict) else None
        self.messages.append(message)
        if message.thread_ts is not None:
            # The app answered in the thread: Slack clears its "is thinking…" status there.
            self._status.pop((message.channel, message.thread_ts), None)
        return message

    def _api_auth_test(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        owner = self.token_team.get(self._caller, self.team_id)
        enterprise = self.enterprises.get(owner)
        org = enterprise == owner
        status, reply, _ = self._ok(
            url="https://fake.slack.com/",
            team="Fake",
            user="aichat",
            team_id=None if org else owner,
            enterprise_id=enterprise,
            user_id=BOT_USER_ID,
            bot_id=BOT_ID,
            is_enterprise_install=org,
        )
        # Slack tells a token's scopes in this header of its answers; the app reads it from auth.test.
        return status, reply, {"x-oauth-scopes": self.bot_scopes}

    def _api_apps_connections_open(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self._ok(url=self.url.replace("http", "ws", 1) + "/link?ticket=t")

    @staticmethod
    def _blocks(params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The call's blocks (a form-encoded call sends them as JSON text); None if it sent none."""
        if "blocks" not in params:
            return None
        blocks = params["blocks"]
        if isinstance(blocks, str):
            blocks = json.loads(blocks) if blocks else []
        return list(blocks)

    @staticmethod
    def _invalid_blocks(blocks: list[dict[str, Any]]) -> bool:
        """Block Kit's rules the fake checks: sections of 1 to 3,000 characters, at most 50 blocks, buttons
        (text of 1 to 75 characters) and feedback buttons with action ids in their own kind of block."""
        if len(blocks) > MAX_BLOCKS:
            return True
        for block in blocks:
            kind = block.get("type")
            if kind == "section":
                text = str((block.get("text") or {}).get("text") or "")
                if not text or len(text) > MAX_SECTION_CHARS:
                    return True
            elif kind in ("actions", "context_actions"):
                allowed = {
                    "actions": {"button", "static_select", "overflow"},
                    "context_actions": {"feedback_buttons", "icon_button"},
                }[kind]
                elements = block.get("elements") or []
                if not elements or len(elements) > MAX_ACTIONS or any(
                    e.get("type") not in allowed or not e.get("action_id") for e in elements
                ):
                    return True
                # A button's text is plain text of 1 to 75 characters, its action id at most 255.
                for e in elements:
                    label = str((e.get("text") or {}).get("text") or "")
                    if e.get("type") == "button" and not 0 < len(label) <= MAX_BUTTON_CHARS:
                        return True
                    if len(str(e.get("action_id"))) > MAX_ACTION_ID_CHARS:
                        return True
            elif kind not in ("context", "markdown", "rich_text", "divider", "header"):
                return True
        return False

    def _api_chat_postMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        text = str(params.get("text", ""))
        if self._too_long(text):
            return self._error("msg_too_long")
        blocks = self._blocks(params)
        if blocks is not None and self._invalid_blocks(blocks):
            return self._error("invalid_blocks")
        message = self._new_message(params, text)
        message.blocks = blocks or []
        return self._ok(channel=message.channel, ts=message.ts, message={"text": text, "user": BOT_USER_ID})

    def _api_chat_update(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        text = str(params.get("text", ""))
        if self._too_long(text):
            return self._error("msg_too_long")
        blocks = self._blocks(params)
        if blocks is not None and self._invalid_blocks(blocks):
            return self._error("invalid_blocks")
        found = self._find(params)
        if found is None:
            return self._error("message_not_found")
        if found.streaming:
            return self._error("cant_update_message")
        found.show(text, self._clock())
        if blocks is not None:  # chat.update keeps a message's blocks unless it is sent new ones
            found.blocks = blocks
        return self._ok(channel=found.channel, ts=found.ts, text=text)

    def _api_chat_delete(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        found = self._find(params)
        if found is None:
            return self._error("message_not_found")
        self.messages.remove(found)
        found.deleted_at = self._clock()
        self.deleted.append(found)
        return self._ok(channel=found.channel, ts=found.ts)

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self._too_long(str(params.get("text", ""))):
            return self._error("msg_too_long")
        self.ephemerals.append(params)
        return self._ok(message_ts=self.next_ts())

    def _api_reactions_add(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel, ts, name = (str(params.get(k, "")) for k in ("channel", "timestamp", "name"))
        if not (channel and ts and name):
            return self._error("invalid_arguments")
        if any(r[:3] == (channel, ts, name) for r in self.reactions):
            return self._error("already_reacted")
        self.reactions.append((channel, ts, name, self._clock()))
        return self._ok()

    def _api_assistant_threads_setStatus(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel, thread_ts = str(params.get("channel_id", "")), str(params.get("thread_ts", ""))
        if not channel or not thread_ts or "status" not in params:
            return self._error("invalid_arguments")
        loading = params.get("loading_messages") or ()
        if isinstance(loading, str):  # a form-encoded call sends the array as JSON text
            loading = json.loads(loading)
        status = Status(channel, thread_ts, str(params["status"]), tuple(map(str, loading)), self._clock())
        self.statuses.append(status)
        if status.status:
            self._status[(channel, thread_ts)] = status
        else:
            self._status.pop((channel, thread_ts), None)
        return self._ok()

    @staticmethod
    def _chunks(params: dict[str, Any]) -> list[Any]:
        chunks = params.get("chunks") or []
        if isinstance(chunks, str):  # a form-encoded call sends the array as JSON text
            chunks = json.loads(chunks)
        return list(chunks)

    @classmethod
    def _stream_text(cls, params: dict[str, Any]) -> str:
        """A stream call's text: `markdown_text`, or the markdown chunks of `chunks`."""
        text = str(params.get("markdown_text") or "")
        return text + "".join(
            str(c.get("text", ""))
            for c in cls._chunks(params)
            if isinstance(c, dict) and c.get("type") == "markdown_text"
        )

    @classmethod
    def _invalid_chunks(cls, params: dict[str, Any]) -> bool:
        """The chunk kinds the streaming methods take, a task update with its id, title and status."""
        for chunk in cls._chunks(params):
            if not isinstance(chunk, dict):
                return True
            kind = chunk.get("type")
            if kind == "task_update":
                if not chunk.get("id") or not chunk.get("title") or len(str(chunk["title"])) > 256:
                    return True
                if chunk.get("status") not in TASK_STATUSES:
                    return True
            elif kind == "markdown_text":
                if not isinstance(chunk.get("text"), str):
                    return True
            elif kind not in ("plan_update", "blocks"):
                return True
        return False

    def _track_tasks(self, message: Message, params: dict[str, Any]) -> None:
        for chunk in self._chunks(params):
            if chunk.get("type") == "task_update":
                message.tasks[str(chunk["id"])] = dict(chunk)

    def _api_chat_startStream(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.streaming_refused:
            return self._error(self.streaming_refused)
        channel = str(params.get("channel", ""))
        if not channel:
            return self._error("channel_not_found")
        if not channel.startswith("D"):
            for needed in ("recipient_user_id", "recipient_team_id"):
                if not params.get(needed):
                    return self._error(f"missing_{needed}")
        elif not params.get("thread_ts"):
            return self._error("invalid_arguments")  # top-level streaming is for channels only
        if self._invalid_chunks(params):
            return self._error("invalid_chunks")
        text = self._stream_text(params)
        if self._too_long(text, MAX_STREAM_CHUNK_CHARS):
            return self._error("msg_too_long")
        message = self._new_message(params, text, streaming=True)
        message.streamed_at = self._clock()
        self._track_tasks(message, params)
        return self._ok(channel=message.channel, ts=message.ts)

    def _closed(self, message: Message, more: str) -> bool:
        """Whether Slack has closed `message`'s stream, or does now: too old, or too long with `more`."""
        if not message.streaming:
            return True
        age = self._clock() - (message.streamed_at or 0.0)
        too_old = self.stream_max_seconds is not None and age > self.stream_max_seconds
        too_long = self.stream_max_chars is not None and len(message.text) + len(more) > self.stream_max_chars
        if too_old or too_long:
            message.streaming = False
        return not message.streaming

    def _append(self, params: dict[str, Any], stop: bool) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.streaming_refused:
            return self._error(self.streaming_refused)
        found = self._find(params)
        if found is None:
            return self._error("message_not_found")
        if self._invalid_chunks(params):
            return self._error("invalid_chunks")
        text = self._stream_text(params)
        if self._too_long(text, MAX_STREAM_CHUNK_CHARS):
            return self._error("msg_too_long")
        blocks = self._blocks(params) if stop else None
        if blocks is not None and self._invalid_blocks(blocks):
            return self._error("invalid_blocks")
        if self._closed(found, text):
            return self._error("message_not_in_streaming_state")
        if text:
            found.show(found.text + text, self._clock())
        self._track_tasks(found, params)
        if stop:
            found.streaming = False
            found.blocks = blocks or []
            return self._ok(
                channel=found.channel, ts=found.ts, message={"text": found.text, "user": BOT_USER_ID}
            )
        return self._ok(channel=found.channel, ts=found.ts)

    def _api_chat_appendStream(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not params.get("markdown_text") and not self._chunks(params) and not self.streaming_refused:
            return self._error("no_text")
        return self._append(params, stop=False)

    def _api_chat_stopStream(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return self._append(params, stop=True)

    def trigger(self) -> str:
        """A trigger id as Slack hands one to the app with an interaction: good once, for 3 s."""
        trigger_id = f"{next(self._ids)}.{next(self._ids)}.trigger"
        self._triggers[trigger_id] = self._clock()
        return trigger_id

    def _api_views_open(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        trigger_id = str(params.get("trigger_id", ""))
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict) or view.get("type") != "modal":
            return self._error("invalid_arguments")
        title = str((view.get("title") or {}).get("text") or "")
        if (
            not title
            or len(title) > MAX_MODAL_TITLE_CHARS
            or len(str(view.get("private_metadata", ""))) > 3000
        ):
            return self._error("invalid_arguments")
        if trigger_id in self._used_triggers:
            return self._error("exchanged_trigger_id")
        if trigger_id not in self._triggers:
            return self._error("invalid_trigger_id")
        issued = self._triggers.pop(trigger_id)
        self._used_triggers.add(trigger_id)
        if self._clock() + self.trigger_delay - issued > TRIGGER_SECONDS:
            return self._error("expired_trigger_id")
        opened = {
            **view,
            "id": f"V{next(self._ids):08d}",
            "team_id": self.team_id,
            "hash": "h1",
            "state": {"values": {}},
        }
        self.views.append(opened)
        return self._ok(view=opened)

    def _api_views_publish(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        user = str(params.get("user_id", ""))
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not user.startswith("U") or not isinstance(view, dict) or view.get("type") != "home":
            return self._error("invalid_arguments")
        blocks = list(view.get("blocks") or [])
        if len(blocks) > 100 or self._invalid_blocks(blocks):
            return self._error("invalid_blocks")
        self.homes[user] = {**view, "id": f"V{next(self._ids):08d}"}
        return self._ok(view=self.homes[user])

    def _api_agents_sessions_setStatus(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel, thread, status = (str(params.get(k) or "") for k in ("channel_id", "thread_ts", "status"))
        if status not in ("active", "processing", "suspended", "closed"):
            return self._error("invalid_status")
        if not channel or not thread:  # thread-based sessions, in channels and DMs
            return self._error("invalid_arguments")
        title = str(params.get("title") or "")
        if len(title) > 200:
            return self._error("invalid_title")
        session = self.sessions.setdefault(
            (channel, thread), {"title": title}
        )  # a title only names a new one
        session["status"] = status
        return self._ok()

    def _api_assistant_threads_setSuggestedPrompts(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        prompts = params.get("prompts")
        if isinstance(prompts, str):
            prompts = json.loads(prompts)
        channel = str(params.get("channel_id") or "")
        if not channel or not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            return self._error("invalid_arguments")
        if any(not p.get("title") or not p.get("message") for p in prompts):
            return self._error("invalid_arguments")
        # For an agent app, a call naming a thread "silently fails", as the method's reference says.
        if not params.get("thread_ts"):
            self.suggested[channel] = list(prompts)
        return self._ok()

    def agent_session_stopped(self, channel: str, thread_ts: str, *, user: str = "U1") -> dict[str, Any]:
        """Someone pressed Slack's own Stop on an agent session: Slack stops the app's streams in that
        thread at once, and the event lists them."""
        stopped = [
            m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts and m.streaming
        ]
        for message in stopped:
            message.streaming = False
        return self.event(
            {
                "type": "agent_session_stopped",
                "channel": channel,
                "thread_ts": thread_ts,
                "streaming_message_ts": [m.ts for m in stopped],
                "user": user,
                "event_ts": self.next_ts(),
            }
        )

    def app_home_opened(self, *, user: str = "U1", tab: str = "home", channel: str = "D1") -> dict[str, Any]:
        """Someone opens the app's Home (or Messages) tab."""
        return self.event(
            {
                "type": "app_home_opened",
                "user": user,
                "channel": channel,
                "tab": tab,
                "event_ts": self.next_ts(),
            }
        )

    def _api_users_info(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.users_info_fails:
            return self._error("fatal_error")
        user = str(params.get("user", ""))
        if not user.startswith("U"):
            return self._error("user_not_found")
        # The caller's workspace (OAuth: each token has its own); an org-wide install's users are the org's.
        owner = self.token_team.get(self._caller, self.team_id)
        enterprise = self.enterprises.get(owner)
        grid = {"enterprise_user": {"enterprise_id": enterprise}} if enterprise else {}
        return self._ok(
            user={
                **grid,
                "id": user,
                "team_id": self.home_teams.get(user, self.team_id if enterprise == owner else owner),
                "name": user.lower(),
                "real_name": f"Real {user}",
                "profile": {"display_name": f"{user.lower()}-display", "real_name": f"Real {user}"},
                "is_admin": user in self.admins or user in self.owners,
                "is_owner": user in self.owners,
                "is_primary_owner": False,
                "is_bot": False,
            }
        )

    def _listed(self, messages: list[Message], params: dict[str, Any]) -> list[dict[str, Any]]:
        """Messages as conversations.history/replies list them: newest first, metadata on request."""
        metadata = str(params.get("include_all_metadata", "")).lower() in {"1", "true"}
        limit = int(params.get("limit", 100))
        listed = []
        for m in sorted(messages, key=lambda m: m.ts, reverse=True)[:limit]:
            entry: dict[str, Any] = {"type": "message", "user": BOT_USER_ID, "text": m.text, "ts": m.ts}
            if metadata and m.metadata is not None:
                entry["metadata"] = m.metadata
            listed.append(entry)
        return listed

    def _api_conversations_history(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        messages = self._listed(self.in_channel(str(params.get("channel", ""))), params)
        return self._ok(messages=messages, has_more=False)

    def _api_conversations_replies(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel, thread = str(params.get("channel", "")), str(params.get("ts", ""))
        return self._ok(messages=self._listed(self.in_channel(channel, thread), params), has_more=False)

    def _api_conversations_info(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel = str(params.get("channel", ""))
        info: dict[str, Any] = {
            "id": channel,
            "is_im": channel.startswith("D"),
            "is_channel": channel.startswith("C"),
        }
        if channel in self.creators:
            info["creator"] = self.creators[channel]
        return self._ok(channel=info)

    def _api_usergroups_list(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        groups = [
            {"id": gid, "handle": handle, "team_id": self.team_id}
            for gid, (handle, _) in self.usergroups.items()
        ]
        return self._ok(usergroups=groups)

    def _api_usergroups_users_list(
        self, params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        group = self.usergroups.get(str(params.get("usergroup", "")))
        if group is None:
            return self._error("no_such_subteam")
        return self._ok(users=list(group[1]))

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

    def press(self, message: Message, action_id: str, *, user: str = "U1") -> dict[str, Any]:
        """A `block_actions` payload: `user` presses the button `action_id` on `message`."""
        trigger = f"{next(self._ids)}.trigger"
        self._triggers[trigger] = self._clock()
        button = next(
            e for b in message.blocks or () for e in b.get("elements", ()) if e.get("action_id") == action_id
        )
        msg: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "ts": message.ts,
            "text": message.text,
            "blocks": message.blocks,
        }
        if message.thread_ts is not None:
            msg["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": message.channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger,
            "team": {"id": self.team_id, "domain": "fake"},
            "channel": {"id": message.channel, "name": "general"},
            "message": msg,
            "response_url": f"{self.url}/response_url/{next(self._ids)}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "b",
                    "text": button["text"],
                    "value": button.get("value"),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def submit(
        self, view: dict[str, Any], values: dict[str, dict[str, str]], *, user: str = "U1"
    ) -> dict[str, Any]:
        """A `view_submission` payload: `user` submits the modal `view` with `values` ({block: {action: text}})."""
        state = {
            block: {action: {"type": "plain_text_input", "value": text} for action, text in fields.items()}
            for block, fields in values.items()
        }
        return {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": f"{next(self._ids)}.trigger",
            "view": {
                "id": "V1",
                "team_id": self.team_id,
                "type": "modal",
                "callback_id": view["callback_id"],
                "private_metadata": view.get("private_metadata", ""),
                "state": {"values": state},
                "hash": "h",
                "title": view.get("title"),
                "blocks": view.get("blocks"),
            },
            "response_urls": [],
        }

    def command(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        command: str = "/aichat",
        trigger_id: str | None = None,
        team: str | None = None,
        org: str | None = None,
    ) -> dict[str, str]:
        """The form fields of one slash command, with a `response_url` served by this fake."""
        n = next(self._ids)
        grid = {"enterprise_id": org, "is_enterprise_install": "true"} if org else {}
        return {
            **grid,
            "token": "legacy-verification-token",
            "team_id": team or self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": self.response_url(f"r{n}"),
            "trigger_id": trigger_id or self.trigger(),
        }

    def event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        team: str | None = None,
        org: str | None = None,
    ) -> dict[str, Any]:
        """An Events API `event_callback` body around `event` (from `team`, a workspace of the org-wide
        install `org` if given)."""
        team = team or self.team_id
        body: dict[str, Any] = {
            "token": "legacy-verification-token",
            "team_id": team,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": org,
                    "team_id": None if org else team,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": org is not None,
                }
            ],
        }
        if org is not None:
            body["enterprise_id"] = org
        return body

    def mention(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C1",
        thread_ts: str | None = None,
        event_id: str | None = None,
        team: str | None = None,
        org: str | None = None,
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
            "team": team or self.team_id,
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        return self.event(event, event_id=event_id, team=team, org=org)

    def direct_message(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "D1",
        team: str | None = None,
        org: str | None = None,
        **extra: Any,
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
            "team": team or self.team_id,
            **extra,
        }
        return self.event(event, team=team, org=org)

    def _team(self) -> dict[str, Any]:
        return {"id": self.team_id, "domain": "fake"}

    def _user(self, user: str) -> dict[str, Any]:
        return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id}

    def block_action(
        self, message: Message, action_id: str, value: str, *, user: str = "U1"
    ) -> dict[str, Any]:
        """A `block_actions` payload: `user` presses the element `action_id` on one of the bot's messages."""
        element = next(
            (e for b in message.blocks for e in b.get("elements") or () if e.get("action_id") == action_id),
            None,
        )
        block = next((b for b in message.blocks if element in (b.get("elements") or ())), {})
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        shown: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "ts": message.ts,
            "text": message.text,
        }
        shown["blocks"] = message.blocks
        if message.thread_ts is not None:
            container["thread_ts"] = shown["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": self.trigger(),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": "general"},
            "message": shown,
            "state": {"values": {}},
            "response_url": self.response_url(f"a{next(self._ids)}"),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block.get("block_id", "b1"),
                    "type": (element or {}).get("type", "button"),
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def message_shortcut(
        self,
        callback_id: str,
        *,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        author: str = "U2",
        user: str = "U1",
        channel: str = "C1",
    ) -> dict[str, Any]:
        """A `message_action` payload: `user` picks the app's message shortcut on someone's message."""
        message: dict[str, Any] = {
            "type": "message",
            "user": author,
            "ts": ts or self.next_ts(),
            "text": text,
        }
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        return {
            "type": "message_action",
            "token": "legacy-verification-token",
            "action_ts": f"{time.time():.6f}",
            "team": self._team(),
            "user": self._user(user),
            "channel": {"id": channel, "name": "general"},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": self.trigger(),
            "response_url": self.response_url(f"s{next(self._ids)}"),
            "message_ts": message["ts"],
            "message": message,
        }

    def view_submission(
        self, view: dict[str, Any], values: Mapping[str, str], *, user: str = "U1"
    ) -> dict[str, Any]:
        """A `view_submission` payload: `user` fills in and submits a modal the app opened (`views[i]`).
        Each value goes to the input block of that id, as Slack reports plain text inputs."""
        state = {
            block_id: {block_id: {"type": "plain_text_input", "value": value}}
            for block_id, value in values.items()
        }
        return {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": "legacy-verification-token",
            "trigger_id": self.trigger(),
            "view": {**view, "state": {"values": state}, "app_id": APP_ID, "bot_id": BOT_ID},
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

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
        elif payload.get("type") in INTERACTIVE:
            # Interactivity comes form-encoded, its JSON in the one field `payload`.
            body = urllib.parse.urlencode({"payload": json.dumps(payload)})
            content_type = "application/x-www-form-urlencoded"
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
        kind = (
            "slash_commands"
            if "command" in payload
            else "interactive"
            if payload.get("type") in INTERACTIVE
            else "events_api"
        )
        return await self.push(kind, payload, retry_attempt=retry_attempt)


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: float | None = None) -> dict[str, str]:
    """Slack's request signature headers for `body` (v0 HMAC-SHA256 over `v0:TIMESTAMP:BODY`)."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}
