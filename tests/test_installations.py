"""The installations contract, unchanged against the SQLite file and a real PostgreSQL server; sealing,
rekeying, and a token refresh raced by two processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.web.async_client import AsyncWebClient

from acechat.bots.installs_cli import rekey
from acechat.bots.slack_oauth import CACHE_SECONDS, InstalledWorkspaces, SealedInstallations, SignedStates
from acechat.core.secret_box import SealedError, SecretBox
from acechat.storage.installations import (
    InstallationEvent,
    InstallationRow,
    Installations,
    installation_key,
    open_installations,
)
from acechat.storage.installations_postgres import copy_installations
from tests.fakes.slack import CLIENT_ID, CLIENT_SECRET, FakeSlack
from tests.store_backends import _empty as empty_database
from tests.store_backends import pg_database

__all__ = ["pg_database"]  # fixtures

NOW = 1_800_000_000.0
KEY = Fernet.generate_key().decode()


@pytest_asyncio.fixture(params=["sqlite", "postgresql"])
async def where(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str | None, Path]]:
    """(database URL or None, SQLite path) of an empty database."""
    if request.param == "sqlite":
        yield None, tmp_path / "data" / "acechat.db"
        return
    url: str = request.getfixturevalue("pg_database")
    await empty_database(url)
    yield url, tmp_path / "unused.db"


@pytest_asyncio.fixture
async def table(where: tuple[str | None, Path]) -> AsyncIterator[Installations]:
    opened = await open_installations(database_url=where[0], db_path=where[1])
    yield opened
    await opened.close()


def row(key: str = "T1", sealed: str = "sealed-1", *, expires_at: float | None = None) -> InstallationRow:
    return InstallationRow(key, None, key, False, '{"team_name": "One"}', sealed, expires_at, NOW, NOW)


def event(key: str = "T1", action: str = "installed") -> InstallationEvent:
    return InstallationEvent(key, action, "why", NOW)


# --- the contract ----------------------------------------------------------------------------------


async def test_put_get_all_and_a_reinstall_keeps_the_first_install_time(table: Installations) -> None:
    assert await table.get("T1") is None and await table.all() == []
    assert await table.put(row(), event=event()) == 1
    later = InstallationRow("T1", None, "T1", False, "{}", "sealed-2", None, NOW + 50, NOW + 50)
    assert await table.put(later, event=event()) == 2
    await table.put(row("T2"), event=event("T2"))
    got = await table.get("T1")
    assert (
        got is not None
        and got.sealed == "sealed-2"
        and got.installed_at == NOW
        and got.updated_at == NOW + 50
    )
    assert got.version == 2
    assert [r.key for r in await table.all()] == ["T1", "T2"]


async def test_replace_writes_only_over_the_version_it_read(table: Installations) -> None:
    await table.put(row(), event=event())
    assert await table.replace("T1", 1, sealed="new", expires_at=NOW + 10, event=event(action="refreshed"))
    # A second writer that read version 1 too loses: what the first wrote stays.
    assert not await table.replace("T1", 1, sealed="other", expires_at=None, event=event(action="refreshed"))
    got = await table.get("T1")
    assert got is not None and (got.sealed, got.expires_at, got.version) == ("new", NOW + 10, 2)
    assert not await table.replace("T9", 1, sealed="x", expires_at=None, event=event("T9"))


async def test_delete_removes_the_row_and_every_change_is_logged(table: Installations) -> None:
    await table.put(row(), event=event())
    assert await table.delete("T1", event=event(action="uninstalled"))
    assert not await table.delete("T1", event=event(action="removed"))
    assert await table.get("T1") is None
    assert [e.action for e in await table.history()] == ["removed", "uninstalled", "installed"]
    assert [e.action for e in await table.history(limit=1)] == ["removed"]


async def test_a_state_nonce_is_accepted_once(table: Installations) -> None:
    assert await table.consume_state("n1", time.time() + 600)
    assert not await table.consume_state("n1", time.time() + 600)
    assert await table.consume_state("n2", time.time() + 600)


async def test_a_second_process_shares_installations_and_states(
    table: Installations, where: tuple[str | None, Path]
) -> None:
    other = await open_installations(database_url=where[0], db_path=where[1])
    try:
        await table.put(row(), event=event())
        got = await other.get("T1")
        assert got is not None and got.sealed == "sealed-1"
        assert await table.consume_state("n1", time.time() + 600)
        assert not await other.consume_state("n1", time.time() + 600)
    finally:
        await other.close()


async def test_refreshing_lets_one_holder_in_at_a_time(table: Installations) -> None:
    inside: list[int] = []
    most = 0

    async def hold() -> None:
        nonlocal most
        async with table.refreshing("T1"):
            inside.append(1)
            most = max(most, len(inside))
            await asyncio.sleep(0.02)
            inside.pop()

    await asyncio.gather(*(hold() for _ in range(4)))
    assert most == 1


def test_an_org_wide_install_is_keyed_by_its_org() -> None:
    assert installation_key("E1", None, True) == "E1"
    assert installation_key("E1", "T1", False) == "T1"
    assert installation_key(None, "T1", False) == "T1"


# --- sealing ---------------------------------------------------------------------------------------


def installation(token: str, refresh: str | None = None, expires_at: int | None = None) -> Installation:
    return Installation(
        app_id="A1",
        team_id="T1",
        team_name="One",
        bot_token=token,
        bot_id="B1",
        bot_user_id="UBOT",
        bot_scopes="chat:write,commands",
        bot_refresh_token=refresh,
        bot_token_expires_at=expires_at,
        user_id="U1",
        installed_at=NOW,
    )


async def test_tokens_are_sealed_in_the_row_and_opened_whole(table: Installations) -> None:
    store = SealedInstallations(table, SecretBox([KEY]))
    await store.async_save(installation("xoxb-secret-1", "xoxe-1-refresh", int(NOW)))
    [stored] = await table.all()
    assert "xox" not in stored.sealed + stored.data
    found = await store.async_find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert (found.bot_token, found.bot_refresh_token, found.bot_token_expires_at) == (
        "xoxb-secret-1",
        "xoxe-1-refresh",
        int(NOW),
    )
    assert found.bot_scopes == ["chat:write", "commands"] and found.bot_user_id == "UBOT"
    bot = await store.async_find_bot(enterprise_id=None, team_id="T1")
    assert bot is not None and bot.bot_token == "xoxb-secret-1"
    await store.async_delete_all(enterprise_id=None, team_id="T1")
    assert await store.async_find_installation(enterprise_id=None, team_id="T1") is None


async def test_rekey_reseals_with_the_new_key_so_the_old_one_can_go(table: Installations) -> None:
    old, new = KEY, Fernet.generate_key().decode()
    await SealedInstallations(table, SecretBox([old])).async_save(installation("xoxb-a"))
    done = await rekey(table, SecretBox([new, old]))
    assert done.resealed == 1 and done.unreadable == []
    found = await SealedInstallations(table, SecretBox([new])).async_find_installation(
        enterprise_id=None, team_id="T1"
    )
    assert found is not None and found.bot_token == "xoxb-a"
    [stored] = await table.all()
    with pytest.raises(SealedError):
        SecretBox([old]).open(stored.sealed)
    # An installation no key opens is reported, and left for a reinstall.
    assert (await rekey(table, SecretBox([Fernet.generate_key().decode()]))).unreadable == ["T1"]


async def test_a_state_is_signed_single_use_and_refused_when_altered(table: Installations) -> None:
    states = SignedStates(table, SecretBox([KEY]))
    state = await states.async_issue()
    assert "=" not in state
    tampered = state[:-2] + ("A" if state[-2] != "A" else "B") + state[-1]
    assert not await states.async_consume(tampered)
    assert await states.async_consume(state)
    assert not await states.async_consume(state)
    assert not await states.async_consume("")
    assert not await states.async_consume("x" * 5000)


# --- token rotation raced by two processes ---------------------------------------------------------


async def test_two_processes_refreshing_at_once_exchange_the_refresh_token_once(
    pg_database: str, tmp_path: Path
) -> None:
    """PostgreSQL only: a SQLite file serves one process, whose refresh lock is in memory (tested above)."""
    where = (pg_database, tmp_path / "unused.db")
    async with FakeSlack() as slack, aiohttp.ClientSession() as session:
        slack.rotation = True
        slack.token_lifetime = 60  # well inside the margin: due now
        client = AsyncWebClient(base_url=slack.api_url, session=session)
        granted = await client.oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=slack.grant("T1")
        )
        slack.token_lifetime = 43200
        processes = [await open_installations(database_url=where[0], db_path=where[1]) for _ in range(2)]
        try:
            stores = [SealedInstallations(p, SecretBox([KEY])) for p in processes]
            await stores[0].async_save(
                installation(
                    granted["access_token"],
                    granted["refresh_token"],
                    int(time.time()) + int(granted["expires_in"]),
                )
            )
            authorizers = [
                InstalledWorkspaces(s, client, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
                for s in stores
            ]
            found = [await s.lookup(None, "T1", False) for s in stores]
            assert found[0] is not None and found[1] is not None
            fresh = await asyncio.gather(authorizers[0].fresh(found[0]), authorizers[1].fresh(found[1]))
        finally:
            for p in processes:
                await p.close()
    refreshes = [
        c for c in slack.calls_to("oauth.v2.access") if c.params.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1 and refreshes[0].ok
    assert fresh[0] is not None and fresh[1] is not None
    assert fresh[0].bot_token == fresh[1].bot_token == refreshes[0].reply["access_token"]


async def test_a_removal_by_another_process_takes_effect_once_the_short_cache_lapses(
    table: Installations, where: tuple[str | None, Path]
) -> None:
    now = [0.0]
    store = SealedInstallations(table, SecretBox([KEY]), clock=lambda: now[0])
    await store.async_save(installation("xoxb-cached"))
    assert await store.lookup(None, "T1", False) is not None
    other = await open_installations(database_url=where[0], db_path=where[1])
    try:
        assert await other.delete("T1", event=event(action="removed"))
    finally:
        await other.close()
    # Cached: a busy workspace costs no query per request...
    assert await store.lookup(None, "T1", False) is not None
    # ...and another process's removal is seen within CACHE_SECONDS.
    now[0] += CACHE_SECONDS + 0.1
    assert await store.lookup(None, "T1", False) is None


class Counting:
    """An installations table that counts its reads."""

    def __init__(self, table: Installations) -> None:
        self.table = table
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.table, name)

    async def get(self, key: str) -> InstallationRow | None:
        self.reads += 1
        await asyncio.sleep(0.01)
        return await self.table.get(key)


async def test_a_burst_meeting_an_empty_cache_reads_once_and_a_save_meanwhile_is_not_hidden(
    table: Installations,
) -> None:
    counting = Counting(table)
    store = SealedInstallations(counting, SecretBox([KEY]))  # type: ignore[arg-type]
    found = await asyncio.gather(*(store.lookup(None, "T1", False) for _ in range(50)))
    assert found == [None] * 50 and counting.reads == 1
    # An install saved while a read (begun before it) is under way: that read's "none" is not kept.
    store.forget("T1")
    reading = asyncio.ensure_future(store.lookup(None, "T1", False))
    await asyncio.sleep(0)
    await store.async_save(installation("xoxb-new"))
    await reading
    again = await store.lookup(None, "T1", False)
    assert again is not None and again.installation.bot_token == "xoxb-new"


async def test_db_copy_carries_the_installations_sealed_and_a_second_run_writes_nothing(
    tmp_path: Path, pg_database: str
) -> None:
    await empty_database(pg_database)
    db = tmp_path / "acechat.db"
    assert "0 in the file" in await copy_installations(db, pg_database)  # no file yet: nothing
    source = await open_installations(database_url=None, db_path=db)
    try:
        store = SealedInstallations(source, SecretBox([KEY]))
        await store.async_save(installation("xoxb-moved", "xoxe-1-moved", int(NOW)))
        [before] = await source.all()
    finally:
        await source.close()
    assert "1 in the file, 1 written" in await copy_installations(db, pg_database)
    assert "1 in the file, 0 written" in await copy_installations(db, pg_database)
    target = await open_installations(database_url=pg_database, db_path=db)
    try:
        assert await target.all() == [before]
        moved = await SealedInstallations(target, SecretBox([KEY])).async_find_installation(
            enterprise_id=None, team_id="T1"
        )
        assert moved is not None and moved.bot_token == "xoxb-moved"
    finally:
        await target.close()
