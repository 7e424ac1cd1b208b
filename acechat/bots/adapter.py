"""What an adapter is, and the registry of the platforms acechat serves.

A platform is one adapter module with a `create(core, settings) -> Adapter` function, its settings in
core/settings.py, and one line in `ADAPTERS`. The CLI's subcommands, `acechat run` and `acechat check`
all read this registry. Adapter modules are imported only when used: each pulls in its platform's library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from acechat.core.settings import Settings

if TYPE_CHECKING:
    from acechat.core.chat import ChatCore


class StartupError(Exception):
    """An adapter cannot start for a reason the operator must fix; the message says how, in one line."""


class Adapter(Protocol):
    name: str

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    summary: str  # the subcommand's help
    module: str  # defines create(core, settings) -> Adapter
    configured: Callable[[Settings], bool]
    missing: str  # what to set when it is not configured

    def create(self, core: ChatCore, settings: Settings) -> Adapter:
        create: Callable[[ChatCore, Settings], Adapter] = importlib.import_module(self.module).create
        return create(core, settings)


ADAPTERS: tuple[AdapterSpec, ...] = (
    AdapterSpec(
        "discord",
        "run the Discord bot",
        "acechat.bots.discord_bot",
        lambda settings: settings.discord is not None,
        "DISCORD_BOT_TOKEN",
    ),
    AdapterSpec(
        "slack",
        "run the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP on SLACK_PORT)",
        "acechat.bots.slack_bot",
        lambda settings: settings.slack is not None,
        "SLACK_BOT_TOKEN (or SLACK_CLIENT_ID)",
    ),
)


def adapter(name: str) -> AdapterSpec:
    return next(spec for spec in ADAPTERS if spec.name == name)


def configured(settings: Settings) -> list[AdapterSpec]:
    return [spec for spec in ADAPTERS if spec.configured(settings)]
