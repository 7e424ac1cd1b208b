"""What the core and the logs must know of Slack: what pings, what its rights are called, and which of
slack-bolt's lines are noise. Light on purpose (no slack-bolt): the adapter registry imports it."""

from __future__ import annotations

import re

from acechat.core.logs import Unwanted
from acechat.core.permissions import Privilege
from acechat.core.platform import ZWJ, ZWSP, MentionRule, MentionRules, PlatformRules

DEFAULT_COMMAND = "/aichat"

MENTIONS = MentionRules(
    (
        # <!channel>, <!here>, <!everyone> (with an optional label) read as "@channel" and ping no one.
        MentionRule(
            "<",
            re.compile(r"<!(channel|here|everyone)(?:\|[^<>\n]{0,64})?>", re.IGNORECASE),
            lambda m: f"@{ZWJ}{m.group(1)}",
        ),
        # A user group <!subteam^S123|@oncall> reads as "@oncall".
        MentionRule(
            "<",
            re.compile(r"<!subteam\^[A-Za-z0-9]+(?:\|@?([^<>\n]{1,64}))?>", re.IGNORECASE),
            lambda m: f"@{ZWJ}{m.group(1) or 'group'}",
        ),
        # Plain @here, @channel and @everyone ping where a message is posted with link_names.
        MentionRule("@", re.compile(r"@(?=everyone|here|channel)", re.IGNORECASE), lambda _: "@" + ZWSP),
        # Whatever the full tokens above missed: <@U123>, and broken or overlong <!channel...
        MentionRule(
            "<",
            re.compile(r"<(?=@[!&]?[A-Za-z0-9]|!(?:channel|here|everyone|subteam))", re.IGNORECASE),
            lambda _: "<" + ZWSP,
        ),
    )
)

RIGHTS = {
    Privilege.CHANNEL_ADMIN: (
        "a workspace admin or owner, the channel's creator or a member of the bot's admin user group"
    ),
    Privilege.WORKSPACE_ADMIN: "a workspace admin or owner",
}


def rules_for(command: str) -> PlatformRules:
    """Slack's rules with the app's slash command (SLACK_COMMAND) in what they tell people: a mention is
    a question, and everything else, questions too, goes through the command."""
    return PlatformRules(
        "slack",
        MENTIONS,
        rights=RIGHTS,
        asking=f"mention me with your question, or use `{command}` and your question",
        commands=f"`{command} help` lists my commands.",
    )


RULES = rules_for(DEFAULT_COMMAND)

NOISY_LOGGERS = ("slack_bolt", "slack_sdk")
UNWANTED = (
    # bolt reads SLACK_BOT_TOKEN from the environment by itself; the adapter authorizes with the same
    # token, so the one bolt found is rightly unused.
    Unwanted("slack_bolt", "As you gave `client` as well, `token` will be unused."),
    Unwanted("slack_bolt", "As `installation_store` or `authorize` has been used, `token`"),
)
