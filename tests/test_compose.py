"""docker-compose.yml: PostgreSQL and two acechat replicas, checked without a Docker engine.

The file is parsed as compose reads it (YAML, with its anchors and merge keys); the replicas' settings,
after compose's `${VAR}` substitution from `.env`, are parsed by acechat's own settings loader, so
what the containers would start with is valid acechat configuration.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from acechat.bots.adapter import settings_groups
from acechat.bots.discord_settings import DiscordSettings
from acechat.core.settings import parse_settings
from tests.fakes.discord import TOKEN as DISCORD_TOKEN

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
REPLICAS = ("acechat-1", "acechat-2")
# compose's substitution forms used here: ${NAME}, ${NAME:?error}, ${NAME:-default}.
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")
SECRET_NAMES = ("TOKEN", "SECRET", "PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def substitute(value: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name in env:
            return env[name]
        assert kind == "-", f"{name} must be set in .env: {rest}"
        return rest

    return VARIABLE.sub(one, value)


def test_postgresql_keeps_its_data_on_a_volume_and_reports_health(compose: dict[str, Any]) -> None:
    db = compose["services"]["db"]
    assert db["image"] == "postgres:15"
    [volume] = db["volumes"]
    name, _, target = volume.partition(":")
    assert target == "/var/lib/postgresql/data" and name in compose["volumes"]
    assert "pg_isready" in db["healthcheck"]["test"]
    assert "ports" not in db, "the database stays on the compose network"
    assert db["restart"] in ("always", "unless-stopped")


def test_two_replicas_of_the_image_run_acechat_after_the_database_is_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"db", *REPLICAS}
    for name in REPLICAS:
        replica = services[name]
        assert replica["build"] == "." and (ROOT / "Dockerfile").is_file()
        assert replica["command"] == ["run"]
        assert replica["depends_on"] == {"db": {"condition": "service_healthy"}}
        assert replica["restart"] in ("always", "unless-stopped")
        assert replica["env_file"] == ".env"
        # Each replica checks its own /healthz, on the port it serves it on.
        check = replica["healthcheck"]
        assert check["test"][0] == "CMD" and "/healthz" in check["test"][-1]
        assert "127.0.0.1" in check["test"][-1] and "ACECHAT_HEALTH_PORT" in check["test"][-1]
        assert replica["environment"]["ACECHAT_HEALTH_PORT"] != "0"
        assert replica["environment"]["ACECHAT_HEALTH_HOST"] in ("0.0.0.0", "127.0.0.1")
    # Slack in HTTP mode: a host port each, for a load balancer in front of them.
    assert [services[name]["ports"] for name in REPLICAS] == [["3001:3000"], ["3002:3000"]]


def test_the_replicas_settings_are_valid_and_point_at_the_db_service(compose: dict[str, Any]) -> None:
    env_file = {
        "POSTGRES_PASSWORD": "s3cret",
        "ACEDATACLOUD_API_TOKEN": "t",
        "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
    }
    shards = []
    for name in REPLICAS:
        environment = {
            k: substitute(str(v), env_file) for k, v in compose["services"][name]["environment"].items()
        }
        settings = parse_settings({**env_file, **environment}, settings_groups())
        assert settings.database_url is not None
        url = urlsplit(settings.database_url)
        assert (url.hostname, url.port, url.path) == ("db", 5432, "/acechat") and url.password == "s3cret"
        assert url.username == compose["services"]["db"]["environment"]["POSTGRES_USER"]
        discord = settings.platform("discord", DiscordSettings)
        assert discord is not None
        shards.append((discord.shard_count, discord.shard_ids))
        assert settings.health_port == 9100
    # One Discord shard each: two processes on one shard would both answer every message.
    assert shards == [(2, (0,)), (2, (1,))]


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for prefix in ("xoxb-", "xoxp-", "xapp-"):
        assert prefix not in text
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in SECRET_NAMES):
                assert VARIABLE.fullmatch(str(value)), f"{name}: {key} must come from .env"
            scheme, _, rest = str(value).partition("://")
            if scheme.startswith("postgres"):
                # Split by hand: the `?` of `${VAR:?error}` would end a URL's path for urlsplit.
                password = rest.rpartition("@")[0].partition(":")[2]
                assert VARIABLE.fullmatch(password), f"{name}: {key}'s password must come from .env"
        # The platform and API tokens reach the replicas through .env alone.
        assert not {"ACEDATACLOUD_API_TOKEN", "DISCORD_BOT_TOKEN", "SLACK_BOT_TOKEN"} & set(
            service.get("environment", {})
        )


def test_the_healthcheck_is_the_dockerfiles(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    command = dockerfile.split("CMD python -c ", 1)[1].split("\n", 1)[0]
    [script] = shlex.split(command)
    for name in REPLICAS:
        assert compose["services"][name]["healthcheck"]["test"] == ["CMD", "python", "-c", script]
