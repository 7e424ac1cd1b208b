"""`/healthz` and `/metrics` for operators, served on a local port by `acechat run`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from acechat.storage import Store


def health_app(store: Store, adapters: Callable[[], Mapping[str, bool]]) -> web.Application:
    """`adapters()` gives each adapter's name and whether it is connected right now."""

    async def healthz(request: web.Request) -> web.Response:
        connected = dict(adapters())
        try:
            writable = await store.ping()
        except Exception:
            writable = False
        healthy = writable and bool(connected) and all(connected.values())
        body = {
            "status": "ok" if healthy else "unhealthy",
            "database_writable": writable,
            "adapters": connected,
        }
        return web.json_response(body, status=200 if healthy else 503)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
