"""A ReplyTarget that records what the core did with it, with timestamps, for core-level tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from acechat.bots import discord_rules, slack_rules
from acechat.core.interactions import ControlBoard, Controls
from acechat.core.platform import MentionRules, PlatformRules
from acechat.core.platform_errors import PlatformRateLimited
from acechat.core.reply_target import Mark, TargetLimits

# Core tests ask questions in made-up scopes: defuse what pings on either real platform.
TEST_RULES = PlatformRules("test", MentionRules(slack_rules.MENTIONS.rules + discord_rules.MENTIONS.rules))


@dataclass
class Call:
    kind: str  # post, edit, typing, status, notify, announce, mark
    handle: str | None
    text: str
    at: float = field(default_factory=time.monotonic)


class RecordingTarget:
    rules = TEST_RULES

    def __init__(
        self,
        limits: TargetLimits | None = None,
        *,
        rate_limit_edits: int = 0,
        retry_after: float = 0.05,
        post_delay: float = 0.0,
    ) -> None:
        self.limits = limits or TargetLimits(
            max_chars=2000, edit_burst=5, edit_window=0.5, typing_interval=0.05
        )
        self.calls: list[Call] = []
        self.messages: dict[str, str] = {}
        self._rate_limit_edits = rate_limit_edits
        self._retry_after = retry_after
        self._post_delay = post_delay
        self.done = asyncio.Event()

    async def post(self, text: str) -> str:
        if self._post_delay:
            await asyncio.sleep(self._post_delay)
        handle = f"m{len(self.messages) + 1}"
        self.messages[handle] = text
        self.calls.append(Call("post", handle, text))
        return handle

    async def edit(self, handle: str, text: str) -> None:
        if self._rate_limit_edits > 0:
            self._rate_limit_edits -= 1
            self.calls.append(Call("rate_limited", handle, text))
            raise PlatformRateLimited(self._retry_after)
        assert handle in self.messages
        self.messages[handle] = text
        self.calls.append(Call("edit", handle, text))

    async def typing(self) -> None:
        self.calls.append(Call("typing", None, ""))

    async def status(self, text: str) -> None:
        self.calls.append(Call("status", None, text))

    async def notify(self, text: str) -> None:
        self.calls.append(Call("notify", None, text))

    async def announce(self, text: str) -> None:
        self.calls.append(Call("announce", None, text))

    async def mark(self, mark: Mark) -> None:
        self.calls.append(Call("mark", None, mark.value))

    def kinds(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]

    @property
    def text(self) -> str:
        """Everything the messages show, in order."""
        return "\n".join(self.messages[h] for h in sorted(self.messages, key=lambda h: int(h[1:])))

    @property
    def notices(self) -> list[str]:
        return [c.text for c in self.kinds("notify")]


class ControlledTarget(RecordingTarget):
    """A RecordingTarget that shows buttons, as the platform targets do: `controls[handle]` is what each
    message offers now."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.board = ControlBoard()
        self.controls: dict[str, Controls] = {}

    def set_controls(self, controls: Controls) -> None:
        self.board.wanted = controls

    async def settle_controls(self) -> None:
        for handle, text, controls in self.board.stale():
            self.calls.append(Call("controls", handle, text))
            self._show(handle, text, controls)

    def _show(self, handle: str, text: str, controls: Controls) -> None:
        self.controls[handle] = controls
        self.board.shown(handle, text, controls)

    async def post(self, text: str) -> str:
        controls = self.board.for_post()
        handle = await super().post(text)
        self._show(handle, text, controls)
        return handle

    async def edit(self, handle: str, text: str) -> None:
        controls = self.board.for_edit(handle)
        await super().edit(handle, text)
        self._show(handle, text, controls)
