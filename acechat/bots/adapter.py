"""What an adapter is, and the registry of the platforms acechat serves.

A platform brings, besides its adapter module (`create(core, settings) -> Adapter`, and
`verify(settings) -> str` for `acechat check --online`): its settings (a `SettingsGroup`), its rules
(`PlatformRules`: what pings, what its rights are called) and its libraries' noisy loggers; then one
`AdapterSpec` line in `ADAPTERS`. The CLI's subcommands, `acechat run`, `acechat check`, the settings
loader and the logs all read this registry. Adapter modules are imported only when used: each pulls in
its platform's library; settings and rules modules stay light.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from acechat.bots import discord_rules, discord_settings, slack_rules, slack_settings
from acechat.core.logs import Unwanted
from acechat.core.platform import PlatformRules
from acechat.core.settings import Settings, SettingsGroup

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
    module: str  # defines create(core, settings) -> Adapter and async verify(settings) -> str
    settings: SettingsGroup
    rules: PlatformRules
    noisy_loggers: tuple[str, ...] = ()
    unwanted: tuple[Unwanted, ...] = ()

    def __post_init__(self) -> None:
        # A platform that has not said what pings there must not post model text: refuse it here, so an
        # adapter without rules never starts (PlatformRules itself refuses to exist without mention rules).
        if not isinstance(self.rules, PlatformRules):
            raise TypeError(f"adapter {self.name!r} has no PlatformRules: declare what pings on it")
        if self.settings.platform != self.name or self.rules.name != self.name:
            raise ValueError(f"adapter {self.name!r}: its settings and rules name another platform")

    @property
    def missing(self) -> str:
        """What to set when it is not configured."""
        return self.settings.enabled_by

    def configured(self, settings: Settings) -> bool:
        return settings.platforms.get(self.name) is not None

    def create(self, core: ChatCore, settings: Settings) -> Adapter:
        create: Callable[[ChatCore, Settings], Adapter] = importlib.import_module(self.module).create
        return create(core, settings)

    async def verify(self, settings: Settings) -> str:
        """Ask the platform whether the credentials work (StartupError if not); says who they belong to."""
        verify: Callable[[Settings], Awaitable[str]] = importlib.import_module(self.module).verify
        return await verify(settings)


ADAPTERS: tuple[AdapterSpec, ...] = (
    AdapterSpec(
        "discord",
        "run the Discord bot",
        "acechat.bots.discord_bot",
        settings=discord_settings.GROUP,
        rules=discord_rules.RULES,
        noisy_loggers=discord_rules.NOISY_LOGGERS,
        unwanted=discord_rules.UNWANTED,
    ),
    AdapterSpec(
        "slack",
        "run the Slack bot (Socket Mode with SLACK_APP_TOKEN, else HTTP on SLACK_PORT)",
        "acechat.bots.slack_bot",
        settings=slack_settings.GROUP,
        rules=slack_rules.RULES,
        noisy_loggers=slack_rules.NOISY_LOGGERS,
        unwanted=slack_rules.UNWANTED,
    ),
)


def adapter(name: str) -> AdapterSpec:
    return next(spec for spec in ADAPTERS if spec.name == name)


def configured(settings: Settings) -> list[AdapterSpec]:
    return [spec for spec in ADAPTERS if spec.configured(settings)]


def settings_groups() -> list[SettingsGroup]:
    return [spec.settings for spec in ADAPTERS]
