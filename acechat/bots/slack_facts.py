"""A Slack request described in the core's terms: where it happened, who sent it, whether it is a question.

Only facts live here. Whether the sender may change settings, and what to answer, are the core's
decisions; this module reports the sender's level as Slack states it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from acechat.core.cache import LRU
from acechat.core.facts import Actor, Attachment
from acechat.core.permissions import Privilege
from acechat.core.scope import Scope

log = logging.getLogger(__name__)

PLATFORM = "slack"
# A demoted admin must lose the rights soon even if Slack's user_change event never reaches us.
PEOPLE_TTL = 60.0
PEOPLE_CACHE = 10_000
ADMIN_FLAGS = ("is_admin", "is_owner", "is_primary_owner")


@dataclass(frozen=True, slots=True)
class Person:
    """What users.info said of someone: enough to tell their name and rights in any workspace."""

    name: str
    admin: bool
    team_id: str | None
    enterprise_id: str | None
    expires: float

    def privilege_in(self, team: str | None, enterprise: str | None) -> Privilege:
        """Their admin flags count only in their own workspace (or Enterprise Grid org). A guest from
        another organisation in a Slack Connect channel is an admin of theirs, not of ours."""
        if not self.admin:
            return Privilege.MEMBER
        if team is not None and self.team_id == team:
            return Privilege.WORKSPACE_ADMIN
        if enterprise is not None and self.enterprise_id == enterprise:
            return Privilege.WORKSPACE_ADMIN
        return Privilege.MEMBER


def person_of(info: Mapping[str, Any], expires: float) -> Person:
    profile: Mapping[str, Any] = info.get("profile") or {}
    name = (
        profile.get("display_name")
        or profile.get("real_name")
        or info.get("real_name")
        or info.get("name")
        or info.get("id")
        or "someone"
    )
    grid: Mapping[str, Any] = info.get("enterprise_user") or {}
    return Person(
        name=str(name),
        admin=any(bool(info.get(flag)) for flag in ADMIN_FLAGS),
        team_id=info.get("team_id"),
        enterprise_id=grid.get("enterprise_id"),
        expires=expires,
    )


class People:
    """users.info, cached for a minute, and forgotten when Slack says the user changed."""

    def __init__(self, client: AsyncWebClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._known: LRU[str, Person] = LRU(PEOPLE_CACHE)

    async def actor(
        self, user: str, *, team: str | None, enterprise: str | None, fallback: str | None
    ) -> Actor:
        """Who `user` is, and their level in the request's workspace; unknown means a member."""
        person = await self._lookup(user)
        if person is None:
            return Actor(user, fallback or user)
        return Actor(user, person.name, person.privilege_in(team, enterprise))

    def changed(self, info: Mapping[str, Any]) -> None:
        """A `user_change` event carries the new profile: take it as it is."""
        user = info.get("id")
        if isinstance(user, str):
            self._known.put(user, person_of(info, self._clock() + PEOPLE_TTL))

    async def _lookup(self, user: str) -> Person | None:
        now = self._clock()
        known = self._known.get(user)
        if known is not None and known.expires > now:
            return known
        try:
            reply = await self._client.users_info(user=user)
        except Exception as error:
            log.warning("slack: users.info failed for %s: %s", user, error)
            return None
        person = person_of(reply["user"], now + PEOPLE_TTL)
        self._known.put(user, person)
        return person


def is_new_question(event: Mapping[str, Any]) -> bool:
    """A person's new message: not an edit or any other subtype, and not from a bot (this one or
    another, which could answer back forever)."""
    return not (event.get("subtype") or event.get("edited") or event.get("bot_id") or not event.get("user"))


def event_scope(team: str, channel: str, thread_ts: str | None) -> Scope:
    return Scope.of(PLATFORM, team, channel, thread_ts)


def command_delivery(body: Mapping[str, Any]) -> str:
    # A re-sent command has the same trigger id.
    return f"slack:command:{body['team_id']}:{body['channel_id']}:{body['user_id']}:{body['trigger_id']}"


def event_delivery(body: Mapping[str, Any], team: str, event: Mapping[str, Any]) -> str:
    event_id = body.get("event_id") or f"{team}:{event['channel']}:{event['ts']}"
    return f"slack:event:{event_id}"


def files_of(event: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """The files shared with a question, without a link: Slack's file URLs open only with the bot's
    token, which the AI service must never get, so the core tells the asker they were not passed."""
    files = event.get("files")
    if not isinstance(files, list):
        return ()
    return tuple(
        Attachment("", str(f.get("name") or f.get("title") or "file"), f.get("mimetype"), f.get("size"))
        for f in files
        if isinstance(f, dict)
    )
