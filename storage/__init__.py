"""acechat's state behind one `Store` protocol: SQLite (one process, the default) or PostgreSQL (shared)."""

from storage.errors import SchemaVersionError, StoreClosedError, StoreError
from storage.factory import DatabaseStatus, check_database, open_store
from storage.maintenance import integrity_check
from storage.protocol import Store
from storage.records import (
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
    "integrity_check",
    "open_store",
]
