"""A loopback fake of Discord's REST API and gateway, for driving the real discord.py offline.

One `FakeDiscord` serves both on 127.0.0.1 (an ephemeral port): point discord.py at `fake.api_base`
(`discord.http.Route.BASE`) and `fake.gateway_url` (the gateway). It holds one guild with two text
channels, a thread of the first channel, a DM channel, and four users: the bot, an admin (a role with
Manage Server), a plain member and another bot. `FakeDiscord(second_guild=True)` adds a second guild
(one text channel, no role but @everyone) that Discord's sharding puts on the other shard of two.
Each gateway connection identifies one shard and gets only its guilds' events, as Discord routes them:
guild `g` belongs to shard `(g >> 22) % shard_count`, DMs to shard 0. Connections from several
processes (one shard each) are served alike.

What tests and benchmarks use:
- push events: `await fake.post_message(...)` (MESSAGE_CREATE), `await fake.slash(...)` and
  `await fake.autocomplete(...)` (INTERACTION_CREATE), or `await fake.dispatch(event, data)` for any payload;
- inspect: `fake.calls` (every REST call), `fake.messages` / `fake.bot_messages(channel)` (what the bot
  posted, with every edit), `fake.interactions[token]` (responses and follow-ups), `fake.typing`,
  `fake.rate_limited` (how many 429s were answered; `fake.limited` by kind), `fake.identifies`,
  `fake.resumes`, `fake.changes_in(channel)` (what the bot's messages there showed, and when);
- fault injection: `await fake.drop_gateway()` closes every gateway connection (discord.py resumes),
  `FakeDiscord(privileged_intents=False)` closes the gateway with 4014 like Discord does when the
  Message Content intent is not enabled, a wrong token gets 401 on login; a network that fails after
  delivery: `fake.fail_after_delivery = n` answers the next n message creates with a 502 once they
  have taken effect (discord.py sends them again), `fake.drop_after_delivery = n` breaks their
  connection instead.
- message creates keep their `nonce`; with `enforce_nonce` a create repeating a nonce in its channel
  returns the message made first and makes none, as Discord documents.

Discord's rate limits (https://discord.com/developers/docs/topics/rate-limits) are enforced first,
before a request does anything, each refusal a 429 in the shape discord.py parses (JSON body with
`retry_after` in seconds and `global`, a `Via` header, without which discord.py takes a 429 for a
Cloudflare ban), counted in `limited` by kind and marked on its `RestCall`:

- the global limit: `global_limit` (50) requests per `global_window` (1 s) for the bot, over all
  routes; interaction callbacks and the webhook routes of interaction tokens are exempt, as Discord
  documents. Modelled as a sliding window (never more than 50 in any 1 s, stricter than a fixed
  window, so a bot that stays under it stays under Discord's). Past it: 429 with `"global": true`,
  `X-RateLimit-Global: true`, `X-RateLimit-Scope: global` and a whole-second `Retry-After`. A request
  refused by the global limit does not count against it; one refused by its route does.
- per-route buckets, per channel (interaction edits: per token), as fixed windows that reset whole,
  the way Discord's `X-RateLimit-Reset-After` describes a bucket: message create, message edit and
  typing, 5 per 5 s each (`ROUTE_LIMITS`; Discord publishes these only through its headers).
  Past one: 429 with `"global": false`, `X-RateLimit-Scope: user` and the bucket's headers.

With `route_headers=True` successful replies on those routes carry `X-RateLimit-Limit`, `-Remaining`,
`-Reset`, `-Reset-After` and `-Bucket` as Discord sends them, and discord.py paces itself on them (it
waits out an exhausted bucket before the next request, instead of meeting a 429). The default is
False so that tests see any over-use by the bot as a 429 rather than as a wait inside the library;
the benchmarks turn it on. discord.py retries a 429 after `retry_after`, five tries in all, then
raises `HTTPException` (status 429); only a wait longer than `max_ratelimit_timeout` raises
`RateLimited`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
READ_MESSAGE_HISTORY = 1 << 16
SEND_MESSAGES_IN_THREADS = 1 << 38
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
CREATE_PUBLIC_THREADS = 1 << 35
ADMINISTRATOR = 1 << 3
EVERYONE_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | SEND_MESSAGES_IN_THREADS

# Gateway intents that Discord calls privileged: members, presences, message content.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)

EPHEMERAL = 64

# Discord: "All bots can make up to 50 requests per second to our API."
GLOBAL_LIMIT = 50
GLOBAL_WINDOW = 1.0


@dataclass(frozen=True)
class RouteLimit:
    limit: int
    window: float
    bucket: str  # the X-RateLimit-Bucket hash, one per route: discord.py keys its buckets on it


ROUTE_LIMITS: dict[str, RouteLimit] = {
    "create": RouteLimit(5, 5.0, "fake0create0bucket"),
    "edit": RouteLimit(5, 5.0, "fake0edit0bucket"),
    "typing": RouteLimit(5, 5.0, "fake0typing0bucket"),
}

Json = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user_payload(user_id: int, name: str, *, bot: bool = False) -> Json:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name.title(),
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def member_payload(user: Json | None, roles: Iterable[int] = (), *, permissions: int | None = None) -> Json:
    """A guild member; `user` None gives the nested form used inside `mentions`."""
    member: Json = {
        "roles": [str(r) for r in roles],
        "joined_at": "2024-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
        "avatar": None,
        "pending": False,
    }
    if user is not None:
        member["user"] = user
    if permissions is not None:
        member["permissions"] = str(permissions)
    return member


def attachment_payload(
    attachment_id: int, filename: str, *, content_type: str | None = "image/png", size: int = 1024
) -> Json:
    url = f"https://cdn.discordapp.com/attachments/1/{attachment_id}/{filename}"
    payload: Json = {
        "id": str(attachment_id),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net"),
    }
    if content_type is not None:
        payload["content_type"] = content_type
    return payload


@dataclass
class RestCall:
    method: str
    path: str  # without the /api/v10 prefix, e.g. "/channels/1/messages"
    json: Any
    query: dict[str, str]
    time: float
    status: int = 200
    counted: bool = False  # counted against the global limit
    limit: str | None = None  # which limit refused it with a 429: "global" or a route's name


@dataclass(frozen=True)
class Change:
    """What a channel showed from `at` on: bot message `id` now reads `text` (None: it was deleted)."""

    at: float
    id: int
    text: str | None


@dataclass
class FakeMessage:
    """A message as the fake stores it; `versions` holds the content after the post and each edit."""

    id: int
    channel_id: int
    author_id: int
    payload: Json
    versions: list[str] = field(default_factory=list)
    bodies: list[Json] = field(default_factory=list)  # the request bodies that created and edited it
    at: list[float] = field(default_factory=list)  # when each version started to show
    deleted_at: float | None = None

    @property
    def content(self) -> str:
        return self.versions[-1] if self.versions else ""

    @property
    def edits(self) -> int:
        return len(self.versions) - 1

    @property
    def reference_id(self) -> int | None:
        ref = self.payload.get("message_reference")
        return int(ref["message_id"]) if ref else None

    @property
    def flags(self) -> int:
        return int(self.payload.get("flags") or 0)

    def pings(self) -> set[str]:
        """Who any version of this message notified, by Discord's allowed_mentions rules.

        Entries: "everyone", "user:<id>", "role:<id>", "replied:<id>".
        """
        found: set[str] = set()
        for text, body in zip(self.versions, self.bodies, strict=True):
            allowed = body.get("allowed_mentions")
            parse = {"everyone", "users", "roles"} if allowed is None else set(allowed.get("parse") or ())
            users = set() if allowed is None else {str(u) for u in allowed.get("users") or ()}
            roles = set() if allowed is None else {str(r) for r in allowed.get("roles") or ()}
            if "everyone" in parse and re.search(r"@(everyone|here)", text):
                found.add("everyone")
            for uid in re.findall(r"<@!?(\d+)>", text):
                if "users" in parse or uid in users:
                    found.add(f"user:{uid}")
            for rid in re.findall(r"<@&(\d+)>", text):
                if "roles" in parse or rid in roles:
                    found.add(f"role:{rid}")
            replied = True if allowed is None else allowed.get("replied_user", False)
            if self.reference_id is not None and replied:
                found.add(f"replied:{self.reference_id}")
        return found


@dataclass(frozen=True)
class Mention:
    """A MENTIONABLE option's value: a member (or user) or, with `role`, a role of the guild."""

    id: int
    role: bool = False


@dataclass
class FakeInteraction:
    """One INTERACTION_CREATE the fake pushed, and everything the bot answered to it."""

    id: int
    token: str
    payload: Json
    callbacks: list[Json] = field(default_factory=list)  # bodies POSTed to /callback
    created_at: float = 0.0  # when the fake pushed it
    acked_at: float | None = None  # when its first callback arrived (Discord allows 3 s)
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    deleted_original: bool = False

    @property
    def response_type(self) -> int | None:
        return int(self.callbacks[0]["type"]) if self.callbacks else None

    @property
    def ephemeral(self) -> bool:
        """Whether the first response (message or deferral) was ephemeral."""
        if not self.callbacks:
            return False
        return bool(int((self.callbacks[0].get("data") or {}).get("flags") or 0) & EPHEMERAL)

    @property
    def choices(self) -> list[Json]:
        """Autocomplete choices the bot returned (callback type 8)."""
        for body in self.callbacks:
            if body.get("type") == 8:
                return list(body["data"]["choices"])
        return []

    @property
    def modal(self) -> Json | None:
        """The form the bot opened in answer (callback type 9)."""
        return next((b["data"] for b in self.callbacks if b.get("type") == 9), None)

    @property
    def ack_seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.created_at

    def texts(self) -> list[str]:
        """The final text of the original response and each follow-up, in order."""
        messages = ([self.original] if self.original and not self.deleted_original else []) + self.followups
        return [m.content for m in messages]


# A message's limits (Discord's "Create Message" and "Message Components"): 2,000 characters of content,
# 5 action rows of at most 5 components, a button's label of at most 80 characters and its custom id 100.
MAX_CONTENT_CHARS = 2000
MAX_ROWS = 5
MAX_ROW_COMPONENTS = 5
MAX_LABEL_CHARS = 80
MAX_CUSTOM_ID_CHARS = 100
# A modal's title, like its custom id, is 1 to 45 (100) characters.
MAX_MODAL_TITLE_CHARS = 45
MAX_INPUT_CHARS = 4000
INVALID_BODY = {"message": "Invalid Form Body", "code": 50035}


def invalid_message(body: Json) -> bool:
    """Whether a message body passes one of the limits above (Discord answers 400, code 50035)."""
    if len(str(body.get("content") or "")) > MAX_CONTENT_CHARS:
        return True
    rows = body.get("components") or []
    if len(rows) > MAX_ROWS:
        return True
    for row in rows:
        components = row.get("components") or []
        if len(components) > MAX_ROW_COMPONENTS:
            return True
        for component in components:
            if len(str(component.get("label") or "")) > MAX_LABEL_CHARS:
                return True
            if len(str(component.get("custom_id") or "")) > MAX_CUSTOM_ID_CHARS:
                return True
    return False


def invalid_modal(data: Json) -> bool:
    """Whether a modal (callback type 9) passes Discord's limits: its title and custom id, and each text
    input's prefilled value within the input's own `max_length` (4,000 unless it says less)."""
    title = str(data.get("title") or "")
    custom_id = str(data.get("custom_id") or "")
    if not 0 < len(title) <= MAX_MODAL_TITLE_CHARS or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        return True
    pending = list(data.get("components") or [])
    while pending:
        component = pending.pop()
        pending.extend(component.get("components") or ())
        if "component" in component:
            pending.append(component["component"])
        if component.get("type") == 4:
            limit = int(component.get("max_length") or MAX_INPUT_CHARS)
            if len(str(component.get("value") or "")) > min(limit, MAX_INPUT_CHARS):
                return True
    return False


class _RouteBucket:
    """A fixed window: `limit` requests, then none until `window` seconds after the first one."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.used = 0
        self.reset_at = -math.inf

    def take(self, now: float) -> float:
        """Spend one request; 0 on success, otherwise the seconds until the bucket resets."""
        if now >= self.reset_at:
            self.reset_at = now + self.window
            self.used = 0
        if self.used < self.limit:
            self.used += 1
            return 0.0
        return self.reset_at - now


class _Connection:
    """One gateway connection (one shard)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.shard = (0, 1)
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()

    async def dispatch(self, event: str, data: Json) -> None:
        async with self._lock:
            self.seq += 1
            await self.ws.send_str(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))


# Shaped like a real bot token (its first part is BOT_ID in base64), so `acechat check` accepts it.
TOKEN = "ODEwMDAwMDAwMDAwMDAwMTAw.Gfake0.fake-signature-not-a-real-token-0123"


class FakeDiscord:
    """Discord's REST API (under /api/v10) and gateway (/gateway) on one loopback port."""

    GUILD_ID = 810000000000000001
    CHANNEL_ID = 810000000000000010
    OTHER_CHANNEL_ID = 810000000000000011
    THREAD_ID = 810000000000000020
    DM_CHANNEL_ID = 810000000000000030
    MOD_ROLE_ID = 810000000000000040
    BOT_ROLE_ID = 810000000000000041
    # A role with no rights of its own, for allow and deny lists.
    HELPER_ROLE_ID = 810000000000000042
    APP_ID = 810000000000000100
    BOT_ID = 810000000000000100
    ADMIN_ID = 810000000000000201
    MEMBER_ID = 810000000000000202
    OTHER_BOT_ID = 810000000000000203
    # One millisecond after GUILD_ID in snowflake time: with two shards, the other one owns it.
    SECOND_GUILD_ID = GUILD_ID + (1 << 22)
    SECOND_CHANNEL_ID = 810000000000000012

    def __init__(
        self,
        *,
        token: str = TOKEN,
        privileged_intents: bool = True,
        edit_limit: int = ROUTE_LIMITS["edit"].limit,
        edit_window: float = ROUTE_LIMITS["edit"].window,
        create_limit: int = ROUTE_LIMITS["create"].limit,
        create_window: float = ROUTE_LIMITS["create"].window,
        typing_limit: int = ROUTE_LIMITS["typing"].limit,
        typing_window: float = ROUTE_LIMITS["typing"].window,
        global_limit: int = GLOBAL_LIMIT,
        global_window: float = GLOBAL_WINDOW,
        route_headers: bool = False,
        recommended_shards: int = 1,
        echo: bool = True,
        second_guild: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`echo`: send the bot's own messages back over the gateway, as Discord does. `second_guild`:
        the bot is in a second guild too. `clock` times the limits and every record."""
        self.token = token
        self.privileged_intents = privileged_intents
        self.route_limits = {
            "create": RouteLimit(create_limit, create_window, ROUTE_LIMITS["create"].bucket),
            "edit": RouteLimit(edit_limit, edit_window, ROUTE_LIMITS["edit"].bucket),
            "typing": RouteLimit(typing_limit, typing_window, ROUTE_LIMITS["typing"].bucket),
        }
        self.global_limit = global_limit
        self.global_window = global_window
        self.route_headers = route_headers
        self._clock = clock
        self.recommended_shards = recommended_shards
        self.echo = echo
        self.second_guild = second_guild

        self.bot = user_payload(self.BOT_ID, "acebot", bot=True)
        self.admin = user_payload(self.ADMIN_ID, "ada")
        self.member = user_payload(self.MEMBER_ID, "max")
        self.other_bot = user_payload(self.OTHER_BOT_ID, "otherbot", bot=True)
        self.roles: dict[int, list[int]] = {
            self.BOT_ID: [self.BOT_ROLE_ID],
            self.ADMIN_ID: [self.MOD_ROLE_ID],
            self.MEMBER_ID: [],
            self.OTHER_BOT_ID: [],
        }
        self.role_permissions = {
            self.GUILD_ID: EVERYONE_PERMISSIONS,
            self.MOD_ROLE_ID: MANAGE_GUILD,
            self.BOT_ROLE_ID: 0,
            self.HELPER_ROLE_ID: 0,
        }
        if second_guild:
            self.role_permissions[self.SECOND_GUILD_ID] = EVERYONE_PERMISSIONS

        self.calls: list[RestCall] = []
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[str, FakeInteraction] = {}
        self.typing: list[tuple[int, float]] = []
        self.reactions: list[tuple[int, int, str]] = []  # (channel, message, emoji) the bot added
        self.commands: dict[str, list[Json]] = {}  # "global" or the guild id -> last synced commands
        self.identifies: list[Json] = []
        self.resumes: list[Json] = []
        self.limited: Counter[str] = Counter()  # 429s answered, by kind: "global" or the route's name
        self.deleted: list[FakeMessage] = []
        # A network that fails after delivery: the next so many message creates take effect, then their
        # caller gets a 502 from the proxy in front (`fail_after_delivery`) or a broken connection
        # (`drop_after_delivery`).
        self.fail_after_delivery = 0
        self.drop_after_delivery = 0
        # Message creates by nonce (channel, nonce) -> message id, for `enforce_nonce`.
        self._nonces: dict[tuple[int, str], int] = {}
        self._drop_now = False
        self.threads: dict[int, Json] = {}  # threads the bot opened, by id (the starter message's id)
        # Permission bits the bot lacks (e.g. CREATE_PUBLIC_THREADS): calls needing them get a 403.
        self.denied_permissions = 0

        self._connections: list[_Connection] = []
        self._buckets: dict[tuple[str, str], _RouteBucket] = {}
        self._global: deque[float] = deque()  # when each request in the current window arrived
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.http = ""

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.http = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._connections):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def api_base(self) -> str:
        """The value for `discord.http.Route.BASE` (DISCORD_API_BASE_URL)."""
        return self.http + "/api/v10"

    @property
    def gateway_url(self) -> str:
        """The value for DISCORD_GATEWAY_URL."""
        return self.http.replace("http://", "ws://") + "/gateway"

    # -- ids, users, permissions --------------------------------------------------------------------

    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._ids) & 0x3FFFFF)

    def users(self) -> dict[int, Json]:
        return {int(u["id"]): u for u in (self.bot, self.admin, self.member, self.other_bot)}

    def guild_ids(self) -> list[int]:
        return [self.GUILD_ID, self.SECOND_GUILD_ID] if self.second_guild else [self.GUILD_ID]

    def roles_in(self, guild_id: int, user_id: int) -> list[int]:
        """A member's roles in a guild (the second guild has none but @everyone)."""
        return self.roles.get(user_id, []) if guild_id == self.GUILD_ID else []

    def permissions_of(self, user_id: int, guild_id: int = GUILD_ID) -> int:
        perms = self.role_permissions[guild_id]
        for role in self.roles_in(guild_id, user_id):
            perms |= self.role_permissions[role]
        return perms

    def guild_member(self, user: Json, *, nested: bool = True, guild_id: int = GUILD_ID) -> Json:
        return member_payload(user if nested else None, self.roles_in(guild_id, int(user["id"])))

    # -- gateway ---------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _Connection(ws)
        self._connections.append(conn)
        try:
            await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    await self._identify(conn, frame["d"])
                elif op == 6:
                    self.resumes.append(frame["d"])
                    conn.seq = int(frame["d"].get("seq") or 0)
                    await conn.dispatch("RESUMED", {})
                    conn.ready.set()
        finally:
            self._connections.remove(conn)
        return ws

    async def _identify(self, conn: _Connection, data: Json) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if not self.privileged_intents and int(data.get("intents", 0)) & PRIVILEGED_INTENTS:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        conn.shard = (int(shard[0]), int(shard[1]))
        owned = self._owned_guilds(conn)
        guilds = [{"id": str(g), "unavailable": True} for g in owned]
        await conn.dispatch(
            "READY",
            {
                "v": 10,
                "user": self.bot,
                "session_id": f"session-{len(self.identifies)}",
                "resume_gateway_url": self.gateway_url,
                "guilds": guilds,
                "private_channels": [],
                "application": {"id": str(self.APP_ID), "flags": 0},
                "shard": list(conn.shard),
            },
        )
        for guild_id in owned:
            payload = self.guild_payload() if guild_id == self.GUILD_ID else self.second_guild_payload()
            await conn.dispatch("GUILD_CREATE", payload)
        conn.ready.set()

    def _owned_guilds(self, conn: _Connection) -> list[int]:
        shard_id, count = conn.shard
        return [g for g in self.guild_ids() if (g >> 22) % count == shard_id]

    def guild_payload(self) -> Json:
        return self._guild(
            self.GUILD_ID,
            "Fake Guild",
            roles=[
                self._role(self.GUILD_ID, "@everyone", 0),
                self._role(self.MOD_ROLE_ID, "Moderators", 1),
                self._role(self.BOT_ROLE_ID, "acebot", 2, managed=True),
                self._role(self.HELPER_ROLE_ID, "Helpers", 3),
            ],
            channels=[
                self._channel(self.GUILD_ID, self.CHANNEL_ID, "general", 0),
                self._channel(self.GUILD_ID, self.OTHER_CHANNEL_ID, "random", 1),
            ],
            threads=[self.thread_payload()],
        )

    def second_guild_payload(self) -> Json:
        return self._guild(
            self.SECOND_GUILD_ID,
            "Second Guild",
            roles=[self._role(self.SECOND_GUILD_ID, "@everyone", 0)],
            channels=[self._channel(self.SECOND_GUILD_ID, self.SECOND_CHANNEL_ID, "elsewhere", 0)],
            threads=[],
        )

    def _guild(
        self, guild_id: int, name: str, *, roles: list[Json], channels: list[Json], threads: list[Json]
    ) -> Json:
        return {
            "id": str(guild_id),
            "name": name,
            "owner_id": str(self.ADMIN_ID),
            "unavailable": False,
            "member_count": 4,
            "large": False,
            "features": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "roles": roles,
            "channels": channels,
            "threads": threads,
            "members": [self.guild_member(u, guild_id=guild_id) for u in self.users().values()],
            "voice_states": [],
            "presences": [],
            "emojis": [],
            "stickers": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
        }

    @staticmethod
    def _channel(guild_id: int, channel_id: int, name: str, position: int) -> Json:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
        }

    def _role(self, role_id: int, name: str, position: int, managed: bool = False) -> Json:
        return {
            "id": str(role_id),
            "name": name,
            "permissions": str(self.role_permissions[role_id]),
            "position": position,
            "color": 0,
            "hoist": False,
            "managed": managed,
            "mentionable": False,
            "flags": 0,
            "tags": {"bot_id": str(self.BOT_ID)} if managed else {},
        }

    def thread_payload(self) -> Json:
        return {
            "id": str(self.THREAD_ID),
            "guild_id": str(self.GUILD_ID),
            "parent_id": str(self.CHANNEL_ID),
            "owner_id": str(self.MEMBER_ID),
            "name": "a thread",
            "type": 11,
            "message_count": 0,
            "member_count": 2,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": "2024-01-01T00:00:00+00:00",
                "locked": False,
            },
        }

    async def wait_ready(self, seconds: float = 5.0) -> None:
        """Wait until at least one gateway connection has identified or resumed."""
        await self.wait_for(lambda: any(c.ready.is_set() for c in self._connections), seconds)

    async def dispatch(self, event: str, data: Json) -> None:
        """Send one event to the shard that owns its guild (DMs go to shard 0)."""
        guild_id = data.get("guild_id")
        sent = False
        for conn in list(self._connections):
            if not conn.ready.is_set():
                continue
            shard_id, count = conn.shard
            owner = (int(guild_id) >> 22) % count if guild_id else 0
            if owner == shard_id:
                await conn.dispatch(event, data)
                sent = True
        if not sent:
            raise RuntimeError(f"no gateway connection to deliver {event}")

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection with `code` (4000: unknown error, discord.py resumes)."""
        for conn in list(self._connections):
            conn.ready.clear()
            await conn.ws.close(code=code, message=b"dropped by the fake")

    # -- pushing events ----------------------------------------------------------------------------

    def channel_guild(self, channel_id: int) -> int | None:
        if channel_id == self.DM_CHANNEL_ID:
            return None
        if self.second_guild and channel_id == self.SECOND_CHANNEL_ID:
            return self.SECOND_GUILD_ID
        return self.GUILD_ID

    def message_payload(
        self,
        content: str,
        *,
        author: Json | None = None,
        channel_id: int | None = None,
        attachments: Iterable[Json] = (),
        reply_to: int | None = None,
        ping_reply: bool = True,
    ) -> Json:
        """A MESSAGE_CREATE payload with mentions parsed out of `content` as Discord does."""
        author = author or self.member
        channel_id = channel_id or self.CHANNEL_ID
        guild_id = self.channel_guild(channel_id)
        users = self.users()
        mentioned = [int(m) for m in dict.fromkeys(re.findall(r"<@!?(\d+)>", content)) if int(m) in users]
        referenced = self.messages.get(reply_to) if reply_to is not None else None
        if referenced is not None and ping_reply and referenced.author_id not in mentioned:
            mentioned.append(referenced.author_id)

        def mention(user_id: int) -> Json:
            entry = dict(users[user_id])
            if guild_id is not None:
                entry["member"] = self.guild_member(users[user_id], nested=False, guild_id=guild_id)
            return entry

        payload: Json = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": bool(re.search(r"@(everyone|here)", content)),
            "mentions": [mention(u) for u in mentioned],
            "mention_roles": re.findall(r"<@&(\d+)>", content),
            "attachments": list(attachments),
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["member"] = self.guild_member(author, nested=False, guild_id=guild_id)
        if reply_to is not None:
            payload["type"] = 19
            payload["message_reference"] = {
                "type": 0,
                "message_id": str(reply_to),
                "channel_id": str(channel_id),
                **({"guild_id": str(guild_id)} if guild_id else {}),
            }
            payload["referenced_message"] = referenced.payload if referenced else None
        return payload

    async def post_message(self, content: str, **kwargs: Any) -> int:
        """A user posts `content` (see `message_payload` for options); returns the message id."""
        payload = self.message_payload(content, **kwargs)
        self._store(payload, {"content": content})
        await self.dispatch("MESSAGE_CREATE", payload)
        return int(payload["id"])

    def interaction_payload(
        self,
        command: str,
        options: Mapping[str, Any] | None = None,
        *,
        user: Json | None = None,
        channel_id: int | None = None,
        interaction_type: int = 2,
        focused: str | None = None,
        attachments: Mapping[str, Json] | None = None,
    ) -> Json:
        """An INTERACTION_CREATE payload for `/command [group] [sub]` with string/int/bool options.

        `interaction_type` 4 with `focused` builds an autocomplete request. `attachments` maps an
        option name to an attachment payload (option type 11, resolved as Discord does).
        """
        user = user or self.member
        channel_id = channel_id or self.CHANNEL_ID
        guild_id = self.channel_guild(channel_id)
        name, *path = command.split()
        leaf: list[Json] = []
        resolved: Json = {}
        for key, value in (options or {}).items():
            if isinstance(value, Mention):
                leaf.append({"name": key, "type": 9, "value": str(value.id)})
                resolved.update(self._resolved(value, guild_id))
                continue
            kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
            option: Json = {"name": key, "type": kind, "value": value}
            if key == focused:
                option["focused"] = True
            leaf.append(option)
        for key, att in (attachments or {}).items():
            leaf.append({"name": key, "type": 11, "value": att["id"]})
        opts = leaf
        for depth, part in enumerate(reversed(path)):
            # The innermost level is a subcommand (1), an outer one a subcommand group (2).
            opts = [{"name": part, "type": 1 if depth == 0 else 2, "options": opts}]
        data: Json = {"id": str(self.snowflake()), "name": name, "type": 1, "options": opts}
        if attachments:
            resolved["attachments"] = {a["id"]: a for a in attachments.values()}
        if resolved:
            data["resolved"] = resolved
        if guild_id is not None:
            data["guild_id"] = str(guild_id)

        channel: Json
        if channel_id == self.THREAD_ID:
            channel = {**self.thread_payload(), "permissions": str(self.permissions_of(int(user["id"])))}
        elif guild_id is None:
            channel = {"id": str(channel_id), "type": 1, "recipients": [user]}
        else:
            channel = {"id": str(channel_id), "type": 0, "name": "general", "guild_id": str(guild_id)}
        interaction_id = self.snowflake()
        payload: Json = {
            "id": str(interaction_id),
            "application_id": str(self.APP_ID),
            "type": interaction_type,
            "token": f"itoken-{interaction_id}",
            "version": 1,
            "channel_id": str(channel_id),
            "channel": channel,
            "app_permissions": str(EVERYONE_PERMISSIONS),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {"1": user["id"]},
            "attachment_size_limit": 8388608,
            "data": data,
        }
        if guild_id is None:
            payload["user"] = user
            payload["context"] = 1
        else:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["context"] = 0
            perms = self.permissions_of(int(user["id"]), guild_id)
            roles = self.roles_in(guild_id, int(user["id"]))
            payload["member"] = member_payload(user, roles, permissions=perms)
        return payload

    def _resolved(self, mention: Mention, guild_id: int | None) -> Json:
        key = str(mention.id)
        if mention.role:
            roles = {r["id"]: r for r in self.guild_payload()["roles"]}
            return {"roles": {key: roles[key]}}
        user = self.users()[mention.id]
        found: Json = {"users": {key: user}}
        if guild_id is not None:
            found["members"] = {key: self.guild_member(user, nested=False, guild_id=guild_id)}
        return found

    async def slash(
        self, command: str, options: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> FakeInteraction:
        """A user runs a slash command; returns the record that collects the bot's responses."""
        return await self._push(self.interaction_payload(command, options, **kwargs))

    async def _push(self, payload: Json) -> FakeInteraction:
        record = FakeInteraction(int(payload["id"]), payload["token"], payload, created_at=self._clock())
        self.interactions[record.token] = record
        await self.dispatch("INTERACTION_CREATE", payload)
        return record

    async def press(self, message: FakeMessage, custom_id: str, **kwargs: Any) -> FakeInteraction:
        """A user presses the button `custom_id` on one of the bot's messages (a component interaction)."""
        payload = self.interaction_payload(
            "unused", channel_id=message.channel_id, interaction_type=3, **kwargs
        )
        payload["message"] = dict(message.payload)
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        return await self._push(payload)

    async def submit_form(self, custom_id: str, values: Mapping[str, str], **kwargs: Any) -> FakeInteraction:
        """A user submits a form (modal) the bot opened: each text input as Discord sends it, in a row."""
        payload = self.interaction_payload("unused", interaction_type=5, **kwargs)
        payload["data"] = {
            "custom_id": custom_id,
            "components": [
                {
                    "type": 1,
                    "id": n * 2 + 1,
                    "components": [{"type": 4, "id": n * 2 + 2, "custom_id": k, "value": v}],
                }
                for n, (k, v) in enumerate(values.items())
            ],
        }
        return await self._push(payload)

    async def message_menu(self, name: str, message_id: int, **kwargs: Any) -> FakeInteraction:
        """A user picks the bot's message menu command `name` on a message (type 3 application command)."""
        payload = self.interaction_payload(name, **kwargs)
        target = self.messages[message_id].payload
        payload["data"] = {
            "id": str(self.snowflake()),
            "name": name,
            "type": 3,
            "target_id": str(message_id),
            "resolved": {"messages": {str(message_id): target}},
        }
        if "guild_id" in payload:
            payload["data"]["guild_id"] = payload["guild_id"]
        return await self._push(payload)

    async def submit_modal(
        self, message: FakeMessage, custom_id: str, values: Mapping[str, str], *, user: Json | None = None
    ) -> FakeInteraction:
        """A user submits the modal `custom_id`, opened from a button on `message` (type 5)."""
        payload = self.interaction_payload("submit", user=user, channel_id=message.channel_id, interaction_type=5)
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()
        ]
        payload["data"] = {"custom_id": custom_id, "components": rows}
        payload["message"] = message.payload
        return await self._push(payload)

    @staticmethod
    def custom_ids(message: FakeMessage) -> list[str]:
        """The custom ids of the buttons `message` shows now."""
        return [
            c["custom_id"]
            for row in message.payload.get("components") or ()
            for c in row.get("components", ())
        ]

    async def autocomplete(
        self, command: str, options: Mapping[str, Any], focused: str, **kwargs: Any
    ) -> FakeInteraction:
        return await self.slash(command, options, interaction_type=4, focused=focused, **kwargs)

    # -- inspecting ----------------------------------------------------------------------------------

    def bot_messages(self, channel_id: int | None = None) -> list[FakeMessage]:
        """Channel messages the bot posted (not interaction responses), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.author_id == self.BOT_ID
            and not m.payload.get("webhook_id")
            and (channel_id is None or m.channel_id == channel_id)
        ]

    @property
    def rate_limited(self) -> int:
        """429s answered, all kinds together."""
        return sum(self.limited.values())

    def changes_in(self, channel_id: int) -> list[Change]:
        """Everything the bot's channel messages there have shown, deleted ones included, in time order."""
        found: list[Change] = []
        for m in self.bot_messages(channel_id) + [d for d in self.deleted if d.channel_id == channel_id]:
            found += [Change(at, m.id, text) for at, text in zip(m.at, m.versions, strict=True)]
            if m.deleted_at is not None:
                found.append(Change(m.deleted_at, m.id, None))
        return sorted(found, key=lambda c: c.at)

    def calls_to(self, method: str, pattern: str) -> list[RestCall]:
        """REST calls whose method matches and whose path matches the regular expression."""
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    async def wait_for(self, predicate: Callable[[], bool], seconds: float = 5.0) -> None:
        """Poll `predicate` every 10 ms until it holds; fail with TimeoutError after `seconds`."""
        async with asyncio.timeout(seconds):
            # Polling: the conditions tests wait on span several objects no single event covers.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    # -- REST --------------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body = await self._body(request)
        call = RestCall(request.method, path, body, dict(request.query), self._clock())
        self.calls.append(call)
        # Interaction callbacks and follow-ups carry no Authorization header; everything else must.
        auth = request.headers.get("Authorization")
        if (auth is not None or path == "/users/@me") and auth != f"Bot {self.token}":
            call.status = 401
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        parts = path.strip("/").split("/")
        # Interaction endpoints are not bound to the global limit: callbacks, and the webhook routes
        # an interaction token opens (edits of the response, follow-ups).
        call.counted = parts[0] not in ("interactions", "webhooks")
        refused = self._take_global(call) if call.counted else None
        headers: dict[str, str] = {}
        if refused is None:
            limit = _route_limit(request.method, parts)
            if limit is not None:
                refused, headers = self._take_route(call, *limit)
        response = refused or await self._route(request.method, path, body, request.query)
        if self._drop_now:
            self._drop_now = False
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("the fake broke the connection after delivery")
        if response.status < 300 and self.route_headers:
            response.headers.update(headers)
        call.status = response.status
        return response

    def _take_global(self, call: RestCall) -> web.Response | None:
        now = call.time
        window = self._global
        while window and now - window[0] >= self.global_window:
            window.popleft()
        if len(window) < self.global_limit:
            window.append(now)
            return None
        retry_after = _ms(window[0] + self.global_window - now if window else self.global_window)
        call.limit = "global"
        self.limited["global"] += 1
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "X-RateLimit-Global": "true",
            "X-RateLimit-Scope": "global",
        }
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": True,
        }
        return _json(body, status=429, headers=headers)

    def _take_route(
        self, call: RestCall, name: str, major: str
    ) -> tuple[web.Response | None, dict[str, str]]:
        """Take one request from the route's bucket: (a 429 if it is empty, the bucket's headers)."""
        limit = self.route_limits[name]
        bucket = self._buckets.get((name, major))
        if bucket is None:
            bucket = self._buckets[(name, major)] = _RouteBucket(limit.limit, limit.window)
        wait = _ms(bucket.take(call.time))
        reset_after = _ms(bucket.reset_at - call.time)
        headers = {
            "X-RateLimit-Limit": str(limit.limit),
            "X-RateLimit-Remaining": str(limit.limit - bucket.used),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": limit.bucket,
        }
        if wait <= 0:
            return None, headers
        call.limit = name
        self.limited[name] += 1
        headers |= {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(wait))),
            "X-RateLimit-Scope": "user",
        }
        body = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
        return _json(body, status=429, headers=headers), headers

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            raw = form.get("payload_json")
            return json.loads(str(raw)) if raw is not None else None
        text = await request.text()
        return json.loads(text) if text else None

    async def _route(self, method: str, path: str, body: Any, query: Mapping[str, str]) -> web.Response:
        parts = path.strip("/").split("/")
        route: dict[tuple[str, str], Callable[..., Awaitable[web.Response]]] = {
            ("GET", "users/@me"): self._me,
            ("GET", "oauth2/applications/@me"): self._application,
            ("GET", "gateway/bot"): self._gateway_bot,
            ("GET", "gateway"): self._gateway_bot,
        }
        handler = route.get((method, "/".join(parts)))
        if handler is not None:
            return await handler()
        match parts:
            case ["channels", channel, "typing"] if method == "POST":
                self.typing.append((int(channel), self._clock()))
                return web.Response(status=204)
            case ["channels", channel, "messages"] if method == "POST":
                return self._create(int(channel), body)
            case ["channels", channel, "messages", message, "threads"] if method == "POST":
                return await self._start_thread(int(channel), int(message), body)
            case ["channels", _channel, "messages", message] if method == "PATCH":
                return self._edit(int(message), body)
            case ["channels", _channel, "messages", message] if method == "GET":
                return self._get(int(message))
            case ["channels", channel, "messages", message, "reactions", emoji, "@me"] if method == "PUT":
                self.reactions.append((int(channel), int(message), urllib.parse.unquote(emoji)))
                return web.Response(status=204)
            case ["channels", _channel, "messages", message] if method == "DELETE":
                deleted = self.messages.pop(int(message), None)
                if deleted is not None:
                    deleted.deleted_at = self._clock()
                    self.deleted.append(deleted)
                return web.Response(status=204)
            case ["interactions", _iid, token, "callback"] if method == "POST":
                return self._callback(token, body)
            case ["webhooks", _app, token] if method == "POST":
                return self._followup(token, body)
            case ["webhooks", _app, token, "messages", which]:
                return self._webhook_message(method, token, which, body)
            case ["applications", _app, "commands"] if method == "PUT":
                return self._sync("global", body)
            case ["applications", _app, "guilds", guild, "commands"] if method == "PUT":
                return self._sync(guild, body)
            case ["applications", _app, "commands"] | ["applications", _app, "guilds", _, "commands"]:
                return _json(self.commands.get(parts[3] if len(parts) > 3 else "global", []))
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    async def _me(self) -> web.Response:
        return _json({**self.bot, "verified": True, "mfa_enabled": False, "flags": 0})

    async def _application(self) -> web.Response:
        return _json(
            {
                "id": str(self.APP_ID),
                "name": "acebot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.admin,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
            }
        )

    async def _gateway_bot(self) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _start_thread(self, channel_id: int, message_id: int, body: Json) -> web.Response:
        """A public thread from a message, as Discord opens it: the thread's id is the message's."""
        if self.denied_permissions & CREATE_PUBLIC_THREADS:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        thread = {
            **self.thread_payload(),
            "id": str(message_id),
            "parent_id": str(channel_id),
            "owner_id": str(self.BOT_ID),
            "name": str(body.get("name", "")),
        }
        self.threads[message_id] = thread
        self._echo("THREAD_CREATE", {**thread, "newly_created": True})
        return _json(thread, status=201)

    def _store(self, payload: Json, body: Json) -> FakeMessage:
        message = FakeMessage(
            int(payload["id"]), int(payload["channel_id"]), int(payload["author"]["id"]), payload
        )
        message.versions.append(payload["content"])
        message.bodies.append(body)
        message.at.append(self._clock())
        self.messages[message.id] = message
        return message

    def _bot_payload(self, channel_id: int, body: Json, *, webhook: bool = False) -> Json:
        guild_id = self.channel_guild(channel_id)
        payload: Json = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "author": self.bot,
            "content": body.get("content") or "",
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": int(body.get("flags") or 0),
            "components": list(body.get("components") or []),
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
        if webhook:
            payload["webhook_id"] = str(self.APP_ID)
            payload["application_id"] = str(self.APP_ID)
        ref = body.get("message_reference")
        if ref:
            payload["type"] = 19
            payload["message_reference"] = {"type": 0, "channel_id": str(channel_id), **ref}
            referenced = self.messages.get(int(ref["message_id"]))
            payload["referenced_message"] = referenced.payload if referenced else None
        return payload

    def _create(self, channel_id: int, body: Json) -> web.Response:
        if invalid_message(body):
            return _json(INVALID_BODY, status=400)
        ref = body.get("message_reference")
        if ref and int(ref["message_id"]) not in self.messages and ref.get("fail_if_not_exists", True):
            return _json({"message": "Invalid Form Body", "code": 50035}, status=400)
        nonce = body.get("nonce")
        key = (channel_id, str(nonce))
        if nonce is not None and body.get("enforce_nonce") and self._nonces.get(key) in self.messages:
            # "that message will be returned and no new message will be created"
            return _json(self.messages[self._nonces[key]].payload)
        payload = self._bot_payload(channel_id, body)
        if nonce is not None:
            payload["nonce"] = nonce
            self._nonces[key] = int(payload["id"])
        self._store(payload, body)
        self._echo("MESSAGE_CREATE", payload)
        if self.fail_after_delivery > 0:
            self.fail_after_delivery -= 1
            return _json({"message": "502: Bad Gateway", "code": 0}, status=502)
        if self.drop_after_delivery > 0:
            self.drop_after_delivery -= 1
            self._drop_now = True
        return _json(payload)

    def _edit(self, message_id: int, body: Json) -> web.Response:
        message = self.messages.get(message_id)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        if invalid_message(body):
            return _json(INVALID_BODY, status=400)
        if "content" in body:
            message.payload["content"] = body["content"] or ""
        if "components" in body:  # absent: the buttons stay; [] removes them
            message.payload["components"] = list(body["components"] or [])
        message.payload["edited_timestamp"] = now_iso()
        message.versions.append(message.payload["content"])
        message.bodies.append(body)
        message.at.append(self._clock())
        if not message.payload.get("webhook_id"):
            self._echo("MESSAGE_UPDATE", message.payload)
        return _json(message.payload)

    def _get(self, message_id: int) -> web.Response:
        message = self.messages.get(message_id)
        if message is None:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        return _json(message.payload)

    def _interaction(self, token: str) -> FakeInteraction | None:
        return self.interactions.get(token)

    def _callback(self, token: str, body: Json) -> web.Response:
        record = self._interaction(token)
        if record is None:
            return _json({"message": "Unknown interaction", "code": 10062}, status=404)
        if record.callbacks:
            return _json({"message": "Interaction has already been acknowledged.", "code": 40060}, status=400)
        kind = int(body["type"])
        # Which responses each interaction type takes (Discord's "interaction callback type" table):
        # 6/7 only for component interactions (and forms opened from one), 9 never for a form's submission.
        invalid = (kind in (6, 7) and record.payload["type"] not in (3, 5)) or (
            kind == 9 and record.payload["type"] not in (2, 3)
        )
        if invalid:
            return _json({"message": "Interaction response type invalid", "code": 50035}, status=400)
        if kind in (4, 7) and invalid_message(body.get("data") or {}):
            return _json(INVALID_BODY, status=400)
        if kind == 9 and invalid_modal(body.get("data") or {}):
            return _json(INVALID_BODY, status=400)
        record.callbacks.append(body)
        record.acked_at = self._clock()
        channel_id = int(record.payload["channel_id"])
        if kind == 7 and "message" in record.payload:
            self._edit(int(record.payload["message"]["id"]), body.get("data") or {})
        resource: Json = {"type": kind}
        if kind in (4, 5):
            data = body.get("data") or {}
            payload = self._bot_payload(channel_id, data, webhook=True)
            payload["interaction_metadata"] = {"id": str(record.id), "type": 2, "user": self._actor(record)}
            if kind == 5:
                payload["flags"] = int(payload["flags"]) | 128  # LOADING
            record.original = self._store(payload, data)
            resource["message"] = payload
        interaction = {
            "id": str(record.id),
            "type": record.payload["type"],
            "response_message_id": str(record.original.id) if record.original else None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(int((body.get("data") or {}).get("flags") or 0) & EPHEMERAL),
        }
        return _json({"interaction": interaction, "resource": resource})

    def _actor(self, record: FakeInteraction) -> Json:
        return dict(record.payload.get("member", {}).get("user") or record.payload["user"])

    def _followup(self, token: str, body: Json) -> web.Response:
        record = self._interaction(token)
        if record is None or not record.callbacks:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if invalid_message(body):
            return _json(INVALID_BODY, status=400)
        payload = self._bot_payload(int(record.payload["channel_id"]), body, webhook=True)
        record.followups.append(self._store(payload, body))
        return _json(payload)

    def _webhook_message(self, method: str, token: str, which: str, body: Json) -> web.Response:
        record = self._interaction(token)
        if record is None:
            return _json({"message": "Unknown Webhook", "code": 10015}, status=404)
        if which == "@original":
            target = record.original
        else:
            target = next((m for m in record.followups if m.id == int(which)), None)
        if target is None or (which == "@original" and record.deleted_original):
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        if method == "GET":
            return _json(target.payload)
        if method == "DELETE":
            if which == "@original":
                record.deleted_original = True
            else:
                record.followups.remove(target)
            return web.Response(status=204)
        response = self._edit(target.id, body)
        if response.status == 200:
            target.payload["flags"] = int(target.payload["flags"]) & ~128
        return response

    def _sync(self, key: str, body: list[Json]) -> web.Response:
        synced = [
            # Discord answers every command with a description, "" for message and user menus.
            {
                "description": "",
                **cmd,
                "id": str(self.snowflake()),
                "application_id": str(self.APP_ID),
                "version": "1",
            }
            for cmd in body
        ]
        self.commands[key] = synced
        return _json(synced)

    def _echo(self, event: str, payload: Json) -> None:
        if not self.echo or not self._connections:
            return
        task = asyncio.get_running_loop().create_task(self._safe_dispatch(event, dict(payload)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _safe_dispatch(self, event: str, payload: Json) -> None:
        # The gateway may be closing (a drop test, teardown); an echo is best effort, as on Discord.
        with contextlib.suppress(RuntimeError, ConnectionError):
            await self.dispatch(event, payload)


def _ms(seconds: float) -> float:
    """Seconds in whole milliseconds as Discord sends them, rounded up so a client never comes back early."""
    return math.ceil(round(seconds * 1000, 6)) / 1000


def _route_limit(method: str, parts: list[str]) -> tuple[str, str] | None:
    """The rate-limited route a request takes, and its major parameter: (name, channel or token)."""
    match parts:
        case ["channels", channel, "messages"] if method == "POST":
            return "create", channel
        case ["channels", channel, "messages", _message] if method == "PATCH":
            return "edit", f"channel:{channel}"
        case ["channels", channel, "typing"] if method == "POST":
            return "typing", channel
        case ["webhooks", _app, token, "messages", _which] if method == "PATCH":
            return "edit", f"interaction:{token}"
    return None


def _json(obj: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py parses JSON only when Content-Type is exactly application/json (no charset).
    return web.Response(
        body=json.dumps(obj).encode(), status=status, content_type="application/json", headers=headers
    )
