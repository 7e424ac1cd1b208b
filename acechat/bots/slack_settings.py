"""Slack's settings: declared for the loader, the docs and the log scrubber, and parsed here.

Light on purpose (no slack-bolt): the adapter registry imports it whatever runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from acechat.core.secret_box import KEYGEN_HINT, SecretKeyError, parse_keys
from acechat.core.settings import Setting, SettingsGroup, SettingsReader

SETTINGS: tuple[Setting, ...] = (
    Setting("SLACK_BOT_TOKEN", secret=True),
    Setting("SLACK_APP_TOKEN", secret=True),
    Setting("SLACK_SIGNING_SECRET", secret=True),
    Setting("SLACK_PORT", "3000"),
    Setting("SLACK_COMMAND", "/aichat"),
    Setting("SLACK_API_URL"),
    Setting("ACECHAT_SLACK_ADMIN_GROUP"),
    # Whether the app acts as an agent (issue 18: threads are agent sessions with Slack's own Stop): auto
    # (where its token carries the assistant:write Slack adds to agents), true or false.
    Setting("SLACK_AGENT", "auto"),
    # OAuth mode (many workspaces): instead of SLACK_BOT_TOKEN.
    Setting("SLACK_CLIENT_ID"),
    Setting("SLACK_CLIENT_SECRET", secret=True),
    # With ACECHAT_SECRET_KEY, declared with the core's settings.
    Setting("SLACK_REDIRECT_URI"),
    Setting("SLACK_INSTALL_PORT"),
    Setting("SLACK_AUTHORIZE_URL"),
)
AUTHORIZE_URL = "https://slack.com/oauth/v2/authorize"
# The scope Slack adds to an app declared an agent (`features.agent_view`): with SLACK_AGENT=auto, a
# workspace whose bot token carries it is served as an agent.
AGENT_SCOPE = "assistant:write"

BOT_PREFIX = "xoxb-"
APP_PREFIX = "xapp-"
_WHERE_BOT = "copy the Bot User OAuth Token from the app's OAuth & Permissions page"
_WHERE_APP = "copy an app-level token (connections:write) from the app's Basic Information page"


@dataclass(frozen=True)
class SlackOAuthSettings:
    """Distribution to many workspaces: Slack's OAuth install flow, tokens sealed at rest."""

    client_id: str
    client_secret: str
    # Fernet keys, the first sealing and every one opening (see core.secret_box).
    secret_keys: tuple[str, ...]
    redirect_uri: str | None = None
    # Socket Mode serves the install pages here; 0 means on the health port.
    install_port: int = 0
    # Where the authorize link points (Slack's own unless a proxy or a test says otherwise).
    authorize_url: str = AUTHORIZE_URL


@dataclass(frozen=True)
class SlackSettings:
    # Empty in OAuth mode, where every workspace's token comes from its installation.
    bot_token: str
    # Socket Mode when set; otherwise HTTP mode, which needs the signing secret.
    app_token: str | None = None
    signing_secret: str | None = None
    api_url: str | None = None
    command: str = "/aichat"
    port: int = 3000
    # Members of this user group (id or handle) hold channel-level rights in every channel (issue 17).
    admin_group: str | None = None
    oauth: SlackOAuthSettings | None = None
    # The app acts as an agent (Slack's agent messaging experience: threads get agent sessions): always,
    # never, or None where the workspace's bot token carries AGENT_SCOPE (Slack adds it to apps declared
    # agents, docs.slack.dev "Agent sessions").
    agent: bool | None = None


def token_problems(bot_token: str, app_token: str | None, signing_secret: str | None) -> list[str]:
    """Why these cannot be Slack's credentials, if they cannot; never showing a value. An empty bot
    token is OAuth mode's (none of its own)."""
    if bot_token.startswith(APP_PREFIX) and (app_token or "").startswith(BOT_PREFIX):
        return ["SLACK_BOT_TOKEN and SLACK_APP_TOKEN are swapped: the xoxb- token is the bot token"]
    problems = []
    if bot_token and not bot_token.startswith(BOT_PREFIX):
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


def _oauth(r: SettingsReader, bot_token: str | None) -> SlackOAuthSettings | None:
    """OAuth mode's settings when SLACK_CLIENT_ID is set; each is read either way, so that a bad one is
    reported whatever the mode. A missing or invalid secret key is one clear line."""
    client_id = r.raw("SLACK_CLIENT_ID")
    client_secret = r.raw("SLACK_CLIENT_SECRET")
    raw_key = r.raw("ACECHAT_SECRET_KEY")
    redirect_uri = r.url("SLACK_REDIRECT_URI", None)
    install_port = r.port("SLACK_INSTALL_PORT", 0)
    authorize_url = r.url("SLACK_AUTHORIZE_URL", None) or AUTHORIZE_URL
    keys: tuple[str, ...] = ()
    if raw_key is not None:
        try:
            keys = parse_keys(raw_key)
            r.secrets.extend(k for k in keys if k not in r.secrets)  # each key alone is a secret too
        except SecretKeyError as error:
            r.fail(str(error))
    if client_id is None:
        return None
    if bot_token is not None:
        r.fail(
            "SLACK_BOT_TOKEN and SLACK_CLIENT_ID are both set: set SLACK_BOT_TOKEN for one workspace, "
            "or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install into many"
        )
    if client_secret is None:
        r.fail("SLACK_CLIENT_SECRET is not set: OAuth mode needs the app's client secret (Basic Information)")
    if raw_key is None:
        r.fail(
            f"ACECHAT_SECRET_KEY is not set: OAuth mode stores every workspace's token sealed with it; {KEYGEN_HINT}"
        )
    return SlackOAuthSettings(
        client_id=client_id,
        client_secret=client_secret or "",
        secret_keys=keys,
        redirect_uri=redirect_uri,
        install_port=install_port,
        authorize_url=authorize_url,
    )


def parse(r: SettingsReader) -> SlackSettings | None:
    bot_token = r.raw("SLACK_BOT_TOKEN")
    oauth = _oauth(r, bot_token)
    if bot_token is None and oauth is None:
        return None
    app_token = r.raw("SLACK_APP_TOKEN")
    signing_secret = r.raw("SLACK_SIGNING_SECRET")
    if app_token is None and signing_secret is None:
        r.fail(
            "SLACK_APP_TOKEN and SLACK_SIGNING_SECRET are both unset: set SLACK_APP_TOKEN for Socket Mode, "
            "or SLACK_SIGNING_SECRET for HTTP mode"
        )
    for problem in token_problems(bot_token or "", app_token, signing_secret):
        r.fail(problem)
    command = r.text("SLACK_COMMAND", "/aichat")
    if len(command) < 2 or not command.startswith("/") or any(c.isspace() for c in command):
        r.fail(f"SLACK_COMMAND={command!r} is invalid: expected a command like /aichat")
    api_url = r.url("SLACK_API_URL", None)
    return SlackSettings(
        bot_token="" if oauth is not None else bot_token or "",
        app_token=app_token,
        signing_secret=signing_secret,
        api_url=None if api_url is None else api_url + "/",
        admin_group=r.raw("ACECHAT_SLACK_ADMIN_GROUP"),
        command=command,
        port=r.port("SLACK_PORT", 3000, minimum=1),
        oauth=oauth,
        agent=None if (r.raw("SLACK_AGENT") or "auto").lower() == "auto" else r.boolean("SLACK_AGENT", False),
    )


GROUP = SettingsGroup("slack", SETTINGS, parse, enabled_by="SLACK_BOT_TOKEN")
