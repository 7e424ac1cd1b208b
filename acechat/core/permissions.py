"""Who may do what: ordered privilege levels, and the level each command needs.

Adapters report the platform's own facts as a `Privilege` on the `Actor` (Discord: Manage Channels on the
channel, Manage Server or Administrator; Slack: workspace admin or owner). An operator may also list users
in `ACECHAT_ADMIN_USERS`, bare (`U123`) or qualified by platform (`slack:U123`, `discord:42`); they hold the
highest level everywhere. A missing fact is the lowest level.
"""

from __future__ import annotations

import enum
from collections.abc import Collection

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
}

# How each platform names the rights a level stands for, for refusals people can act on.
RIGHT_NAMES: dict[str, dict[Privilege, str]] = {
    "discord": {
        Privilege.CHANNEL_ADMIN: "Manage Channels on this channel, Manage Server or Administrator",
        Privilege.WORKSPACE_ADMIN: "Manage Server or Administrator",
    },
    "slack": {
        Privilege.CHANNEL_ADMIN: "a workspace admin or owner",
        Privilege.WORKSPACE_ADMIN: "a workspace admin or owner",
    },
}
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


def refusal(action: Action, platform: str) -> str:
    """What a user without the rights for `action` reads: what it needs, named as their platform names it."""
    level = required(action)
    rights = RIGHT_NAMES.get(platform, GENERIC_RIGHTS).get(level, GENERIC_RIGHTS[level])
    return f"`{action.value}` needs {rights}. Ask someone who has that, or the bot's operator."
