"""What an adapter hands the core to answer on: a `ReplyTarget`, its `TargetLimits` and the `Mark`s it leaves.

A target knows only platform primitives; the core decides everything else: whether to answer, what to
send upstream, how to stream, split, throttle and word errors. The facts of the event are in
`acechat.core.facts`, the errors a target raises in `acechat.core.platform_errors`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from acechat.core.pacing.limits import Limits
from acechat.core.pacing.scheduler import Scheduler
from acechat.core.platform import PlatformRules
from acechat.core.splitting import Measure


class Mark(enum.Enum):
    """A wordless sign left on the asker's message, where the platform has reactions."""

    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class TargetLimits:
    """What a platform allows one answer to do.

    `edit_burst` edits per `edit_window` seconds, per message; the streamer keeps one in reserve so the
    final edit never waits. `posts`, `edits` and `typing_limits` are allowances shared with other answers
    (Discord's global and per-channel limits, Slack's per-workspace `chat.update` and per-channel posts):
    every call of that kind takes one call from each, through `scheduler`, most urgent first.
    `private_notices` says whether `notify` reaches the asker alone; where it is a public reply, the
    core sends fewer of them. `measure`, where the platform shows text longer than it is written (Slack
    escapes `<` as `&lt;`), is the length a message's text shows at: the core splits on it.
    `status_chars`, where set, says the target shows a live status line of at most that many
    characters (`status`, Slack's thread status): while an answer has no text yet, its tool line goes
    there, paced like typing, rather than into a message whose first text would then cost an edit.
    `steps_apart` says the target shows tool steps apart from the answer's text for the whole answer
    (Slack's task timeline in a streamed message): the tool line never goes into the text, and each
    change of it goes to `status` instead, paced as a tool line's edits are.
    """

    max_chars: int
    edit_burst: int = 5
    edit_window: float = 5.0
    typing_interval: float | None = None
    posts: Limits = field(default=(), compare=False)
    edits: Limits = field(default=(), compare=False)
    typing_limits: Limits = field(default=(), compare=False)
    scheduler: Scheduler | None = field(default=None, compare=False)
    private_notices: bool = True
    measure: Measure | None = field(default=None, compare=False)
    status_chars: int | None = None
    steps_apart: bool = False


class ReplyTarget(Protocol):
    """Platform primitives for one answer. Handles are the adapter's own message ids."""

    @property
    def limits(self) -> TargetLimits: ...

    @property
    def rules(self) -> PlatformRules:
        """What pings people on this platform, and what it calls each level's rights."""
        ...

    async def post(self, text: str) -> str:
        """Send a new visible message; return its handle."""
        ...

    async def edit(self, handle: str, text: str) -> None:
        """Replace the text of a message this target posted."""
        ...

    async def typing(self) -> None:
        """Show that an answer is being written (a no-op where the platform has none)."""
        ...

    async def status(self, text: str) -> None:
        """Show `text` (plain, defused, at most `limits.status_chars` long) as the answer's live status
        until its first message; "" clears it (a status that landed after that message). Called only
        where `limits.status_chars` is set, or where `limits.steps_apart` is: then for the whole answer,
        `text` is the tool step now running (plain, defused, uncut) and "" says it ended with no other
        step after it; the answer's end (its final text) ends any step still shown."""
        ...

    async def notify(self, text: str) -> None:
        """Tell only the asker something short (ephemeral where the platform can; otherwise a post)."""
        ...

    async def announce(self, text: str) -> None:
        """Tell the whole channel something that is not an answer (a command's public reply)."""
        ...

    async def mark(self, mark: Mark) -> None:
        """Leave `mark` on the question (a reaction where the platform has them; otherwise nothing)."""
        ...
