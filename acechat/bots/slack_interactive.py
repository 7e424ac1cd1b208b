"""Slack's interactive surfaces: the core's buttons as Block Kit, presses and form submissions back.

Presses (`block_actions`) and form submissions (`view_submission`) reach the same request URL (HTTP
mode) or arrive as `interactive` envelopes (Socket Mode); the transport acknowledges each at once, as
it does every request, and the adapter's one `acechat:` dispatcher (bots.slack_bot) hands over the ones
whose `action_id` / `callback_id` the core made here (`owns`); Stop, votes and preset forms it keeps.
Who may press and what a press does are the core's decisions (`ChatCore.press`, `ChatCore.submit`);
this module only renders them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.slack_facts import event_scope
from acechat.bots.slack_targets import ThreadReply
from acechat.bots.slack_ui import form_not_opened
from acechat.core.chat import ChatCore, PressResult
from acechat.core.choices import Form, parse_control
from acechat.core.facts import Actor
from acechat.core.platform import PlatformRules
from acechat.core.reply_target import TargetLimits

log = logging.getLogger(__name__)

FORM_BLOCK = "answer"
FORM_ACTION = "text"
# Slack's limit on a modal's title.
TITLE_CHARS = 24

Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True, slots=True)
class Place:
    """The workspace a press came from: its clients (ordinary calls, answers), who the presser is there
    (user, team, channel, body), the limits an answer in a channel of it draws on, and the app's rules."""

    client: AsyncWebClient
    answers: AsyncWebClient
    actor: Callable[[str, str, str, Mapping[str, Any]], Awaitable[Actor]]
    limits: Callable[[str], TargetLimits]
    rules: PlatformRules


PlaceOf = Callable[[AsyncBoltContext], Place]
# The client that may replace a workspace's buttons outside any request (None: not known here).
ClientOf = Callable[[str], AsyncWebClient | None]


def form_view(form: Form, metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": form.id,
        "private_metadata": json.dumps(dict(metadata)),
        "title": {"type": "plain_text", "text": form.title[:TITLE_CHARS]},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "input",
                "block_id": FORM_BLOCK,
                "label": {"type": "plain_text", "text": form.label[:2000]},
                "element": {
                    "type": "plain_text_input",
                    "action_id": FORM_ACTION,
                    "multiline": True,
                    "max_length": form.max_chars,
                },
            }
        ],
    }


class SlackInteractions:
    """Routes the core's controls: registered on the bolt app once, presses handed to the core."""

    def __init__(self, core: ChatCore, place_of: PlaceOf, client_of: ClientOf, spawn: Spawn) -> None:
        self._core = core
        self._place_of = place_of
        self._client_of = client_of
        self._spawn = spawn

    def register(self) -> None:
        """Let the core replace a question's buttons, whichever process showed them. Presses and
        forms come through the adapter's one `acechat:` dispatcher, which hands over those `owns` says
        are these."""
        self._core.register_closer("slack", self._replace)

    @staticmethod
    def owns(control_id: str) -> bool:
        """Whether an action or callback id is a question's button or form (not Stop, votes, presets)."""
        return parse_control(control_id) is not None

    async def _replace(self, team: str, where: str, text: str) -> None:
        """Buttons at `where` ("channel:ts", from `offer_choices`) in `team` give way to `text`; a
        failure is raised, for the core to log."""
        channel, _, ts = where.partition(":")
        client = self._client_of(team)
        if client is None:
            raise LookupError(f"no Slack client for workspace {team} in this process")
        if not (channel and ts):
            raise ValueError(f"not a Slack message: {where!r}")
        try:
            await _show_closed(client, channel, ts, text)
        except SlackApiError as error:
            raise RuntimeError(f"Slack refused the edit: {error.response.get('error')}") from None

    def pressed(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """A press on a question's button, already acknowledged: handled off the request."""
        self._spawn(self._pressed(body, self._place_of(context)))

    def submitted(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        """A question's form submitted (and closed by its acknowledgement): handled off the request."""
        self._spawn(self._submitted(body, self._place_of(context)))

    @staticmethod
    def _target(place: Place, channel: str, thread_ts: str | None, user: str, message_ts: str) -> ThreadReply:
        return ThreadReply(
            place.answers,
            place.limits(channel),
            channel=channel,
            thread_ts=thread_ts,
            user=user,
            question_ts=message_ts,
            rules=place.rules,
        )

    async def _pressed(self, body: dict[str, Any], place: Place) -> None:
        team = (body.get("team") or {}).get("id") or body.get("user", {}).get("team_id", "")
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or body.get("container", {}).get("channel_id")
        message = body.get("message") or {}
        message_ts = message.get("ts") or body.get("container", {}).get("message_ts")
        actions = body.get("actions") or []
        if not (team and channel and message_ts and actions):
            log.info("slack: a press without its message or channel; ignored")
            return
        action = actions[0]
        thread_ts = message.get("thread_ts")
        actor = await place.actor(user, team, channel, body)
        target = self._target(place, channel, thread_ts, user, message_ts)
        scope = event_scope(team, channel, thread_ts)
        delivery = f"slack:action:{team}:{channel}:{message_ts}:{user}:{action.get('action_ts', '')}"
        result = await self._core.press(
            scope, actor, str(action.get("action_id", "")), target, delivery=delivery
        )
        if result.form is not None:
            metadata = {"team": team, "channel": channel, "thread_ts": thread_ts, "message_ts": message_ts}
            try:
                await place.client.views_open(
                    trigger_id=body["trigger_id"], view=form_view(result.form, metadata)
                )
            except SlackApiError as error:
                # expired_trigger_id: the press took longer than Slack's 3 seconds to reach this point.
                code = error.response.get("error")
                log.warning("slack: could not open a form: %s", code)
                await target.notify(form_not_opened(code))
        await _close(place.client, channel, message_ts, result)

    async def _submitted(self, body: dict[str, Any], place: Place) -> None:
        view = body.get("view") or {}
        try:
            metadata = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            metadata = {}
        team, channel = metadata.get("team"), metadata.get("channel")
        message_ts, thread_ts = metadata.get("message_ts"), metadata.get("thread_ts")
        if not (team and channel and message_ts):
            log.info("slack: a form without its place; ignored")
            return
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        text = (values.get(FORM_BLOCK, {}).get(FORM_ACTION, {}) or {}).get("value") or ""
        actor = await place.actor(user, team, channel, body)
        target = self._target(place, channel, thread_ts, user, message_ts)
        scope = event_scope(team, channel, thread_ts)
        result = await self._core.submit(scope, actor, str(view.get("callback_id", "")), text, target)
        await _close(place.client, channel, message_ts, result)


async def _close(client: AsyncWebClient, channel: str, message_ts: str, result: PressResult) -> None:
    """Done buttons give way to a line saying what became of their question."""
    if result.closed is None:
        return
    try:
        await _show_closed(client, channel, message_ts, result.closed)
    except SlackApiError as error:
        log.info("slack: could not close a question's buttons: %s", error.response.get("error"))


async def _show_closed(client: AsyncWebClient, channel: str, message_ts: str, text: str) -> None:
    """The buttons' message becomes `text` alone (plain text: no markup, no pings)."""
    await client.chat_update(
        channel=channel,
        ts=message_ts,
        text=text,
        blocks=[{"type": "section", "text": {"type": "plain_text", "text": text}}],
    )
