"""What the core benchmarks share: their settings, their question, and a bare aiohttp client.

`BareSide` is what any client of the AI Chat API must do at least (POST, read the NDJSON lines to the
end, keep the conversation id); the benchmarks compare the core with it, side by side in one run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp

from acechat.core.facts import Actor
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.settings import RateLimit, Settings, UpstreamSettings

QUESTION = "how do I rotate a log file without losing lines?"
ACTOR = Actor("U1", "Bench User")


def bench_settings(base_url: str, db_path: Path) -> Settings:
    return Settings(
        upstream=UpstreamSettings(token="bench-token", base_url=base_url, retries=0),
        db_path=db_path,
        user_rate=RateLimit(0, 60),
        channel_rate=RateLimit(0, 60),
    )


class BareSide:
    """What any client must do at least: POST, read the NDJSON lines, keep the conversation id."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.url = settings.upstream.base_url + "/aichat/conversations"
        self.headers = {
            "authorization": f"Bearer {settings.upstream.token}",
            "accept": "application/x-ndjson",
        }
        self.body = {
            "model": settings.default_model,
            "question": f"{ACTOR.display_name}: {QUESTION}",
            "stateful": True,
            "preset": BUILTIN_PRESETS[settings.default_preset].prompt,
        }
        self.conversations: dict[int, str] = {}

    async def worker(self, index: int, deadline: float, *, once: bool = False) -> int:
        done = 0
        while once or time.perf_counter() < deadline:
            once = False
            body = dict(self.body)
            if index in self.conversations:
                body["id"] = self.conversations[index]
            async with self.session.post(self.url, json=body, headers=self.headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"bare request failed: {resp.status}")
                async for line in resp.content:
                    if line.strip():
                        self.conversations[index] = json.loads(line)["id"]
            done += 1
        return done
