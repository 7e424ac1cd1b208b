"""Who may do what: ordered privilege levels, and the level each command needs.

Adapters report the platform's own facts as a `Privilege` on the `Actor`, and name the rights each level
stands for in their `PlatformRules` (core.platform), which refusals cite. An operator may also list users
in `ACECHAT_ADMIN_USERS`, bare or qualified by platform (`PLATFORM:ID`); they hold the highest level
everywhere. A missing fact is the lowest level.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from acechat.core.commands import Action


class Privilege(enum.IntEnum):
    """Ordered: each level holds every right of the levels below it."""

    MEMBER = 0
    # Changes one channel or thread (Discord: Manage Channels there).
    CHANNEL_ADMIN = 1
    # Changes the whole workspace or server, and reads who changed what.
    WORKSPACE_ADMIN = 2


# The lowest level each action needs; anything not listed is for everyone.
REQUIRED: dict[Action, Privilege] = {
    Action.PRESET_SET: Privilege.CHANNEL_ADMIN,
    Action.PRESET_CLEAR: Privilege.CHANNEL_ADMIN,
    Action.MODEL_SET: Privilege.CHANNEL_ADMIN,
    Action.PRESET_DEFAULT: Privilege.WORKSPACE_ADMIN,
    Action.PRESET_CREATE: Privilege.WORKSPACE_ADMIN,
    Action.PRESET_EDIT: Privilege.WORKSPACE_ADMIN,
    Action.PRESET_DELETE: Privilege.WORKSPACE_ADMIN,
    Action.MODEL_DEFAULT: Privilege.WORKSPACE_ADMIN,
    Action.TOOLS_SET: Privilege.CHANNEL_ADMIN,
    Action.TOOLS_DEFAULT: Privilege.WORKSPACE_ADMIN,
    Action.AUDIT: Privilege.WORKSPACE_ADMIN,
    Action.FEEDBACK: Privilege.WORKSPACE_ADMIN,
    # admins' controls (issue 17); `forget me` is for everyone
    Action.CHANNEL: Privilege.CHANNEL_ADMIN,
    Action.ENGAGE: Privilege.CHANNEL_ADMIN,
    Action.AUTOTHREAD: Privilege.CHANNEL_ADMIN,
    Action.ACCESS: Privilege.WORKSPACE_ADMIN,
    Action.ACCESS_DMS: Privilege.WORKSPACE_ADMIN,
    Action.USERS_ALLOW: Privilege.WORKSPACE_ADMIN,
    Action.USERS_DENY: Privilege.WORKSPACE_ADMIN,
    Action.USERS_REMOVE: Privilege.WORKSPACE_ADMIN,
    Action.USERS_LIST: Privilege.WORKSPACE_ADMIN,
    Action.QUOTA: Privilege.WORKSPACE_ADMIN,
    Action.USAGE: Privilege.WORKSPACE_ADMIN,
    Action.TRANSCRIPTS: Privilege.WORKSPACE_ADMIN,
}

# What a refusal cites where the platform names no rights of its own.
GENERIC_RIGHTS = {
    Privilege.CHANNEL_ADMIN: "channel admin rights",
    Privilege.WORKSPACE_ADMIN: "workspace admin rights",
}


def required(action: Action) -> Privilege:
    return REQUIRED.get(action, Privilege.MEMBER)


def privilege_of(platform: str, user_id: str, reported: Privilege, configured: Collection[str]) -> Privilege:
    """The level that counts: the platform's report, raised to the top for configured admins."""
    if user_id in configured or f"{platform}:{user_id}" in configured:
        return Privilege.WORKSPACE_ADMIN
    return reported


def refusal(action: Action, rights: Mapping[Privilege, str]) -> str:
    """What a user without the rights for `action` reads: what it needs, named as their platform names
    it (`rights`, from the platform's rules)."""
    level = required(action)
    named = rights.get(level) or GENERIC_RIGHTS[level]
    return f"`{action.value}` needs {named}. Ask someone who has that, or the bot's operator."
