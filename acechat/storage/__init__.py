"""acechat's state behind one `Store` protocol: SQLite (one process, the default) or PostgreSQL (shared)."""

from acechat.storage.errors import SchemaVersionError, StoreClosedError, StoreError
from acechat.storage.factory import DatabaseStatus, check_database, open_store
from acechat.storage.protocol import Store
from acechat.storage.records import (
    EVERYTHING,
    AuditAction,
    AuditEntry,
    Change,
    ConversationRecord,
    CustomPreset,
    RateCheck,
    RateVerdict,
    ScopeSettings,
    TranscriptEntry,
)

__all__ = [
    "EVERYTHING",
    "AuditAction",
    "AuditEntry",
    "Change",
    "ConversationRecord",
    "CustomPreset",
    "DatabaseStatus",
    "RateCheck",
    "RateVerdict",
    "SchemaVersionError",
    "ScopeSettings",
    "Store",
    "StoreClosedError",
    "StoreError",
    "TranscriptEntry",
    "check_database",
    "open_store",
]
