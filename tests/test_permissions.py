"""Who may do what: the level each action needs, whose level counts, and what a refused user reads."""

from __future__ import annotations

import pytest

from acechat.bots import console, discord_rules, slack_rules
from acechat.core.commands import Action
from acechat.core.permissions import Privilege, privilege_of, refusal, required

A = Action
P = Privilege

CHANNEL_ACTIONS = [A.PRESET_SET, A.PRESET_CLEAR, A.MODEL_SET, A.CHANNEL, A.ENGAGE, A.AUTOTHREAD, A.TOOLS_SET]
WORKSPACE_ACTIONS = [
    A.FEEDBACK,
    A.PRESET_DEFAULT,
    A.PRESET_CREATE,
    A.PRESET_EDIT,
    A.PRESET_DELETE,
    A.MODEL_DEFAULT,
    A.TOOLS_DEFAULT,
    A.AUDIT,
    A.ACCESS,
    A.ACCESS_DMS,
    A.USERS_ALLOW,
    A.USERS_DENY,
    A.USERS_REMOVE,
    A.USERS_LIST,
    A.QUOTA,
    A.USAGE,
    A.TRANSCRIPTS,
]


def test_each_action_needs_exactly_its_level() -> None:
    expected = dict.fromkeys(Action, P.MEMBER)
    expected.update(dict.fromkeys(CHANNEL_ACTIONS, P.CHANNEL_ADMIN))
    expected.update(dict.fromkeys(WORKSPACE_ACTIONS, P.WORKSPACE_ADMIN))
    assert {action: required(action) for action in Action} == expected
    assert required(A.ASK) is P.MEMBER


def test_levels_are_ordered() -> None:
    assert P.MEMBER < P.CHANNEL_ADMIN < P.WORKSPACE_ADMIN


@pytest.mark.parametrize(
    ("platform", "user_id", "reported", "configured", "level"),
    [
        ("slack", "U1", P.MEMBER, set(), P.MEMBER),
        ("slack", "U1", P.CHANNEL_ADMIN, set(), P.CHANNEL_ADMIN),
        ("slack", "U1", P.MEMBER, {"U1"}, P.WORKSPACE_ADMIN),
        ("slack", "U1", P.MEMBER, {"slack:U1"}, P.WORKSPACE_ADMIN),
        ("slack", "U1", P.CHANNEL_ADMIN, {"U2", "slack:U1"}, P.WORKSPACE_ADMIN),
        # A qualified entry counts on its own platform only, and only for that user.
        ("discord", "U1", P.MEMBER, {"slack:U1"}, P.MEMBER),
        ("slack", "U1", P.MEMBER, {"slack:U12", "U2", "U"}, P.MEMBER),
        ("discord", "42", P.MEMBER, {"discord:42"}, P.WORKSPACE_ADMIN),
    ],
)
def test_configured_admins_hold_the_top_level(
    platform: str, user_id: str, reported: Privilege, configured: set[str], level: Privilege
) -> None:
    assert privilege_of(platform, user_id, reported, configured) is level


@pytest.mark.parametrize(
    ("action", "platform", "text"),
    [
        (
            A.PRESET_SET,
            "discord",
            "`preset set` needs Manage Channels on this channel, Manage Server or Administrator. "
            "Ask someone who has that, or the bot's operator.",
        ),
        (
            A.AUDIT,
            "discord",
            "`audit` needs Manage Server or Administrator. Ask someone who has that, or the bot's operator.",
        ),
        (
            A.MODEL_SET,
            "slack",
            "`model set` needs a workspace admin or owner, the channel's creator or a member of the bot's "
            "admin user group. Ask someone who has that, or the bot's operator.",
        ),
        (
            A.PRESET_DELETE,
            "slack",
            "`preset delete` needs a workspace admin or owner. Ask someone who has that, or the bot's operator.",
        ),
        (
            A.PRESET_CLEAR,
            "console",
            "`preset clear` needs channel admin rights. Ask someone who has that, or the bot's operator.",
        ),
        (
            A.MODEL_DEFAULT,
            "console",
            "`model default` needs workspace admin rights. Ask someone who has that, or the bot's operator.",
        ),
    ],
)
def test_a_refusal_names_the_rights_as_the_platform_does(action: Action, platform: str, text: str) -> None:
    rules = {"discord": discord_rules.RULES, "slack": slack_rules.RULES, "console": console.RULES}[platform]
    assert refusal(action, rules.rights) == text
