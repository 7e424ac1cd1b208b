"""One process: open the core, start the configured adapters, serve health, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from aiohttp import web

from bots.health import health_app
from core.chat import ChatCore
from core.settings import Settings

log = logging.getLogger(__name__)


class StartupError(Exception):
    """An adapter cannot start for a reason the operator must fix; the message says how."""


class Adapter(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def build_adapters(core: ChatCore, settings: Settings, wanted: list[str]) -> list[Adapter]:
    adapters: list[Adapter] = []
    if "discord" in wanted and settings.discord is not None:
        from bots.discord_bot import DiscordAdapter

        adapters.append(DiscordAdapter(core, settings.discord))
    if "slack" in wanted and settings.slack is not None:
        from bots.slack_bot import SlackAdapter

        adapters.append(SlackAdapter(core, settings.slack))
    return adapters


async def serve(settings: Settings, wanted: list[str], *, health: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    core = await ChatCore.open(settings)
    adapters = build_adapters(core, settings, wanted)
    runner: web.AppRunner | None = None
    try:
        for adapter in adapters:
            await adapter.start()
            log.info("%s adapter started", adapter.name)
        if health and settings.health_port:
            runner = web.AppRunner(
                health_app(core.store, lambda: {a.name: a.connected for a in adapters}), access_log=None
            )
            await runner.setup()
            await web.TCPSite(runner, settings.health_host, settings.health_port).start()
            log.info("health and metrics on http://%s:%d/healthz", settings.health_host, settings.health_port)
        await stop.wait()
        log.info("shutting down: finishing answers in flight")
    finally:
        # Answers in flight still need their platform connection, so drain before closing adapters.
        await core.drain()
        for adapter in reversed(adapters):
            try:
                await adapter.close()
            except Exception:
                log.exception("error while closing the %s adapter", adapter.name)
        if runner is not None:
            await runner.cleanup()
        await core.aclose()
        log.info("stopped")
