"""The Slack adapter: `/aichat`, mentions and direct messages over slack-bolt, in Socket Mode or HTTP mode.

It only translates. The transport (bots.slack_transport) acknowledges each request and hands it to
bolt; bolt's listeners here turn it into a core call with its facts (bots.slack_facts) and a reply
target (bots.slack_targets). The core decides the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.slack_facts import (
    People,
    command_delivery,
    event_delivery,
    event_scope,
    files_of,
    is_new_question,
)
from acechat.bots.slack_interactive import SlackInteractions
from acechat.bots.slack_settings import SlackSettings
from acechat.bots.slack_targets import STATUS_INTERVAL, CommandAnswer, SlackLimits, ThreadReply
from acechat.bots.slack_text import from_slack
from acechat.bots.slack_transport import EVENTS_PATH, SlackTransport, StartupAuthorize, check_tokens
from acechat.core.chat import ChatCore, Question
from acechat.core.facts import Actor
from acechat.core.reply_target import TargetLimits
from acechat.core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["EVENTS_PATH", "SlackAdapter", "create", "verify"]


class SlackAdapter:
    """Serves one Slack app. `start()` returns once it is connected (Socket Mode) or listening (HTTP).

    Call `close()` before the core's `aclose()`: it stops taking requests and lets answers finish.
    """

    name = "slack"

    def __init__(
        self,
        core: ChatCore,
        settings: SlackSettings,
        *,
        host: str = "0.0.0.0",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._settings = settings
        self._host = host
        self._clock = clock
        self._limits = SlackLimits(clock)
        self._session: aiohttp.ClientSession | None = None
        self._transport: SlackTransport | None = None

    async def start(self) -> None:
        settings = self._settings
        base_url = _base_url(settings)
        self._session = aiohttp.ClientSession()
        retry_handlers = [
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ]
        # Ordinary calls ride out a 429 inside slack_sdk; answers do not, because the core paces them
        # and must hear about a 429 to back off (PlatformRateLimited).
        client = AsyncWebClient(
            token=settings.bot_token, base_url=base_url, session=self._session, retry_handlers=retry_handlers
        )
        self._answers = AsyncWebClient(token=settings.bot_token, base_url=base_url, session=self._session)
        self._people = People(client, self._clock)
        transport = SlackTransport(
            settings, client, host=self._host, shutdown_grace=self._core.settings.shutdown_grace
        )
        self._transport = transport
        auth = await check_tokens(client, settings)
        app = AsyncApp(
            name="acechat",
            # No token here: bolt takes it from `authorize`, and would warn that one of the two is unused.
            client=AsyncWebClient(base_url=base_url, session=self._session, retry_handlers=retry_handlers),
            authorize=StartupAuthorize(auth, settings.bot_token),
            signing_secret=settings.signing_secret or "",
            # The transport checks every signature before acknowledging; bolt need not check again.
            request_verification_enabled=False,
            # The listeners only queue work, so bolt may as well run them before it returns.
            process_before_response=True,
        )
        app.command(settings.command)(self._on_command)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("user_change")(self._on_user_change)
        SlackInteractions(
            self._core,
            client,
            self._answers,
            self._interactive_actor,
            self._interactive_limits,
            transport.spawn,
        ).register(app)
        await transport.start(app)

    @property
    def transport(self) -> SlackTransport:
        assert self._transport is not None, "start() first"
        return self._transport

    @property
    def port(self) -> int | None:
        return self._transport.port if self._transport is not None else None

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.connected

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        if self._session is not None:
            await self._session.close()

    async def _interactive_actor(self, user: str, team: str, body: Mapping[str, Any]) -> Actor:
        return await self._people.actor(
            user,
            team=team,
            enterprise=body.get("enterprise", {}) and body["enterprise"].get("id"),
            fallback=None,
        )

    def _interactive_limits(self, team: str, channel: str) -> TargetLimits:
        return self._limits.limits(team, channel, typing_interval=STATUS_INTERVAL)

    # --- bolt listeners: queue the work in a tracked task ----------------------------------------

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()  # Slack has its acknowledgement already; this only tells bolt the listener took it
        self.transport.spawn(self._command(body, respond))

    async def _on_mention(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        if is_new_question(event):
            thread_ts = event.get("thread_ts") or event["ts"]
            self.transport.spawn(self._question(body, context.bot_user_id, thread_ts))

    async def _on_message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        # Direct messages only: in channels the bot answers mentions, which come as app_mention.
        if event.get("channel_type") == "im" and is_new_question(event):
            self.transport.spawn(self._question(body, context.bot_user_id, event.get("thread_ts")))

    async def _on_user_change(self, body: dict[str, Any]) -> None:
        user = body["event"].get("user")
        if isinstance(user, dict):
            self._people.changed(user)

    # --- the work --------------------------------------------------------------------------------

    async def _command(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        team, channel, user = body["team_id"], body["channel_id"], body["user_id"]
        actor = await self._people.actor(
            user, team=team, enterprise=body.get("enterprise_id"), fallback=body.get("user_name")
        )
        text = from_slack(body.get("text", ""))

        async def say(reply: str, public: bool) -> None:
            await respond(text=reply, response_type="in_channel" if public else "ephemeral")

        target = CommandAnswer(
            self._answers,
            self._limits.limits(team, channel, typing_interval=None),
            say,
            channel=channel,
            asker=actor.display_name,
            question=text,
        )
        scope = event_scope(team, channel, None)
        await self._core.run_line(scope, actor, text, target, delivery=command_delivery(body))

    async def _question(self, body: dict[str, Any], bot_user_id: str | None, thread_ts: str | None) -> None:
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel, user = event["channel"], event["user"]
        actor = await self._people.actor(user, team=team, enterprise=body.get("enterprise_id"), fallback=None)
        target = ThreadReply(
            self._answers,
            self._limits.limits(team, channel, typing_interval=STATUS_INTERVAL),
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            question_ts=event["ts"],
        )
        question = Question(
            event_scope(team, channel, thread_ts),
            actor,
            from_slack(event.get("text", ""), bot_user_id),
            files_of(event),
            delivery=event_delivery(body, team, event),
        )
        await self._core.ask(question, target)


def _base_url(settings: SlackSettings) -> str:
    base_url = settings.api_url or AsyncWebClient.BASE_URL
    # slack_sdk joins method names with urljoin.
    return base_url if base_url.endswith("/") else base_url + "/"


def _settings(settings: Settings) -> SlackSettings:
    slack_settings = settings.platform("slack", SlackSettings)
    assert slack_settings is not None, "the registry creates only configured adapters"
    return slack_settings


def create(core: ChatCore, settings: Settings) -> SlackAdapter:
    return SlackAdapter(core, _settings(settings))


async def verify(settings: Settings) -> str:
    """`auth.test` with the bot token (and, in Socket Mode, opening a connection with the app token):
    which bot in which workspace, or a StartupError naming the token Slack refused."""
    slack_settings = _settings(settings)
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(
            base_url=_base_url(slack_settings), session=session, token=slack_settings.bot_token
        )
        auth = await check_tokens(client, slack_settings)
    return (
        f"Slack bot {auth.get('user')} ({auth.get('user_id')}) in {auth.get('team')} ({auth.get('team_id')})"
    )
