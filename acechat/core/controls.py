"""Admins' controls in force (cached, dropped on every change) and the commands that change or show them.

`ControlState` reads a channel's and its workspace's controls through one cache that the store's change
notifications keep true across processes. `ControlCommands` runs `channel`, `access`, `users`, `quota`,
`usage`, `engage`, `autothread`, `transcripts` and `forget me`, each change audited with its old value;
`status_lines` says what is in force and where it comes from. Rights were checked before a handler runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from acechat.core import access
from acechat.core.access import Controls
from acechat.core.cache import LRU
from acechat.core.commands import Action, Command, CommandReply
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege
from acechat.core.scope import DIRECT, Scope
from acechat.core.settings import Settings
from acechat.core.state import audit_entry
from acechat.storage import EVERYTHING, Change, Store
from acechat.storage.records import AuditAction, Control, UsageHold, UsageRecord

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
USAGE_TOP = 5

Handler = Callable[[Scope, Actor, Command], Awaitable[CommandReply]]


class ControlState:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: LRU[str, tuple[Control, ...]] = LRU(CACHE_SIZE)
        self._generation = 0
        store.on_change(self._changed)

    def _changed(self, change: Change) -> None:
        if change.key == EVERYTHING:
            self._cache.clear()
        elif change.kind == "control":
            self._cache.pop(change.key)
        else:
            return
        self._generation += 1

    async def of(self, scope: Scope) -> Controls:
        channel, workspace = scope.channel_scope.key, scope.workspace_key
        keys = (channel, workspace)
        missing = [k for k in keys if k not in self._cache]
        if missing:
            generation = self._generation
            found = await self._store.get_controls(missing)
            by_key: dict[str, list[Control]] = {k: [] for k in missing}
            for c in found:
                by_key[c.key].append(c)
            if generation != self._generation:
                # A change landed while the read was out: use what was read, keep nothing.
                fresh = {k: tuple(v) for k, v in by_key.items()}
                got = {k: fresh[k] if k in fresh else self._cache.get(k) or () for k in keys}
                return Controls.of(got[channel], got[workspace])
            for k, v in by_key.items():
                self._cache.put(k, tuple(v))
        return Controls.of(self._cache.get(channel) or (), self._cache.get(workspace) or ())

    async def set(
        self,
        scope: Scope,
        actor: Actor,
        key: str,
        name: str,
        value: str | None,
        action: AuditAction,
        shown: str | None = None,
    ) -> tuple[bool, str | None]:
        """Set one control (None removes it), audited with `shown` as the new value (default: `value`);
        (changed, old value). Setting what is already there changes nothing and logs nothing."""
        current = {c.name: c.value for c in await self._store.get_controls([key])}.get(name)
        if current == value:
            return False, current
        entry = audit_entry(scope, actor, action, current, shown if shown is not None else value)
        old = await self._store.set_control(key, name, value, audit=entry)
        return True, old


# How long a hold outlives its process if that dies mid-question: past the longest wait for a turn
# and the longest answer, with margin.
HOLD_MARGIN_SECONDS = 60.0


class QuotaGate:
    """Admission under the workspace's quotas, atomic for every process sharing the store: an
    admitted question holds one count on its user, channel and workspace until its usage is
    recorded (then it counts if answered) or it is released, so questions asked at once, in one
    process or several, cannot together pass a quota."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._store = store
        self._hold_seconds = settings.max_wait + settings.answer_timeout + HOLD_MARGIN_SECONDS
        # Holds of this process not yet recorded or released.
        self._open: set[str] = set()

    async def admit(
        self, scope: Scope, user_id: str, controls: Controls
    ) -> tuple[access.QuotaHit | None, UsageHold | None]:
        """The quota the question would go past (and nothing held), else None and the hold it takes."""
        now = time.time()
        hold = UsageHold(
            uuid.uuid4().hex,
            scope.workspace_key,
            scope.channel_scope.key,
            user_id,
            access.day_start(now),
            now + self._hold_seconds,
        )
        taken, used = await self._store.hold_usage(
            hold, now, lambda used: access.quota_refusal(controls, used) is None
        )
        if taken:
            self._open.add(hold.id)
            return None, hold
        return access.quota_refusal(controls, used), None

    async def record(self, usage: UsageRecord, hold: UsageHold | None) -> None:
        """Record a question that went upstream, ending its hold in the same transaction."""
        await self._store.record_usage(usage, hold)
        if hold is not None:
            self._open.discard(hold.id)

    async def release(self, hold: UsageHold | None) -> None:
        """End a hold whose question was not recorded; a store that fails leaves it to expire."""
        if hold is None or hold.id not in self._open:
            return
        self._open.discard(hold.id)
        try:
            await self._store.release_usage(hold)
        except Exception:
            log.exception("could not release a quota hold; it expires in %.0f s", self._hold_seconds)


# A channel's own settings. Set in a direct message they would be stored and never read: direct
# messages follow `access dms` (Slack) or the operator (Discord), and their threads are not followed.
CHANNEL_ONLY = {Action.CHANNEL: "channel on|off", Action.ENGAGE: "engage mention|thread"}


def direct_message_refusal(scope: Scope, command: Command, direct: bool) -> CommandReply | None:
    """The refusal of a channel's own setting typed in a direct message (`direct`, or a DM of no
    workspace) by someone who holds the right to set it elsewhere."""
    shape = CHANNEL_ONLY.get(command.action)
    if shape is None or not (direct or scope.workspace == DIRECT):
        return None
    text = f"`{shape}` applies to channels: type it in the channel it should change."
    if command.action is Action.CHANNEL:
        text += (
            " Direct messages to me follow the workspace's `access dms on|off`."
            if scope.platform == "slack"
            else " Direct messages to me follow the bot operator's setting."
        )
    return CommandReply(text, ok=False)


def _switch(value: bool | None, on: str, off: str, default: str) -> str:
    if value is None:
        return f"{default} (default)"
    return on if value else off


class ControlCommands:
    def __init__(self, settings: Settings, store: Store, controls: ControlState) -> None:
        self._settings = settings
        self._store = store
        self._controls = controls

    def handlers(self) -> dict[Action, Handler]:
        return {
            Action.CHANNEL: self._channel,
            Action.ACCESS: self._access,
            Action.ACCESS_DMS: self._access_dms,
            Action.USERS_ALLOW: self._users_set,
            Action.USERS_DENY: self._users_set,
            Action.USERS_REMOVE: self._users_set,
            Action.USERS_LIST: self._users_list,
            Action.QUOTA: self._quota,
            Action.USAGE: self._usage,
            Action.ENGAGE: self._engage,
            Action.AUTOTHREAD: self._autothread,
            Action.TRANSCRIPTS: self._transcripts,
            Action.FORGET_ME: self._forget_me,
        }

    # --- where ------------------------------------------------------------------------------------

    @staticmethod
    def _not_in_dm(scope: Scope, what: str) -> CommandReply | None:
        if scope.workspace == DIRECT:
            return CommandReply(
                f"`{what}` is for a channel of a workspace or server, not a direct message.", ok=False
            )
        return None

    async def _channel(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        value = command.name or "on"
        changed, _ = await self._controls.set(
            scope, actor, scope.channel_scope.key, access.CHANNEL, value, AuditAction.CHANNEL
        )
        if not changed:
            return CommandReply(f"I'm already turned {value} in this channel.")
        return CommandReply(f"{actor.display_name} turned me {value} in this channel.", public=True)

    async def _access(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        refused = self._not_in_dm(scope, "access")
        if refused:
            return refused
        value = command.name or "open"
        changed, _ = await self._controls.set(
            scope, actor, scope.workspace_key, access.ACCESS, value, AuditAction.ACCESS
        )
        meaning = (
            "I answer only in channels turned on with `channel on`"
            if value == "listed"
            else "I answer in every channel I'm in, except those turned off"
        )
        if not changed:
            return CommandReply(f"Access is already `{value}`: {meaning}.")
        return CommandReply(f"{actor.display_name} set access to `{value}`: {meaning}.", public=True)

    async def _access_dms(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        if scope.platform == "discord":
            return CommandReply(
                "Discord direct messages belong to no server: the bot's operator turns them on or off "
                "with ACECHAT_DISCORD_DMS.",
                ok=False,
            )
        if scope.platform != "slack":
            return CommandReply("`access dms` is for Slack workspaces.", ok=False)
        value = command.name or "on"
        changed, _ = await self._controls.set(
            scope, actor, scope.workspace_key, access.DMS, value, AuditAction.ACCESS_DMS
        )
        if not changed:
            return CommandReply(f"Direct messages are already {value}.")
        return CommandReply(f"{actor.display_name} turned direct messages to me {value}.")

    # --- who --------------------------------------------------------------------------------------

    async def _users_set(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        refused = self._not_in_dm(scope, "users")
        if refused:
            return refused
        subject = command.name or ""
        if scope.platform != "discord" and subject.startswith(access.ROLE_PREFIX):
            return CommandReply("Roles are Discord's; here, name people.", ok=False)
        verdict = {Action.USERS_ALLOW: "allow", Action.USERS_DENY: "deny"}.get(command.action)
        shown = access.show_subject(subject)
        changed, old = await self._controls.set(
            scope,
            actor,
            scope.workspace_key,
            subject,
            verdict,
            AuditAction.USERS,
            shown=f"{subject} {verdict or 'removed'}",
        )
        if verdict is None:
            if not changed:
                return CommandReply(f"{shown} is on neither list.")
            return CommandReply(f"{actor.display_name} took {shown} off the {old} list.")
        if not changed:
            return CommandReply(f"{shown} is already on the {verdict} list.")
        lifted = " (lifting the deny)" if old == "deny" else ""
        return CommandReply(f"{actor.display_name} put {shown} on the {verdict} list{lifted}.")

    async def _users_list(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        controls = await self._controls.of(scope)
        allowed, denied = controls.allow_list(), controls.deny_list()
        if not allowed and not denied:
            return CommandReply("No allow or deny lists: everyone here may ask.")
        lines = []
        if allowed:
            lines.append(
                "**Allowed** (only they, and admins, may ask): "
                + ", ".join(map(access.show_subject, allowed))
            )
        if denied:
            lines.append("**Denied** (a deny always wins): " + ", ".join(map(access.show_subject, denied)))
        return CommandReply("\n".join(lines))

    # --- how much ---------------------------------------------------------------------------------

    async def _quota(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        refused = self._not_in_dm(scope, "quota")
        if refused:
            return refused
        level = command.name or "user"
        if command.text == "off":
            cleared = []
            for unit in access.UNITS:
                name = access.Quota(level, unit, 0).name
                changed, old = await self._controls.set(
                    scope,
                    actor,
                    scope.workspace_key,
                    name,
                    None,
                    AuditAction.QUOTA,
                    shown=f"{level} {unit} off",
                )
                if changed:
                    cleared.append(access.Quota(level, unit, int(old or 0)).amount)
            if not cleared:
                return CommandReply(f"There is no {level} quota to clear.")
            return CommandReply(
                f"{actor.display_name} cleared the {level} quota ({' and '.join(cleared)} a day)."
            )
        number, unit = (command.text or "").split()
        quota = access.Quota(level, unit, int(number))
        changed, _ = await self._controls.set(
            scope,
            actor,
            scope.workspace_key,
            quota.name,
            number,
            AuditAction.QUOTA,
            shown=f"{level} {number} {unit}/day",
        )
        if not changed:
            return CommandReply(f"The quota is already {quota.describe()}.")
        note = ""
        if unit == "tokens":
            note = " Tokens count where the AI service reports them."
        return CommandReply(f"{actor.display_name} set a quota of {quota.describe()} (UTC days).{note}")

    async def _usage(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        period = command.name or "today"
        now = time.time()
        since = access.day_start(now) - access.PERIODS.get(period, 0) * access.DAY
        totals = await self._store.usage_totals(scope.workspace_key, since, USAGE_TOP)
        label = "today (UTC)" if period == "today" else f"the last {period.removesuffix('d')} days"
        if not totals.questions:
            return CommandReply(f"No questions went to the AI service {label}.")
        lines = [
            f"**Usage {label}:** {totals.questions:,} questions ({totals.answered:,} answered), "
            f"{totals.answer_chars:,} answer characters, {totals.upstream_seconds:,.0f} s upstream"
            + (f", {totals.tokens:,} tokens" if totals.tokens else ""),
        ]
        if totals.top_users:
            lines.append("**Top users:** " + ", ".join(f"`{u}` {n}" for u, n in totals.top_users))
        if totals.top_channels:
            lines.append(
                "**Top channels:** " + ", ".join(f"`{_channel_of(c)}` {n}" for c, n in totals.top_channels)
            )
        # How answers were rated (issue 18), by model and preset.
        ratings = await self._store.feedback(scope.workspace_key, since)
        if ratings:
            lines.append(
                "**Ratings:** "
                + ", ".join(
                    f"`{t.model}` · `{t.preset}` {t.up} 👍 / {t.down} 👎" for t in ratings[:USAGE_TOP]
                )
            )
        return CommandReply("\n".join(lines))

    # --- threads ----------------------------------------------------------------------------------

    async def _engage(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        value = command.name or "mention"
        channel = scope.channel_scope.key
        changed, _ = await self._controls.set(scope, actor, channel, access.ENGAGE, value, AuditAction.ENGAGE)
        if value == "mention":
            # Threads engaged before stop being engaged, whether or not the setting changed.
            await self._store.disengage_threads(channel)
        if not changed:
            return CommandReply(f"This channel is already set to `engage {value}`.")
        meaning = (
            "once someone asks me in a thread, I answer later messages there without a mention"
            if value == "thread"
            else "I answer only when mentioned"
        )
        return CommandReply(
            f"{actor.display_name} set this channel to `engage {value}`: {meaning}.", public=True
        )

    async def _autothread(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        if scope.platform != "discord":
            return CommandReply(
                "`autothread` is for Discord; Slack answers mentions in a thread already.", ok=False
            )
        refused = self._not_in_dm(scope, "autothread")
        if refused:
            return refused
        value = command.name or "off"
        changed, _ = await self._controls.set(
            scope, actor, scope.channel_scope.key, access.AUTOTHREAD, value, AuditAction.AUTOTHREAD
        )
        if not changed:
            return CommandReply(f"Autothread is already {value} here.")
        meaning = (
            "a mention here opens a thread for its answer" if value == "on" else "answers are replies here"
        )
        return CommandReply(f"{actor.display_name} turned autothread {value}: {meaning}.", public=True)

    # --- privacy ----------------------------------------------------------------------------------

    async def _transcripts(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        refused = self._not_in_dm(scope, "transcripts")
        if refused:
            return refused
        value = command.name or "on"
        changed, _ = await self._controls.set(
            scope, actor, scope.workspace_key, access.TRANSCRIPTS, value, AuditAction.TRANSCRIPTS
        )
        if not changed:
            return CommandReply(f"Transcripts are already {value}.")
        if value == "off":
            return CommandReply(
                f"{actor.display_name} turned transcripts off: from now on no question or answer text is "
                "kept here, only counts.",
                public=True,
            )
        return CommandReply(
            f"{actor.display_name} turned transcripts on: questions and answers are kept "
            f"{self._settings.transcript_days} days.",
            public=True,
        )

    async def _forget_me(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        now = time.time()
        entry = audit_entry(scope, actor, AuditAction.FORGET, None, None)
        transcripts, usage = await self._store.forget_user(
            scope.workspace_key, actor.user_id, access.day_start(now), audit=entry
        )
        return CommandReply(
            f"Deleted {transcripts:,} of your questions and answers and {usage:,} usage records here. "
            "Today's counts stay, without your name in listings, until the day ends (UTC), so quotas "
            "still hold; the AI service keeps its own conversation history (see the README)."
        )

    # --- status -----------------------------------------------------------------------------------

    async def status_lines(self, scope: Scope, level: Privilege) -> list[str]:
        controls = await self._controls.of(scope)
        if scope.workspace == DIRECT and scope.platform == "discord":
            return ["**Direct messages:** the operator's setting (ACECHAT_DISCORD_DMS)"]
        mode = "listed" if controls.listed else "open"
        mode_source = "workspace setting" if controls.listed is not None else "default"
        if controls.channel is None:
            here = "answering" if mode == "open" else "not answering: not turned on"
            where = f"{here} (access `{mode}`, {mode_source})"
        else:
            where = f"turned {'on' if controls.channel else 'off'} (channel setting; access `{mode}`, {mode_source})"
        lines = [f"**Here:** {where}"]
        if scope.platform == "slack":
            lines.append(
                "**Direct messages:** "
                + _switch(controls.dms, "on (workspace setting)", "off (workspace setting)", "on")
            )
        allowed, denied = controls.allow_list(), controls.deny_list()
        who = "everyone (default)"
        if allowed or denied:
            parts = [f"{len(allowed)} allowed (only they and admins may ask)"] if allowed else []
            parts += [f"{len(denied)} denied"] if denied else []
            who = ", ".join(parts) + " (workspace setting; `users list`)"
        lines.append(f"**Who may ask:** {who}")
        quotas = (
            "; ".join(q.describe() for q in controls.quotas) + " (workspace setting)"
            if controls.quotas
            else "none (default)"
        )
        lines.append(f"**Quotas:** {quotas}")
        lines.append(
            "**Threads:** "
            + _switch(
                controls.engage_thread,
                "`engage thread`: engaged threads are answered without a mention (channel setting)",
                "`engage mention` (channel setting)",
                "`engage mention`",
            )
        )
        if scope.platform == "discord":
            lines.append(
                "**Autothread:** "
                + _switch(controls.autothread, "on (channel setting)", "off (channel setting)", "off")
            )
        days = self._settings.transcript_days
        kept = f"kept {days} days" if days else "not kept (operator setting ACECHAT_TRANSCRIPT_DAYS=0)"
        lines.append(
            "**Transcripts:** "
            + _switch(
                controls.transcripts,
                f"{kept} (workspace setting)",
                "off: counts only (workspace setting)",
                kept,
            )
        )
        if level >= Privilege.CHANNEL_ADMIN:
            lines.append("_You are an admin here: channel, access, user lists and quotas never refuse you._")
        return lines


def _channel_of(channel_key: str) -> str:
    parts = channel_key.split(":")
    return parts[2] if len(parts) == 4 else channel_key
