"""What the storage layer raises beyond sqlite3's own errors."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be used; the message is fit for one line on stderr."""


class SchemaVersionError(StoreError):
    """The file was written by a newer acechat whose schema this one does not know."""


class StoreClosedError(StoreError):
    """A call arrived after `Store.close()`."""
