"""`/healthz` and `/metrics` served from a real store on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest_asyncio
from aiohttp import web

from acechat.bots.health import health_app
from acechat.core import metrics
from acechat.storage import Store
from acechat.storage.sqlite import SQLiteStore

Serve = Callable[[Any, Callable[[], dict[str, bool]]], Awaitable[str]]


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await SQLiteStore.open(tmp_path / "acechat.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start `health_app(store, adapters)` on 127.0.0.1:0 and give its base URL."""
    runners: list[web.AppRunner] = []

    async def start(store: Any, adapters: Callable[[], dict[str, bool]]) -> str:
        runner = web.AppRunner(health_app(store, adapters), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_healthy_when_every_adapter_is_connected_and_the_database_writable(
    store: Store, serve: Serve
) -> None:
    url = await serve(store, lambda: {"discord": True, "slack": True})
    status, body = await get_json(f"{url}/healthz")
    assert status == 200
    assert body == {"status": "ok", "database_writable": True, "adapters": {"discord": True, "slack": True}}


async def test_a_disconnected_adapter_is_unhealthy_and_recovers(store: Store, serve: Serve) -> None:
    state = {"discord": True, "slack": False}
    url = await serve(store, lambda: state)
    status, body = await get_json(f"{url}/healthz")
    assert status == 503
    assert body["status"] == "unhealthy" and body["adapters"] == {"discord": True, "slack": False}
    assert body["database_writable"] is True
    state["slack"] = True
    assert (await get_json(f"{url}/healthz"))[0] == 200, "adapters are asked on every request"


async def test_no_adapters_is_unhealthy(store: Store, serve: Serve) -> None:
    url = await serve(store, dict)
    status, body = await get_json(f"{url}/healthz")
    assert status == 503 and body["adapters"] == {}


async def test_a_closed_store_is_unhealthy(store: Store, serve: Serve) -> None:
    url = await serve(store, lambda: {"slack": True})
    await store.close()
    status, body = await get_json(f"{url}/healthz")
    assert status == 503
    assert body == {"status": "unhealthy", "database_writable": False, "adapters": {"slack": True}}


async def test_a_store_that_fails_unexpectedly_is_unhealthy_not_an_error(serve: Serve) -> None:
    class Broken:
        async def ping(self) -> bool:
            raise RuntimeError("disk on fire")

    url = await serve(cast(Store, Broken()), lambda: {"slack": True})
    status, body = await get_json(f"{url}/healthz")
    assert status == 503 and body["database_writable"] is False


async def test_metrics_are_prometheus_text(store: Store, serve: Serve) -> None:
    metrics.QUESTIONS.labels("healthtest", "answered").inc()
    metrics.UPSTREAM_ERRORS.labels("healthtest_code").inc()
    url = await serve(store, lambda: {"slack": True})
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    lines = text.splitlines()
    assert "# TYPE acechat_questions_total counter" in lines
    assert any(
        line.startswith('acechat_questions_total{outcome="answered",platform="healthtest"} ')
        for line in lines
    )
    assert any(line.startswith('acechat_upstream_errors_total{code="healthtest_code"} ') for line in lines)
    for name in ("acechat_in_flight", "acechat_upstream_seconds_bucket", "acechat_first_text_seconds_count"):
        assert any(line.startswith(name) for line in lines), name
    assert "# TYPE acechat_rate_limited_total counter" in lines
