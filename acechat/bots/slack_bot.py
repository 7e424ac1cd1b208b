"""The Slack adapter: `/aichat`, mentions and direct messages over slack-bolt, in Socket Mode or HTTP mode.

It only translates. The transport (bots.slack_transport) acknowledges each request and hands it to
bolt; bolt's listeners here turn it into a core call with its facts (bots.slack_facts) and a reply
target (bots.slack_targets). The core decides the rest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.adapter import StartupError
from acechat.bots.slack_facts import (
    ChannelAdmins,
    People,
    command_delivery,
    command_line,
    event_delivery,
    event_scope,
    files_of,
    is_direct,
    is_new_question,
    is_thread_message,
    mentions,
    mentions_someone,
)
from acechat.bots.slack_interactive import Place, SlackInteractions
from acechat.bots.slack_oauth import (
    INSTALL_PATH,
    InstalledWorkspaces,
    SealedInstallations,
    SignedStates,
    install_routes,
    oauth_flow,
    unknown_workspace_gate,
)
from acechat.bots.slack_rules import rules_for
from acechat.bots.slack_settings import AGENT_SCOPE, SlackSettings
from acechat.bots.slack_stream import StreamReply, StreamSupport
from acechat.bots.slack_targets import (
    ANSWER_CALL_TIMEOUT,
    STATUS_INTERVAL,
    CommandAnswer,
    FormReply,
    SlackLimits,
    ThreadReply,
)
from acechat.bots.slack_text import from_slack, render
from acechat.bots.slack_transport import (
    ACK_BY,
    EVENTS_PATH,
    SUBMISSION_LISTENER_SECONDS,
    SlackTransport,
    StartupAuthorize,
    check_tokens,
)
from acechat.bots.slack_ui import (
    ASK_SHORTCUT,
    DESCRIPTION_FIELD,
    NAME_FIELD,
    PROMPT_FIELD,
    QUESTION_FIELD,
    ask_view,
    form_errors,
    form_not_opened,
    home_view,
    preset_view,
    submitted,
)
from acechat.core.cache import LRU
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.commands import Action, Command, CommandReply, parse_command
from acechat.core.facts import Actor
from acechat.core.interactions import (
    ASK,
    HOME_CHANGES,
    OPEN,
    PRESET,
    STOP,
    VOTE,
    parse_control,
    preset_form_request,
)
from acechat.core.permissions import Privilege
from acechat.core.reply_target import TargetLimits
from acechat.core.secret_box import SecretBox
from acechat.core.settings import Settings
from acechat.storage.installations import Installations, installation_key, open_installations

log = logging.getLogger(__name__)

ACECHAT_ID = re.compile(r"^acechat:")

# Workspaces whose clients (and users.info cache) are kept at once in OAuth mode.
WORKSPACE_CLIENTS = 1000

__all__ = ["EVENTS_PATH", "SlackAdapter", "create", "verify"]


@dataclass(frozen=True, slots=True)
class _Workspace:
    """One workspace's Web API clients: calls that ride out a 429, answers that report it, users.info."""

    client: AsyncWebClient
    answers: AsyncWebClient
    people: People
    admins: ChannelAdmins


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
        # What refusals tell people names this app's own slash command.
        self._rules = rules_for(settings.command)
        self._host = host
        self._clock = clock
        self._limits = SlackLimits(clock)
        self._streaming = StreamSupport()
        self._session: aiohttp.ClientSession | None = None
        self._transport: SlackTransport | None = None
        self._base_url = ""
        self._retry_handlers: list[AsyncRetryHandler] = []
        # One workspace's clients (SLACK_BOT_TOKEN), or, in OAuth mode, each installation's.
        self._single: _Workspace | None = None
        self._workspaces: LRU[str, _Workspace] = LRU(WORKSPACE_CLIENTS)
        self._installs: Installations | None = None
        self._store: SealedInstallations | None = None
        self._pages: web.AppRunner | None = None
        # Socket Mode's install pages, for the runtime to serve on the health port.
        self.web_routes: list[web.RouteDef] = []

    async def start(self) -> None:
        settings = self._settings
        base_url = _base_url(settings)
        self._base_url = base_url
        self._session = aiohttp.ClientSession()
        retry_handlers = [
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        ]
        self._retry_handlers = retry_handlers
        # Ordinary calls ride out a 429 inside slack_sdk; answers do not, because the core paces them
        # and must hear about a 429 to back off (PlatformRateLimited).
        client = AsyncWebClient(
            token=settings.bot_token or None,
            base_url=base_url,
            session=self._session,
            retry_handlers=retry_handlers,
        )
        transport = SlackTransport(
            settings, client, host=self._host, shutdown_grace=self._core.settings.shutdown_grace
        )
        self._transport = transport
        auth = await check_tokens(client, settings)
        options: dict[str, Any] = {}
        pages: list[web.RouteDef] = []
        if settings.oauth is None:
            assert auth is not None
            self._single = self._workspace_clients(settings.bot_token)
            authorize = StartupAuthorize(auth, settings.bot_token)
        else:
            oauth = settings.oauth
            self._installs = await open_installations(
                database_url=self._core.settings.database_url, db_path=self._core.settings.db_path
            )
            box = SecretBox(oauth.secret_keys)
            store = SealedInstallations(self._installs, box, clock=self._clock)
            self._store = store
            # Bolt's type says an AuthorizeResult; its own AsyncAuthorize (and this) may answer None.
            authorize = cast(
                StartupAuthorize,
                InstalledWorkspaces(
                    store, client, client_id=oauth.client_id, client_secret=oauth.client_secret
                ),
            )
            flow = oauth_flow(oauth, store, SignedStates(self._installs, box), client)
            options = {"before_authorize": unknown_workspace_gate(store), "oauth_flow": flow}
            pages = install_routes(flow)
        app = AsyncApp(
            # Bolt names its listeners' logger after the app and resets that logger's level: a name
            # outside the "acechat" logger tree keeps the operator's log levels ours.
            name="acechat-slack",
            # No token here: bolt takes it from `authorize`, and would warn that one of the two is unused.
            client=AsyncWebClient(base_url=base_url, session=self._session, retry_handlers=retry_handlers),
            authorize=authorize,
            signing_secret=settings.signing_secret or "",
            # The transport checks every signature before acknowledging; bolt need not check again.
            request_verification_enabled=False,
            # The listeners only queue work, so bolt may as well run them before it returns.
            process_before_response=True,
            **options,
        )
        app.command(settings.command)(self._on_command)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("user_change")(self._on_user_change)
        # Interactivity: every press and form of acechat's, by its `acechat:` id: one dispatcher routes
        # the buttons of questions asked back (core.choices) to `SlackInteractions`, the rest (Stop,
        # votes, preset forms, Ask acechat: core.interactions) here.
        self._questions = SlackInteractions(
            self._core, self._interactive_place, self._closing_client, transport.spawn
        )
        self._questions.register()
        app.action(ACECHAT_ID)(self._on_action)
        app.view(ACECHAT_ID)(self._on_view)
        app.shortcut(ASK_SHORTCUT)(self._on_shortcut)
        app.event("app_home_opened")(self._on_home_opened)
        app.event("agent_session_stopped")(self._on_session_stopped)
        if settings.oauth is not None:
            app.event("app_uninstalled")(self._on_uninstalled)
            app.event("tokens_revoked")(self._on_tokens_revoked)
        if settings.app_token is not None and pages:
            await self._serve_pages(pages)
            pages = []
        await transport.start(app, pages=pages)

    async def _serve_pages(self, pages: list[web.RouteDef]) -> None:
        """Socket Mode's install pages: on SLACK_INSTALL_PORT if set, else handed to the runtime, which
        serves them on the health port."""
        assert self._settings.oauth is not None
        port = self._settings.oauth.install_port
        if not port:
            if not self._core.settings.health_port:
                raise StartupError(
                    "Socket Mode serves the install pages on ACECHAT_HEALTH_PORT, which is 0: "
                    "set it or SLACK_INSTALL_PORT"
                )
            self.web_routes = pages
            return
        web_app = web.Application()
        web_app.router.add_routes(pages)
        self._pages = web.AppRunner(web_app, access_log=None)
        await self._pages.setup()
        try:
            await web.TCPSite(self._pages, self._host, port).start()
        except OSError as error:
            raise StartupError(f"cannot listen on {self._host}:{port}: {error.strerror or error}") from None
        log.info("slack: install pages on http://%s:%d%s", self._host, port, INSTALL_PATH)

    def _workspace_clients(self, token: str) -> _Workspace:
        client = AsyncWebClient(
            token=token, base_url=self._base_url, session=self._session, retry_handlers=self._retry_handlers
        )
        # No retries for answers: a post whose connection broke may have been delivered, and slack_sdk
        # would send it again blindly; the targets look for it first (slack_targets.MarkedPosts).
        answers = AsyncWebClient(
            token=token,
            base_url=self._base_url,
            session=self._session,
            timeout=ANSWER_CALL_TIMEOUT,
            retry_handlers=[],
        )
        admins = ChannelAdmins(client, self._settings.admin_group, self._clock)
        return _Workspace(client, answers, People(client, self._clock), admins)

    def _workspace(self, context: AsyncBoltContext) -> tuple[str, _Workspace]:
        """The budget key and Web API clients of the request's installation."""
        if self._single is not None:
            return context.team_id or "", self._single
        key = str(context.get("installation_key") or context.team_id or "")
        token = context.bot_token or ""
        found = self._workspaces.get(key)
        if found is None:
            found = self._workspace_clients(token)
            self._workspaces.put(key, found)
        elif found.client.token != token:  # refreshed (token rotation) or reinstalled
            found.client.token = found.answers.token = token
        return key, found

    def _agent(self, context: AsyncBoltContext) -> bool:
        """Whether the request's workspace is served as an agent: SLACK_AGENT, or with `auto`, whether
        its bot token carries the scope Slack adds to apps declared agents."""
        if self._settings.agent is not None:
            return self._settings.agent
        result = context.authorize_result
        return result is not None and AGENT_SCOPE in (result.bot_scopes or ())

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
        if self._pages is not None:
            await self._pages.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._installs is not None:
            await self._installs.close()

    def _interactive_place(self, context: AsyncBoltContext) -> Place:
        """The clients, people and limits of the workspace a press or form came from."""
        budget, workspace = self._workspace(context)

        async def actor(user: str, team: str, channel: str, body: Mapping[str, Any]) -> Actor:
            enterprise = (body.get("enterprise") or {}).get("id")
            return await self._actor(workspace, user, team, channel, enterprise, None)

        def limits(channel: str) -> TargetLimits:
            return self._limits.limits(budget, channel, typing_interval=STATUS_INTERVAL)

        return Place(workspace.client, workspace.answers, actor, limits, self._rules)

    def _closing_client(self, team: str) -> AsyncWebClient | None:
        """A client to replace buttons with outside any request: the one workspace's, or a cached one's."""
        if self._single is not None:
            return self._single.client
        found = self._workspaces.get(team)
        return found.client if found is not None else None

    # --- bolt listeners: queue the work in a tracked task ----------------------------------------

    async def _on_command(
        self, ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        await ack()  # Slack has its acknowledgement already; this only tells bolt the listener took it
        self.transport.spawn(self._command(body, respond, *self._workspace(context)))

    async def _on_mention(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        if is_new_question(event):
            thread_ts = event.get("thread_ts") or event["ts"]
            self.transport.spawn(
                self._question(
                    body,
                    context.bot_user_id,
                    thread_ts,
                    *self._workspace(context),
                    agent=self._agent(context),
                )
            )

    async def _on_message(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        if not is_new_question(event):
            return
        if is_direct(event):
            # An agent's Messages tab: each thread is a conversation of its own.
            agent = self._agent(context)
            thread = event.get("thread_ts") or (event["ts"] if agent else None)
            self.transport.spawn(
                self._question(body, context.bot_user_id, thread, *self._workspace(context), agent=agent)
            )
        elif is_thread_message(event) and not mentions(event, context.bot_user_id):
            # A mention comes as app_mention too, and is answered from there: once. The core decides
            # whether the thread is engaged.
            self.transport.spawn(
                self._question(
                    body,
                    context.bot_user_id,
                    event["thread_ts"],
                    *self._workspace(context),
                    mentioned=False,
                    agent=self._agent(context),
                )
            )

    async def _on_action(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        action_id = str((body.get("actions") or [{}])[0].get("action_id", ""))
        if self._questions.owns(action_id):
            self._questions.pressed(body, context)
        else:
            self.transport.spawn(self._press(body, *self._workspace(context)))

    async def _on_view(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        if self._questions.owns(str((body.get("view") or {}).get("callback_id", ""))):
            await ack()
            self._questions.submitted(body, context)
            return
        budget, workspace = self._workspace(context)
        ack_by = context.get(ACK_BY)
        errors = await self._form_errors(body, workspace, ack_by if isinstance(ack_by, float) else None)
        if errors:
            await ack(response_action="errors", errors=errors)  # the form stays open, saying what is wrong
            return
        await ack()  # closes the form; what the submission did is told in the channel
        self.transport.spawn(self._submit(body, budget, workspace))

    async def _on_shortcut(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        await ack()
        self.transport.spawn(self._open_ask(body, *self._workspace(context)))

    async def _on_home_opened(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        tab = body["event"].get("tab")
        if tab == "home":
            self.transport.spawn(self._home_opened(body, *self._workspace(context)))
        elif tab == "messages" and self._agent(context):
            self.transport.spawn(self._suggest(body, *self._workspace(context)))

    async def _on_session_stopped(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body["event"]
        # Before anything else: the answer's next call may already meet a stream Slack stopped.
        self._streaming.stopped(event.get("channel", ""), list(event.get("streaming_message_ts") or ()))
        self.transport.spawn(self._session_stopped(body, *self._workspace(context)))

    async def _on_user_change(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        user = body["event"].get("user")
        if isinstance(user, dict):
            self._workspace(context)[1].people.changed(user)

    async def _on_uninstalled(self, context: AsyncBoltContext) -> None:
        await self._drop_tokens(context, "uninstalled", "Slack sent app_uninstalled")

    async def _on_tokens_revoked(self, event: dict[str, Any], context: AsyncBoltContext) -> None:
        # Only the bot's token matters: the app asks for no user scopes.
        if (event.get("tokens") or {}).get("bot"):
            await self._drop_tokens(context, "tokens_revoked", "Slack sent tokens_revoked for the bot")

    async def _drop_tokens(self, context: AsyncBoltContext, action: str, why: str) -> None:
        assert self._store is not None
        key = installation_key(context.enterprise_id, context.team_id, bool(context.is_enterprise_install))
        if await self._store.remove(key, action, why):
            self._workspaces.pop(key)
            log.warning(
                "slack: %s: the tokens of %s are deleted; its conversations, settings and presets are kept",
                why,
                key,
            )

    # --- the work --------------------------------------------------------------------------------

    async def _actor(
        self,
        workspace: _Workspace,
        user: str,
        team: str,
        channel: str,
        enterprise: str | None,
        fallback: str | None,
    ) -> Actor:
        """Who asks, and their level here: a workspace admin or owner, or at channel level the
        channel's creator or a member of the operator's admin group."""
        actor = await workspace.people.actor(user, team=team, enterprise=enterprise, fallback=fallback)
        if actor.privilege < Privilege.CHANNEL_ADMIN and await workspace.admins.holds(user, channel):
            return replace(actor, privilege=Privilege.CHANNEL_ADMIN)
        return actor

    async def _command(
        self, body: dict[str, Any], respond: AsyncRespond, budget: str, workspace: _Workspace
    ) -> None:
        team, channel, user = body["team_id"], body["channel_id"], body["user_id"]
        actor = await self._actor(
            workspace, user, team, channel, body.get("enterprise_id"), body.get("user_name")
        )
        text = command_line(body.get("text", ""))

        async def say(reply: str, public: bool) -> None:
            await respond(text=reply, response_type="in_channel" if public else "ephemeral")

        target = CommandAnswer(
            workspace.answers,
            self._limits.limits(budget, channel, typing_interval=None),
            say,
            channel=channel,
            asker=actor.display_name,
            question=text,
            rules=self._rules,
        )
        scope = event_scope(team, channel, None)
        form_request = preset_form_request(text)
        if form_request is not None:
            editing, name = form_request
            form = await self._core.preset_form(
                scope, actor, editing=editing, name=name, rights=self._rules.rights
            )
            if isinstance(form, CommandReply):
                await say(render(form.text), False)
            else:
                await self._open(
                    workspace, body["trigger_id"], preset_view(form, channel), lambda t: say(t, False)
                )
            return
        outcome = await self._core.run_line(
            scope, actor, text, target, delivery=command_delivery(body), direct=channel.startswith("D")
        )
        if outcome is Outcome.ANSWERED and parse_command(text).action in HOME_CHANGES:
            await self._publish_home(workspace, team, user, actor)

    async def _question(
        self,
        body: dict[str, Any],
        bot_user_id: str | None,
        thread_ts: str | None,
        budget: str,
        workspace: _Workspace,
        *,
        mentioned: bool = True,
        agent: bool = False,
    ) -> None:
        """A question in a message; `agent`: answered as an agent (its thread an agent session)."""
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel, user = event["channel"], event["user"]
        if not mentioned and not await self._core.follows_thread(event_scope(team, channel, thread_ts)):
            return  # most thread replies are not for the bot: no lookups for them
        actor = await self._actor(workspace, user, team, channel, body.get("enterprise_id"), None)
        text = from_slack(event.get("text", ""), bot_user_id)
        target: ThreadReply
        if agent and is_direct(event) and thread_ts and self._streaming.available(budget):
            # One person watches an agent session in the Messages tab: the answer streams, with Slack's Stop.
            target = StreamReply(
                workspace.answers,
                self._limits.stream_limits(budget, channel, typing_interval=STATUS_INTERVAL),
                self._streaming,
                workspace=budget,
                team=event.get("user_team") or team,
                channel=channel,
                thread_ts=thread_ts,
                user=user,
                question_ts=event["ts"],
                session_title=text,
                rules=self._rules,
            )
        else:
            target = ThreadReply(
                workspace.answers,
                self._limits.limits(budget, channel, typing_interval=STATUS_INTERVAL),
                channel=channel,
                thread_ts=thread_ts,
                user=user,
                question_ts=event["ts"],
                session_title=text if agent else None,
                rules=self._rules,
            )
        question = Question(
            event_scope(team, channel, thread_ts),
            actor,
            text,
            files_of(event),
            delivery=event_delivery(body, team, event),
            direct=is_direct(event),
            mentioned=mentioned,
            mentions_others=mentions_someone(event, bot_user_id),
        )
        try:
            await self._core.ask(question, target)
        finally:
            if isinstance(target, StreamReply):
                await target.close()

    # --- interactivity -----------------------------------------------------------------------------

    async def _actor_of(self, body: dict[str, Any], workspace: _Workspace, channel: str) -> Actor:
        user = body["user"]
        enterprise = (body.get("enterprise") or {}).get("id")
        return await self._actor(
            workspace, user["id"], body["team"]["id"], channel, enterprise, user.get("username")
        )

    async def _press(self, body: dict[str, Any], budget: str, workspace: _Workspace) -> None:
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
        actor = await self._actor_of(body, workspace, channel)
        notice: str | None = None
        if feature == OPEN and argument in ("create", "edit"):
            name = str((action.get("selected_option") or {}).get("value") or "")
            form = await self._core.preset_form(
                scope, actor, editing=argument == "edit", name=name, rights=self._rules.rights
            )
            if isinstance(form, CommandReply):
                notice = form.text
            else:
                await self._open(
                    workspace,
                    body["trigger_id"],
                    preset_view(form, None),
                    lambda t: self._dm(workspace, actor.user_id, t),
                )
        elif feature == STOP:
            notice = await self._core.stop(argument, scope, actor)
        elif feature == VOTE and action.get("value") in ("up", "down"):
            notice = await self._core.vote(argument, scope, actor, up=action["value"] == "up")
        if notice is None:
            return
        if channel == actor.user_id:
            await self._dm(workspace, actor.user_id, notice)
        else:
            await self._tell(workspace, channel, actor.user_id, notice, thread)

    async def _home_opened(self, body: dict[str, Any], budget: str, workspace: _Workspace) -> None:
        """The App Home tab, rebuilt each time someone opens it."""
        user = body["event"]["user"]
        team = body.get("team_id") or body["event"].get("team")
        channel = body["event"].get("channel") or user
        actor = await self._actor(workspace, user, team, channel, body.get("enterprise_id"), None)
        await self._publish_home(workspace, team, user, actor)

    async def _publish_home(self, workspace: _Workspace, team: str, user: str, actor: Actor) -> None:
        """`user`'s App Home tab, as it is now."""
        home = await self._core.home(event_scope(team, user, None), actor, rights=self._rules.rights)
        try:
            await workspace.answers.views_publish(user_id=user, view=home_view(home, render))
        except SlackApiError as error:
            log.warning(
                "slack: could not publish the Home tab: %s",
                error.response.get("error"),
                extra={"platform": "slack"},
            )

    async def _suggest(self, body: dict[str, Any], budget: str, workspace: _Workspace) -> None:
        """An agent's Messages tab opened: first questions that suit the workspace's preset."""
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel = event.get("channel")
        if not channel:
            return
        prompts = await self._core.suggested_prompts(event_scope(team, channel, None))
        try:
            # No thread_ts: an agent's prompts belong to the conversation (Slack ignores a call with one).
            await workspace.answers.assistant_threads_setSuggestedPrompts(
                channel_id=channel, prompts=[{"title": t, "message": m} for t, m in prompts]
            )
        except SlackApiError as error:
            log.warning("slack: could not suggest prompts: %s", error.response.get("error"))

    async def _session_stopped(self, body: dict[str, Any], budget: str, workspace: _Workspace) -> None:
        """Slack's Stop on an agent session: stop the answer running in that thread. Slack leaves the
        session "processing"; the answer's end moves it on, or this does when nothing was running."""
        event = body["event"]
        team = body.get("team_id") or event.get("team")
        channel, thread, user = event["channel"], event.get("thread_ts"), event["user"]
        actor = await self._actor(workspace, user, team, channel, body.get("enterprise_id"), None)
        notice = await self._core.stop_in(event_scope(team, channel, thread), actor)
        if notice is not None:
            await self._tell(workspace, channel, user, notice, thread)
            return
        try:
            await workspace.answers.agents_sessions_setStatus(
                channel_id=channel, thread_ts=thread, status="active"
            )
        except SlackApiError as error:
            log.warning("slack: could not end a stopped session: %s", error.response.get("error"))

    async def _dm(self, workspace: _Workspace, user: str, text: str) -> None:
        """Something for `user` in the app's DM (pressed on the Home tab, where nothing else reaches them)."""
        try:
            await workspace.answers.chat_postMessage(channel=user, text=render(text))
        except SlackApiError as error:
            log.warning(
                "slack: could not send a notice: %s", error.response.get("error"), extra={"platform": "slack"}
            )

    async def _open_ask(self, body: dict[str, Any], budget: str, workspace: _Workspace) -> None:
        """The "Ask acechat" message shortcut: the form for the question."""
        channel = body["channel"]["id"]
        user = body["user"]["id"]
        thread = body["message"].get("thread_ts")
        await self._open(
            workspace,
            body["trigger_id"],
            ask_view(channel, body["message"]),
            lambda t: self._tell(workspace, channel, user, t, thread),
        )

    async def _form_errors(
        self, body: dict[str, Any], workspace: _Workspace, ack_by: float | None
    ) -> dict[str, str]:
        """What is wrong with a submitted preset form, by its input blocks, if the core can say in time
        for the acknowledgement (`ack_by`, from the transport); else nothing, and the save says it."""
        submission = _preset_submission(body["view"])
        if submission is None:
            return {}
        left = (
            ack_by if ack_by is not None else time.monotonic() + SUBMISSION_LISTENER_SECONDS
        ) - time.monotonic()
        if left <= 0:
            return {}
        command, channel = submission

        async def check() -> dict[str, str]:
            actor = await self._actor_of(body, workspace, channel or body["user"]["id"])
            scope = event_scope(body["team"]["id"], channel or actor.user_id, None)
            return await self._core.preset_problems(scope, actor, command, rights=self._rules.rights)

        try:
            problems = await asyncio.wait_for(check(), left)
        except TimeoutError:
            log.info("slack: checking a preset form took too long; it closes and its save says what is wrong")
            return {}
        except Exception:
            # The form closes and the save, which runs the same checks, says what went wrong.
            log.exception("slack: could not check a preset form")
            return {}
        return form_errors(problems)

    async def _submit(self, body: dict[str, Any], budget: str, workspace: _Workspace) -> None:
        """A submitted form of acechat's, whichever process opened it."""
        view = body["view"]
        parsed = parse_control(str(view.get("callback_id", "")))
        if parsed is None:
            return
        values, metadata = submitted(view)
        team = body["team"]["id"]
        actor = await self._actor_of(body, workspace, metadata.get("channel") or body["user"]["id"])
        preset = _preset_submission(view)
        if preset is not None:
            command, channel = preset
            form_reply = FormReply(
                workspace.answers,
                self._limits.limits(budget, channel or actor.user_id, typing_interval=None),
                channel=channel,
                user=actor.user_id,
                rules=self._rules,
            )
            reply = await self._core.run_command(
                event_scope(team, channel or actor.user_id, None), actor, command, form_reply
            )
            if reply is not None and reply.ok:
                # The saver's Home tab shows the preset without being opened again.
                await self._publish_home(workspace, team, actor.user_id, actor)
        elif parsed[0] == ASK and metadata.get("channel") and metadata.get("ts"):
            channel, thread = metadata["channel"], metadata.get("thread_ts") or metadata["ts"]
            target = ThreadReply(
                workspace.answers,
                self._limits.limits(budget, channel, typing_interval=STATUS_INTERVAL),
                channel=channel,
                thread_ts=thread,
                user=actor.user_id,
                question_ts=metadata["ts"],
                rules=self._rules,
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
        self,
        workspace: _Workspace,
        trigger_id: str,
        view: dict[str, Any],
        tell: Callable[[str], Awaitable[None]],
    ) -> None:
        """Open a form with the interaction's trigger id (good once, for 3 s)."""
        try:
            await workspace.answers.views_open(trigger_id=trigger_id, view=view)
        except SlackApiError as error:
            code = error.response.get("error")
            log.warning("slack: could not open a form: %s", code, extra={"platform": "slack"})
            await tell(form_not_opened(code))

    async def _tell(
        self, workspace: _Workspace, channel: str, user: str, text: str, thread: str | None
    ) -> None:
        """Something only `user` should read, where they are."""
        try:
            await workspace.answers.chat_postEphemeral(
                channel=channel, user=user, text=render(text), thread_ts=thread
            )
        except SlackApiError as error:
            log.warning(
                "slack: could not send a notice: %s", error.response.get("error"), extra={"platform": "slack"}
            )


def _preset_submission(view: Mapping[str, Any]) -> tuple[Command, str | None] | None:
    """A submitted preset form as the command it runs, and the channel it was opened from (None: the
    Home tab); None for any other form."""
    parsed = parse_control(str(view.get("callback_id", "")))
    if parsed is None or parsed[0] != PRESET or parsed[1] not in ("create", "edit"):
        return None
    values, metadata = submitted(view)
    command = Command(
        Action.PRESET_CREATE if parsed[1] == "create" else Action.PRESET_EDIT,
        name=values.get(NAME_FIELD, ""),
        text=values.get(PROMPT_FIELD, ""),
        description=values.get(DESCRIPTION_FIELD) or None,
    )
    return command, metadata.get("channel")


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
            base_url=_base_url(slack_settings), session=session, token=slack_settings.bot_token or None
        )
        auth = await check_tokens(client, slack_settings)
    if auth is None:
        # OAuth mode: each workspace's token is checked as its requests arrive (`acechat installs`).
        how = "Socket Mode (app-level token accepted)" if slack_settings.app_token else "HTTP mode"
        return f"Slack app {slack_settings.oauth.client_id if slack_settings.oauth else '?'} in OAuth mode, {how}"
    return (
        f"Slack bot {auth.get('user')} ({auth.get('user_id')}) in {auth.get('team')} ({auth.get('team_id')})"
    )
