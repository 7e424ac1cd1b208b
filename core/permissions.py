"""Who may change presets, models and defaults: one policy for every platform.

Adapters pass facts (`Actor.is_admin` as the platform reports it); an operator may also list users
in `ACECHAT_ADMIN_USERS`, either bare (`U123`) or qualified by platform (`slack:U123`, `discord:42`).
A missing fact is a no.
"""

from __future__ import annotations

from collections.abc import Collection

from core.commands import ADMIN_ACTIONS, Action
from core.target import Actor


def is_admin(platform: str, actor: Actor, configured: Collection[str]) -> bool:
    if actor.is_admin is True:
        return True
    return actor.user_id in configured or f"{platform}:{actor.user_id}" in configured


def may_run(action: Action, platform: str, actor: Actor, configured: Collection[str]) -> bool:
    return action not in ADMIN_ACTIONS or is_admin(platform, actor, configured)
