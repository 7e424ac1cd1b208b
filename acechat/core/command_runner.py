"""What each command does and says. The rights check has already passed when `run` is called."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from acechat.core.commands import HELP_TEXT, Action, Command, CommandReply
from acechat.core.controls import ControlCommands
from acechat.core.facts import Actor
from acechat.core.interactions import DESCRIPTION_FIELD, NAME_FIELD, PROMPT_FIELD
from acechat.core.permissions import privilege_of
from acechat.core.presets import (
    BUILTIN_PRESETS,
    PresetError,
    validate_description,
    validate_preset_name,
    validate_prompt,
)
from acechat.core.scope import Scope
from acechat.core.state import Field, ScopeState, audit_entry
from acechat.storage.records import AuditAction, CustomPreset, FeedbackTally

log = logging.getLogger(__name__)

Handler = Callable[[Scope, Actor, Command], Awaitable[CommandReply]]

MAX_CUSTOM_PRESETS = 50
AUDIT_PAGE = 15
# Audit lines quote old and new values; a whole preset prompt would drown the page.
AUDIT_VALUE_CHARS = 60
FRESH = "A new conversation starts with the next question."


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} days"


def _where(scope: Scope) -> str:
    return "this thread" if scope.is_thread else "this channel"


def _place(scope_key: str) -> str:
    """Where an audited change was made, from its scope key (platform:workspace:channel:thread)."""
    parts = scope_key.split(":")
    if len(parts) != 4:
        return scope_key
    channel, thread = parts[2], parts[3]
    return f"channel {channel}" if thread == "-" else f"thread {thread} in {channel}"


def _quoted(value: str | None) -> str:
    if value is None:
        return "—"
    text = " ".join(value.split()).replace("`", "'")
    if len(text) > AUDIT_VALUE_CHARS:
        text = text[: AUDIT_VALUE_CHARS - 1] + "…"
    return f"`{text}`"


class CommandRunner:
    def __init__(self, state: ScopeState, controls: ControlCommands) -> None:
        self._state = state
        self._controls = controls
        self._store = state.store
        self._settings = state.settings
        self._handlers: dict[Action, Handler] = {
            Action.HELP: self._help,
            Action.RESET: self._reset,
            Action.STATUS: self._status,
            Action.AUDIT: self._audit,
            Action.FEEDBACK: self._feedback,
            Action.PRESET_LIST: self._preset_list,
            Action.PRESET_SHOW: self._preset_show,
            Action.PRESET_SET: self._preset_set,
            Action.PRESET_CLEAR: self._preset_clear,
            Action.PRESET_DEFAULT: self._preset_default,
            Action.PRESET_CREATE: self._preset_create,
            Action.PRESET_EDIT: self._preset_edit,
            Action.PRESET_DELETE: self._preset_delete,
            Action.MODEL_LIST: self._model_list,
            Action.MODEL_SHOW: self._model_show,
            Action.MODEL_SET: self._model_set,
            Action.MODEL_DEFAULT: self._model_default,
            Action.TOOLS_SHOW: self._tools_show,
            Action.TOOLS_SET: self._tools_set,
            Action.TOOLS_DEFAULT: self._tools_default,
            **controls.handlers(),
        }

    async def run(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        handler = self._handlers.get(command.action)
        if handler is None:
            return CommandReply(HELP_TEXT, ok=False)
        try:
            return await handler(scope, actor, command)
        except PresetError as error:
            return CommandReply(error.user_message, ok=False)

    async def _feedback(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        since = time.time() - FEEDBACK_DAYS * DAY_SECONDS
        return CommandReply(feedback_report(await self._store.feedback(scope.workspace_key, since)))

    async def _help(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        reason = f"{command.text}\n\n" if command.text else ""
        return CommandReply(reason + HELP_TEXT, ok=not command.text)

    async def _reset(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        existed = await self._state.reset(scope)
        if not existed:
            return CommandReply(f"There is no conversation in {_where(scope)} yet; just ask.")
        return CommandReply(
            f"{actor.display_name} started a new conversation in {_where(scope)}.", public=True
        )

    async def _status(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._state.resolve(scope)
        conversation = await self._state.conversation(scope)
        lines = [
            f"**Model:** `{resolved.model}` ({resolved.model_source})",
            f"**Preset:** `{resolved.preset.name}` ({resolved.preset_source}) — {resolved.preset.description}",
            f"**Tools:** {'on' if resolved.tools else 'off'} ({resolved.tools_source})",
        ]
        if conversation is None or conversation.upstream_id is None:
            lines.append("**Conversation:** none yet; the next question starts one.")
        else:
            stale = conversation.model != resolved.model or conversation.preset != resolved.preset.name
            age = _age(time.time() - conversation.created_at)
            turns = f"{conversation.turns} turn{'s' if conversation.turns != 1 else ''}"
            suffix = " (settings changed: the next question starts a new one)" if stale else ""
            lines.append(f"**Conversation:** {turns}, started {age} ago{suffix}")
        level = privilege_of(scope.platform, actor.user_id, actor.privilege, self._settings.admin_users)
        lines += await self._controls.status_lines(scope, level)
        return CommandReply("\n".join(lines))

    async def _audit(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        total = await self._store.count_audit(scope.workspace_key)
        if not total:
            return CommandReply("No admin changes yet.")
        pages = math.ceil(total / AUDIT_PAGE)
        if command.page > pages:
            return CommandReply(f"There are only {pages} pages of admin changes.", ok=False)
        entries = await self._store.list_audit(
            scope.workspace_key, limit=AUDIT_PAGE, offset=(command.page - 1) * AUDIT_PAGE
        )
        lines = [f"**Admin changes, newest first** (page {command.page} of {pages})"]
        for entry in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.at))
            # The id beside the name: display names are anyone's to choose, ids are not.
            who = f"{entry.actor_name} (`{entry.actor_id}`)"
            change = f"{_quoted(entry.old)} → {_quoted(entry.new)}"
            lines.append(f"{when} UTC · {who} · {entry.action} · {_place(entry.scope_key)} · {change}")
        if command.page < pages:
            lines.append(f"_Older: `audit {command.page + 1}`_")
        return CommandReply("\n".join(lines))

    # --- presets ----------------------------------------------------------------------------------

    async def _preset_list(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._state.resolve(scope)
        custom = await self._store.list_presets(scope.workspace_key)
        lines = ["**Built-in presets**"]
        for preset in BUILTIN_PRESETS.values():
            marker = " ← in use" if preset.name == resolved.preset.name else ""
            lines.append(f"`{preset.name}` — {preset.description}{marker}")
        if custom:
            lines.append("**Custom presets**")
            for item in custom:
                marker = " ← in use" if item.name == resolved.preset.name else ""
                lines.append(f"`{item.name}` — {item.description or 'custom preset'}{marker}")
        return CommandReply("\n".join(lines))

    async def _preset_show(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        if command.name:
            preset = await self._state.find_preset(scope, validate_preset_name(command.name))
            if preset is None:
                return await self._unknown_preset(scope, command.name)
            source = "built-in" if preset.builtin else "custom"
        else:
            resolved = await self._state.resolve(scope)
            preset, source = resolved.preset, f"in use here, from the {resolved.preset_source} setting"
        return CommandReply(f"**{preset.name}** ({source}) — {preset.description}\n```\n{preset.prompt}\n```")

    async def _unknown_preset(self, scope: Scope, name: str) -> CommandReply:
        names = await self._state.preset_names(scope)
        return CommandReply(
            f"There is no preset `{name}`. Presets: {', '.join(f'`{n}`' for n in names)}.", ok=False
        )

    async def _set(
        self, scope: Scope, actor: Actor, key: str, field: Field, value: str | None, action: AuditAction
    ) -> str | None:
        """Change one setting; returns the value it had (equal to `value` when nothing changed)."""
        return await self._state.change_setting(scope, actor, key, field, value, action)

    async def _preset_set(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        name = validate_preset_name(command.name or "")
        if await self._state.find_preset(scope, name) is None:
            return await self._unknown_preset(scope, name)
        if await self._set(scope, actor, scope.key, "preset", name, AuditAction.PRESET_SET) == name:
            return CommandReply(f"{_where(scope).capitalize()} already uses the preset `{name}`.")
        return CommandReply(
            f"{actor.display_name} set the preset for {_where(scope)} to `{name}`. {FRESH}", public=True
        )

    async def _preset_clear(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        old = await self._set(scope, actor, scope.key, "preset", None, AuditAction.PRESET_CLEAR)
        if old is None:
            return CommandReply(f"{_where(scope).capitalize()} has no preset of its own; nothing to clear.")
        resolved = await self._state.resolve(scope)
        return CommandReply(
            f"{actor.display_name} cleared the preset for {_where(scope)}; it now uses `{resolved.preset.name}`. {FRESH}",
            public=True,
        )

    async def _preset_default(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        name = validate_preset_name(command.name or "")
        if await self._state.find_preset(scope, name) is None:
            return await self._unknown_preset(scope, name)
        if (
            await self._set(scope, actor, scope.workspace_key, "preset", name, AuditAction.PRESET_DEFAULT)
            == name
        ):
            return CommandReply(f"`{name}` is already the default preset.")
        return CommandReply(
            f"{actor.display_name} made `{name}` the default preset for channels without their own. {FRESH}",
            public=True,
        )

    async def _preset_create(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        return await self._save_preset(scope, actor, command, creating=True)

    async def _preset_edit(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        return await self._save_preset(scope, actor, command, creating=False)

    async def preset_problems(self, scope: Scope, command: Command, *, creating: bool) -> dict[str, str]:
        """What keeps a preset create or edit from saving, by field (interactions.NAME_FIELD, …): the
        name, the prompt and the description are each checked, so a form can show every problem at once."""
        return (await self._checked_preset(scope, command, creating=creating))[0]

    async def _checked_preset(
        self, scope: Scope, command: Command, *, creating: bool
    ) -> tuple[dict[str, str], CustomPreset | None]:
        """`preset_problems`, and the preset saved under the name now (None: none, or a bad name)."""
        problems: dict[str, str] = {}
        name = ""
        try:
            name = validate_preset_name(command.name or "")
        except PresetError as error:
            problems[NAME_FIELD] = error.user_message
        if name in BUILTIN_PRESETS:
            problems[NAME_FIELD] = f"`{name}` is a built-in preset; choose another name."
        try:
            validate_prompt(command.text or "", self._settings.max_preset_chars)
        except PresetError as error:
            problems[PROMPT_FIELD] = error.user_message
        try:
            validate_description(command.description)
        except PresetError as error:
            problems[DESCRIPTION_FIELD] = error.user_message
        if NAME_FIELD in problems:
            return problems, None
        store = self._store
        existing = await store.get_preset(scope.workspace_key, name)
        if creating and existing is not None:
            problems[NAME_FIELD] = f"A preset `{name}` already exists; use `preset edit {name} PROMPT`."
        elif not creating and existing is None:
            problems[NAME_FIELD] = f"There is no custom preset `{name}`; use `preset create {name} PROMPT`."
        elif creating and await store.count_presets(scope.workspace_key) >= MAX_CUSTOM_PRESETS:
            problems[NAME_FIELD] = (
                f"This workspace already has {MAX_CUSTOM_PRESETS} custom presets; delete one first."
            )
        return problems, existing

    async def _save_preset(
        self, scope: Scope, actor: Actor, command: Command, *, creating: bool
    ) -> CommandReply:
        problems, existing = await self._checked_preset(scope, command, creating=creating)
        for field in (NAME_FIELD, PROMPT_FIELD, DESCRIPTION_FIELD):
            if field in problems:
                return CommandReply(problems[field], ok=False)
        store = self._store
        name = validate_preset_name(command.name or "")
        prompt = validate_prompt(command.text or "", self._settings.max_preset_chars)
        now = time.time()
        description = validate_description(command.description) if command.description else None
        preset = CustomPreset(
            workspace_key=scope.workspace_key,
            name=name,
            description=description
            or (existing.description if existing else f"custom preset by {actor.display_name}"),
            prompt=prompt,
            author_id=actor.user_id,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        action = AuditAction.PRESET_CREATE if creating else AuditAction.PRESET_EDIT
        await store.put_preset(
            preset, audit=audit_entry(scope, actor, action, existing.prompt if existing else None, prompt)
        )
        verb = "created" if creating else "updated"
        return CommandReply(f"{actor.display_name} {verb} the preset `{name}`.", public=True)

    async def _preset_delete(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        name = validate_preset_name(command.name or "")
        if name in BUILTIN_PRESETS:
            return CommandReply(f"`{name}` is a built-in preset and cannot be deleted.", ok=False)
        deleted = await self._store.delete_preset(
            scope.workspace_key, name, audit=audit_entry(scope, actor, AuditAction.PRESET_DELETE, name, None)
        )
        if deleted is None:
            return CommandReply(f"There is no custom preset `{name}`.", ok=False)
        # Channels that used it fall back to their defaults when they next resolve.
        return CommandReply(f"{actor.display_name} deleted the preset `{name}`.", public=True)

    # --- models -----------------------------------------------------------------------------------

    async def _model_list(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._state.resolve(scope)
        lines = [
            f"`{m}`"
            + (" ← in use" if m == resolved.model else "")
            + (" (default)" if m == self._settings.default_model else "")
            for m in self._settings.models
        ]
        return CommandReply("**Models**\n" + "\n".join(lines))

    async def _model_show(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._state.resolve(scope)
        return CommandReply(
            f"{_where(scope).capitalize()} uses `{resolved.model}` ({resolved.model_source})."
        )

    def _check_model(self, name: str | None) -> str | CommandReply:
        models = self._settings.models
        if name in models:
            return name
        wanted = (name or "").strip()
        lowered = {m.lower(): m for m in models}
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
        return CommandReply(
            f"`{wanted}` is not an allowed model. Choose one of: {', '.join(f'`{m}`' for m in models)}.",
            ok=False,
        )

    async def _model_set(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        model = self._check_model(command.name)
        if isinstance(model, CommandReply):
            return model
        if await self._set(scope, actor, scope.key, "model", model, AuditAction.MODEL_SET) == model:
            return CommandReply(f"{_where(scope).capitalize()} already uses `{model}`.")
        return CommandReply(
            f"{actor.display_name} set the model for {_where(scope)} to `{model}`. {FRESH}", public=True
        )

    async def _model_default(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        model = self._check_model(command.name)
        if isinstance(model, CommandReply):
            return model
        if (
            await self._set(scope, actor, scope.workspace_key, "model", model, AuditAction.MODEL_DEFAULT)
            == model
        ):
            return CommandReply(f"`{model}` is already the default model.")
        return CommandReply(
            f"{actor.display_name} made `{model}` the default model for channels without their own. {FRESH}",
            public=True,
        )

    # --- tools (AI Chat v2, issue 16) ------------------------------------------------------------

    async def _tools_show(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._state.resolve(scope)
        state = "on: the AI may search the web, read pages and files" if resolved.tools else "off"
        return CommandReply(f"Tools in {_where(scope)} are {state} ({resolved.tools_source} setting).")

    async def _tools_set(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        value = command.name or "on"
        old = await self._state.change_setting(
            scope, actor, scope.key, "tools", value, AuditAction.TOOLS_SET, fresh=False
        )
        if old == value:
            return CommandReply(f"Tools are already {value} in {_where(scope)}.")
        return CommandReply(f"{actor.display_name} turned tools {value} in {_where(scope)}.", public=True)

    async def _tools_default(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        value = command.name or "on"
        old = await self._state.change_setting(
            scope, actor, scope.workspace_key, "tools", value, AuditAction.TOOLS_DEFAULT, fresh=False
        )
        if old == value:
            return CommandReply(f"Tools are already {value} by default.")
        return CommandReply(
            f"{actor.display_name} turned tools {value} by default for channels without their own choice.",
            public=True,
        )


# --- feedback (issue 18) ------------------------------------------------------------------------------

FEEDBACK_DAYS = 7
DAY_SECONDS = 86400.0


def feedback_report(tallies: Sequence[FeedbackTally], days: int = FEEDBACK_DAYS) -> str:
    """👍/👎 on this workspace's answers by model and preset, most rated first."""
    if not tallies:
        return f"No answer here was rated in the last {days} days."
    lines = [f"**Ratings of answers, last {days} days** (model · preset: 👍 / 👎)"]
    for t in tallies:
        share = round(100 * t.up / (t.up + t.down))
        lines.append(f"`{t.model}` · `{t.preset}`: {t.up} 👍 / {t.down} 👎 ({share}% good)")
    return "\n".join(lines)
