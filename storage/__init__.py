"""SQLite state for acechat, kept through sqlite-utils on one dedicated worker thread."""
