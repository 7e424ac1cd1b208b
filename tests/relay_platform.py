"""Relay: a small chat platform that exists only here, and everything acechat needs to serve it.

It proves the seam (tests/test_new_platform.py): a platform is its settings, its rules and its adapter,
and one `AdapterSpec`; nothing under acechat/ names it. The sections below are exactly what README's
"Adding a platform" lists. `RelayNetwork` is the platform itself: an aiohttp server with a WebSocket of
events and a REST API that refuses messages over its limit and records every ping it would deliver.

Relay's own syntax: `!all` pings everyone in a channel, `@@nick` pings one person; `+o` (channel
operator) and `+O` (network operator) are its rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from acechat.bots.adapter import AdapterSpec, StartupError
from acechat.core.chat import ChatCore
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege
from acechat.core.platform import ZWSP, MentionRule, MentionRules, PlatformRules
from acechat.core.platform_errors import PlatformError
from acechat.core.reply_target import Mark, TargetLimits
from acechat.core.scope import Scope
from acechat.core.settings import Setting, Settings, SettingsGroup, SettingsReader

NAME = "relay"

# --- 1. Its settings -------------------------------------------------------------------------------

SETTINGS = (
    Setting("RELAY_URL"),
    Setting("RELAY_TOKEN", secret=True),
    Setting("RELAY_MAX_CHARS", "400"),
)


@dataclass(frozen=True)
class RelaySettings:
    url: str
    token: str
    max_chars: int = 400


def parse(r: SettingsReader) -> RelaySettings | None:
    url = r.url("RELAY_URL", None)
    if url is None:
        return None
    return RelaySettings(
        url=url,
        token=r.required("RELAY_TOKEN", "the network's bot token"),
        max_chars=r.integer("RELAY_MAX_CHARS", 400, minimum=100),
    )


GROUP = SettingsGroup(NAME, SETTINGS, parse, enabled_by="RELAY_URL")

# --- 2. Its rules: what pings, what its rights are called -----------------------------------------

MENTIONS = MentionRules(
    (
        MentionRule("!", re.compile(r"!(?=all\b)", re.IGNORECASE), lambda _: "!" + ZWSP),
        MentionRule("@", re.compile(r"@@(?=\w)"), lambda _: "@" + ZWSP + "@"),
    )
)
RULES = PlatformRules(
    NAME,
    MENTIONS,
    rights={
        Privilege.CHANNEL_ADMIN: "channel operator status (+o)",
        Privilege.WORKSPACE_ADMIN: "network operator status (+O)",
    },
)

# --- 3. Its adapter: events in, core calls out; a target for the core's primitives -----------------


class RelayTarget:
    rules = RULES

    def __init__(
        self, session: aiohttp.ClientSession, url: str, limits: TargetLimits, channel: str, user: str
    ):
        self.limits = limits
        self._session = session
        self._url = url
        self._channel = channel
        self._user = user

    async def _call(self, method: str, path: str, body: dict[str, str]) -> dict[str, Any]:
        async with self._session.request(method, self._url + path, json=body) as response:
            if response.status != 200:
                raise PlatformError(f"relay answered {response.status}")
            reply: dict[str, Any] = await response.json()
            return reply

    async def post(self, text: str) -> str:
        return str((await self._call("POST", "/messages", {"channel": self._channel, "text": text}))["id"])

    async def edit(self, handle: str, text: str) -> None:
        await self._call("PATCH", f"/messages/{handle}", {"text": text})

    async def typing(self) -> None:
        return None

    async def status(self, text: str) -> None:
        return None

    async def notify(self, text: str) -> None:
        await self._call("POST", "/notices", {"channel": self._channel, "user": self._user, "text": text})

    async def announce(self, text: str) -> None:
        await self.post(text)

    async def mark(self, mark: Mark) -> None:
        return None


class RelayAdapter:
    """Answers lines addressed to it (`bot: ...`): a command if it has one's shape, else a question."""

    name = NAME

    def __init__(self, core: ChatCore, settings: RelaySettings) -> None:
        self._core = core
        self._settings = settings
        self._limits = TargetLimits(max_chars=settings.max_chars, edit_burst=5, edit_window=0.5)
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._work: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self._socket.closed

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self._settings.token}"})
        try:
            self._socket = await self._session.ws_connect(self._settings.url + "/events")
        except aiohttp.ClientError as error:
            await self._session.close()
            raise StartupError(f"relay refused the bot: {error}") from None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._socket is not None
        async for message in self._socket:
            task = asyncio.create_task(self._handle(message.json()))
            self._work.add(task)
            task.add_done_callback(self._work.discard)

    async def _handle(self, event: dict[str, Any]) -> None:
        line = str(event["text"])
        if not line.startswith("bot:"):
            return
        assert self._session is not None
        channel, user = str(event["channel"]), str(event["user"])
        level = Privilege.CHANNEL_ADMIN if event.get("op") else Privilege.MEMBER
        target = RelayTarget(self._session, self._settings.url, self._limits, channel, user)
        await self._core.run_line(
            Scope.of(NAME, "net", channel),
            Actor(user, user, level),
            line[4:].strip(),
            target,
            delivery=event["id"],
        )

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._work:
            await asyncio.wait(self._work)
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()


def _settings(settings: Settings) -> RelaySettings:
    found = settings.platform(NAME, RelaySettings)
    assert found is not None, "the registry creates only configured adapters"
    return found


def create(core: ChatCore, settings: Settings) -> RelayAdapter:
    return RelayAdapter(core, _settings(settings))


async def verify(settings: Settings) -> str:
    return f"relay network at {_settings(settings).url}"


# --- 4. Its line in the registry ---------------------------------------------------------------------

SPEC = AdapterSpec(NAME, "run the Relay bot", __name__, GROUP, RULES)


# --- The platform itself -----------------------------------------------------------------------------

LIVE_PINGS = re.compile(r"!all\b|@@\w", re.IGNORECASE)


@dataclass
class RelayNetwork:
    """A Relay server on 127.0.0.1: events over a WebSocket, messages over REST."""

    token: str = "relay-bot-token-5e1f"
    max_chars: int = 400
    messages: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (channel, text)
    notices: list[tuple[str, str]] = field(default_factory=list)  # (user, text)
    pings: list[str] = field(default_factory=list)
    bot_joined: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def __aenter__(self) -> RelayNetwork:
        app = web.Application(middlewares=[self._authorized])
        app.router.add_get("/events", self._events)
        app.router.add_post("/messages", self._post)
        app.router.add_patch("/messages/{id}", self._edit)
        app.router.add_post("/notices", self._notice)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        for socket in self._sockets:
            await socket.close()
        assert self._runner is not None
        await self._runner.cleanup()

    @web.middleware
    async def _authorized(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise web.HTTPUnauthorized()
        response: web.StreamResponse = await handler(request)
        return response

    async def say(self, user: str, channel: str, text: str, *, op: bool = False) -> None:
        """Someone writes in a channel; the bot hears it."""
        event = {"id": f"ev{next(self._ids)}", "user": user, "channel": channel, "text": text, "op": op}
        for socket in self._sockets:
            await socket.send_json(event)

    def shown(self, channel: str) -> list[str]:
        return [text for where, text in self.messages.values() if where == channel]

    def _deliver(self, text: str) -> web.Response | None:
        if len(text) > self.max_chars:
            return web.json_response({"error": "too long"}, status=400)
        self.pings += LIVE_PINGS.findall(text)
        return None

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.append(socket)
        self.bot_joined.set()
        async for _ in socket:
            pass
        return socket

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._deliver(body["text"])
        if refused is not None:
            return refused
        message_id = str(next(self._ids))
        self.messages[message_id] = (body["channel"], body["text"])
        return web.json_response({"id": message_id})

    async def _edit(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._deliver(body["text"])
        if refused is not None:
            return refused
        channel, _ = self.messages[request.match_info["id"]]
        self.messages[request.match_info["id"]] = (channel, body["text"])
        return web.json_response({})

    async def _notice(self, request: web.Request) -> web.Response:
        body = await request.json()
        refused = self._deliver(body["text"])
        if refused is not None:
            return refused
        self.notices.append((body["user"], body["text"]))
        return web.json_response({})
