"""SQLite state for acechat, kept through sqlite-utils on one dedicated worker thread."""

from storage.errors import SchemaVersionError, StoreClosedError, StoreError
from storage.maintenance import integrity_check
from storage.records import AuditAction, Change, RateCheck, RateVerdict
from storage.store import Store

__all__ = [
    "AuditAction",
    "Change",
    "RateCheck",
    "RateVerdict",
    "SchemaVersionError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "integrity_check",
]
