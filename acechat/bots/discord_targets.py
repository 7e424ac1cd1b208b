"""Where one answer or command reply goes on Discord: a reply in the channel, or an interaction's response.

The core paces, splits and words everything; these classes only map its primitives onto discord.py
calls, each with mentions disabled so nothing the model writes can ping anyone, and translate
Discord's refusals into the core's `PlatformError`s.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import aiohttp
import discord
from discord.http import HTTPClient, Route

from acechat.bots.discord_buttons import view_of
from acechat.bots.discord_components import CHOOSE, choices_view
from acechat.bots.discord_rules import RULES
from acechat.core.choices import Choices
from acechat.core.interactions import ControlBoard, Controls, paced_edit
from acechat.core.pacing.limits import InFlightWindow, KeyedBudgets
from acechat.core.pacing.scheduler import Scheduler, Urgency
from acechat.core.platform_errors import MessageGone, PlatformForbidden, PlatformRateLimited, PlatformUnsure
from acechat.core.reply_target import Mark, TargetLimits

NO_MENTIONS = discord.AllowedMentions.none()

# Discord's message limit is 2,000 characters. Posts and edits are each limited to 5 per 5 s per
# channel, whichever answer makes them, and every call but an interaction's counts against the bot's
# global limit of 50 a second. Each is counted until a window after its response (InFlightWindow), so
# requests bunched up on the way still arrive within the limit; one under it for clock granularity.
# The typing indicator lasts 10 s, so refreshing it every 8 s keeps it on without gaps.
MAX_CHARS = 2000
EDITS_PER_WINDOW = 5
EDIT_WINDOW = 5.0
POSTS_PER_WINDOW = 5
POST_WINDOW = 5.0
TYPINGS_PER_WINDOW = 5
TYPING_WINDOW = 5.0
GLOBAL_PER_SECOND = 49
TYPING_INTERVAL = 8.0
# A deferred interaction already shows "thinking…" until the first text replaces it.
INTERACTION_LIMITS = TargetLimits(
    max_chars=MAX_CHARS, edit_burst=EDITS_PER_WINDOW, edit_window=EDIT_WINDOW, typing_interval=None
)
MARKS = {Mark.REFUSED: "⏳"}

ORIGINAL = "@original"
# Interactions answer through these routes, which Discord leaves out of the global limit.
EXEMPT = ("/interactions/", "/webhooks/")

# Set while the adapter makes a call the core was granted under the limits: not to be counted twice.
_granted: ContextVar[bool] = ContextVar("acechat_discord_granted", default=False)


def _retry_after(error: discord.HTTPException) -> float:
    header = error.response.headers.get("Retry-After") if error.response is not None else None
    try:
        seconds = float(header) if header is not None else 1.0
    except ValueError:
        seconds = 1.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 1.0


def new_nonce() -> str:
    return uuid.uuid4().hex[:25]  # Discord takes nonces of up to 25 characters


@contextmanager
def platform_errors(*, granted: bool = False) -> Iterator[None]:
    """Discord's refusals in the core's terms; anything else propagates as it is. `granted`: the core
    already took this call from the limits."""
    token = _granted.set(granted)
    try:
        yield
    except discord.RateLimited as limited:
        # discord.py sleeps through short limits itself and raises this only past max_ratelimit_timeout.
        raise PlatformRateLimited(limited.retry_after) from limited
    except discord.Forbidden as forbidden:
        raise PlatformForbidden(f"Discord refused: {forbidden.text or forbidden.status}") from forbidden
    except discord.NotFound as gone:
        raise MessageGone(f"Discord: {gone.text or gone.status}") from gone
    except discord.DiscordServerError as error:
        # Discord (or a proxy in front) failed after discord.py's own tries: done or not, nobody knows.
        raise PlatformUnsure(f"Discord: {error.status}") from error
    except discord.HTTPException as error:
        if error.status == 429:
            raise PlatformRateLimited(_retry_after(error)) from error
        raise
    except (TimeoutError, aiohttp.ClientError) as error:
        raise PlatformUnsure(f"Discord did not answer: {error!r}") from error
    finally:
        _granted.reset(token)


class DiscordLimits:
    """Discord's allowances every answer of this connection shares: the global one, and per channel."""

    def __init__(self, global_limit: InFlightWindow | None = None) -> None:
        self._scheduler = Scheduler()
        # A share of the token's limit when processes draw on it together (core.pacing.shared_window).
        self._global = global_limit or InFlightWindow(GLOBAL_PER_SECOND, 1.0)
        self._posts: KeyedBudgets[InFlightWindow] = KeyedBudgets(
            lambda: InFlightWindow(POSTS_PER_WINDOW, POST_WINDOW)
        )
        self._edits: KeyedBudgets[InFlightWindow] = KeyedBudgets(
            lambda: InFlightWindow(EDITS_PER_WINDOW, EDIT_WINDOW)
        )
        self._typing: KeyedBudgets[InFlightWindow] = KeyedBudgets(
            lambda: InFlightWindow(TYPINGS_PER_WINDOW, TYPING_WINDOW)
        )

    def pace(self, http: HTTPClient) -> None:
        """Count every other request of `http` against the global limit too (logging in, syncing commands,
        notices, reactions): answers are paced by the core, but the limit is the whole bot's."""
        send: Callable[..., Awaitable[Any]] = http.request
        limits = (self._global,)

        async def request(route: Route, **kwargs: Any) -> Any:
            if _granted.get() or route.path.startswith(EXEMPT):
                return await send(route, **kwargs)
            await self._scheduler.call(Urgency.POST, limits)
            try:
                return await send(route, **kwargs)
            finally:
                self._scheduler.done(limits)

        http.request = request  # type: ignore[method-assign]

    def limits(self, channel_id: int) -> TargetLimits:
        channel = str(channel_id)
        return TargetLimits(
            max_chars=MAX_CHARS,
            edit_burst=EDITS_PER_WINDOW,
            edit_window=EDIT_WINDOW,
            typing_interval=TYPING_INTERVAL,
            posts=(self._global, self._posts.get(channel)),
            edits=(self._global, self._edits.get(channel)),
            typing_limits=(self._global, self._typing.get(channel)),
            scheduler=self._scheduler,
            # A plain message has no ephemeral form: a notice is a public reply.
            private_notices=False,
        )


def _view(controls: Controls) -> dict[str, Any]:
    """The `view` argument of a send: none at all without controls (discord.py's default)."""
    view = view_of(controls)
    return {} if view is None else {"view": view}


class MessageTarget:
    """Answers a message: the first part replies to it, later parts follow in the channel. The last
    message carries the answer's buttons."""

    rules = RULES

    def __init__(self, message: discord.Message, limits: TargetLimits) -> None:
        self._message = message
        self._channel = message.channel
        self._limits = limits
        self._sent: dict[str, discord.Message] = {}
        self._board = ControlBoard()
        # The nonce of a post whose outcome is unknown: the next post sends it again, so Discord
        # returns that message if it was made. (discord.py sends `enforce_nonce` with any nonce, which
        # also makes its own retry of a create after a 502 safe.)
        self._nonce: str | None = None

    @property
    def limits(self) -> TargetLimits:
        return self._limits

    async def post(self, text: str) -> str:
        controls = self._board.for_post()
        nonce = self._nonce or new_nonce()
        self._nonce = nonce
        with platform_errors(granted=True):
            if self._sent:
                sent = await self._channel.send(
                    text, allowed_mentions=NO_MENTIONS, nonce=nonce, **_view(controls)
                )
            else:
                sent = await self._reply(text, nonce, **_view(controls))
        self._nonce = None
        if sent.content != text:
            # A post sent again found the first one, made with the text as it was then (a rare call,
            # counted against the global limit like any other the core did not grant).
            with platform_errors():
                sent = await sent.edit(content=text, allowed_mentions=NO_MENTIONS, **_view(controls))
        handle = str(sent.id)
        self._sent[handle] = sent
        self._board.shown(handle, text, controls)
        return handle

    async def edit(self, handle: str, text: str) -> None:
        with platform_errors(granted=True):
            await self._edit(handle, text)

    def set_controls(self, controls: Controls) -> None:
        self._board.wanted = controls

    async def settle_controls(self) -> None:
        for handle, text, _ in self._board.stale():
            await paced_edit(self._limits, partial(self.edit, handle, text))

    async def _edit(self, handle: str, text: str) -> None:
        if not self._board.used:
            await self._sent[handle].edit(content=text, allowed_mentions=NO_MENTIONS)
            return
        controls = self._board.for_edit(handle)
        await self._sent[handle].edit(content=text, allowed_mentions=NO_MENTIONS, view=view_of(controls))
        self._board.shown(handle, text, controls)

    async def typing(self) -> None:
        with platform_errors(granted=True):
            await self._channel.typing()

    async def status(self, text: str) -> None:
        """Discord has no status line: the tool line is on the streaming message."""

    async def notify(self, text: str) -> None:
        with platform_errors():
            await self._reply(text, new_nonce())

    async def announce(self, text: str) -> None:
        # The core takes this post from the channel's limits (and the global one) first.
        with platform_errors(granted=True):
            await self._channel.send(text, allowed_mentions=NO_MENTIONS, nonce=new_nonce())

    async def mark(self, mark: Mark) -> None:
        with platform_errors():
            await self._message.add_reaction(MARKS[mark])

    async def offer_choices(self, choices: Choices) -> str:
        """The options of a question the model asked back, as buttons under the answer."""
        with platform_errors():
            sent = await self._channel.send(CHOOSE, view=choices_view(choices), allowed_mentions=NO_MENTIONS)
        return f"{sent.channel.id}:{sent.id}"

    async def _reply(self, text: str, nonce: str, **view: Any) -> discord.Message:
        # The question may be deleted while the answer is written: then post without the reply link.
        reference = self._message.to_reference(fail_if_not_exists=False)
        return await self._channel.send(
            text, reference=reference, mention_author=False, allowed_mentions=NO_MENTIONS, nonce=nonce, **view
        )


class ThreadTarget(MessageTarget):
    """Answers a mention in the thread opened for it (autothread): posts in the thread, since a reply
    cannot link across channels; the mark still goes on the question."""

    def __init__(self, message: discord.Message, thread: discord.Thread, limits: TargetLimits) -> None:
        super().__init__(message, limits)
        self._channel = thread

    async def _reply(self, text: str, nonce: str, **view: Any) -> discord.Message:
        return await self._channel.send(text, allowed_mentions=NO_MENTIONS, nonce=nonce, **view)


class InteractionTarget:
    """Answers a slash command: its response first (the deferred "thinking…" one, if deferred), then
    follow-ups. Notices are ephemeral."""

    rules = RULES

    def __init__(self, interaction: discord.Interaction) -> None:
        self._interaction = interaction
        self._posted = False
        self._board = ControlBoard()

    @property
    def limits(self) -> TargetLimits:
        return INTERACTION_LIMITS

    async def post(self, text: str) -> str:
        interaction = self._interaction
        controls = self._board.for_post()
        view = _view(controls)
        with platform_errors():
            if not self._posted:
                self._posted = True
                if interaction.response.is_done():
                    await interaction.edit_original_response(
                        content=text, allowed_mentions=NO_MENTIONS, **view
                    )
                else:
                    await interaction.response.send_message(text, allowed_mentions=NO_MENTIONS, **view)
                handle = ORIGINAL
            else:
                sent = await interaction.followup.send(text, wait=True, allowed_mentions=NO_MENTIONS, **view)
                handle = str(sent.id)
        self._board.shown(handle, text, controls)
        return handle

    async def edit(self, handle: str, text: str) -> None:
        with platform_errors():
            await self._edit(handle, text)

    def set_controls(self, controls: Controls) -> None:
        self._board.wanted = controls

    async def settle_controls(self) -> None:
        for handle, text, _ in self._board.stale():
            with platform_errors():
                await self._edit(handle, text)

    async def _edit(self, handle: str, text: str) -> None:
        view: dict[str, Any] = {}
        controls = self._board.for_edit(handle)
        if self._board.used:
            view["view"] = view_of(controls)
        if handle == ORIGINAL:
            await self._interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS, **view)
        else:
            await self._interaction.followup.edit_message(
                int(handle), content=text, allowed_mentions=NO_MENTIONS, **view
            )
        if view:
            self._board.shown(handle, text, controls)

    async def typing(self) -> None:
        """A deferral's "thinking…" already shows; nothing to refresh."""

    async def status(self, text: str) -> None:
        """Discord has no status line: the tool line is on the streaming message."""

    async def notify(self, text: str) -> None:
        await self._send(text, ephemeral=True)

    async def announce(self, text: str) -> None:
        await self._send(text, ephemeral=False)

    async def mark(self, mark: Mark) -> None:
        """An interaction has no message of the asker's to react to."""

    async def offer_choices(self, choices: Choices) -> str:
        with platform_errors():
            sent = await self._interaction.followup.send(
                CHOOSE, view=choices_view(choices), allowed_mentions=NO_MENTIONS, wait=True
            )
        return f"{sent.channel.id}:{sent.id}"

    async def _send(self, text: str, *, ephemeral: bool) -> None:
        interaction = self._interaction
        with platform_errors():
            if not interaction.response.is_done():
                self._posted = True
                await interaction.response.send_message(
                    text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS
                )
                return
            if not self._posted:
                # The public "thinking…" placeholder is replaced by a public text, and removed for a notice,
                # which is for the asker only.
                self._posted = True
                if not ephemeral:
                    await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
                    return
                await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
