"""Slack's OAuth distribution: one deployment serving every workspace that installs the app.

Bolt's own pieces run the flow (`AsyncOAuthFlow`: the "Add to Slack" page at `/slack/install`, the
callback at `/slack/oauth_redirect`, `oauth.v2.access`); this module gives them acechat's storage:

- `SealedInstallations`, bolt's `AsyncInstallationStore` over `storage.installations`: tokens are
  sealed with ACECHAT_SECRET_KEY before they reach the database and opened only in memory; lookups are
  cached for a few seconds, so a busy workspace costs no query per request, while a removal made by
  another process takes effect within that time (its tokens are gone from the database at once).
- `SignedStates`, bolt's `AsyncOAuthStateStore`: a state is a Fernet token (signed and timestamped
  with the secret key) around a random nonce, valid for ten minutes and accepted once across every
  process (the nonce is recorded as used in the database).
- `InstalledWorkspaces`, bolt's `AsyncAuthorize`: each request gets its own workspace's token, refreshed
  first when token rotation is on and it is about to expire; only one process refreshes it.
- `unknown_workspace_gate`: a request from a workspace with no installation stops before bolt's
  authorization (which would log an error and tell the user to reinstall): refused quietly, and logged
  once per workspace.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.slack_settings import SlackOAuthSettings
from acechat.core.cache import LRU
from acechat.core.secret_box import SealedError, SecretBox
from acechat.storage.installations import (
    InstallationEvent,
    InstallationRow,
    Installations,
    describe,
    installation_key,
)

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
# The manifest's bot scopes (slack-manifest.yml; a test keeps the two equal).
BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "commands",
    "groups:history",
    "im:history",
    "mpim:history",
    "reactions:write",
    "users:read",
    "channels:read",
    "groups:read",
    "usergroups:read",
    "assistant:write",
)
STATE_SECONDS = 600
CACHE_SECONDS = 5.0
CACHE_SIZE = 10_000
# Refresh a rotating token this long before it expires: a request never goes out with a stale one.
REFRESH_BEFORE = 600.0
SEALED_FIELDS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token", "incoming_webhook_url")
OPEN_FIELDS = (
    "app_id",
    "enterprise_id",
    "enterprise_name",
    "enterprise_url",
    "team_id",
    "team_name",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "bot_token_expires_at",
    "user_id",
    "user_scopes",
    "user_token_expires_at",
    "incoming_webhook_channel",
    "incoming_webhook_channel_id",
    "incoming_webhook_configuration_url",
    "is_enterprise_install",
    "token_type",
    "installed_at",
)


def _field(installation: Installation, name: str) -> Any:
    value = getattr(installation, name)
    if name.endswith("_scopes") and isinstance(value, list):
        return ",".join(value)
    return value


@dataclass(frozen=True, slots=True)
class Found:
    """An installation as stored (its row, for compare and set) and opened."""

    row: InstallationRow
    installation: Installation


class SealedInstallations(AsyncInstallationStore):
    """Bolt's installation store over acechat's installations table, tokens sealed at rest."""

    def __init__(
        self,
        table: Installations,
        box: SecretBox,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self._box = box
        self._clock = clock
        self._cache: LRU[str, Found | None] = LRU(CACHE_SIZE)
        self._until: dict[str, float] = {}
        self._loading: dict[str, asyncio.Future[Found | None]] = {}
        # Saves and removals made through this process, per installation.
        self._changes: dict[str, int] = {}

    @property
    def logger(self) -> logging.Logger:
        return log

    # --- sealing ---------------------------------------------------------------------------------

    def row_of(self, installation: Installation, *, now: float) -> InstallationRow:
        opened = {name: _field(installation, name) for name in OPEN_FIELDS}
        sealed = {name: getattr(installation, name) for name in SEALED_FIELDS}
        return InstallationRow(
            key=installation_key(
                installation.enterprise_id, installation.team_id, bool(installation.is_enterprise_install)
            ),
            enterprise_id=installation.enterprise_id,
            team_id=installation.team_id,
            is_enterprise_install=bool(installation.is_enterprise_install),
            data=json.dumps(opened, sort_keys=True),
            sealed=self._box.seal(json.dumps(sealed, sort_keys=True)),
            expires_at=installation.bot_token_expires_at,
            installed_at=now,
            updated_at=now,
        )

    def open(self, row: InstallationRow) -> Installation:
        fields: dict[str, Any] = json.loads(row.data)
        fields.update(json.loads(self._box.open(row.sealed)))
        fields["bot_token_expires_at"] = row.expires_at and int(row.expires_at)
        return Installation(**fields)

    # --- lookups ---------------------------------------------------------------------------------

    async def lookup(
        self, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None
    ) -> Found | None:
        """The installation serving a request: the org-wide one for an org-wide install's requests,
        else the workspace's own, else (a workspace of an org) the org-wide one."""
        keys = [installation_key(enterprise_id, team_id, bool(is_enterprise_install))]
        if enterprise_id and enterprise_id not in keys:
            keys.append(enterprise_id)
        for key in keys:
            if key and (found := await self.cached(key)) is not None:
                return found
        return None

    async def cached(self, key: str) -> Found | None:
        now = self._clock()
        if key in self._cache and self._until.get(key, 0.0) > now:
            return self._cache.get(key)
        # A burst from one workspace meeting an empty cache makes one query, not one per request.
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key, self._changes.get(key, 0)))
            loading.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(loading)

    def _loaded(self, key: str, done: asyncio.Future[Found | None]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]

    async def _load(self, key: str, change: int) -> Found | None:
        row = await self.table.get(key)
        now = self._clock()
        found = None
        if row is not None:
            try:
                found = Found(row, self.open(row))
            except SealedError:
                log.error(
                    "slack: the installation of %s cannot be opened with ACECHAT_SECRET_KEY "
                    "(a key was dropped before `acechat installs rekey`?): reinstall the app there",
                    key,
                )
        if self._changes.get(key, 0) != change:
            return found  # changed here while this read ran: not cached, the next lookup reads again
        self._cache.put(key, found)
        self._until[key] = now + CACHE_SECONDS
        if len(self._until) > 2 * CACHE_SIZE:
            self._until = {k: t for k, t in self._until.items() if k in self._cache}
        return found

    def forget(self, key: str) -> None:
        self._cache.pop(key)
        self._until.pop(key, None)
        # A read already under way may predate the change: the next lookup reads again.
        self._loading.pop(key, None)
        self._changes[key] = self._changes.get(key, 0) + 1

    # --- bolt's interface ------------------------------------------------------------------------

    async def async_save(self, installation: Installation) -> None:
        now = time.time()
        row = self.row_of(installation, now=now)
        await self.table.put(row, event=InstallationEvent(row.key, "installed", describe(row), now))
        self.forget(row.key)
        log.info("slack: installed %s", describe(row))

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        found = await self.lookup(enterprise_id, team_id, is_enterprise_install)
        if found is None or (user_id is not None and found.installation.user_id != user_id):
            return None
        return found.installation

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False
    ) -> Bot | None:
        found = await self.lookup(enterprise_id, team_id, is_enterprise_install)
        return None if found is None else found.installation.to_bot()

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        await self.remove(installation_key(enterprise_id, team_id, team_id is None), "removed", "")

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.remove(installation_key(enterprise_id, team_id, team_id is None), "removed", "")

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.remove(installation_key(enterprise_id, team_id, team_id is None), "removed", "")

    async def remove(self, key: str, action: str, detail: str) -> bool:
        """Delete the installation's tokens at once and log why; True if there was one."""
        removed = await self.table.delete(key, event=InstallationEvent(key, action, detail, time.time()))
        self.forget(key)
        return removed


class SignedStates(AsyncOAuthStateStore):
    """OAuth states signed and timestamped with the secret key, each accepted once."""

    def __init__(self, table: Installations, box: SecretBox) -> None:
        self._table = table
        self._box = box

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        # Fernet's padding would need escaping in a URL and a cookie; it is put back on the way in.
        return self._box.seal(secrets.token_urlsafe(16)).rstrip("=")

    async def async_consume(self, state: str) -> bool:
        if not state or len(state) > 1000:
            return False
        try:
            nonce = self._box.open(state + "=" * (-len(state) % 4), ttl=STATE_SECONDS)
        except SealedError:
            log.info("slack: an install came back with a state that is forged or over ten minutes old")
            return False
        if not await self._table.consume_state(nonce, time.time() + STATE_SECONDS):
            log.info("slack: an install came back with a state already used: refused")
            return False
        return True


class InstalledWorkspaces(AsyncAuthorize):
    """Each request authorized with its own workspace's bot token (from its installation)."""

    def __init__(
        self, store: SealedInstallations, client: AsyncWebClient, *, client_id: str, client_secret: str
    ) -> None:
        self._store = store
        self._rotator = AsyncTokenRotator(client_id=client_id, client_secret=client_secret, client=client)

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        found = await self._store.lookup(enterprise_id, team_id, context.is_enterprise_install)
        if found is None:
            return None
        installation = await self.fresh(found)
        if installation is None:
            return None
        context["installation_key"] = found.row.key
        return AuthorizeResult(
            enterprise_id=installation.enterprise_id,
            team_id=installation.team_id or team_id,
            team=installation.team_name,
            url=installation.enterprise_url,
            bot_user_id=installation.bot_user_id,
            bot_id=installation.bot_id,
            bot_token=installation.bot_token,
            bot_scopes=installation.bot_scopes,
            user_id=user_id,
        )

    async def fresh(self, found: Found) -> Installation | None:
        """The installation with a token good for a while yet: refreshed (by one process at a time,
        the others then reading its result) when token rotation is on and it expires soon."""
        expires = found.row.expires_at
        if expires is None or expires - time.time() > REFRESH_BEFORE:
            return found.installation
        key = found.row.key
        async with self._store.table.refreshing(key):
            self._store.forget(key)
            current = await self._store.cached(key)
            if current is None:
                return None
            expires = current.row.expires_at
            if expires is None or expires - time.time() > REFRESH_BEFORE:
                return current.installation  # another process refreshed it while this one waited
            return await self._refresh(current)

    async def _refresh(self, current: Found) -> Installation | None:
        key = current.row.key
        try:
            bot = await self._rotator.perform_bot_token_rotation(
                bot=current.installation.to_bot(), minutes_before_expiration=int(REFRESH_BEFORE // 60)
            )
        except SlackTokenRotationError as error:
            log.error(
                "slack: could not refresh the token of %s: %s", key, error.api_error.response.get("error")
            )
            # Still good until it expires; past that, nothing can be done but a reinstall.
            return current.installation if (current.row.expires_at or 0) > time.time() else None
        if bot is None:  # Slack answered with something other than a bot token
            return current.installation
        # A copy: requests under way keep the installation they were given.
        installation = copy.copy(current.installation)
        installation.bot_token = bot.bot_token
        installation.bot_refresh_token = bot.bot_refresh_token
        installation.bot_token_expires_at = bot.bot_token_expires_at
        refreshed = self._store.row_of(installation, now=time.time())
        lifetime = int((bot.bot_token_expires_at or 0) - time.time())
        written = await self._store.table.replace(
            key,
            current.row.version,
            sealed=refreshed.sealed,
            expires_at=refreshed.expires_at,
            event=InstallationEvent(key, "refreshed", f"expires in {lifetime} s", time.time()),
        )
        self._store.forget(key)
        if not written:
            # Removed (or rewritten by a reinstall) meanwhile: what is stored now wins.
            found = await self._store.cached(key)
            return None if found is None else found.installation
        log.info("slack: refreshed the token of %s", key)
        return installation


def unknown_workspace_gate(
    store: SealedInstallations,
) -> Callable[..., Awaitable[BoltResponse]]:
    """Bolt middleware run before authorization: requests from workspaces without an installation end
    here, answered with nothing, each workspace logged once."""
    logged: LRU[str, bool] = LRU(CACHE_SIZE)

    async def gate(
        req: AsyncBoltRequest, context: AsyncBoltContext, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse:
        body = req.body if isinstance(req.body, Mapping) else {}
        event = body.get("event")
        # Slack's endpoint check has no workspace; a removal must reach its listener even after the fact.
        if body.get("type") == "url_verification" or (
            isinstance(event, Mapping) and event.get("type") in ("app_uninstalled", "tokens_revoked")
        ):
            return await next()
        found = await store.lookup(context.enterprise_id, context.team_id, context.is_enterprise_install)
        if found is not None:
            return await next()
        who = f"{context.enterprise_id or '-'}/{context.team_id or '-'}"
        if who not in logged:
            logged.put(who, True)
            log.warning("slack: a request from %s, where the app is not installed: ignored", who)
        return BoltResponse(status=200, body="")

    return gate


def oauth_flow(
    settings: SlackOAuthSettings, store: SealedInstallations, states: SignedStates, client: AsyncWebClient
) -> AsyncOAuthFlow:
    """Bolt's install flow with acechat's stores and the manifest's bot scopes (no user scopes)."""
    return AsyncOAuthFlow(
        client=client,
        logger=log,
        settings=AsyncOAuthSettings(
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            scopes=list(BOT_SCOPES),
            user_scopes=[],
            redirect_uri=settings.redirect_uri,
            authorization_url=settings.authorize_url,
            installation_store=store,
            installation_store_bot_only=True,
            state_store=states,
            state_expiration_seconds=STATE_SECONDS,
            logger=log,
        ),
    )


def _reply(reply: BoltResponse) -> web.Response:
    response = web.Response(status=reply.status, text=reply.body)
    for name, values in reply.headers.items():
        for value in values:
            if name.lower() == "content-type":
                response.content_type = value.split(";")[0]
            else:
                response.headers.add(name, value)
    return response


def install_routes(flow: AsyncOAuthFlow) -> list[web.RouteDef]:
    """`/slack/install` and `/slack/oauth_redirect`, served by bolt's flow."""

    def bolt_request(request: web.Request) -> AsyncBoltRequest:
        headers: dict[str, str | Sequence[str]] = {k: request.headers.getall(k) for k in request.headers}
        return AsyncBoltRequest(body="", query=request.query_string, headers=headers)

    async def install(request: web.Request) -> web.Response:
        return _reply(await flow.handle_installation(bolt_request(request)))

    async def callback(request: web.Request) -> web.Response:
        return _reply(await flow.handle_callback(bolt_request(request)))

    return [web.get(flow.install_path, install), web.get(flow.redirect_uri_path, callback)]
