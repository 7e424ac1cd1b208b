"""A Slack request described in the core's terms: where it happened, who sent it, whether it is a question.

Only facts live here. Whether the sender may change settings, and what to answer, are the core's
decisions; this module reports the sender's level as Slack states it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.slack_text import from_slack
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


# --- facts for admins' controls (issue 17) ------------------------------------------------------------

# A person as Slack escapes them in a command (`should_escape`): `<@U1|ann>`; bounded by its own `>`.
_PERSON = re.compile(r"<@([UW][A-Z0-9]{1,30})(?:\|[^<>]*)?>")


def command_line(raw: str) -> str:
    """What was typed after the command, as plain text. In `users …` people stay ids (`<@U1|ann>` →
    `U1`): the grammar names them by id, since display names are anyone's to choose."""
    words = raw.split(None, 1)
    if words and words[0].lower() == "users":
        raw = _PERSON.sub(r"\1", raw)
    return from_slack(raw)


def mentions(event: Mapping[str, Any], user_id: str | None) -> bool:
    """Whether a message mentions `user_id` (the bot: it arrives as `app_mention` too)."""
    return user_id is not None and f"<@{user_id}" in str(event.get("text", ""))


def mentions_someone(event: Mapping[str, Any], bot_user_id: str | None) -> bool:
    """Whether it names a person or a group other than the bot: it is for them, not for the bot."""
    text = str(event.get("text", ""))
    others = [m for m in _PERSON.findall(text) if m != bot_user_id]
    return bool(others) or "<!subteam^" in text


def is_direct(event: Mapping[str, Any]) -> bool:
    return event.get("channel_type") == "im"


def is_thread_message(event: Mapping[str, Any]) -> bool:
    """A reply in a thread of a public or private channel (not the thread's first message)."""
    thread_ts = event.get("thread_ts")
    return (
        event.get("channel_type") in ("channel", "group")
        and isinstance(thread_ts, str)
        and thread_ts != event.get("ts")
    )


# Channel creators change rarely (never, in Slack); group membership is re-read every minute.
CREATOR_TTL = 600.0
GROUP_TTL = 60.0


class ChannelAdmins:
    """Slack's channel level: the channel's creator (`conversations.info`), and members of the
    operator's admin user group (`ACECHAT_SLACK_ADMIN_GROUP`, an id or a handle; `usergroups:read`).
    A lookup that fails grants nothing."""

    def __init__(
        self, client: AsyncWebClient, group: str | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._group = group.removeprefix("@") if group else None
        self._clock = clock
        self._creators: LRU[str, tuple[str | None, float]] = LRU(PEOPLE_CACHE)
        self._members: tuple[frozenset[str], float] = (frozenset(), 0.0)
        self._group_id: str | None = None

    async def holds(self, user: str, channel: str) -> bool:
        if channel.startswith("D"):
            return False
        return await self._creator(channel) == user or user in await self._group_members()

    async def _creator(self, channel: str) -> str | None:
        now = self._clock()
        known = self._creators.get(channel)
        if known is not None and known[1] > now:
            return known[0]
        try:
            reply = await self._client.conversations_info(channel=channel)
            creator = reply["channel"].get("creator")
        except Exception as error:
            log.warning("slack: conversations.info failed for %s: %s", channel, error)
            return None
        found = creator if isinstance(creator, str) else None
        self._creators.put(channel, (found, now + CREATOR_TTL))
        return found

    async def _group_members(self) -> frozenset[str]:
        if self._group is None:
            return frozenset()
        members, expires = self._members
        now = self._clock()
        if expires > now:
            return members
        try:
            group_id = self._group_id or await self._resolve_group()
            if group_id is None:
                return frozenset()
            reply = await self._client.usergroups_users_list(usergroup=group_id)
            members = frozenset(u for u in reply.get("users") or () if isinstance(u, str))
        except Exception as error:
            log.warning("slack: reading the admin group %s failed: %s", self._group, error)
            return frozenset()
        self._members = (members, now + GROUP_TTL)
        return members

    async def _resolve_group(self) -> str | None:
        group = self._group or ""
        if group.startswith("S") and group.isalnum() and group.upper() == group:
            self._group_id = group
            return group
        reply = await self._client.usergroups_list()
        for found in reply.get("usergroups") or ():
            if isinstance(found, dict) and found.get("handle") == group:
                self._group_id = str(found.get("id"))
                return self._group_id
        log.warning("slack: no user group with the handle %s (ACECHAT_SLACK_ADMIN_GROUP)", group)
        return None
