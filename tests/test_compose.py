"""docker-compose.yml: PostgreSQL and two acechat replicas, checked without a Docker engine.

The file is parsed as compose reads it (YAML, with its anchors and merge keys); the replicas' settings,
after compose's `${VAR}` substitution from `.env`, are parsed by acechat's own settings loader, so
what the containers would start with is valid acechat configuration.
"""

from __future__ import annotations

import re
import shlex
import tomllib
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
# Seconds a stop must allow beyond ACECHAT_SHUTDOWN_GRACE: closing connections and the database.
STOP_MARGIN = 5.0
# A compose duration: `30s`, `1m30s`, `90`.
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?")


def seconds(duration: object) -> float:
    if isinstance(duration, int | float):
        return float(duration)
    match = DURATION.fullmatch(str(duration))
    assert match is not None and any(match.groups()), duration
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600.0 + minutes * 60.0 + secs


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
    # Slack in HTTP mode: a host port each, for a load balancer in front of them, on this host only.
    assert [services[name]["ports"] for name in REPLICAS] == [
        ["127.0.0.1:3001:3000"],
        ["127.0.0.1:3002:3000"],
    ]


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
        # Stopping waits for answers in flight: their grace, and a moment to close.
        stop = compose["services"][name]["stop_grace_period"]
        assert seconds(stop) >= settings.shutdown_grace + STOP_MARGIN, (stop, settings.shutdown_grace)
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


# --- the image and the README's commands -------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    """The ENV lines of the Dockerfile, as `docker run` starts with them."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for part in shlex.split(line[4:]):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def env_file(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )


def readme_runs() -> list[list[str]]:
    """Every `docker run` and `podman run` command of the README, as the shell splits it."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    runs = [
        shlex.split(line) for line in text.splitlines() if line.startswith(("docker run ", "podman run "))
    ]
    assert {run[0] for run in runs} == {"docker", "podman"}
    return runs


def run_flags(run: list[str]) -> tuple[dict[str, str], list[str], list[str], float | None]:
    """(the environment the container starts with, its published ports, its volumes, --stop-timeout)."""
    env = dockerfile_env()
    files: list[str] = []
    flags: dict[str, str] = {}
    ports: list[str] = []
    volumes: list[str] = []
    stop: float | None = None
    words = iter(run[2:])
    for word in words:
        if word == "--env-file":
            files.append(next(words))
        elif word == "-e":
            name, _, value = next(words).partition("=")
            flags[name] = value
        elif word == "-p":
            ports.append(next(words))
        elif word == "-v":
            volumes.append(next(words))
        elif word == "--stop-timeout":
            stop = float(next(words))
    # docker and podman: the image's ENV, then --env-file, then -e, each overriding the one before.
    for name in files:
        assert name == ".env"
        env.update(env_file(ROOT / ".env.example"))
    env.update(flags)
    return env, ports, volumes, stop


@pytest.mark.parametrize("run", readme_runs(), ids=lambda run: run[0])
def test_the_readmes_run_command_works_as_written(run: list[str]) -> None:
    env, ports, volumes, stop = run_flags(run)
    settings = parse_settings({**env, "ACEDATACLOUD_API_TOKEN": "t", "DISCORD_BOT_TOKEN": "d"})
    # The published health port reaches /healthz: it listens on every interface of the container, on
    # the port published, and the host side stays on this host.
    [published] = ports
    host, host_port, container_port = published.split(":")
    assert host == "127.0.0.1" and int(container_port) == settings.health_port
    assert settings.health_host == "0.0.0.0"
    assert int(host_port) == settings.health_port
    # The state is on the volume, where the image keeps its database.
    assert [volume.split(":")[1] for volume in volumes] == ["/data"]
    assert str(settings.db_path).startswith("/data/")
    # Stopping gives answers in flight their grace.
    assert stop is not None and stop >= settings.shutdown_grace + STOP_MARGIN


def test_the_image_is_pinned_and_built_clean() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    [base] = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(?:-\w+)?(?:@sha256:[0-9a-f]{64})?", base), base
    # Dependencies at the pinned versions, every one of them pinned.
    assert "-c /tmp/deps/constraints.txt" in dockerfile
    pins = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not in constraints.txt: run sh scripts/pin-constraints.sh"
    assert (ROOT / "scripts" / "pin-constraints.sh").is_file()
    # The package is built outside the image's home and removed, and the context leaves out leftovers.
    assert "rm -rf /tmp/src" in dockerfile and "COPY acechat /tmp/src/acechat" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"build", "dist", "**/*.egg-info"} <= set(ignored)
    assert "COPY . " not in dockerfile, "copy only what the image needs"
    # As built and run with Podman: a non-root user, state on /data, a health check.
    assert "--uid 10001" in dockerfile and "USER acechat" in dockerfile
    assert 'VOLUME ["/data"]' in dockerfile and "HEALTHCHECK " in dockerfile
