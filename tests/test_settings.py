"""Settings: defaults, every invalid value named in a one-line error, `.env` under the real environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from acechat.bots.adapter import settings_groups
from acechat.bots.discord_settings import DiscordSettings
from acechat.bots.slack_settings import SlackSettings
from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.settings import (
    DEFAULT_MODELS,
    V1_MODELS,
    RateLimit,
    Settings,
    SettingsError,
    UpstreamSettings,
    load_settings,
    parse_settings,
)
from tests.fakes.discord import TOKEN as DISCORD_TOKEN

ROOT = Path(__file__).resolve().parents[1]
TOKEN = {"ACEDATACLOUD_API_TOKEN": "tok-123456"}
DISCORD = {**TOKEN, "DISCORD_BOT_TOKEN": DISCORD_TOKEN}
SLACK = {**TOKEN, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}


def parse(env: dict[str, str]) -> Settings:
    """The settings as `acechat` reads them, with every platform's."""
    return parse_settings(env, settings_groups())


def discord_of(settings: Settings) -> DiscordSettings | None:
    return settings.platform("discord", DiscordSettings)


def slack_of(settings: Settings) -> SlackSettings | None:
    return settings.platform("slack", SlackSettings)


PREFIXES = ("ACECHAT_", "ACEDATACLOUD_", "DISCORD_", "SLACK_")


def test_defaults_with_only_the_token() -> None:
    settings = parse(TOKEN)
    assert settings == Settings(upstream=UpstreamSettings(token="tok-123456"), secret_values=("tok-123456",))
    assert settings.upstream.base_url == "https://api.acedata.cloud"
    assert settings.platforms == {}
    assert settings.models == DEFAULT_MODELS and settings.default_model == "claude-sonnet-4-6"
    assert settings.upstream.api_version == "v2" and settings.tools is True
    assert settings.default_preset == "assistant"
    assert settings.user_rate == RateLimit(10, 60.0) and settings.user_rate.enabled
    assert settings.channel_rate == RateLimit(30, 60.0)
    assert settings.thinking == "fold" and settings.log_level == "INFO" and not settings.log_json
    assert settings.health_host == "127.0.0.1" and settings.health_port == 9100


def test_every_setting_is_read_and_normalised() -> None:
    settings = parse(
        {
            **TOKEN,
            "ACEDATACLOUD_API_BASE_URL": " http://127.0.0.1:8765/ ",
            "ACECHAT_CONNECT_TIMEOUT": "2.5",
            "ACECHAT_READ_TIMEOUT": "30",
            "ACECHAT_UPSTREAM_RETRIES": "0",
            "ACECHAT_UPSTREAM_MAX_CONNECTIONS": "8",
            "ACECHAT_MODELS": "gpt-4, o3-mini;gpt-4 ,,",
            "ACECHAT_DEFAULT_MODEL": "o3-mini",
            "ACECHAT_DEFAULT_PRESET": "Coder",
            "ACECHAT_ADMIN_USERS": "slack:U1, discord:42",
            "ACECHAT_AUTHOR_PREFIX": "off",
            "ACECHAT_MAX_QUESTION_CHARS": "100",
            "ACECHAT_MAX_PRESET_CHARS": "50",
            "ACECHAT_ANSWER_TIMEOUT": "60",
            "ACECHAT_USER_RATE": "0/60",
            "ACECHAT_CHANNEL_RATE": "5",
            "ACECHAT_THINKING": "HIDE",
            "ACECHAT_DB_PATH": "/tmp/x.db",
            "ACECHAT_TRANSCRIPT_DAYS": "0",
            "ACECHAT_LOG_LEVEL": "debug",
            "ACECHAT_LOG_JSON": "yes",
            "ACECHAT_HEALTH_HOST": "0.0.0.0",
            "ACECHAT_HEALTH_PORT": "0",
            "ACECHAT_SHUTDOWN_GRACE": "1.5",
        }
    )
    assert settings.upstream == UpstreamSettings("tok-123456", "http://127.0.0.1:8765", 2.5, 30.0, 0, 8)
    assert settings.models == ("gpt-4", "o3-mini") and settings.default_model == "o3-mini"
    assert settings.default_preset == "coder"
    assert settings.admin_users == frozenset({"slack:U1", "discord:42"})
    assert settings.author_prefix is False and settings.log_json is True
    assert (settings.max_question_chars, settings.max_preset_chars) == (100, 50)
    assert settings.answer_timeout == 60.0 and settings.shutdown_grace == 1.5
    assert settings.user_rate == RateLimit(0, 60.0) and not settings.user_rate.enabled, "0/60 turns it off"
    assert settings.channel_rate == RateLimit(5, 60.0), "the window defaults to 60 s"
    assert settings.thinking == "hide" and settings.log_level == "DEBUG"
    assert settings.db_path == Path("/tmp/x.db") and settings.transcript_days == 0
    assert (settings.health_host, settings.health_port) == ("0.0.0.0", 0)


def test_blank_values_mean_the_default() -> None:
    settings = parse({**TOKEN, "ACECHAT_USER_RATE": "  ", "ACECHAT_MODELS": "", "DISCORD_BOT_TOKEN": ""})
    assert settings.user_rate == RateLimit(10, 60.0)
    assert settings.models == DEFAULT_MODELS
    assert discord_of(settings) is None


@pytest.mark.parametrize("env", [{}, {"ACEDATACLOUD_API_TOKEN": "   "}])
def test_a_missing_token_is_named(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="ACEDATACLOUD_API_TOKEN is not set") as caught:
        parse(env)
    assert "\n" not in str(caught.value)


INVALID = [
    ("ACEDATACLOUD_API_BASE_URL", "api.acedata.cloud", TOKEN),
    ("ACEDATACLOUD_API_BASE_URL", "ftp://api.acedata.cloud", TOKEN),
    ("ACEDATACLOUD_API_BASE_URL", "http://", TOKEN),
    ("ACEDATACLOUD_API_BASE_URL", "http://[::1", TOKEN),
    ("ACECHAT_CONNECT_TIMEOUT", "soon", TOKEN),
    ("ACECHAT_CONNECT_TIMEOUT", "0", TOKEN),
    ("ACECHAT_READ_TIMEOUT", "nan", TOKEN),
    ("ACECHAT_READ_TIMEOUT", "inf", TOKEN),
    ("ACECHAT_UPSTREAM_RETRIES", "two", TOKEN),
    ("ACECHAT_UPSTREAM_RETRIES", "1.5", TOKEN),
    ("ACECHAT_UPSTREAM_RETRIES", "-1", TOKEN),
    ("ACECHAT_UPSTREAM_MAX_CONNECTIONS", "0", TOKEN),
    ("ACECHAT_MAX_QUESTION_CHARS", "0", TOKEN),
    ("ACECHAT_MAX_PRESET_CHARS", "lots", TOKEN),
    ("ACECHAT_ANSWER_TIMEOUT", "0.5", TOKEN),
    ("ACECHAT_AUTHOR_PREFIX", "maybe", TOKEN),
    ("ACECHAT_LOG_JSON", "2", TOKEN),
    ("ACECHAT_USER_RATE", "ten/60", TOKEN),
    ("ACECHAT_USER_RATE", "10/0", TOKEN),
    ("ACECHAT_USER_RATE", "-1/60", TOKEN),
    ("ACECHAT_USER_RATE", "10/nan", TOKEN),
    ("ACECHAT_USER_RATE", "10/inf", TOKEN),
    ("ACECHAT_USER_RATE", "10/60/2", TOKEN),
    ("ACECHAT_CHANNEL_RATE", "fast", TOKEN),
    ("ACECHAT_THINKING", "loud", TOKEN),
    ("ACECHAT_LOG_LEVEL", "verbose", TOKEN),
    ("ACECHAT_TRANSCRIPT_DAYS", "-3", TOKEN),
    ("ACECHAT_HEALTH_PORT", "70000", TOKEN),
    ("ACECHAT_HEALTH_PORT", "port", TOKEN),
    ("ACECHAT_SHUTDOWN_GRACE", "-1", TOKEN),
    ("ACECHAT_DEFAULT_MODEL", "gpt-99", TOKEN),
    ("ACECHAT_DEFAULT_MODEL", "gpt-4o", {**TOKEN, "ACECHAT_MODELS": "gpt-4,o3-mini"}),
    ("ACECHAT_DEFAULT_PRESET", "pirate", TOKEN),
    ("DISCORD_SHARD_IDS", "0,1", DISCORD),
    ("DISCORD_SHARD_IDS", "0,2", {**DISCORD, "DISCORD_SHARD_COUNT": "2"}),
    ("DISCORD_SHARD_IDS", "-1", {**DISCORD, "DISCORD_SHARD_COUNT": "2"}),
    ("DISCORD_SHARD_IDS", "a,b", {**DISCORD, "DISCORD_SHARD_COUNT": "2"}),
    ("DISCORD_SHARD_COUNT", "0", DISCORD),
    ("DISCORD_SHARD_COUNT", "many", DISCORD),
    ("DISCORD_DEV_GUILD_ID", "guild", DISCORD),
    ("DISCORD_API_BASE_URL", "discord.com/api", DISCORD),
    ("DISCORD_GATEWAY_URL", "gateway.discord.gg", DISCORD),
    ("SLACK_COMMAND", "aichat", SLACK),
    ("SLACK_COMMAND", "/ai chat", SLACK),
    ("SLACK_COMMAND", "/", SLACK),
    ("SLACK_PORT", "0", SLACK),
    ("SLACK_PORT", "65536", SLACK),
    ("SLACK_API_URL", "slack.com/api", SLACK),
]


@pytest.mark.parametrize(("name", "value", "base"), INVALID, ids=[f"{n}={v}" for n, v, _ in INVALID])
def test_every_invalid_value_names_its_variable_on_one_line(
    name: str, value: str, base: dict[str, str]
) -> None:
    with pytest.raises(SettingsError) as caught:
        parse({**base, name: value})
    [message] = caught.value.problems
    assert re.search(rf"\b{name}\b", message), message
    assert "\n" not in message
    assert "tok-123456" not in message and DISCORD_TOKEN not in message and "xoxb-1" not in message


def test_the_default_model_error_lists_the_allowed_models() -> None:
    with pytest.raises(SettingsError, match=r"ACECHAT_MODELS \(gpt-4, o3-mini\)"):
        parse({**TOKEN, "ACECHAT_MODELS": "gpt-4,o3-mini"})


def test_every_built_in_preset_can_be_the_default() -> None:
    for name in BUILTIN_PRESETS:
        assert parse({**TOKEN, "ACECHAT_DEFAULT_PRESET": name.upper()}).default_preset == name


def test_discord_settings() -> None:
    settings = parse(
        {
            **DISCORD,
            "DISCORD_API_BASE_URL": "http://127.0.0.1:9000/api/v10/",
            "DISCORD_GATEWAY_URL": "ws://127.0.0.1:9001",
            "DISCORD_DEV_GUILD_ID": "123",
            "DISCORD_SHARD_COUNT": "4",
            "DISCORD_SHARD_IDS": "2, 3",
        }
    )
    discord = discord_of(settings)
    assert discord is not None
    assert discord.token == DISCORD_TOKEN
    assert discord.api_base_url == "http://127.0.0.1:9000/api/v10"
    assert discord.gateway_url == "ws://127.0.0.1:9001"
    assert discord.dev_guild_id == 123
    assert (discord.shard_count, discord.shard_ids) == (4, (2, 3))
    counted = discord_of(parse({**DISCORD, "DISCORD_SHARD_COUNT": "3"}))
    assert counted is not None and (counted.shard_count, counted.shard_ids) == (3, None)


def test_slack_needs_an_app_token_or_a_signing_secret() -> None:
    with pytest.raises(SettingsError) as caught:
        parse({**TOKEN, "SLACK_BOT_TOKEN": "xoxb-1"})
    assert "SLACK_APP_TOKEN" in str(caught.value) and "SLACK_SIGNING_SECRET" in str(caught.value)

    socket = slack_of(parse(SLACK))
    assert socket is not None and socket.app_token == "xapp-1"
    assert socket.command == "/aichat" and socket.port == 3000
    http = slack_of(
        parse({**TOKEN, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s3cret", "SLACK_PORT": "3100"})
    )
    assert http is not None and http.app_token is None
    assert (http.signing_secret, http.port, http.api_url) == ("s3cret", 3100, None)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/api", "http://127.0.0.1:9/api/", "http://127.0.0.1:9/api//"]
)
def test_slack_api_url_gets_exactly_one_trailing_slash(url: str) -> None:
    slack = slack_of(parse({**SLACK, "SLACK_API_URL": url, "SLACK_COMMAND": "/ask-ai"}))
    assert slack is not None
    assert slack.api_url == "http://127.0.0.1:9/api/"
    assert slack.command == "/ask-ai"


def test_load_settings_reads_the_env_file_under_the_environment(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# acechat settings\n"
        "ACEDATACLOUD_API_TOKEN=from-file\n"
        'ACECHAT_DEFAULT_MODEL="grok-4"\n'
        "ACECHAT_USER_RATE=5/30\n"
        "ACECHAT_THINKING=show\n"
    )
    settings = load_settings({"ACEDATACLOUD_API_TOKEN": "from-env", "ACECHAT_THINKING": "hide"}, dotenv)
    assert settings.upstream.token == "from-env", "a real variable wins over .env"
    assert settings.thinking == "hide"
    assert settings.default_model == "grok-4" and settings.user_rate == RateLimit(5, 30.0)
    assert load_settings({}, dotenv).upstream.token == "from-file"
    assert load_settings(TOKEN, tmp_path / "missing.env") == parse(TOKEN)
    assert load_settings(TOKEN, None) == parse(TOKEN)
    with pytest.raises(SettingsError, match="ACEDATACLOUD_API_TOKEN"):
        load_settings({}, tmp_path / "missing.env")


def test_load_settings_reads_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)
    dotenv = tmp_path / ".env"
    dotenv.write_text("ACEDATACLOUD_API_TOKEN=from-file\nACECHAT_DEFAULT_MODEL=grok-4\n")
    monkeypatch.setenv("ACEDATACLOUD_API_TOKEN", "from-process")
    settings = load_settings(dotenv_path=dotenv)
    assert settings.upstream.token == "from-process"
    assert settings.default_model == "grok-4"


def test_nothing_but_settings_reads_the_environment() -> None:
    offenders = []
    for folder in ("acechat/core", "acechat/storage", "acechat/bots", "acechat/demo"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "acechat" / "core" / "settings.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"os\.environ|getenv|environ\[|from os import", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_secrets_lists_every_credential_in_force() -> None:
    settings = parse(
        {
            "ACEDATACLOUD_API_TOKEN": "upstream-secret",
            "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
            "SLACK_BOT_TOKEN": "xoxb-secret",
            "SLACK_SIGNING_SECRET": "signing-secret",
        }
    )
    assert set(settings.secrets) == {"upstream-secret", DISCORD_TOKEN, "xoxb-secret", "signing-secret"}


def test_the_controls_platform_settings() -> None:
    """Issue 17: Discord DMs are the operator's to allow; a Slack user group holds channel rights."""
    default = discord_of(parse(DISCORD))
    assert default is not None and default.dms
    closed = discord_of(parse({**DISCORD, "ACECHAT_DISCORD_DMS": "false"}))
    assert closed is not None and not closed.dms
    grouped = slack_of(parse({**SLACK, "ACECHAT_SLACK_ADMIN_GROUP": "@ai-admins"}))
    assert grouped is not None and grouped.admin_group == "@ai-admins"
    with pytest.raises(SettingsError, match="ACECHAT_DISCORD_DMS"):
        parse({**DISCORD, "ACECHAT_DISCORD_DMS": "sometimes"})


def test_api_version_picks_the_endpoint_catalogue_and_default_model() -> None:
    v1 = parse_settings({**TOKEN, "ACECHAT_API_VERSION": "V1"})
    assert v1.upstream.api_version == "v1"
    assert v1.models == V1_MODELS and v1.default_model == "gpt-4o"
    v2 = parse_settings({**TOKEN, "ACECHAT_API_VERSION": "v2", "ACECHAT_TOOLS": "off"})
    assert v2.models == DEFAULT_MODELS and v2.default_model == "claude-sonnet-4-6" and v2.tools is False
    # Every default is a name of v2's documented `model` enum (openapi/aichat.json of AceDataCloud/Docs).
    assert set(DEFAULT_MODELS) <= V2_SPEC_MODELS
    with pytest.raises(SettingsError, match="ACECHAT_API_VERSION='v3' is invalid"):
        parse_settings({**TOKEN, "ACECHAT_API_VERSION": "v3"})
    with pytest.raises(SettingsError, match="ACECHAT_TOOLS"):
        parse_settings({**TOKEN, "ACECHAT_TOOLS": "maybe"})


# The `model` enum of `/aichat2/conversations` in the vendor's OpenAPI spec, as read for issue 16.
V2_SPEC_MODELS = frozenset(
    "gpt-4 gpt-4.1 gpt-4.1-mini gpt-4.1-nano gpt-4o gpt-4o-2024-05-13 gpt-4o-all gpt-4o-image gpt-4o-mini "
    "gpt-5-all gpt-5.1-all gpt-5.2-pro gpt-5.4-mini gpt-5.4-nano gpt-image-1 claude-3-5-haiku-20241022 "
    "claude-3-5-sonnet-20240620 claude-3-5-sonnet-20241022 claude-3-7-sonnet-20250219 claude-3-haiku-20240307 "
    "claude-3-sonnet-20240229 claude-haiku-4-5-20251001 claude-opus-4-1-20250805 claude-opus-4-20250514 "
    "claude-opus-4-5-20251101 claude-opus-4-6 claude-fable-5 claude-opus-5 claude-opus-4-8 claude-opus-4-7 "
    "claude-sonnet-4-20250514 claude-sonnet-4-5-20250929 claude-sonnet-4-6 claude-sonnet-5 gemini-2.0-flash-lite "
    "gemini-2.5-flash-lite gemini-3-pro-preview gemini-3.1-flash-image-preview gemini-3.1-flash-lite-preview "
    "gemini-3.1-pro gemini-3.1-pro-preview grok-3 grok-3-fast grok-4 grok-4.5 grok-4-0709 deepseek-chat "
    "deepseek-r1 deepseek-r1-0528 deepseek-reasoner deepseek-v3 deepseek-v3-250324 deepseek-v3.2-exp "
    "deepseek-v4-flash deepseek-v4-pro kimi-k2-thinking kimi-k2-thinking-turbo kimi-k3 kimi-k2.6 kimi-k2.5 "
    "glm-3-turbo glm-4.5 glm-4.5v glm-4.6 glm-4.7 glm-5 glm-5-turbo glm-5.2 glm-5.1 o1 o1-mini o1-pro o3 "
    "o3-mini o3-pro o4-mini".split()
)
