"""What each command does and says. The admin check has already passed when `run` is called."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from core.commands import HELP_TEXT, Action, Command, CommandReply
from core.presets import (
    BUILTIN_PRESETS,
    PresetError,
    validate_description,
    validate_preset_name,
    validate_prompt,
)
from core.scope import Scope
from core.target import Actor
from storage.records import AuditEntry, CustomPreset

if TYPE_CHECKING:
    from core.chat import ChatCore

log = logging.getLogger(__name__)

Handler = Callable[[Scope, Actor, Command], Awaitable[CommandReply]]

MAX_CUSTOM_PRESETS = 50
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


class CommandRunner:
    def __init__(self, core: ChatCore) -> None:
        self._core = core
        self._handlers: dict[Action, Handler] = {
            Action.HELP: self._help,
            Action.RESET: self._reset,
            Action.STATUS: self._status,
            Action.AUDIT: self._audit,
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
        }

    async def run(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        handler = self._handlers.get(command.action)
        if handler is None:
            return CommandReply(HELP_TEXT, ok=False)
        try:
            return await handler(scope, actor, command)
        except PresetError as error:
            return CommandReply(error.user_message, ok=False)

    def _entry(self, scope: Scope, actor: Actor, action: str, old: str | None, new: str | None) -> AuditEntry:
        return AuditEntry(
            workspace_key=scope.workspace_key,
            scope_key=scope.key,
            actor_id=actor.user_id,
            actor_name=actor.display_name,
            action=action,
            old=old,
            new=new,
            at=time.time(),
        )

    async def _help(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        reason = f"{command.text}\n\n" if command.text else ""
        return CommandReply(reason + HELP_TEXT, ok=not command.text)

    async def _reset(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        existed = await self._core.forget_conversation(scope)
        if not existed:
            return CommandReply(f"There is no conversation in {_where(scope)} yet; just ask.")
        return CommandReply(
            f"{actor.display_name} started a new conversation in {_where(scope)}.", public=True
        )

    async def _status(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._core.resolve(scope)
        conversation = await self._core.conversation(scope)
        lines = [
            f"**Model:** `{resolved.model}` ({resolved.model_source})",
            f"**Preset:** `{resolved.preset.name}` ({resolved.preset_source}) — {resolved.preset.description}",
        ]
        if conversation is None or conversation.upstream_id is None:
            lines.append("**Conversation:** none yet; the next question starts one.")
        else:
            stale = conversation.model != resolved.model or conversation.preset != resolved.preset.name
            age = _age(time.time() - conversation.created_at)
            turns = f"{conversation.turns} turn{'s' if conversation.turns != 1 else ''}"
            suffix = " (settings changed: the next question starts a new one)" if stale else ""
            lines.append(f"**Conversation:** {turns}, started {age} ago{suffix}")
        return CommandReply("\n".join(lines))

    async def _audit(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        entries = await self._core.store.list_audit(scope.workspace_key, limit=15)
        if not entries:
            return CommandReply("No admin changes yet.")
        lines = []
        for entry in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(entry.at))
            place = entry.scope_key.split(":", 2)[-1]
            change = f"`{entry.old or '—'}` → `{entry.new or '—'}`"
            lines.append(f"{when} UTC · {entry.actor_name} · {entry.action} · {place} · {change}")
        return CommandReply("**Recent admin changes**\n" + "\n".join(lines))

    # --- presets ----------------------------------------------------------------------------------

    async def _preset_list(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._core.resolve(scope)
        custom = await self._core.store.list_presets(scope.workspace_key)
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
            preset = await self._core.find_preset(scope, validate_preset_name(command.name))
            if preset is None:
                return await self._unknown_preset(scope, command.name)
            source = "built-in" if preset.builtin else "custom"
        else:
            resolved = await self._core.resolve(scope)
            preset, source = resolved.preset, f"in use here, from the {resolved.preset_source} setting"
        return CommandReply(f"**{preset.name}** ({source}) — {preset.description}\n```\n{preset.prompt}\n```")

    async def _unknown_preset(self, scope: Scope, name: str) -> CommandReply:
        names = await self._core.preset_names(scope)
        return CommandReply(
            f"There is no preset `{name}`. Presets: {', '.join(f'`{n}`' for n in names)}.", ok=False
        )

    async def _set(
        self,
        scope: Scope,
        actor: Actor,
        key: str,
        field: Literal["preset", "model"],
        value: str | None,
        label: str,
    ) -> str | None:
        (current,) = await self._core.scope_settings((key,))
        old: str | None = getattr(current, field) if current is not None else None
        if old == value:
            return old  # nothing changes: no audit entry, the conversation goes on
        await self._core.store.set_setting(
            key, field, value, audit=self._entry(scope, actor, f"{field} {label}", old, value)
        )
        self._core.forget_setting_cache(key)
        await self._core.forget_conversation(scope)
        return old

    async def _preset_set(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        name = validate_preset_name(command.name or "")
        if await self._core.find_preset(scope, name) is None:
            return await self._unknown_preset(scope, name)
        if await self._set(scope, actor, scope.key, "preset", name, "set") == name:
            return CommandReply(f"{_where(scope).capitalize()} already uses the preset `{name}`.")
        return CommandReply(
            f"{actor.display_name} set the preset for {_where(scope)} to `{name}`. {FRESH}", public=True
        )

    async def _preset_clear(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        old = await self._set(scope, actor, scope.key, "preset", None, "clear")
        if old is None:
            return CommandReply(f"{_where(scope).capitalize()} has no preset of its own; nothing to clear.")
        resolved = await self._core.resolve(scope)
        return CommandReply(
            f"{actor.display_name} cleared the preset for {_where(scope)}; it now uses `{resolved.preset.name}`. {FRESH}",
            public=True,
        )

    async def _preset_default(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        name = validate_preset_name(command.name or "")
        if await self._core.find_preset(scope, name) is None:
            return await self._unknown_preset(scope, name)
        if await self._set(scope, actor, scope.workspace_key, "preset", name, "default") == name:
            return CommandReply(f"`{name}` is already the default preset.")
        return CommandReply(
            f"{actor.display_name} made `{name}` the default preset for channels without their own. {FRESH}",
            public=True,
        )

    async def _preset_create(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        return await self._save_preset(scope, actor, command, creating=True)

    async def _preset_edit(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        return await self._save_preset(scope, actor, command, creating=False)

    async def _save_preset(
        self, scope: Scope, actor: Actor, command: Command, *, creating: bool
    ) -> CommandReply:
        store = self._core.store
        name = validate_preset_name(command.name or "")
        if name in BUILTIN_PRESETS:
            return CommandReply(f"`{name}` is a built-in preset; choose another name.", ok=False)
        prompt = validate_prompt(command.text or "", self._core.settings.max_preset_chars)
        existing = await store.get_preset(scope.workspace_key, name)
        if creating and existing is not None:
            return CommandReply(
                f"A preset `{name}` already exists; use `preset edit {name} PROMPT`.", ok=False
            )
        if not creating and existing is None:
            return CommandReply(
                f"There is no custom preset `{name}`; use `preset create {name} PROMPT`.", ok=False
            )
        if creating and await store.count_presets(scope.workspace_key) >= MAX_CUSTOM_PRESETS:
            return CommandReply(
                f"This workspace already has {MAX_CUSTOM_PRESETS} custom presets; delete one first.", ok=False
            )
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
        action = "preset create" if creating else "preset edit"
        await store.put_preset(
            preset, audit=self._entry(scope, actor, action, existing.prompt if existing else None, prompt)
        )
        verb = "created" if creating else "updated"
        return CommandReply(f"{actor.display_name} {verb} the preset `{name}`.", public=True)

    async def _preset_delete(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        name = validate_preset_name(command.name or "")
        if name in BUILTIN_PRESETS:
            return CommandReply(f"`{name}` is a built-in preset and cannot be deleted.", ok=False)
        deleted = await self._core.store.delete_preset(
            scope.workspace_key, name, audit=self._entry(scope, actor, "preset delete", name, None)
        )
        if deleted is None:
            return CommandReply(f"There is no custom preset `{name}`.", ok=False)
        # Channels that used it fall back to their defaults when they next resolve.
        return CommandReply(f"{actor.display_name} deleted the preset `{name}`.", public=True)

    # --- models -----------------------------------------------------------------------------------

    async def _model_list(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._core.resolve(scope)
        lines = [
            f"`{m}`"
            + (" ← in use" if m == resolved.model else "")
            + (" (default)" if m == self._core.settings.default_model else "")
            for m in self._core.models
        ]
        return CommandReply("**Models**\n" + "\n".join(lines))

    async def _model_show(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        resolved = await self._core.resolve(scope)
        return CommandReply(
            f"{_where(scope).capitalize()} uses `{resolved.model}` ({resolved.model_source})."
        )

    def _check_model(self, name: str | None) -> str | CommandReply:
        models = self._core.models
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
        if await self._set(scope, actor, scope.key, "model", model, "set") == model:
            return CommandReply(f"{_where(scope).capitalize()} already uses `{model}`.")
        return CommandReply(
            f"{actor.display_name} set the model for {_where(scope)} to `{model}`. {FRESH}", public=True
        )

    async def _model_default(self, scope: Scope, actor: Actor, command: Command) -> CommandReply:
        model = self._check_model(command.name)
        if isinstance(model, CommandReply):
            return model
        if await self._set(scope, actor, scope.workspace_key, "model", model, "default") == model:
            return CommandReply(f"`{model}` is already the default model.")
        return CommandReply(
            f"{actor.display_name} made `{model}` the default model for channels without their own. {FRESH}",
            public=True,
        )
