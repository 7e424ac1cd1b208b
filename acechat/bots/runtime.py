"""One process: open the core, start the configured adapters, serve health, stop cleanly on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from acechat.bots.adapter import Adapter, AdapterSpec
from acechat.bots.health import health_app
from acechat.core.chat import ChatCore
from acechat.core.settings import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings, specs: list[AdapterSpec], *, health: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    core = await ChatCore.open(settings)
    adapters: list[Adapter] = []
    runner: web.AppRunner | None = None
    try:
        for spec in specs:
            adapter = spec.create(core, settings)
            adapters.append(adapter)
            await adapter.start()
            log.info("%s adapter started", adapter.name)
        # Pages an adapter serves beside health (Slack's install pages in Socket Mode).
        pages = [route for a in adapters for route in getattr(a, "web_routes", ())]
        if (health or pages) and settings.health_port:
            web_app = health_app(core.store, lambda: {a.name: a.connected for a in adapters})
            web_app.router.add_routes(pages)
            runner = web.AppRunner(web_app, access_log=None)
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
