"""Secrets at rest and in logs: the Fernet box, OAuth mode's settings, the log scrubber, `acechat installs`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from acechat.bots.adapter import settings_groups
from acechat.bots.cli import main
from acechat.bots.slack_settings import SlackSettings
from acechat.core.logs import RedactSecrets
from acechat.core.secret_box import SealedError, SecretBox, SecretKeyError, parse_keys
from acechat.core.settings import SettingsError
from acechat.core.settings import parse_settings as parse_core

KEY = Fernet.generate_key().decode()


def parse_settings(env: dict[str, str]) -> object:
    """Every platform's settings too, as the CLI reads them."""
    return parse_core(env, settings_groups())


BASE = {"ACEDATACLOUD_API_TOKEN": "upstream-secret"}
OAUTH = {
    **BASE,
    "SLACK_CLIENT_ID": "1.2",
    "SLACK_CLIENT_SECRET": "client-secret",
    "SLACK_SIGNING_SECRET": "s",
}


def test_the_box_seals_with_the_first_key_and_opens_with_any() -> None:
    old, new = KEY, Fernet.generate_key().decode()
    sealed = SecretBox([old]).seal("xoxb-1")
    assert "xoxb" not in sealed
    both = SecretBox([new, old])
    assert both.open(sealed) == "xoxb-1"
    assert SecretBox([new]).open(both.reseal(sealed)) == "xoxb-1"
    with pytest.raises(SealedError):
        SecretBox([new]).open(sealed)
    with pytest.raises(SealedError):
        both.open(sealed[:-3] + "AAA")


def test_keys_are_checked_one_by_one_without_echoing_them() -> None:
    assert parse_keys(f" {KEY} , {KEY}") == (KEY, KEY)
    with pytest.raises(SecretKeyError) as error:
        parse_keys(f"{KEY},not-a-key-at-all")
    assert "key 2 of 2" in str(error.value) and "not-a-key" not in str(error.value)
    with pytest.raises(SecretKeyError):
        SecretBox([])


def test_oauth_mode_reads_its_settings() -> None:
    settings = parse_settings(
        {**OAUTH, "ACECHAT_SECRET_KEY": KEY, "SLACK_REDIRECT_URI": "https://h/slack/oauth_redirect"}
    )
    slack = settings.platform("slack", SlackSettings)
    assert slack is not None and slack.oauth is not None
    assert slack.bot_token == ""
    assert slack.oauth.secret_keys == (KEY,)
    assert slack.oauth.redirect_uri == "https://h/slack/oauth_redirect"
    assert {"client-secret", KEY} <= set(settings.secrets)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "ACECHAT_SECRET_KEY is not set: OAuth mode stores every workspace's token sealed with it"),
        ({"ACECHAT_SECRET_KEY": "hunter2"}, "ACECHAT_SECRET_KEY is invalid: it is not a Fernet key"),
        (
            {"ACECHAT_SECRET_KEY": KEY, "SLACK_BOT_TOKEN": "xoxb-1"},
            "SLACK_BOT_TOKEN and SLACK_CLIENT_ID are both set",
        ),
    ],
)
def test_oauth_mode_refuses_to_start_with_one_clear_line(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as error:
        parse_settings({**OAUTH, **extra})
    [line] = error.value.problems
    assert line.startswith(expected) and "hunter2" not in line


def test_the_cli_refuses_oauth_mode_without_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in OAUTH.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ACECHAT_SECRET_KEY", raising=False)
    (tmp_path / "empty.env").write_text("")
    assert main(["--env-file", str(tmp_path / "empty.env"), "slack"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("acechat: ACECHAT_SECRET_KEY is not set") and "acechat installs keygen" in line


@pytest.mark.parametrize(
    "token",
    [
        "xoxb-123-456-abcDEF",
        "xoxe.xoxb-1-MIIB-abc",
        "xoxe-1-My0xLTEyMy0",
        "xoxp-1-2-3-abc",
        "xapp-1-A1-123-abc",
    ],
)
def test_logs_never_show_a_slack_token_even_one_nobody_configured(token: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "refreshed %s for T1", (token,), None)
    RedactSecrets([]).filter(record)
    text = record.getMessage()
    assert token not in text and text == "refreshed [redacted] for T1"


def test_the_scrubber_is_linear_on_hostile_text() -> None:
    import time

    hostile = "xoxb-" + "a-" * 200_000 + "!" + "x" * 100_000
    started = time.perf_counter()
    assert RedactSecrets([]).scrub(hostile).startswith("[redacted]!")
    assert time.perf_counter() - started < 1.0


def test_keygen_prints_a_key_the_settings_accept(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["installs", "keygen"]) == 0
    key = capsys.readouterr().out.strip()
    assert parse_keys(key) == (key,)


def test_installs_lists_and_removes_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time as clock

    from acechat.storage.installations import InstallationEvent, InstallationRow, open_installations

    db = tmp_path / "acechat.db"

    async def seed() -> None:
        table = await open_installations(database_url=None, db_path=db)
        now = clock.time()
        for key in ("T1", "T2"):
            row = InstallationRow(
                key, None, key, False, f'{{"team_name": "Team {key}"}}', "sealed", None, now, now
            )
            await table.put(row, event=InstallationEvent(key, "installed", "test", now))
        await table.close()

    asyncio.run(seed())
    for name, value in {**OAUTH, "ACECHAT_SECRET_KEY": KEY, "ACECHAT_DB_PATH": str(db)}.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "empty.env").write_text("")
    env = ["--env-file", str(tmp_path / "empty.env")]
    assert main([*env, "installs"]) == 0
    listing = capsys.readouterr().out
    assert "2 installation(s)" in listing and "T1: workspace T1 (Team T1)" in listing
    assert main([*env, "installs", "remove", "T1"]) == 0
    assert "removed the installation of T1" in capsys.readouterr().out
    assert main([*env, "installs", "remove", "T1"]) == 0
    assert "nothing removed" in capsys.readouterr().out
    assert main([*env, "installs", "list"]) == 0
    listing = capsys.readouterr().out
    assert "1 installation(s)" in listing and "T1 removed: acechat installs remove" in listing
    # Sealed by nobody's key: reported for a reinstall, not lost.
    assert main([*env, "installs", "rekey"]) == 0
    out = capsys.readouterr().out
    assert "resealed 0 installation(s)" in out and "cannot open T2 with any key" in out
