"""Logging: secrets scrubbed from messages, arguments and tracebacks; JSON lines with context fields."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from acechat.bots.adapter import ADAPTERS
from acechat.bots.cli import configure_platform_logging
from acechat.core.logs import ContextFormatter, JsonFormatter, RedactSecrets, configure_logging
from acechat.core.settings import Settings, UpstreamSettings

TOKEN = "sk-live-0123456789abcdef"
# The platforms' libraries, as their adapters declare them, and the health server's access log.
NOISY = ("aiohttp.access", *(name for spec in ADAPTERS for name in spec.noisy_loggers))


def record(msg: str, *args: object, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    made = logging.LogRecord("acechat.test", logging.INFO, __file__, 1, msg, args or None, exc_info)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def raised(message: str) -> BaseException:
    try:
        raise RuntimeError(message)
    except RuntimeError as error:
        return error


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in levels.items():
            logging.getLogger(name).setLevel(value)


def test_secrets_leave_messages_and_arguments() -> None:
    redact = RedactSecrets([TOKEN])
    item = record("calling with %s and %r", f"Bearer {TOKEN}", {"token": TOKEN})
    assert redact.filter(item) is True
    assert item.getMessage() == "calling with Bearer [redacted] and {'token': '[redacted]'}"
    assert TOKEN not in logging.Formatter().format(item)


def test_secrets_leave_exception_text() -> None:
    error = raised(f"401 for token {TOKEN}")
    error.__cause__ = raised(f"inner {TOKEN}")
    item = record("upstream failed", exc=error)
    RedactSecrets([TOKEN]).filter(item)
    formatted = logging.Formatter().format(item)
    assert "Traceback" in formatted and "RuntimeError: 401 for token [redacted]" in formatted
    assert "inner [redacted]" in formatted, "chained exceptions are scrubbed too"
    assert TOKEN not in formatted
    assert TOKEN not in JsonFormatter().format(item)


def test_the_longest_secret_wins_and_short_ones_are_ignored() -> None:
    redact = RedactSecrets(["abcdef", "abcdefgh", "abc", ""])
    assert redact.scrub("x abcdefgh y abcdef z abc") == "x [redacted] y [redacted] z abc"


def test_without_secrets_records_are_untouched() -> None:
    item = record("value %d", 5)
    RedactSecrets(["", "short"]).filter(item)
    assert item.msg == "value %d" and item.args == (5,)


def test_a_malformed_call_neither_raises_nor_leaks() -> None:
    item = record("%s and %s", TOKEN)
    assert RedactSecrets([TOKEN]).filter(item) is True
    text = item.getMessage()
    assert TOKEN not in text and "[redacted]" in text and "%s and %s" in text


def test_json_lines_carry_the_context_fields() -> None:
    item = record(
        "answered in %d ms · ✓",
        12,
        platform="slack",
        channel="C1",
        conversation_id="conv-1",
        trace_id="trace-1",
        chars=42,
        status=None,
    )
    entry = json.loads(JsonFormatter().format(item))
    assert entry["message"] == "answered in 12 ms · ✓"
    assert entry["level"] == "INFO" and entry["logger"] == "acechat.test"
    assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert {k: entry[k] for k in ("platform", "channel", "conversation_id", "trace_id", "chars")} == {
        "platform": "slack",
        "channel": "C1",
        "conversation_id": "conv-1",
        "trace_id": "trace-1",
        "chars": 42,
    }
    assert "status" not in entry, "unset fields are left out"
    failed = json.loads(JsonFormatter().format(record("boom", exc=raised("bad"))))
    assert "RuntimeError: bad" in failed["exception"]


def test_plain_lines_end_with_the_context_fields() -> None:
    line = ContextFormatter("%(levelname)s %(message)s").format(
        record("hi", platform="discord", trace_id="t1")
    )
    assert line == "INFO hi platform=discord trace_id=t1"


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("json_lines", [False, True])
def test_configured_logging_never_prints_the_token(
    capsys: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    configure_logging("DEBUG", json_lines=json_lines, secrets=[TOKEN, "xoxb-slack-token", ""])
    log = logging.getLogger("acechat.test")
    log.debug("sending Authorization: Bearer %s", TOKEN)
    logging.getLogger("aiohttp.client").debug(f"library says {TOKEN}")
    try:
        raise ValueError(f"rejected token {TOKEN} and xoxb-slack-token")
    except ValueError:
        log.exception("upstream call failed", extra={"trace_id": "trace-9"})
    err = capsys.readouterr().err
    assert TOKEN not in err and "xoxb-slack-token" not in err
    assert err.count("[redacted]") >= 5
    assert "ValueError: rejected token [redacted] and [redacted]" in err
    lines = err.splitlines()
    if json_lines:
        entries = [json.loads(line) for line in lines]
        assert [e["level"] for e in entries] == ["DEBUG", "DEBUG", "ERROR"]
        assert entries[2]["trace_id"] == "trace-9" and "ValueError" in entries[2]["exception"]
    else:
        assert "upstream call failed trace_id=trace-9" in err


@pytest.mark.usefixtures("restore_logging")
def test_chatty_libraries_are_quieted_unless_debugging() -> None:
    assert {"discord", "slack_bolt", "slack_sdk"} <= set(NOISY)
    configure_logging("WARNING", json_lines=False, noisy=NOISY)
    root = logging.getLogger()
    assert root.level == logging.WARNING and len(root.handlers) == 1
    assert root.handlers[0].stream is sys.stderr  # type: ignore[attr-defined]
    assert all(logging.getLogger(name).level == logging.WARNING for name in NOISY)
    configure_logging("INFO", json_lines=False, noisy=NOISY)
    assert logging.getLogger("discord").level == logging.INFO
    assert len(root.handlers) == 1, "configuring again replaces the handler"


@pytest.mark.usefixtures("restore_logging")
def test_start_up_warnings_that_do_not_concern_the_bot_are_silenced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """discord.py's voice warnings and bolt's unused-token warning, from the libraries themselves."""
    import discord
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.authorization import AuthorizeResult
    from slack_sdk.web.async_client import AsyncWebClient

    configure_platform_logging("INFO", Settings(upstream=UpstreamSettings(token=TOKEN)))
    # Each warns once per process: make them due again, as on a fresh start.
    monkeypatch.setattr(discord.VoiceClient, "warn_nacl", True)
    monkeypatch.setattr(discord.VoiceClient, "warn_dave", True)
    discord.Client(intents=discord.Intents.default())
    # bolt reads SLACK_BOT_TOKEN from the environment by itself, then warns that it is unused.
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")

    async def authorize(**_: object) -> AuthorizeResult:
        raise AssertionError("no request reaches this app")

    AsyncApp(client=AsyncWebClient(), authorize=authorize, signing_secret="secret")
    logging.getLogger("discord.client").warning("a warning that does concern the bot")
    err = capsys.readouterr().err
    assert "voice" not in err and "will be unused" not in err and "will be ignored" not in err, err
    assert "a warning that does concern the bot" in err
