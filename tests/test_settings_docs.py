"""The settings the code reads, declared once, and everything that must agree with the declarations:
`.env.example`, the README's settings table, the documented defaults, the log scrubber and `check`."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from acechat.bots.adapter import ADAPTERS, AdapterSpec, settings_groups
from acechat.bots.cli import configure_platform_logging
from acechat.bots.discord_settings import DiscordSettings
from acechat.core.platform import MentionRules, PlatformRules
from acechat.core.settings import CORE_SETTINGS, Setting, SettingsGroup, SettingsReader, parse_settings
from tests.fakes.discord import TOKEN as DISCORD_TOKEN

ROOT = Path(__file__).resolve().parents[1]
DECLARED: dict[str, Setting] = {
    setting.name: setting
    for setting in (*CORE_SETTINGS, *(s for spec in ADAPTERS for s in spec.settings.settings))
}
# docker-compose.yml's own variable, documented beside acechat's; acechat does not read it.
COMPOSE_ONLY = {"POSTGRES_PASSWORD"}
# A valid value for every secret, each recognisable in a log line.
SECRETS = {
    "ACEDATACLOUD_API_TOKEN": "upstream-secret-0001",
    "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
    "SLACK_BOT_TOKEN": "xoxb-secret-0002",
    "SLACK_APP_TOKEN": "xapp-secret-0003",
    "SLACK_SIGNING_SECRET": "signing-secret-0004",
    "SLACK_CLIENT_SECRET": "client-secret-0005",
    # A Fernet key (32 url-safe base64 bytes), as `acechat installs keygen` prints one.
    "ACECHAT_SECRET_KEY": "YWNlY2hhdC1leGFtcGxlLXNlY3JldC1rZXktMDAwNiE=",
}
# Every platform configured, so that every platform's settings are parsed.
CONFIGURED = {**SECRETS, "SLACK_COMMAND": "/aichat"}


def parse(env: dict[str, str]) -> Any:
    return parse_settings(env, settings_groups())


class Asked(dict[str, str]):
    """An environment that remembers which names were looked up."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def env_example() -> dict[str, str]:
    """Each `NAME=value` line of .env.example, commented out or not."""
    text = (ROOT / ".env.example").read_text()
    return dict(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


def readme_rows() -> list[tuple[list[str], list[str]]]:
    """The configuration table: for each row, its setting names and its default cells."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names_cell, default_cell = line.split(" | ")[:2]
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", names_cell)
        defaults = default_cell.strip().split(", ") if len(names) > 1 else [default_cell.strip()]
        rows.append((names, defaults))
    return rows


def test_the_code_reads_exactly_the_declared_settings() -> None:
    env = Asked(CONFIGURED)
    parse(env)
    assert env.asked == set(DECLARED), "declared but never read, or read but not declared"


def test_reading_an_undeclared_name_is_a_bug() -> None:
    with pytest.raises(KeyError, match="ACECHAT_NOT_DECLARED is read but not declared"):
        SettingsReader({}, CORE_SETTINGS).raw("ACECHAT_NOT_DECLARED")


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    documented = set(env_example()) - COMPOSE_ONLY
    assert sorted(set(DECLARED) - documented) == [], "read by the code, missing from .env.example"
    assert sorted(documented - set(DECLARED)) == [], "in .env.example, read by nothing"
    compose = (ROOT / "docker-compose.yml").read_text()
    assert all(f"${{{name}" in compose for name in COMPOSE_ONLY)


def test_env_example_shows_each_default() -> None:
    wrong = {
        name: (value, DECLARED[name].default)
        for name, value in env_example().items()
        if name in DECLARED and value != DECLARED[name].default
    }
    assert wrong == {}, "(.env.example, declared)"


def test_env_example_names_no_test_module_and_promises_no_5xx_retry() -> None:
    text = (ROOT / ".env.example").read_text()
    assert "tests." not in text and "tests/" not in text, "tests/ is not installed with acechat"
    assert "5xx" not in text, "a stateful turn the service may have received is never sent again"


def test_the_readme_table_lists_every_setting_and_its_default() -> None:
    rows = readme_rows()
    listed = [name for names, _ in rows for name in names]
    assert len(listed) == len(set(listed)), "a setting listed twice"
    assert sorted(set(DECLARED) - set(listed)) == [], "read by the code, missing from the README"
    assert sorted(set(listed) - set(DECLARED)) == [], "in the README, read by nothing"
    for names, defaults in rows:
        cells = defaults if len(defaults) == len(names) else defaults[:1] * len(names)
        for name, cell in zip(names, cells, strict=True):
            shown = re.fullmatch(r"`([^`]*)`", cell)
            # A literal value in backticks is the default; prose ("Discord's", "automatic") means unset.
            assert (shown.group(1) if shown else "") == DECLARED[name].default, (name, cell)


@pytest.mark.parametrize("name", sorted(name for name, s in DECLARED.items() if s.default))
def test_the_documented_default_is_the_default(name: str) -> None:
    assert parse({**CONFIGURED, name: DECLARED[name].default}) == parse(CONFIGURED)


def test_every_secret_setting_is_kept_out_of_the_logs(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(SECRETS) == {name for name, s in DECLARED.items() if s.secret}, "give each secret an example"
    settings = parse(CONFIGURED)
    assert set(SECRETS.values()) <= set(settings.secrets)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_platform_logging("INFO", settings)
        for name, value in SECRETS.items():
            logging.getLogger("slack_sdk").warning("%s is %s", name, value)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("[redacted]") == len(SECRETS)
    assert not [value for value in SECRETS.values() if value in err]


def test_core_settings_name_no_platform() -> None:
    source = (ROOT / "acechat" / "core" / "settings.py").read_text().lower()
    assert "discord" not in source and "slack" not in source
    assert not [s.name for s in CORE_SETTINGS if s.name.startswith(("DISCORD_", "SLACK_"))]


def test_each_platform_declares_its_own_settings() -> None:
    for spec in ADAPTERS:
        group = spec.settings
        assert group.platform == spec.name and group.enabled_by in {s.name for s in group.settings}
        # Issue 17 names two with the product's prefix: ACECHAT_DISCORD_DMS, ACECHAT_SLACK_ADMIN_GROUP.
        prefixes = (spec.name.upper() + "_", "ACECHAT_" + spec.name.upper() + "_")
        assert all(s.name.startswith(prefixes) for s in group.settings), spec.name
    discord = parse(CONFIGURED).platform("discord", DiscordSettings)
    assert discord is not None and discord.token == DISCORD_TOKEN


def test_an_adapter_without_mention_rules_cannot_be_registered() -> None:
    group = SettingsGroup("pager", (Setting("PAGER_TOKEN", secret=True),), lambda r: None, "PAGER_TOKEN")
    with pytest.raises(TypeError, match="no mention rules"):
        PlatformRules("pager", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no PlatformRules"):
        AdapterSpec("pager", "run the pager bot", "tests.pager", group, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="another platform"):
        AdapterSpec(
            "pager", "run the pager bot", "tests.pager", group, PlatformRules("slack", MentionRules(()))
        )
