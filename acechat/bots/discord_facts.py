"""A Discord event described in the core's terms: its scope, who asked, what they asked and attached.

Only facts live here. Whether the asker may change settings, which attachments go upstream and what
to answer are the core's decisions.
"""

from __future__ import annotations

import re

import discord

from acechat.core.facts import Actor, Attachment
from acechat.core.permissions import Privilege
from acechat.core.scope import Scope

PLATFORM = "discord"


def scope_of(channel: object, guild_id: int | None) -> Scope | None:
    """A thread is its own conversation under its parent channel, so it inherits the channel's settings.

    None when the channel is unknown: such an event must not land on a scope shared with others.
    """
    channel_id = getattr(channel, "id", None)
    if not isinstance(channel_id, int) or channel_id <= 0:
        return None
    if guild_id is None:
        return Scope.of(PLATFORM, None, str(channel_id))
    if isinstance(channel, discord.Thread):
        if not channel.parent_id:
            return None
        return Scope.of(PLATFORM, str(guild_id), str(channel.parent_id), str(channel_id))
    return Scope.of(PLATFORM, str(guild_id), str(channel_id))


def privilege(server: discord.Permissions, here: discord.Permissions) -> Privilege:
    """Manage Server or Administrator rule the server; Manage Channels only the channel it is held on."""
    if server.administrator or server.manage_guild:
        return Privilege.WORKSPACE_ADMIN
    if here.manage_channels:
        return Privilege.CHANNEL_ADMIN
    return Privilege.MEMBER


def actor_of(user: discord.User | discord.Member, channel: object) -> Actor:
    """The author of a message, with their rights in this channel."""
    level = Privilege.MEMBER
    if isinstance(user, discord.Member):
        server = user.guild_permissions
        permissions_for = getattr(channel, "permissions_for", None)
        # An uncached channel (PartialMessageable) has no overwrites to apply: use the server-wide ones.
        here = permissions_for(user) if permissions_for is not None else server
        level = privilege(server, here)
    return Actor(str(user.id), user.display_name, level)


def actor_of_interaction(interaction: discord.Interaction) -> Actor:
    """The invoker of a command, with their rights in that channel.

    Discord sends the member's permissions resolved for the channel. Manage Server and Administrator
    are server-wide rights that channel overwrites cannot grant, so they still tell the server level.
    """
    level = Privilege.MEMBER
    if interaction.guild_id is not None:
        here = interaction.permissions
        level = privilege(here, here)
    return Actor(str(interaction.user.id), interaction.user.display_name, level)


def attachment_of(attachment: discord.Attachment) -> Attachment:
    return Attachment(attachment.url, attachment.filename, attachment.content_type, attachment.size)


def replied_message(message: discord.Message) -> discord.Message | None:
    reference = message.reference
    if reference is None:
        return None
    resolved = reference.resolved or reference.cached_message
    return resolved if isinstance(resolved, discord.Message) else None


def addresses(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether the message is for the bot: a DM, a mention of it or its role, or a reply to it.

    `@everyone` and `@here` set `mention_everyone`, not `mentions`, so alone they do not count.
    """
    if message.guild is None:
        return True
    if any(user.id == me.id for user in message.mentions):
        return True
    own_role = message.guild.self_role
    if own_role is not None and own_role in message.role_mentions:
        return True
    replied = replied_message(message)
    return replied is not None and replied.author.id == me.id


def question_text(message: discord.Message, me: discord.abc.User) -> str:
    """The text without the bot's mention; other mentions become the names people see."""
    text = re.sub(rf"<@!?{me.id}>", "", message.content)
    if message.guild is not None and message.guild.self_role is not None:
        text = text.replace(message.guild.self_role.mention, "")
    for user in message.mentions:
        if user.id != me.id:
            # Plain replacement, not a regex template: a name like "\1" is anyone's to choose.
            shown = f"@{user.display_name}"
            text = text.replace(f"<@{user.id}>", shown).replace(f"<@!{user.id}>", shown)
    for role in message.role_mentions:
        text = text.replace(role.mention, f"@{role.name}")
    for channel in message.channel_mentions:
        text = text.replace(channel.mention, f"#{channel.name}")
    return text.strip()


def attachments_of(message: discord.Message) -> tuple[Attachment, ...]:
    """Files on the message, then on the message it replies to (asking about an earlier upload)."""
    found = list(message.attachments)
    replied = replied_message(message)
    if replied is not None:
        found.extend(replied.attachments)
    return tuple(attachment_of(a) for a in found)


# --- facts for admins' controls (issue 17) ------------------------------------------------------------


def roles_of(user: discord.User | discord.Member) -> tuple[str, ...]:
    """The asker's server roles (none in a direct message), for the allow and deny lists."""
    if isinstance(user, discord.Member):
        return tuple(str(role.id) for role in user.roles if not role.is_default())
    return ()


def in_thread(message: discord.Message) -> bool:
    return isinstance(message.channel, discord.Thread)


def mentions_others(message: discord.Message, me: discord.abc.User) -> bool:
    """Whether it names anyone but the bot (people, roles, @everyone): then it is for them."""
    return (
        message.mention_everyone
        or bool(message.role_mentions)
        or any(user.id != me.id for user in message.mentions)
    )


THREAD_NAME_CHARS = 100  # Discord's limit for a thread's name


def thread_name(question: str) -> str:
    """A thread's name from its question: the first line, whitespace folded, within Discord's limit."""
    first = " ".join(question.strip().split("\n", 1)[0].split())
    if len(first) > THREAD_NAME_CHARS:
        first = first[: THREAD_NAME_CHARS - 1] + "…"
    return first or "Question"
