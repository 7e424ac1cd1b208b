"""What a scope's next turn uses: its settings, the preset and model they resolve to, its conversation.

`ScopeState` is the one place that reads and changes that state; `ChatCore` (answering) and
`CommandRunner` (admin commands) both go through it. Settings are cached per key and the resolution per
scope; both are dropped whenever the store reports a change, whoever made it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from acechat.core.cache import LRU
from acechat.core.facts import Actor
from acechat.core.presets import BUILTIN_PRESETS, Preset, resolve_preset_name
from acechat.core.scope import Scope
from acechat.core.settings import Settings
from acechat.storage import EVERYTHING, Change, Store
from acechat.storage.records import AuditAction, AuditEntry, ConversationRecord, ScopeSettings

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000


class Source(enum.StrEnum):
    """Where a scope's preset or model comes from, most specific first."""

    THREAD = "thread"
    CHANNEL = "channel"
    WORKSPACE = "workspace"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a scope's next turn will use, and where each choice came from."""

    model: str
    model_source: Source
    preset: Preset
    preset_source: Source
    # Whether the model may use AI Chat v2's tools here, and where that choice came from.
    tools: bool = True
    tools_source: Source = Source.DEFAULT


Field = Literal["preset", "model", "tools"]


def audit_entry(
    scope: Scope, actor: Actor, action: AuditAction, old: str | None, new: str | None
) -> AuditEntry:
    """The audit log's record of `actor` changing something in `scope`, now."""
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


class ScopeState:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._settings_cache: LRU[str, ScopeSettings | None] = LRU(CACHE_SIZE)
        # What `resolve` made of each scope's settings, while it used only built-in presets (custom
        # ones are read afresh each time); dropped whole whenever a setting changes.
        self._resolved: LRU[str, Resolved] = LRU(CACHE_SIZE)
        # One object per distinct resolution, shared by every scope that resolves alike (most resolve
        # to the defaults): a few, since only built-in presets are cached.
        self._distinct: dict[Resolved, Resolved] = {}
        self._generation = 0
        # Told of every conversation a reset leaves behind (ChatCore deletes it at the service).
        self.forgotten: Callable[[ConversationRecord], Awaitable[None]] | None = None
        # Told of every reset (ChatCore skips the questions the model asked there and says so on them).
        self.after_reset: Callable[[Scope], Awaitable[None]] | None = None
        store.on_change(self._changed)

    def _changed(self, change: Change) -> None:
        # A setting reaches every scope below its key, and a preset every scope of its workspace;
        # changes are rare, so every resolution goes. "*": the store may have missed changes.
        if change.kind == "stop":
            return  # an answer's Stop, not a setting
        if change.key == EVERYTHING:
            self._settings_cache.clear()
        elif change.kind == "setting":
            self._settings_cache.pop(change.key)
        self._resolved.clear()
        self._generation += 1

    async def scope_settings(self, keys: tuple[str, ...]) -> list[ScopeSettings | None]:
        missing = [key for key in keys if key not in self._settings_cache]
        if missing:
            generation = self._generation
            found = await self.store.get_settings(missing)
            # A change that landed while the read was out makes what it read stale: use it, keep nothing.
            if generation != self._generation:
                cached = {key: self._settings_cache.get(key) for key in keys if key in self._settings_cache}
                return [cached[key] if key in cached else found.get(key) for key in keys]
            for key in missing:
                self._settings_cache.put(key, found.get(key))
        return [self._settings_cache.get(key) for key in keys]

    async def find_preset(self, scope: Scope, name: str) -> Preset | None:
        builtin = BUILTIN_PRESETS.get(name)
        if builtin is not None:
            return builtin
        custom = await self.store.get_preset(scope.workspace_key, name)
        if custom is None:
            return None
        return Preset(custom.name, custom.description, custom.prompt, builtin=False)

    async def preset_names(self, scope: Scope) -> list[str]:
        custom = await self.store.list_presets(scope.workspace_key)
        return sorted({*BUILTIN_PRESETS, *(p.name for p in custom)})

    async def resolve(self, scope: Scope) -> Resolved:
        key = scope.key
        resolved = self._resolved.get(key)
        if resolved is not None:
            return resolved
        generation = self._generation
        resolved, warned = await self._resolve(scope)
        # Not kept if a setting changed meanwhile, nor if it needed a warning (which is logged each time).
        if resolved.preset.builtin and not warned and generation == self._generation:
            resolved = self._distinct.setdefault(resolved, resolved)
            self._resolved.put(key, resolved)
        return resolved

    async def _resolve(self, scope: Scope) -> tuple[Resolved, bool]:
        """The resolution, and whether it had to warn about a stored choice."""
        warned = False
        found = await self.scope_settings(scope.lineage())
        labels = (
            (Source.THREAD, Source.CHANNEL, Source.WORKSPACE)
            if scope.is_thread
            else (Source.CHANNEL, Source.WORKSPACE)
        )

        model, model_source = self.settings.default_model, Source.DEFAULT
        for label, setting in zip(labels, found, strict=True):
            if setting is not None and setting.model:
                if setting.model in self.settings.models:
                    model, model_source = setting.model, label
                    break
                log.warning("stored model %r is no longer allowed; using the default", setting.model)
                warned = True

        tools, tools_source = self.settings.tools, Source.DEFAULT
        for label, setting in zip(labels, found, strict=True):
            if setting is not None and setting.tools in ("on", "off"):
                tools, tools_source = setting.tools == "on", label
                break

        preset_names = [s.preset if s is not None else None for s in found]
        name = resolve_preset_name(preset_names, self.settings.default_preset)
        source = next((lab for lab, value in zip(labels, preset_names, strict=True) if value), Source.DEFAULT)
        preset = await self.find_preset(scope, name)
        if preset is None:
            log.warning("preset %r no longer exists; using the default", name)
            preset = BUILTIN_PRESETS.get(self.settings.default_preset) or BUILTIN_PRESETS["assistant"]
            source = Source.DEFAULT
            warned = True
        return Resolved(model, model_source, preset, source, tools, tools_source), warned

    async def conversation(self, scope: Scope) -> ConversationRecord | None:
        """The scope's conversation record; after a reset it has no upstream id but keeps its epoch."""
        return await self.store.get_conversation(scope.key)

    async def reset(self, scope: Scope) -> bool:
        """Start the scope afresh; True if it had a conversation. A turn in flight cannot undo it."""
        old = await self.store.get_conversation(scope.key) if self.forgotten is not None else None
        live = await self.store.reset_conversation(scope.key)
        if live and old is not None and old.upstream_id and self.forgotten is not None:
            await self.forgotten(old)
        if self.after_reset is not None:
            await self.after_reset(scope)
        return live

    async def change_setting(
        self,
        scope: Scope,
        actor: Actor,
        key: str,
        field: Field,
        value: str | None,
        action: AuditAction,
        *,
        fresh: bool = True,
    ) -> str | None:
        """Set `field` of setting `key` (None = inherit), audited; returns the value it had. With `fresh`,
        the scope's conversation starts over (a new preset or model would not fit the old one).

        Setting a value to what it already is changes nothing: no audit entry, the conversation goes on.
        """
        (current,) = await self.scope_settings((key,))
        old: str | None = getattr(current, field) if current is not None else None
        if old == value:
            return old
        old = await self.store.set_setting(
            key, field, value, audit=audit_entry(scope, actor, action, old, value)
        )
        if fresh:
            await self.reset(scope)
        return old
