"""Where one answer goes on Discord: a reply in the channel, or the response to a slash command.

The core paces, splits and words everything; these classes only map its four primitives onto
discord.py calls, each with mentions disabled so nothing the model writes can ping anyone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import discord

from core.cache import LRU
from core.ratelimit import WindowBudget
from core.target import PlatformRateLimited, TargetLimits

NO_MENTIONS = discord.AllowedMentions.none()

# Discord's message limit is 2,000 characters. Edits are limited to 5 per 5 s per channel, whichever
# answer makes them, so answers in one channel share a budget (`channel_budgets`).
# The typing indicator lasts 10 s, so refreshing it every 8 s keeps it on without gaps.
EDITS_PER_WINDOW = 5
EDIT_WINDOW = 5.0
BUDGETS_KEPT = 10_000
# A deferred interaction already shows "thinking…" until the first text replaces it.
INTERACTION_LIMITS = TargetLimits(
    max_chars=2000, edit_burst=EDITS_PER_WINDOW, edit_window=EDIT_WINDOW, typing_interval=None
)

ORIGINAL = "@original"


@contextmanager
def _long_limits() -> Iterator[None]:
    """discord.py sleeps through short rate limits itself and raises only past max_ratelimit_timeout."""
    try:
        yield
    except discord.RateLimited as limited:
        raise PlatformRateLimited(limited.retry_after) from limited


class ChannelBudgets:
    """One edit budget per channel, for the channels that answered recently."""

    def __init__(self) -> None:
        self._budgets: LRU[int, WindowBudget] = LRU(BUDGETS_KEPT)

    def limits(self, channel_id: int) -> TargetLimits:
        budget = self._budgets.get(channel_id)
        if budget is None:
            budget = WindowBudget(EDITS_PER_WINDOW, EDIT_WINDOW)
            self._budgets.put(channel_id, budget)
        return TargetLimits(
            max_chars=2000,
            edit_burst=EDITS_PER_WINDOW,
            edit_window=EDIT_WINDOW,
            typing_interval=8.0,
            shared=budget,
        )


class MessageTarget:
    """Answers a message: the first part replies to it, later parts follow in the channel."""

    def __init__(self, message: discord.Message, limits: TargetLimits) -> None:
        self._message = message
        self._channel = message.channel
        self._limits = limits
        self._sent: dict[str, discord.Message] = {}

    @property
    def limits(self) -> TargetLimits:
        return self._limits

    async def post(self, text: str) -> str:
        with _long_limits():
            if self._sent:
                sent = await self._channel.send(text, allowed_mentions=NO_MENTIONS)
            else:
                sent = await self._reply(text)
        self._sent[str(sent.id)] = sent
        return str(sent.id)

    async def edit(self, handle: str, text: str) -> None:
        with _long_limits():
            await self._sent[handle].edit(content=text, allowed_mentions=NO_MENTIONS)

    async def typing(self) -> None:
        await self._channel.typing()

    async def notify(self, text: str) -> None:
        # Plain messages have no ephemeral form: answer the asker in place.
        await self._reply(text)

    async def _reply(self, text: str) -> discord.Message:
        # The question may be deleted while the answer is written: then post without the reply link.
        reference = self._message.to_reference(fail_if_not_exists=False)
        return await self._channel.send(
            text, reference=reference, mention_author=False, allowed_mentions=NO_MENTIONS
        )


class InteractionTarget:
    """Answers a deferred slash command: the deferred response first, then follow-ups."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self._interaction = interaction
        self._posted = False

    @property
    def limits(self) -> TargetLimits:
        return INTERACTION_LIMITS

    async def post(self, text: str) -> str:
        if not self._posted:
            self._posted = True
            await self._interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
            return ORIGINAL
        sent = await self._interaction.followup.send(text, wait=True, allowed_mentions=NO_MENTIONS)
        return str(sent.id)

    async def edit(self, handle: str, text: str) -> None:
        if handle == ORIGINAL:
            await self._interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        else:
            await self._interaction.followup.edit_message(
                int(handle), content=text, allowed_mentions=NO_MENTIONS
            )

    async def typing(self) -> None:
        """The deferral's "thinking…" already shows; nothing to refresh."""

    async def notify(self, text: str) -> None:
        if not self._posted:
            # The public "thinking…" placeholder would otherwise stay; a notice is for the asker only.
            self._posted = True
            await self._interaction.delete_original_response()
        await self._interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
