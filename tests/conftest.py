"""Fixtures shared across the suite."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from core.chat import ChatCore
from core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.upstream import FakeUpstream


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


@pytest_asyncio.fixture
async def core(upstream_settings: UpstreamSettings, tmp_path: Path) -> AsyncIterator[ChatCore]:
    """A ChatCore on a fresh SQLite file and the fake upstream; per-user rate limit off."""
    base = Settings(upstream=upstream_settings, db_path=tmp_path / "acechat.db", shutdown_grace=1.0)
    chat = await ChatCore.open(dataclasses.replace(base, user_rate=RateLimit(0, 60)))
    try:
        yield chat
    finally:
        await chat.aclose()
