"""Synchronous helpers for tests and operator tools; not for the event loop."""

from __future__ import annotations

from pathlib import Path

from sqlite_utils import Database


def integrity_check(path: str | Path) -> str:
    """Run `PRAGMA integrity_check` on an existing database file; "ok" when it is sound."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}")
    db = Database(path, execute_plugins=False)
    try:
        return "\n".join(str(row[0]) for row in db.execute("PRAGMA integrity_check").fetchall())
    finally:
        db.close()
