"""SQLite state for acechat, kept through sqlite-utils on one dedicated worker thread."""

from storage.errors import SchemaVersionError, StoreClosedError, StoreError
from storage.maintenance import integrity_check
from storage.store import Store

__all__ = ["SchemaVersionError", "Store", "StoreClosedError", "StoreError", "integrity_check"]
