"""The Slack adapter: `/aichat`, mentions and direct messages over slack-bolt, in Socket Mode or HTTP mode.

It only translates. The transport (bots.slack_transport) acknowledges each request and hands it to
bolt; bolt's listeners here turn it into a core call with its facts (bots.slack_facts) and a reply
target (bots.slack_targets). The core decides the rest.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
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
    is_new_question,
)
from acechat.bots.slack_targets import STATUS_INTERVAL, CommandAnswer, FormReply, SlackLimits, ThreadReply
from acechat.bots.slack_text import from_slack, render
from acechat.bots.slack_transport import EVENTS_PATH, SlackTransport, StartupAuthorize, check_tokens
from acechat.bots.slack_ui import (
    ASK_SHORTCUT,
    DESCRIPTION_FIELD,
    NAME_FIELD,
    PROMPT_FIELD,
    QUESTION_FIELD,
    ask_view,
    home_view,
    preset_view,
    submitted,
)
from acechat.core.chat import ChatCore, Question
from acechat.core.commands import Action, Command, CommandReply
from acechat.core.facts import Actor
from acechat.core.interactions import ASK, FORM, PRESET, STOP, VOTE, parse_control, preset_form_request
from acechat.core.settings import Settings, SlackSettings

log = logging.getLogger(__name__)

ACECHAT_ID = re.compile(r"^acechat:")

__all__ = ["EVENTS_PATH", "SlackAdapter", "create"]


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
        base_url = settings.api_url or AsyncWebClient.BASE_URL
        if not base_url.endswith("/"):
            base_url += "/"  # slack_sdk joins method names with urljoin
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
        # Interactivity: every press and form of acechat's, by its `acechat:` id (core.interactions).
        app.action(ACECHAT_ID)(self._on_action)
        app.view(ACECHAT_ID)(self._on_view)
        app.shortcut(ASK_SHORTCUT)(self._on_shortcut)
        app.event("app_home_opened")(self._on_home_opened)
        app.event("agent_session_stopped")(self._on_session_stopped)
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
            # An agent's Messages tab: each thread is a conversation of its own.
            thread = event.get("thread_ts") or (event["ts"] if self._settings.agent else None)
            self.transport.spawn(self._question(body, context.bot_user_id, thread))

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self.transport.spawn(self._press(body))

    async def _on_view(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()  # closes the form; what the submission did is told in the channel
        self.transport.spawn(self._submit(body))

    async def _on_shortcut(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self.transport.spawn(self._open_ask(body))

    async def _on_home_opened(self, body: dict[str, Any]) -> None:
        tab = body["event"].get("tab")
        if tab == "home":
            self.transport.spawn(self._publish_home(body))
        elif tab == "messages" and self._settings.agent:
            self.transport.spawn(self._suggest(body))

    async def _on_session_stopped(self, body: dict[str, Any]) -> None:
        self.transport.spawn(self._session_stopped(body))

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
        form_request = preset_form_request(text)
        if form_request is not None:
            editing, name = form_request
            form = await self._core.preset_form(scope, actor, editing=editing, name=name)
            if isinstance(form, CommandReply):
                await say(render(form.text), False)
            else:
                await self._open(body["trigger_id"], preset_view(form, channel), lambda t: say(t, False))
            return
        await self._core.run_line(scope, actor, text, target, delivery=command_delivery(body))

    async def _question(self, body: dict[str, Any], bot_user_id: str | None, thread_ts: str | None) -> None:
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel, user = event["channel"], event["user"]
        actor = await self._people.actor(user, team=team, enterprise=body.get("enterprise_id"), fallback=None)
        text = from_slack(event.get("text", ""), bot_user_id)
        target = ThreadReply(
            self._answers,
            self._limits.limits(team, channel, typing_interval=STATUS_INTERVAL),
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            question_ts=event["ts"],
            session_title=text if self._settings.agent else None,
        )
        question = Question(
            event_scope(team, channel, thread_ts), actor, text, delivery=event_delivery(body, team, event)
        )
        await self._core.ask(question, target)

    # --- interactivity -----------------------------------------------------------------------------

    async def _actor_of(self, body: dict[str, Any]) -> Actor:
        user = body["user"]
        enterprise = (body.get("enterprise") or {}).get("id")
        return await self._people.actor(
            user["id"], team=body["team"]["id"], enterprise=enterprise, fallback=user.get("username")
        )

    async def _press(self, body: dict[str, Any]) -> None:
        """A press on an answer's Stop or feedback buttons."""
        action = (body.get("actions") or [{}])[0]
        parsed = parse_control(str(action.get("action_id", "")))
        # A press on the Home tab has no channel: its notices go to the app's DM with the presser.
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        channel = channel or body["user"]["id"]
        if parsed is None:
            return
        feature, argument = parsed
        thread = (body.get("message") or {}).get("thread_ts")
        scope = event_scope(body["team"]["id"], channel, thread)
        actor = await self._actor_of(body)
        notice: str | None = None
        if feature == FORM and argument in ("create", "edit"):
            name = str((action.get("selected_option") or {}).get("value") or "")
            form = await self._core.preset_form(scope, actor, editing=argument == "edit", name=name)
            if isinstance(form, CommandReply):
                notice = form.text
            else:
                await self._open(
                    body["trigger_id"], preset_view(form, None), lambda t: self._dm(actor.user_id, t)
                )
        elif feature == STOP:
            notice = await self._core.stop(argument, scope, actor)
        elif feature == VOTE and action.get("value") in ("up", "down"):
            notice = await self._core.vote(argument, scope, actor, up=action["value"] == "up")
        if notice is None:
            return
        if channel == actor.user_id:
            await self._dm(actor.user_id, notice)
        else:
            await self._tell(channel, actor.user_id, notice, thread)

    async def _publish_home(self, body: dict[str, Any]) -> None:
        """The App Home tab, rebuilt each time someone opens it."""
        user = body["event"]["user"]
        team = body.get("team_id") or body["event"].get("team")
        actor = await self._people.actor(user, team=team, enterprise=body.get("enterprise_id"), fallback=None)
        home = await self._core.home(event_scope(team, user, None), actor)
        try:
            await self._answers.views_publish(user_id=user, view=home_view(home, render))
        except SlackApiError as error:
            log.warning(
                "slack: could not publish the Home tab: %s",
                error.response.get("error"),
                extra={"platform": "slack"},
            )

    async def _suggest(self, body: dict[str, Any]) -> None:
        """An agent's Messages tab opened: first questions that suit the workspace's preset."""
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel = event.get("channel")
        if not channel:
            return
        prompts = await self._core.suggested_prompts(event_scope(team, channel, None))
        try:
            # No thread_ts: an agent's prompts belong to the conversation (Slack ignores a call with one).
            await self._answers.assistant_threads_setSuggestedPrompts(
                channel_id=channel, prompts=[{"title": t, "message": m} for t, m in prompts]
            )
        except SlackApiError as error:
            log.warning("slack: could not suggest prompts: %s", error.response.get("error"))

    async def _session_stopped(self, body: dict[str, Any]) -> None:
        """Slack's Stop on an agent session: stop the answer running in that thread. Slack leaves the
        session "processing"; the answer's end moves it on, or this does when nothing was running."""
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel, thread, user = event["channel"], event.get("thread_ts"), event["user"]
        actor = await self._people.actor(user, team=team, enterprise=body.get("enterprise_id"), fallback=None)
        notice = await self._core.stop_in(event_scope(team, channel, thread), actor)
        if notice is not None:
            await self._tell(channel, user, notice, thread)
            return
        try:
            await self._answers.agents_sessions_setStatus(
                channel_id=channel, thread_ts=thread, status="active"
            )
        except SlackApiError as error:
            log.warning("slack: could not end a stopped session: %s", error.response.get("error"))

    async def _dm(self, user: str, text: str) -> None:
        """Something for `user` in the app's DM (pressed on the Home tab, where nothing else reaches them)."""
        try:
            await self._answers.chat_postMessage(channel=user, text=render(text))
        except SlackApiError as error:
            log.warning(
                "slack: could not send a notice: %s", error.response.get("error"), extra={"platform": "slack"}
            )

    async def _open_ask(self, body: dict[str, Any]) -> None:
        """The "Ask acechat" message shortcut: the form for the question."""
        channel = body["channel"]["id"]
        user = body["user"]["id"]
        thread = body["message"].get("thread_ts")
        await self._open(
            body["trigger_id"],
            ask_view(channel, body["message"]),
            lambda t: self._tell(channel, user, t, thread),
        )

    async def _submit(self, body: dict[str, Any]) -> None:
        """A submitted form of acechat's, whichever process opened it."""
        view = body["view"]
        parsed = parse_control(str(view.get("callback_id", "")))
        if parsed is None:
            return
        feature, argument = parsed
        values, metadata = submitted(view)
        team = body["team"]["id"]
        actor = await self._actor_of(body)
        if feature == PRESET and argument in ("create", "edit"):
            channel = metadata.get("channel")
            command = Command(
                Action.PRESET_CREATE if argument == "create" else Action.PRESET_EDIT,
                name=values.get(NAME_FIELD, ""),
                text=values.get(PROMPT_FIELD, ""),
                description=values.get(DESCRIPTION_FIELD) or None,
            )
            form_reply = FormReply(
                self._answers,
                self._limits.limits(team, channel or actor.user_id, typing_interval=None),
                channel=channel,
                user=actor.user_id,
            )
            await self._core.run_command(
                event_scope(team, channel or actor.user_id, None), actor, command, form_reply
            )
        elif feature == ASK and metadata.get("channel") and metadata.get("ts"):
            channel, thread = metadata["channel"], metadata.get("thread_ts") or metadata["ts"]
            target = ThreadReply(
                self._answers,
                self._limits.limits(team, channel, typing_interval=STATUS_INTERVAL),
                channel=channel,
                thread_ts=thread,
                user=actor.user_id,
                question_ts=metadata["ts"],
            )
            question = Question(
                event_scope(team, channel, thread),
                actor,
                values.get(QUESTION_FIELD, ""),
                quoted=from_slack(metadata.get("text") or "") or "(a message with no text)",
                delivery=f"slack:view:{view.get('id')}",
            )
            await self._core.ask(question, target)

    async def _open(
        self, trigger_id: str, view: dict[str, Any], tell: Callable[[str], Awaitable[None]]
    ) -> None:
        """Open a form with the interaction's trigger id (good once, for 3 s)."""
        try:
            await self._answers.views_open(trigger_id=trigger_id, view=view)
        except SlackApiError as error:
            code = error.response.get("error")
            log.warning("slack: could not open a form: %s", code, extra={"platform": "slack"})
            await tell(f"The form could not open ({code}); try again.")

    async def _tell(self, channel: str, user: str, text: str, thread: str | None) -> None:
        """Something only `user` should read, where they are."""
        try:
            await self._answers.chat_postEphemeral(
                channel=channel, user=user, text=render(text), thread_ts=thread
            )
        except SlackApiError as error:
            log.warning(
                "slack: could not send a notice: %s", error.response.get("error"), extra={"platform": "slack"}
            )


def create(core: ChatCore, settings: Settings) -> SlackAdapter:
    assert settings.slack is not None, "the registry creates only configured adapters"
    return SlackAdapter(core, settings.slack)
