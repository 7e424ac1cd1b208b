"""Fixtures shared across the suite; a module overrides `settings` to change what `core` is made with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import settings as hypothesis_settings

from acechat.core.chat import ChatCore
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.slack import FakeSlack
from tests.fakes.upstream import FakeUpstream

# Property tests draw the same examples on every run and machine, and keep nothing between runs, so a
# failure in CI is a failure on the developer's machine too.
hypothesis_settings.register_profile("acechat", derandomize=True, database=None, deadline=None)
hypothesis_settings.load_profile("acechat")

SLACK_ADMIN = "UADMIN"


@pytest_asyncio.fixture
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A started fake AI Chat API on an ephemeral port; `fake_upstream.url` is its base URL."""
    fake = FakeUpstream()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def upstream_settings(fake_upstream: FakeUpstream) -> UpstreamSettings:
    """Settings pointing at the fake, with timeouts short enough for tests."""
    return UpstreamSettings(
        token=fake_upstream.token,
        base_url=fake_upstream.url,
        connect_timeout=2.0,
        read_timeout=2.0,
        retries=2,
        max_connections=100,
    )


@pytest.fixture
def settings(upstream_settings: UpstreamSettings, tmp_path: Path) -> Settings:
    """The fake upstream, a fresh SQLite file, no rate limits (tests of limits set their own)."""
    return Settings(
        upstream=upstream_settings,
        db_path=tmp_path / "acechat.db",
        user_rate=RateLimit(0, 60),
        channel_rate=RateLimit(0, 60),
        shutdown_grace=2.0,
    )


@pytest_asyncio.fixture
async def core(settings: Settings) -> AsyncIterator[ChatCore]:
    chat = await ChatCore.open(settings)
    try:
        yield chat
    finally:
        await chat.aclose()


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A started fake of Slack's Web API and Socket Mode, with one workspace admin."""
    async with FakeSlack(admins={SLACK_ADMIN}) as fake:
        yield fake
