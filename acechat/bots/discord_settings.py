"""Discord's settings: declared for the loader, the docs and the log scrubber, and parsed here.

Light on purpose (no discord.py): the adapter registry imports it whatever runs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from acechat.core.settings import Setting, SettingsGroup, SettingsReader

SETTINGS: tuple[Setting, ...] = (
    Setting("DISCORD_BOT_TOKEN", secret=True),
    Setting("DISCORD_DEV_GUILD_ID"),
    Setting("DISCORD_SHARD_COUNT"),
    Setting("DISCORD_SHARD_IDS"),
    Setting("DISCORD_API_BASE_URL"),
    Setting("DISCORD_GATEWAY_URL"),
    Setting("ACECHAT_DISCORD_DMS", "true"),
)

# A bot token is three base64url parts joined by dots, the first the bot's user id in base64.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")


@dataclass(frozen=True)
class DiscordSettings:
    token: str
    api_base_url: str | None = None
    gateway_url: str | None = None
    dev_guild_id: int | None = None
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None
    # Direct messages belong to no server, so the operator alone turns them on or off (issue 17).
    dms: bool = True


def token_problem(token: str) -> str | None:
    """Why `token` cannot be a Discord bot token, if it cannot; it never shows the token."""
    where = "copy it from the Developer Portal (your application > Bot > Reset Token)"
    if token.lower().startswith("bot "):
        return f"DISCORD_BOT_TOKEN starts with 'Bot ': set the token alone; {where}"
    if _TOKEN_SHAPE.fullmatch(token) is None:
        return f"DISCORD_BOT_TOKEN does not look like a bot token (three parts joined by dots): {where}"
    first = token.split(".", 1)[0]
    try:
        user_id = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    except (binascii.Error, ValueError):
        user_id = b""
    if not (user_id.isascii() and user_id.isdigit()):
        return f"DISCORD_BOT_TOKEN does not look like a bot token (its first part is not a bot's id): {where}"
    return None


def parse(r: SettingsReader) -> DiscordSettings | None:
    token = r.raw("DISCORD_BOT_TOKEN")
    if token is None:
        return None
    problem = token_problem(token)
    if problem is not None:
        r.fail(problem)
    shard_ids_raw = r.words("DISCORD_SHARD_IDS")
    shard_ids: tuple[int, ...] | None = None
    if all(s.isascii() and s.isdecimal() for s in shard_ids_raw):
        shard_ids = tuple(int(s) for s in shard_ids_raw) or None
    else:
        r.fail(f"DISCORD_SHARD_IDS={','.join(shard_ids_raw)!r} is invalid: expected whole numbers, e.g. 0,1")
    shard_count = r.optional_integer("DISCORD_SHARD_COUNT", minimum=1)
    if shard_ids is not None and shard_count is None:
        r.fail("DISCORD_SHARD_IDS is set without DISCORD_SHARD_COUNT: set both")
    elif shard_ids is not None and not all(0 <= i < (shard_count or 0) for i in shard_ids):
        r.fail(
            f"DISCORD_SHARD_IDS is invalid: every id must be from 0 to below DISCORD_SHARD_COUNT={shard_count}"
        )
    return DiscordSettings(
        token=token,
        api_base_url=r.url("DISCORD_API_BASE_URL", None),
        gateway_url=r.url("DISCORD_GATEWAY_URL", None),
        dev_guild_id=r.optional_integer("DISCORD_DEV_GUILD_ID"),
        shard_count=shard_count,
        dms=r.boolean("ACECHAT_DISCORD_DMS", True),
        shard_ids=shard_ids,
    )


GROUP = SettingsGroup("discord", SETTINGS, parse, enabled_by="DISCORD_BOT_TOKEN")
