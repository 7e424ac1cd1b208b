"""Two real `acechat discord` processes sharing one bot token, one shard each, on one PostgreSQL database,
flooded with mentions in many channels of both guilds: more requests than Discord's global limit allows
the token. Used by tests/test_shared_budget.py and `python -m bench discord-shards`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.discord import TOKEN, FakeDiscord, RestCall
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.processes import BotProcess, bot_environment, until

FIRST_EXTRA = 820_000_000_000_000_000
ANSWER = " ".join(f"word{i}" for i in range(240))


class TwoGuilds(FakeDiscord):
    """The fake's two guilds (one per shard of two), each with `per_guild` more text channels."""

    def __init__(self, per_guild: int, **options: Any) -> None:
        super().__init__(second_guild=True, **options)
        self.per_guild = per_guild

    def load_channels(self, guild_id: int) -> list[int]:
        base = FIRST_EXTRA + (0 if guild_id == self.GUILD_ID else 10_000)
        return [base + i for i in range(self.per_guild)]

    def _more(self, payload: dict[str, Any], guild_id: int) -> dict[str, Any]:
        template = payload["channels"][0]
        payload["channels"] += [
            {**template, "id": str(c), "name": f"load-{i}", "position": 10 + i}
            for i, c in enumerate(self.load_channels(guild_id))
        ]
        return payload

    def guild_payload(self) -> dict[str, Any]:
        return self._more(super().guild_payload(), self.GUILD_ID)

    def second_guild_payload(self) -> dict[str, Any]:
        return self._more(super().second_guild_payload(), self.SECOND_GUILD_ID)

    def channel_guild(self, channel_id: int) -> int | None:
        if channel_id in self.load_channels(self.SECOND_GUILD_ID):
            return self.SECOND_GUILD_ID
        return super().channel_guild(channel_id)


def peak(times: list[float], window: float = 1.0) -> int:
    """The most of `times` (sorted) in any `window` seconds."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


@dataclass(frozen=True)
class Outcome:
    global_429s: int
    route_429s: int
    answered: int
    asked: int
    peak_accepted: int  # counted requests Discord accepted, the most in any 1 s, both processes together
    peak_offered: int  # the same with those refused by the global limit
    seconds: float  # from the first question to the last answer
    logs: tuple[str, ...]


def _counted(calls: list[RestCall], since: float) -> tuple[list[float], list[float]]:
    counted = [c for c in calls if c.counted and c.time >= since]
    accepted = sorted(c.time for c in counted if c.limit != "global")
    return accepted, sorted(c.time for c in counted)


async def two_shards(
    tmp_path: Path, upstream: FakeUpstream, database_url: str | None, *, per_guild: int = 30
) -> Outcome:
    """Flood both processes; `database_url` None gives each its own SQLite file (no shared budget)."""
    bots: list[BotProcess] = []
    async with TwoGuilds(per_guild, token=TOKEN.replace("fake-signature", "shards-signature")) as discord:
        try:
            for shard in (0, 1):
                where = (
                    {"ACECHAT_DATABASE_URL": database_url}
                    if database_url
                    else {"ACECHAT_DB_PATH": str(tmp_path / f"shard{shard}.db")}
                )
                env = bot_environment(
                    tmp_path,
                    upstream,
                    DISCORD_BOT_TOKEN=discord.token,
                    DISCORD_API_BASE_URL=discord.api_base,
                    DISCORD_GATEWAY_URL=discord.gateway_url,
                    DISCORD_SHARD_COUNT="2",
                    DISCORD_SHARD_IDS=str(shard),
                    ACECHAT_LOG_JSON="true",
                    **where,
                )
                bots.append(await BotProcess.start(tmp_path, "discord", env, name=f"shared{shard}"))

            def ready(bot: BotProcess, shard: int) -> bool:
                bot.alive()
                return f'"Discord shard {shard} is ready"' in bot.log

            await until(lambda: ready(bots[0], 0) and ready(bots[1], 1), 30.0, "both shards ready")
            channels = discord.load_channels(discord.GUILD_ID) + discord.load_channels(
                discord.SECOND_GUILD_ID
            )
            upstream.queue(
                *(Behaviour(answer=ANSWER, fragment_size=12, fragment_delay=0.02) for _ in channels)
            )
            started = time.monotonic()
            await asyncio.gather(
                *(discord.post_message(f"<@{discord.BOT_ID}> go", channel_id=c) for c in channels)
            )

            def answered() -> int:
                done = 0
                for c in channels:
                    shown = " ".join(m.content for m in discord.bot_messages() if m.channel_id == c)
                    done += shown.split()[-1:] == ["word239"]
                return done

            await until(lambda: answered() == len(channels), 90.0, "every answer whole")
            seconds = time.monotonic() - started
            for bot in bots:
                assert await bot.stop(signal.SIGTERM) == 0, bot.log
        finally:
            for bot in bots:
                await bot.kill_if_running()
        accepted, offered = _counted(discord.calls, started)
        return Outcome(
            global_429s=discord.limited["global"],
            route_429s=sum(n for kind, n in discord.limited.items() if kind != "global"),
            answered=answered(),
            asked=len(channels),
            peak_accepted=peak(accepted),
            peak_offered=peak(offered),
            seconds=seconds,
            logs=tuple(bot.log for bot in bots),
        )


def shares_logged(log: str) -> list[int]:
    """The member counts a process logged for its share of the token's global limit."""
    found = []
    for line in log.splitlines():
        if line.startswith("{") and "share the bot token's global limit" in line:
            found.append(int(json.loads(line)["message"].split()[1]))
    return found
