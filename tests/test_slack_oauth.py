"""OAuth mode end to end: real slack-bolt (its install flow, authorization and listeners) over loopback,
against FakeSlack's `oauth.v2.access` and FakeUpstream, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import html
import json
import logging
import re
import signal
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import yaml
from cryptography.fernet import Fernet

from acechat.bots.adapter import StartupError
from acechat.bots.slack_bot import EVENTS_PATH, SlackAdapter
from acechat.bots.slack_oauth import BOT_SCOPES, INSTALL_PATH, REDIRECT_PATH
from acechat.bots.slack_settings import SlackOAuthSettings, SlackSettings
from acechat.core.chat import ChatCore
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from acechat.storage.installations import Installations, open_installations
from tests.fakes.slack import (
    APP_TOKEN,
    BOT_USER_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    SIGNING_SECRET,
    FakeSlack,
    sign,
)
from tests.fakes.upstream import FakeUpstream
from tests.processes import BotProcess, bot_environment, free_port
from tests.store_backends import _empty as empty_database
from tests.store_backends import pg_database

__all__ = ["pg_database"]  # fixtures

KEY = Fernet.generate_key().decode()
ROOT = Path(__file__).resolve().parents[1]


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest) -> str | None:
    """None for the SQLite file, else an emptied PostgreSQL database of this run."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_database")
    await empty_database(url)
    return url


@asynccontextmanager
async def installations(settings: Settings) -> AsyncIterator[Installations]:
    """The installations table, opened as another process (or `acechat installs`) would."""
    table = await open_installations(database_url=settings.database_url, db_path=settings.db_path)
    try:
        yield table
    finally:
        await table.close()


def oauth_settings(slack: FakeSlack, **overrides: object) -> SlackOAuthSettings:
    base = SlackOAuthSettings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        secret_keys=(KEY,),
        authorize_url=f"{slack.url}/oauth/v2/authorize",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def settings(
    tmp_path: Path, upstream_settings: UpstreamSettings, slack: FakeSlack, database: str | None
) -> Settings:
    return Settings(
        upstream=replace(upstream_settings, read_timeout=10.0),
        platforms={
            "slack": SlackSettings(
                bot_token="",
                signing_secret=SIGNING_SECRET,
                api_url=slack.api_url,
                port=0,
                oauth=oauth_settings(slack),
            )
        },
        db_path=tmp_path / "acechat.db",
        database_url=database,
        database_pool=4,
        user_rate=RateLimit(0, 60),
        channel_rate=RateLimit(0, 60),
        shutdown_grace=5.0,
    )


def slack_of(settings: Settings) -> SlackSettings:
    found = settings.platform("slack", SlackSettings)
    assert found is not None
    return found


def with_slack(settings: Settings, **changes: object) -> Settings:
    return replace(settings, platforms={"slack": replace(slack_of(settings), **changes)})  # type: ignore[arg-type]


@dataclass
class Bot:
    core: ChatCore
    adapter: SlackAdapter

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}"

    @property
    def url(self) -> str:
        return self.base + EVENTS_PATH


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Bot]:
    core = await ChatCore.open(settings)
    adapter = SlackAdapter(core, slack_of(settings), host="127.0.0.1")
    try:
        await adapter.start()
        yield Bot(core, adapter)
    finally:
        await adapter.close()
        await core.aclose()


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]


async def get(url: str, *, params: dict[str, str] | None = None, cookie: str | None = None) -> Page:
    headers = {"Cookie": cookie} if cookie else {}
    # No cookie jar: the test carries the state cookie itself, as a browser would.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(url, params=params, headers=headers, allow_redirects=False) as reply,
    ):
        return Page(reply.status, await reply.text(), dict(reply.headers))


async def start_install(base: str) -> tuple[str, str, str]:
    """Open the "Add to Slack" page: (the authorize link, its state, the browser's state cookie)."""
    page = await get(base + INSTALL_PATH)
    assert page.status == 200 and "Add to Slack" in page.text
    found = re.search(r'<a href="([^"]+)"', page.text)
    assert found is not None
    link = html.unescape(found.group(1))
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["state"][0]
    cookie = page.headers["Set-Cookie"].split(";")[0]
    return link, state, cookie


async def install(
    bot: Bot, slack: FakeSlack, team: str, *, org: str | None = None, org_install: bool = False
) -> Page:
    _, state, cookie = await start_install(bot.base)
    code = slack.grant(team, enterprise_id=org, org_install=org_install)
    return await get(bot.base + REDIRECT_PATH, params={"code": code, "state": state}, cookie=cookie)


def posts_in(slack: FakeSlack, channel: str) -> list[str]:
    """The tokens chat.postMessage was called with in `channel`."""
    return [c.token for c in slack.calls_to("chat.postMessage") if c.params.get("channel") == channel]


async def mention(
    bot: Bot,
    slack: FakeSlack,
    *,
    team: str,
    channel: str,
    org: str | None = None,
    thread_ts: str | None = None,
) -> str:
    """Mention the bot and wait for all it does about it; returns the mention's ts (its thread)."""
    payload = slack.mention(
        f"<@{BOT_USER_ID}> hello from {team}", channel=channel, team=team, org=org, thread_ts=thread_ts
    )
    assert (await slack.deliver_http(bot.url, payload)).status == 200
    await bot.adapter.transport.idle()
    return str(payload["event"]["ts"])


# --- the install pages -----------------------------------------------------------------------------


def test_the_install_asks_for_exactly_the_manifests_bot_scopes() -> None:
    manifest = yaml.safe_load((ROOT / "slack-manifest.yml").read_text())
    assert tuple(manifest["oauth_config"]["scopes"]["bot"]) == BOT_SCOPES


async def test_add_to_slack_links_to_slacks_authorize_page_with_the_scopes_and_a_state(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        link, state, cookie = await start_install(bot.base)
    parts = urllib.parse.urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{slack.url}/oauth/v2/authorize"
    query = urllib.parse.parse_qs(parts.query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == [",".join(BOT_SCOPES)]
    assert len(state) > 40 and cookie == f"slack-app-oauth-state={state}"


async def test_two_workspaces_install_and_each_is_answered_with_its_own_token(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    async with running(settings) as bot:
        for team in ("T1", "T2"):
            page = await install(bot, slack, team)
            assert page.status == 200, page.text
            assert "Thank you" in page.text or "successfully" in page.text.lower()
        [token1], [token2] = slack.tokens_of("T1"), slack.tokens_of("T2")
        assert token1 != token2
        thread = await mention(bot, slack, team="T1", channel="C1")
        await mention(bot, slack, team="T2", channel="C2")
        await mention(bot, slack, team="T1", channel="C1", thread_ts=thread)
    assert posts_in(slack, "C1") == [token1, token1]
    assert posts_in(slack, "C2") == [token2]
    # Every call the bot made for a workspace carried that workspace's token, and no other.
    assert not [c for c in slack.calls if c.token and c.token not in (token1, token2)]
    assert all(c.ok for c in slack.calls_to("chat.postMessage"))
    # Each workspace's thread has a conversation of its own: T2's question started one, and T1's
    # follow-up in its thread continued T1's.
    first, other, follow_up = fake_upstream.bodies
    assert first is not None and other is not None and follow_up is not None
    assert first.get("id") is None and other.get("id") is None
    assert follow_up["id"] in fake_upstream.conversations


async def test_an_org_wide_install_answers_every_workspace_of_the_org_with_the_orgs_token(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        page = await install(bot, slack, "T9", org="E1", org_install=True)
        assert page.status == 200, page.text
        [token] = slack.tokens_of("E1")
        await mention(bot, slack, team="T7", channel="C7", org="E1")
        await mention(bot, slack, team="T8", channel="C8", org="E1")
    assert posts_in(slack, "C7") == [token] and posts_in(slack, "C8") == [token]


# --- the state -----------------------------------------------------------------------------------


async def test_a_forged_foreign_or_reused_state_is_refused_with_no_token_exchange(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        redirect = bot.base + REDIRECT_PATH
        _, state, cookie = await start_install(bot.base)
        code = slack.grant("T1")
        # Forged: a state of the right shape that this deployment's key never signed.
        forged = Fernet(Fernet.generate_key()).encrypt(b"nonce").decode().rstrip("=")
        page = await get(
            redirect, params={"code": code, "state": forged}, cookie=f"slack-app-oauth-state={forged}"
        )
        assert page.status == 401
        # Another browser's: the state cookie is missing.
        page = await get(redirect, params={"code": code, "state": state})
        assert page.status == 400
        assert not slack.calls_to("oauth.v2.access")

        assert (await get(redirect, params={"code": code, "state": state}, cookie=cookie)).status == 200
        # The same state again, even with a fresh code: single use, across every process.
        again = await get(redirect, params={"code": slack.grant("T2"), "state": state}, cookie=cookie)
        assert again.status == 401
    assert len(slack.calls_to("oauth.v2.access")) == 1
    assert slack.tokens_of("T2") == []


async def test_a_state_older_than_ten_minutes_is_refused(settings: Settings, slack: FakeSlack) -> None:
    from acechat.core.secret_box import SecretBox

    async with running(settings) as bot:
        # Fernet's own timestamp, set eleven minutes back.
        old = Fernet(KEY).encrypt_at_time(b"nonce-old", int(time.time()) - 660).decode().rstrip("=")
        cookie = f"slack-app-oauth-state={old}"
        page = await get(
            bot.base + REDIRECT_PATH, params={"code": slack.grant("T1"), "state": old}, cookie=cookie
        )
        assert page.status == 401
        assert SecretBox([KEY]).open(old + "=" * (-len(old) % 4)) == "nonce-old"  # signed, only too old
    assert not slack.calls_to("oauth.v2.access")


# --- unknown workspaces, uninstalls --------------------------------------------------------------


async def test_a_workspace_without_an_installation_is_refused_quietly_and_logged_once(
    settings: Settings, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings) as bot:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                await mention(bot, slack, team="T404", channel="C1")
            command = slack.command("hello", team="T404")
            assert (await slack.deliver_http(bot.url, command)).status == 200
            await bot.adapter.transport.idle()
    assert not slack.calls_to("chat.postMessage") and not slack.responses
    noted = [r for r in caplog.records if "not installed" in r.getMessage()]
    assert len(noted) == 1 and "T404" in noted[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("event", ["app_uninstalled", "tokens_revoked"])
async def test_an_uninstall_deletes_that_workspaces_tokens_at_once(
    settings: Settings, slack: FakeSlack, event: str
) -> None:
    async with running(settings) as bot:
        await install(bot, slack, "T1")
        await install(bot, slack, "T2")
        await mention(bot, slack, team="T1", channel="C1")
        slack.uninstall("T1")
        body = {"type": event}
        if event == "tokens_revoked":
            body["tokens"] = {"oauth": [], "bot": [BOT_USER_ID]}  # type: ignore[assignment]
        assert (await slack.deliver_http(bot.url, slack.event(body, team="T1"))).status == 200
        await bot.adapter.transport.idle()
        await mention(bot, slack, team="T1", channel="C1")
        await mention(bot, slack, team="T2", channel="C2")
    async with installations(settings) as table:
        keys = [row.key for row in await table.all()]
        history = await table.history()
    assert keys == ["T2"]
    assert len(posts_in(slack, "C1")) == 1  # before the uninstall only
    assert len(posts_in(slack, "C2")) == 1
    assert not [c for c in slack.calls if c.reply.get("error") == "token_revoked"]
    assert history[0].key == "T1" and history[0].action == event.replace("app_", "")


# --- tokens at rest --------------------------------------------------------------------------------


async def test_the_database_holds_no_token_in_plain_text(
    settings: Settings, slack: FakeSlack, database: str | None
) -> None:
    slack.rotation = True
    async with running(settings) as bot:
        await install(bot, slack, "T1")
        await install(bot, slack, "T2", org="E2", org_install=True)
        await mention(bot, slack, team="T1", channel="C1")
    secrets = [t for t in slack.token_team if t.startswith("xox")] + list(slack._refresh)
    assert len(secrets) >= 4
    if database is None:
        conn = sqlite3.connect(settings.db_path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        raw = settings.db_path.read_bytes()
        assert b"xox" not in raw and b"T1" in raw
    else:
        conn2 = await asyncpg.connect(database)
        try:
            dump = repr(await conn2.fetch("SELECT * FROM installations")) + repr(
                await conn2.fetch("SELECT * FROM installation_log")
            )
        finally:
            await conn2.close()
        assert "T1" in dump and "xox" not in dump
    # Whatever was logged meanwhile is scrubbed too (see tests/test_secrets.py).


# --- token rotation ------------------------------------------------------------------------------


async def test_a_token_about_to_expire_is_refreshed_before_use(settings: Settings, slack: FakeSlack) -> None:
    slack.rotation = True
    slack.token_lifetime = 300  # under the ten minutes of margin: refreshed at the first use
    async with running(settings) as bot:
        await install(bot, slack, "T1")
        [first] = slack.tokens_of("T1")
        slack.token_lifetime = 43200
        await mention(bot, slack, team="T1", channel="C1")
        await mention(bot, slack, team="T1", channel="C1")
    async with installations(settings) as table:
        history = await table.history()
    refreshes = [
        c for c in slack.calls_to("oauth.v2.access") if c.params.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1
    newest = [t for t in slack.tokens_of("T1") if t != first]
    assert len(newest) == 1 and posts_in(slack, "C1") == newest * 2
    assert history[0].action == "refreshed"


# --- both transports -----------------------------------------------------------------------------


async def test_slacks_endpoint_check_is_answered_in_oauth_mode(settings: Settings) -> None:
    async with running(settings) as bot:
        body = json.dumps({"token": "t", "challenge": "c-9", "type": "url_verification"})
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                bot.url, data=body, headers={"Content-Type": "application/json", **sign(body)}
            ) as reply,
        ):
            assert reply.status == 200 and json.loads(await reply.text()) == {"challenge": "c-9"}


async def test_socket_mode_serves_the_install_pages_on_their_own_port(
    settings: Settings, slack: FakeSlack
) -> None:
    oauth = slack_of(settings).oauth
    assert oauth is not None
    port = free_port()
    socket_settings = with_slack(
        settings, app_token=APP_TOKEN, signing_secret=None, oauth=replace(oauth, install_port=port)
    )
    async with running(socket_settings) as bot:
        assert bot.adapter.port is None and bot.adapter.connected
        _, state, cookie = await start_install(f"http://127.0.0.1:{port}")
        code = slack.grant("T1")
        page = await get(
            f"http://127.0.0.1:{port}{REDIRECT_PATH}", params={"code": code, "state": state}, cookie=cookie
        )
        assert page.status == 200, page.text
        [token] = slack.tokens_of("T1")
        mentioned = slack.mention(f"<@{BOT_USER_ID}> over the socket", channel="C1", team="T1")
        await slack.wait_for_ack(await slack.deliver_socket(mentioned))
        await slack.wait_until(lambda: posts_in(slack, "C1"), 5)
        await bot.adapter.transport.idle()
    assert posts_in(slack, "C1") == [token]


async def test_acechat_run_in_socket_mode_serves_install_pages_on_the_health_port_and_logs_no_token(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack
) -> None:
    health_port = free_port()
    slack.rotation = True
    env = bot_environment(
        tmp_path,
        fake_upstream,
        slack,
        SLACK_BOT_TOKEN="",
        SLACK_SIGNING_SECRET="",
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_CLIENT_ID=CLIENT_ID,
        SLACK_CLIENT_SECRET=CLIENT_SECRET,
        ACECHAT_SECRET_KEY=KEY,
        SLACK_AUTHORIZE_URL=f"{slack.url}/oauth/v2/authorize",
        ACECHAT_HEALTH_PORT=str(health_port),
        ACECHAT_LOG_LEVEL="DEBUG",
    )
    bot = await BotProcess.start(tmp_path, "run", env, name="run-oauth")
    health = f"http://127.0.0.1:{health_port}"
    try:
        await bot.wait_for_port(health_port)
        assert (await get(health + "/healthz")).status == 200
        _, state, cookie = await start_install(health)
        page = await get(
            health + REDIRECT_PATH, params={"code": slack.grant("T1"), "state": state}, cookie=cookie
        )
        assert page.status == 200, page.text
        [token] = slack.tokens_of("T1")
        await slack.deliver_socket(slack.mention(f"<@{BOT_USER_ID}> hello", channel="C1", team="T1"))
        await slack.wait_until(lambda: posts_in(slack, "C1"), 10)
        assert await bot.stop(signal.SIGTERM) == 0
    finally:
        await bot.kill_if_running()
    assert posts_in(slack, "C1") == [token]
    assert "xox" not in bot.log and KEY not in bot.log and CLIENT_SECRET not in bot.log
    # slack_sdk logs oauth.v2.access's reply at DEBUG: the tokens in it were there, and were scrubbed.
    assert "[redacted]" in bot.log
    assert "installed workspace T1" in bot.log


# --- admin checks ----------------------------------------------------------------------------------


async def test_admin_rights_are_those_of_the_requests_own_workspace(
    settings: Settings, slack: FakeSlack
) -> None:
    slack.admins.add("UBOSS")
    slack.home_teams["UBOSS"] = "T2"  # an admin of T2, a guest (Slack Connect) in T1
    async with running(settings) as bot:
        await install(bot, slack, "T1")
        await install(bot, slack, "T2")
        [token1], [token2] = slack.tokens_of("T1"), slack.tokens_of("T2")
        for team in ("T2", "T1"):
            command = slack.command("preset set coder", user="UBOSS", team=team)
            assert (await slack.deliver_http(bot.url, command)).status == 200
            await bot.adapter.transport.idle()
    in_t2, in_t1 = (r.text for r in slack.responses)
    assert "needs a workspace admin" not in in_t2 and "needs a workspace admin or owner" in in_t1
    assert [c.token for c in slack.calls_to("users.info")] == [token2, token1]


async def test_an_org_wide_uninstall_deletes_the_orgs_tokens_and_a_user_token_revocation_keeps_the_bot(
    settings: Settings, slack: FakeSlack
) -> None:
    async with running(settings) as bot:
        await install(bot, slack, "T9", org="E1", org_install=True)
        await install(bot, slack, "T2")
        # Only people's tokens revoked (the app asks for none): the bot's installation stays.
        revoked = slack.event({"type": "tokens_revoked", "tokens": {"oauth": ["U1"], "bot": []}}, team="T2")
        await slack.deliver_http(bot.url, revoked)
        slack.uninstall("E1")
        uninstalled = slack.event({"type": "app_uninstalled"}, team="T7", org="E1")
        await slack.deliver_http(bot.url, uninstalled)
        await bot.adapter.transport.idle()
        await mention(bot, slack, team="T7", channel="C7", org="E1")
        await mention(bot, slack, team="T2", channel="C2")
    async with installations(settings) as table:
        assert [row.key for row in await table.all()] == ["T2"]
    assert posts_in(slack, "C7") == [] and posts_in(slack, "C2") == slack.tokens_of("T2")


async def test_socket_mode_without_a_port_for_the_install_pages_refuses_to_start(
    settings: Settings,
) -> None:
    socket_settings = replace(with_slack(settings, app_token=APP_TOKEN, signing_secret=None), health_port=0)
    with pytest.raises(StartupError) as refused:
        async with running(socket_settings):
            pass
    assert "ACECHAT_HEALTH_PORT" in str(refused.value) and "SLACK_INSTALL_PORT" in str(refused.value)


async def test_a_refused_refresh_keeps_the_token_until_it_expires_and_says_why(
    settings: Settings, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    slack.rotation = True
    slack.token_lifetime = 300
    async with running(settings) as bot:
        await install(bot, slack, "T1")
        [token] = slack.tokens_of("T1")
        slack._refresh.clear()  # Slack no longer knows the refresh token
        with caplog.at_level(logging.INFO):
            await mention(bot, slack, team="T1", channel="C1")
    assert posts_in(slack, "C1") == [token]
    [refused] = [
        c for c in slack.calls_to("oauth.v2.access") if c.params.get("grant_type") == "refresh_token"
    ]
    assert refused.reply["error"] == "invalid_refresh_token"
    assert any(
        "could not refresh the token of T1: invalid_refresh_token" in r.getMessage() for r in caplog.records
    )


async def test_check_online_in_oauth_mode_names_the_app_and_checks_the_app_token(
    settings: Settings, slack: FakeSlack
) -> None:
    from acechat.bots.slack_bot import verify

    assert await verify(settings) == f"Slack app {CLIENT_ID} in OAuth mode, HTTP mode"
    socket = with_slack(settings, app_token=APP_TOKEN, signing_secret=None)
    assert "Socket Mode (app-level token accepted)" in await verify(socket)
    assert [c.method for c in slack.calls] == ["apps.connections.open"]
