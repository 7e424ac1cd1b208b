"""Which conversation a message belongs to.

A scope is (platform, workspace or guild, channel, thread or none). Every scope has at most one live
upstream conversation; a thread's settings fall back to its channel's, then the workspace's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Direct messages belong to no workspace; they get one of their own so keys stay unambiguous.
DIRECT = "@dm"


@dataclass(frozen=True, slots=True)
class Scope:
    platform: str
    workspace: str
    channel: str
    thread: str | None = None
    # Made once: every question reads it many times (its lock, caches, rate limits, records), and the
    # caches that keep it then share one string rather than each holding a copy.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "key", f"{self.platform}:{self.workspace}:{self.channel}:{self.thread or '-'}"
        )

    @classmethod
    def of(cls, platform: str, workspace: str | None, channel: str, thread: str | None = None) -> Scope:
        """The scope of a message: `workspace` None means a direct message."""
        if not platform or not channel:
            raise ValueError("a scope needs a platform and a channel")
        return cls(platform, workspace or DIRECT, channel, thread or None)

    @property
    def workspace_key(self) -> str:
        return f"{self.platform}:{self.workspace}"

    @property
    def channel_scope(self) -> Scope:
        return self if self.thread is None else Scope(self.platform, self.workspace, self.channel, None)

    @property
    def is_thread(self) -> bool:
        return self.thread is not None

    def lineage(self) -> tuple[str, ...]:
        """Setting keys from the most specific to the least: thread, channel, workspace."""
        keys = [self.key] if self.thread else []
        keys.append(self.channel_scope.key)
        keys.append(self.workspace_key)
        return tuple(keys)
