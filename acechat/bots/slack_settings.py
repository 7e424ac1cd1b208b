"""Slack's settings: declared for the loader, the docs and the log scrubber, and parsed here.

Light on purpose (no slack-bolt): the adapter registry imports it whatever runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from acechat.core.settings import Setting, SettingsGroup, SettingsReader

SETTINGS: tuple[Setting, ...] = (
    Setting("SLACK_BOT_TOKEN", secret=True),
    Setting("SLACK_APP_TOKEN", secret=True),
    Setting("SLACK_SIGNING_SECRET", secret=True),
    Setting("SLACK_PORT", "3000"),
    Setting("SLACK_COMMAND", "/aichat"),
    Setting("SLACK_API_URL"),
)

BOT_PREFIX = "xoxb-"
APP_PREFIX = "xapp-"
_WHERE_BOT = "copy the Bot User OAuth Token from the app's OAuth & Permissions page"
_WHERE_APP = "copy an app-level token (connections:write) from the app's Basic Information page"


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str
    # Socket Mode when set; otherwise HTTP mode, which needs the signing secret.
    app_token: str | None = None
    signing_secret: str | None = None
    api_url: str | None = None
    command: str = "/aichat"
    port: int = 3000


def token_problems(bot_token: str, app_token: str | None, signing_secret: str | None) -> list[str]:
    """Why these cannot be Slack's credentials, if they cannot; never showing a value."""
    if bot_token.startswith(APP_PREFIX) and (app_token or "").startswith(BOT_PREFIX):
        return ["SLACK_BOT_TOKEN and SLACK_APP_TOKEN are swapped: the xoxb- token is the bot token"]
    problems = []
    if not bot_token.startswith(BOT_PREFIX):
        kind = "an app-level token" if bot_token.startswith(APP_PREFIX) else "not a bot token"
        problems.append(f"SLACK_BOT_TOKEN is {kind} (a bot token starts with {BOT_PREFIX}): {_WHERE_BOT}")
    if app_token is not None and not app_token.startswith(APP_PREFIX):
        kind = "the bot token" if app_token.startswith(BOT_PREFIX) else "not an app-level token"
        problems.append(
            f"SLACK_APP_TOKEN is {kind} (an app-level token starts with {APP_PREFIX}): {_WHERE_APP}"
        )
    if signing_secret is not None and signing_secret.startswith(("xox", APP_PREFIX)):
        problems.append(
            "SLACK_SIGNING_SECRET is a token, not the signing secret: copy the Signing Secret from the app's "
            "Basic Information page"
        )
    return problems


def parse(r: SettingsReader) -> SlackSettings | None:
    bot_token = r.raw("SLACK_BOT_TOKEN")
    if bot_token is None:
        return None
    app_token = r.raw("SLACK_APP_TOKEN")
    signing_secret = r.raw("SLACK_SIGNING_SECRET")
    if app_token is None and signing_secret is None:
        r.fail(
            "SLACK_APP_TOKEN and SLACK_SIGNING_SECRET are both unset: set SLACK_APP_TOKEN for Socket Mode, "
            "or SLACK_SIGNING_SECRET for HTTP mode"
        )
    for problem in token_problems(bot_token, app_token, signing_secret):
        r.fail(problem)
    command = r.text("SLACK_COMMAND", "/aichat")
    if len(command) < 2 or not command.startswith("/") or any(c.isspace() for c in command):
        r.fail(f"SLACK_COMMAND={command!r} is invalid: expected a command like /aichat")
    api_url = r.url("SLACK_API_URL", None)
    return SlackSettings(
        bot_token=bot_token,
        app_token=app_token,
        signing_secret=signing_secret,
        api_url=None if api_url is None else api_url + "/",
        command=command,
        port=r.port("SLACK_PORT", 3000, minimum=1),
    )


GROUP = SettingsGroup("slack", SETTINGS, parse, enabled_by="SLACK_BOT_TOKEN")
