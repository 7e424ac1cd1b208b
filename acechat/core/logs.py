"""Logging for operators: plain or JSON lines, with context fields and secrets scrubbed."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

# Fields the core attaches with `extra=` so a log line can be traced to a channel and an upstream call.
CONTEXT_FIELDS = ("platform", "channel", "conversation_id", "trace_id", "status", "code", "user", "chars")


# Slack's tokens by their shape (bot, user, app, rotating and refresh tokens): in OAuth mode each
# workspace's token is known only at run time. One character class, so matching stays linear.
SLACK_TOKEN = re.compile(r"\bx(?:ox[a-z]?|app)[.-][A-Za-z0-9.-]+")


class RedactSecrets(logging.Filter):
    """Replace every configured secret, and anything shaped like a Slack token, in a record's final
    text, whoever logged it (libraries too)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        if "x" in text:
            text = SLACK_TOKEN.sub("[redacted]", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        flatten = bool(self._secrets)
        try:
            message = record.getMessage()
        except Exception:
            # Filters run outside logging's error handling: a malformed call must not crash its caller,
            # and logging's own error report would print the unscrubbed arguments.
            message = f"{record.msg} (arguments that do not fit the message: {record.args!r})"
            flatten = True
        scrubbed = self.scrub(message)
        if flatten or scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


@dataclass(frozen=True)
class Unwanted:
    """A library's line that says nothing about this bot (a voice warning, say): records of `logger` or
    its children whose message starts with `starts_with` are dropped."""

    logger: str
    starts_with: str


class DropUnwanted(logging.Filter):
    def __init__(self, unwanted: Iterable[Unwanted]) -> None:
        super().__init__()
        self._unwanted = tuple(unwanted)

    def filter(self, record: logging.LogRecord) -> bool:
        for line in self._unwanted:
            if (record.name == line.logger or record.name.startswith(line.logger + ".")) and str(
                record.msg
            ).startswith(line.starts_with):
                return False
        return True


class ContextFormatter(logging.Formatter):
    """`time level logger message key=value...` for people reading a terminal."""

    # formatMessage, not format: the fields belong on the message line, above any traceback.
    def formatMessage(self, record: logging.LogRecord) -> str:
        base = super().formatMessage(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        return f"{base} {context}" if context else base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(
    level: str,
    *,
    json_lines: bool,
    secrets: Iterable[str] = (),
    noisy: Iterable[str] = (),
    unwanted: Iterable[Unwanted] = (),
) -> None:
    """`noisy`: loggers (the platforms' libraries, declared by their adapters) kept at INFO or above
    unless the operator asks for DEBUG; `unwanted`: their lines that never concern this bot."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(DropUnwanted(unwanted))
    handler.addFilter(RedactSecrets(secrets))
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ContextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if level != "DEBUG":
        for name in ("aiohttp.access", *noisy):
            logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
