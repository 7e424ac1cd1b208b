"""Fixtures shared across the suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from core.settings import UpstreamSettings
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
