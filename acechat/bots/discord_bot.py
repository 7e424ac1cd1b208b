"""The Discord adapter: discord.py events in, core calls out.

Gateway intents: Guilds, Guild Messages and Direct Messages. Discord sends the text of messages that
mention the bot, DMs and replies that ping it without the privileged Message Content intent; with it
(Developer Portal > your application > Bot > Privileged Gateway Intents) the bot also reads replies
that do not ping it and the attachments of the message a question replies to. The adapter asks for it
and, if Discord refuses, carries on without it.

`create()` is what bots.adapter's registry calls for `acechat discord` and `acechat run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any, cast

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from acechat.bots.adapter import StartupError
from acechat.bots.discord_budget import shared_global_limit
from acechat.bots.discord_buttons import BUTTONS, on_press
from acechat.bots.discord_commands import build_tree
from acechat.bots.discord_components import ControlButton
from acechat.bots.discord_facts import (
    actor_of,
    addresses,
    attachments_of,
    in_thread,
    mentions_others,
    question_text,
    roles_of,
    scope_of,
    thread_name,
)
from acechat.bots.discord_interactive import FIELD, DiscordInteractions
from acechat.bots.discord_settings import DiscordSettings
from acechat.bots.discord_targets import NO_MENTIONS, DiscordLimits, MessageTarget, ThreadTarget
from acechat.bots.discord_ui import ABOUT_CACHE, on_modal, submitted_values
from acechat.core.cache import LRU
from acechat.core.chat import ChatCore, Question
from acechat.core.pacing.limits import InFlightWindow
from acechat.core.scope import Scope
from acechat.core.settings import Settings

log = logging.getLogger(__name__)

# Only what answering needs: read the channel and its history (replies), write in channels and threads.
# Reactions: a repeated refusal is a reaction rather than another public reply.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    read_message_history=True,
    add_reactions=True,
)
# Asked for only where a channel uses `autothread on`: the bot then opens a thread for each mention.
AUTOTHREAD_PERMISSIONS = discord.Permissions(create_public_threads=True)
INVITE_SCOPES = ("bot", "applications.commands")
PORTAL = "https://discord.com/developers/applications"


class DiscordStartupError(StartupError):
    """The bot could not start; the message is one line an operator can act on."""


def intents(*, message_content: bool) -> discord.Intents:
    wanted = discord.Intents.none()
    wanted.guilds = True  # channels, threads and roles, for scopes and permissions
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = message_content  # privileged: replies without a ping, replied-to files
    return wanted


def configure_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at a REST proxy and a gateway when configured.

    Both are process-wide class attributes in discord.py, as is one Discord connection per process here.
    """
    if settings.api_base_url:
        Route.BASE = settings.api_base_url
    if settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


def invite_url(application_id: int, *, threads: bool = False) -> str:
    permissions = INVITE_PERMISSIONS | AUTOTHREAD_PERMISSIONS if threads else INVITE_PERMISSIONS
    return discord.utils.oauth_url(application_id, permissions=permissions, scopes=INVITE_SCOPES)


class AceClient(discord.AutoShardedClient):
    """An auto-sharded client whose events go to the core."""

    def __init__(
        self,
        core: ChatCore,
        settings: DiscordSettings,
        *,
        message_content: bool,
        global_limit: InFlightWindow | None = None,
        **options: Any,
    ) -> None:
        if settings.shard_ids is not None:
            options["shard_ids"] = list(settings.shard_ids)
        super().__init__(
            intents=intents(message_content=message_content),
            allowed_mentions=NO_MENTIONS,
            shard_count=settings.shard_count,
            # Longer waits surface as discord.RateLimited, which the targets hand to the core.
            max_ratelimit_timeout=30.0,
            **options,
        )
        self.core = core
        self.settings = settings
        self.tree = build_tree(self, core, dms=settings.dms)
        self.limits = DiscordLimits(global_limit)
        self.limits.pace(self.http)
        self.interactions = DiscordInteractions(core, self.limits.limits, self)
        self.serving = asyncio.Event()  # set once the first shard is ready
        # Messages "Ask acechat" was opened on, until their form comes back (bots.discord_ui).
        self.about: LRU[int, discord.Message] = LRU(ABOUT_CACHE)

    async def setup_hook(self) -> None:
        # Buttons are matched by their custom_id: presses of messages sent before a restart still work.
        self.add_dynamic_items(ControlButton)
        if self.settings.gateway_url and self.shard_count is None:
            # Without a shard count discord.py connects to the gateway URL Discord returns; ask only
            # for the count so the configured gateway is used.
            self.shard_count, _, _ = await self.http.get_bot_gateway()
        if self.application_id is not None:
            threads = bool(await self._autothread_channels())
            log.info("invite the bot with %s", invite_url(self.application_id, threads=threads))
        # Buttons on answers, also those sent before this process started: known to discord.py, which
        # then keeps no view per message (on_press answers the presses).
        self.add_dynamic_items(*BUTTONS)
        await self._sync_commands()

    async def _sync_commands(self) -> None:
        guild_id = self.settings.dev_guild_id
        try:
            if guild_id is None:
                synced = await self.tree.sync()
                log.info(
                    "synced %d slash commands globally (clients may take up to an hour to see changes)",
                    len(synced),
                )
            else:
                guild = discord.Object(guild_id)
                self.tree.copy_global_to(guild=guild)
                synced = await self.tree.sync(guild=guild)
                log.info("synced %d slash commands to the dev guild %s", len(synced), guild_id)
        except discord.HTTPException as error:
            # The bot can still answer mentions; say what to fix.
            where = "globally" if guild_id is None else f"to guild {guild_id} (is the bot in it?)"
            log.error("could not sync slash commands %s: %s", where, error)

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("Discord shard %d is ready", shard_id)
        self.serving.set()

    async def on_ready(self) -> None:
        log.info(
            "connected to Discord as %s: %d shards, %d servers", self.user, len(self.shards), len(self.guilds)
        )
        for scope in await self._autothread_channels():
            channel = self.get_channel(int(scope.channel))
            if not isinstance(channel, discord.TextChannel):
                continue
            if not channel.permissions_for(channel.guild.me).create_public_threads:
                log.warning(
                    "autothread is on in #%s (%s) but the bot lacks Create Public Threads there: it answers "
                    "in the channel until an admin grants it (or re-invite it with the URL above)",
                    channel.name,
                    channel.id,
                )

    async def _autothread_channels(self) -> list[Scope]:
        try:
            return [s for s in await self.core.autothread_channels() if s.platform == "discord"]
        except Exception:
            log.exception("could not read the channels with autothread on")
            return []

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        # The one entry point for presses and forms, routed by their `acechat:` id: a question's buttons
        # and form (core.choices) to `interactions`, the rest (Stop, votes, preset forms, Ask acechat)
        # to bots.discord_buttons and bots.discord_ui.
        data = cast(Mapping[str, Any], interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        ours = self.interactions.owns(custom_id)
        work: Coroutine[Any, Any, None]
        if interaction.type is discord.InteractionType.component:
            work = self.interactions.pressed(interaction, custom_id) if ours else on_press(interaction)
        elif interaction.type is discord.InteractionType.modal_submit:
            if ours:
                text = submitted_values(data.get("components") or ()).get(FIELD, "")
                work = self.interactions.submitted(interaction, custom_id, text)
            else:
                work = on_modal(interaction)
        else:
            return
        try:
            await work
        except Exception:
            log.exception("a button press or form submission failed", extra={"platform": "discord"})

    async def on_message(self, message: discord.Message) -> None:
        me = self.user
        if me is None or message.author.id == me.id:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        addressed = addresses(message, me)
        # Other bots are never answered; in a thread, the core decides about messages without a
        # mention (engaged threads), so they go to it with the facts.
        if (message.author.bot and addressed) or not (addressed or in_thread(message)):
            return
        if not message.content and not message.attachments:
            # Without the Message Content intent a reply that does not ping the bot arrives empty.
            return
        scope = scope_of(message.channel, message.guild.id if message.guild else None)
        if scope is None:
            log.warning("a message from a channel Discord did not identify", extra={"platform": "discord"})
            return
        question = Question(
            scope,
            actor_of(message.author, message.channel),
            question_text(message, me),
            attachments_of(message),
            roles=roles_of(message.author),
            mentioned=addressed,
            mentions_others=mentions_others(message, me),
            from_bot=message.author.bot,
            operator_dms=self.settings.dms,
        )
        if addressed and await self.core.opens_thread(question):
            thread = await self._open_thread(message, question.text)
            if thread is not None:
                threaded = replace(
                    question, scope=Scope.of(scope.platform, scope.workspace, scope.channel, str(thread.id))
                )
                await self.core.ask(threaded, ThreadTarget(message, thread, self.limits.limits(thread.id)))
                return
        # No await before ask: the core queues turns per scope in arrival order, and events arrive in order.
        await self.core.ask(question, MessageTarget(message, self.limits.limits(message.channel.id)))

    async def _open_thread(self, message: discord.Message, question: str) -> discord.Thread | None:
        """A public thread from the question, named after it; None (answer in the channel) if refused."""
        try:
            return await message.create_thread(name=thread_name(question))
        except discord.HTTPException as error:
            log.warning(
                "could not open a thread for an answer (autothread; needs Create Public Threads): %s",
                error,
                extra={"platform": "discord", "channel": str(message.channel.id)},
            )
            return None


def _startup_error(error: BaseException) -> DiscordStartupError:
    if isinstance(error, discord.LoginFailure) or (
        isinstance(error, discord.ConnectionClosed) and error.code == 4004
    ):
        return DiscordStartupError(
            f"Discord rejected DISCORD_BOT_TOKEN: copy the bot token from the Developer Portal ({PORTAL}) "
            "> your application > Bot > Reset Token"
        )
    if isinstance(error, (discord.GatewayNotFound, aiohttp.ClientError, OSError, TimeoutError)):
        return DiscordStartupError(f"could not reach Discord ({Route.BASE}): {error or type(error).__name__}")
    return DiscordStartupError(f"the Discord client stopped: {error or type(error).__name__}")


class DiscordAdapter:
    """One Discord connection (all of this process's shards) serving one `ChatCore`.

    Shutdown order (bots.runtime): `core.drain()` lets answers in flight finish over this connection,
    then `close()` disconnects.
    """

    name = "discord"

    def __init__(
        self,
        core: ChatCore,
        settings: DiscordSettings,
        *,
        guild_ready_timeout: float = 2.0,
        connect_timeout: float = 60.0,
    ) -> None:
        configure_endpoints(settings)
        self.core = core
        self.settings = settings
        self._guild_ready_timeout = guild_ready_timeout
        self._shared = shared_global_limit(core.settings.database_url, settings.token)
        self.client = self._client(message_content=True)
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def _client(self, *, message_content: bool) -> AceClient:
        return AceClient(
            self.core,
            self.settings,
            message_content=message_content,
            guild_ready_timeout=self._guild_ready_timeout,
            global_limit=None if self._shared is None else self._shared.limit,
        )

    @property
    def connected(self) -> bool:
        client = self.client
        if not client.is_ready() or client.is_closed():
            return False
        return all(not shard.is_closed() for shard in client.shards.values())

    async def start(self) -> None:
        """Log in and return once the first shard serves; raise DiscordStartupError if it cannot.

        A bad token or a refused intent shows on the first shard. Discord paces IDENTIFY (5 s per shard
        by default), so a big bot's other shards keep connecting; `connected` is true once all are ready.
        """
        try:
            await self._start()
        except DiscordStartupError as error:
            if not isinstance(error.__cause__, discord.PrivilegedIntentsRequired):
                raise
            log.warning(
                "Discord refused the Message Content intent; answering mentions, DMs and replies that ping "
                "the bot without it. Enable it (Developer Portal > Bot > Privileged Gateway Intents) to "
                "also answer replies that do not ping the bot and read the files of replied-to messages"
            )
            self.client = self._client(message_content=False)
            await self._start()

    async def _start(self) -> None:
        if self._shared is not None and not self._shared.started:
            await self._shared.start()
        self._task = asyncio.create_task(self.client.start(self.settings.token), name="discord")
        ready = asyncio.create_task(self.client.serving.wait())
        try:
            done, _ = await asyncio.wait(
                {self._task, ready}, timeout=self._connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ready.cancel()
        if self._task in done:
            error = self._task.exception() or RuntimeError("closed before it was ready")
            await self.client.close()
            raise _startup_error(error) from error
        if not done:
            await self.close()
            raise DiscordStartupError(
                f"Discord did not answer within {self._connect_timeout:.0f}s ({Route.BASE})"
            )
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # discord.py reconnects by itself; it gives up only on errors that need the operator.
        if self._closing or task.cancelled():
            return
        error = task.exception()
        log.error("the Discord connection ended: %s", _startup_error(error) if error else "closed by Discord")

    async def close(self) -> None:
        self._closing = True
        await self.client.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._shared is not None:
            await self._shared.close()


def _settings(settings: Settings) -> DiscordSettings:
    discord_settings = settings.platform("discord", DiscordSettings)
    assert discord_settings is not None, "the registry creates only configured adapters"
    return discord_settings


def create(core: ChatCore, settings: Settings) -> DiscordAdapter:
    return DiscordAdapter(core, _settings(settings))


async def verify(settings: Settings) -> str:
    """Discord's current-user call with the token: who the bot is, or a DiscordStartupError."""
    discord_settings = _settings(settings)
    base = (discord_settings.api_base_url or Route.BASE).rstrip("/")
    headers = {"Authorization": f"Bot {discord_settings.token}", "User-Agent": "acechat"}
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.upstream.connect_timeout)
            ) as session,
            session.get(f"{base}/users/@me", headers=headers) as response,
        ):
            if response.status == 401:
                raise DiscordStartupError(
                    f"Discord rejected DISCORD_BOT_TOKEN: reset it in the Developer Portal ({PORTAL})"
                )
            if response.status != 200:
                raise DiscordStartupError(
                    f"Discord answered the current-user call with HTTP {response.status}"
                )
            me = await response.json()
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
        raise DiscordStartupError(
            f"could not reach Discord ({base}): {error or type(error).__name__}"
        ) from None
    return f"Discord bot {me.get('username')} ({me.get('id')})"
