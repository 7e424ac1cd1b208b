"""One typed settings object, read once from the environment (and `.env`).

Nothing else in acechat reads `os.environ`: adapters and the core receive a `Settings`. Every variable is
declared as a `Setting` (its name, documented default, whether it is a secret): the core's here, each
platform's in its own `SettingsGroup`, which also parses them (bots.adapter lists the groups). Reading an
undeclared name is a bug, so the declarations, `.env.example` and the README (held to them by tests) and
the log scrubber (fed every secret read) cannot drift from what the code reads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from acechat.core.presets import BUILTIN_PRESETS
from acechat.core.sanitize import ThinkingMode
from acechat.core.urlmask import url_passwords

T = TypeVar("T")

# Platforms cap the length of a command choice; no real model name comes near this.
MAX_MODEL_CHARS = 100
# Connections for queries per process. Queries take well under a millisecond and a turn makes a few,
# so ten serve thousands of turns a second; turns in flight do not hold one (see storage.postgres).
DEFAULT_DATABASE_POOL = 10
# AI Chat v2 (issue 16): the endpoint, its model catalogue and tools. Each name below is in the
# `model` enum of the v2 OpenAPI spec (AceDataCloud/Docs openapi/aichat.json). The default is named in
# the vendor's v2 guide too, and is strong at the multi-step tool use v2 adds, at a middle price.
API_VERSIONS = ("v1", "v2")
DEFAULT_MODELS = (
    "claude-sonnet-4-6",
    "gpt-5.4-mini",
    "claude-opus-4-8",
    "gemini-3.1-pro",
    "grok-4",
    "deepseek-v4-pro",
    "kimi-k3",
    "glm-5.1",
    "o3",
)
DEFAULT_MODEL = "claude-sonnet-4-6"
# What v1 (`ACECHAT_API_VERSION=v1`) serves: the catalogue acechat used before v2.
V1_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4", "o3-mini", "deepseek-r1", "grok-3", "glm-4.6")
V1_DEFAULT_MODEL = "gpt-4o"


class SettingsError(ValueError):
    """Settings are missing or invalid: one line per problem, each naming its setting."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class RateLimit:
    """`count` events per `per_seconds`; `count == 0` turns the limit off."""

    count: int
    per_seconds: float

    @property
    def enabled(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class UpstreamSettings:
    token: str
    base_url: str = "https://api.acedata.cloud"
    connect_timeout: float = 10.0
    # Longest silence allowed between two reads of an answer; reasoning models think for a while.
    read_timeout: float = 120.0
    retries: int = 2
    max_connections: int = 1000
    # "v2": /aichat2/conversations (tools, typed stream events); "v1": /aichat/conversations.
    api_version: str = "v2"


@dataclass(frozen=True)
class Settings:
    upstream: UpstreamSettings
    # Each configured platform's own settings, by platform name, as its SettingsGroup parsed them.
    platforms: Mapping[str, object] = field(default_factory=dict)
    # The value of every setting declared secret, as read (platform tokens and the like).
    secret_values: tuple[str, ...] = ()
    models: tuple[str, ...] = DEFAULT_MODELS
    default_model: str = DEFAULT_MODEL
    # Whether the model may use v2's tools (web search, page fetch, files, the account's MCP servers)
    # where no channel or workspace admin chose; off sends `max_turns: 1`.
    tools: bool = True
    default_preset: str = "assistant"
    admin_users: frozenset[str] = frozenset()
    author_prefix: bool = True
    max_question_chars: int = 8000
    # Longer answers are cut (and say so): a model made to repeat itself must not flood a channel.
    max_answer_chars: int = 12_000
    max_preset_chars: int = 4000
    answer_timeout: float = 300.0
    user_rate: RateLimit = field(default_factory=lambda: RateLimit(10, 60.0))
    channel_rate: RateLimit = field(default_factory=lambda: RateLimit(30, 60.0))
    thinking: ThinkingMode = ThinkingMode.FOLD
    db_path: Path = Path("data/acechat.db")
    # PostgreSQL instead of the SQLite file, shared by every process pointed at it.
    database_url: str | None = None
    database_pool: int = DEFAULT_DATABASE_POOL
    transcript_days: int = 30
    log_level: str = "INFO"
    log_json: bool = False
    health_host: str = "127.0.0.1"
    health_port: int = 9100
    shutdown_grace: float = 20.0
    # Questions that may wait in one channel or thread behind the one being answered, and for how long.
    max_waiting: int = 5
    max_wait: float = 300.0

    def platform(self, name: str, kind: type[T]) -> T | None:
        """Platform `name`'s settings, None when it is not configured."""
        found = self.platforms.get(name)
        if found is not None and not isinstance(found, kind):
            raise TypeError(f"{name} settings are a {type(found).__name__}, not a {kind.__name__}")
        return found

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential in force: what logs must never show."""
        found = [self.upstream.token, *self.secret_values]
        if self.database_url is not None:
            found += url_passwords(self.database_url)
        return tuple(dict.fromkeys(secret for secret in found if secret))


@dataclass(frozen=True)
class Setting:
    """One environment variable acechat reads."""

    name: str
    # As an operator would write it in .env ("" when unset means nothing, or something computed).
    default: str = ""
    secret: bool = False


@dataclass(frozen=True)
class SettingsGroup:
    """One platform's settings: declared here, parsed by `parse` with the rest of the settings.

    `parse` returns None when the platform is not configured (its `enabled_by` setting is unset).
    """

    platform: str
    settings: tuple[Setting, ...]
    parse: Callable[[SettingsReader], object | None]
    enabled_by: str

    def __post_init__(self) -> None:
        if self.enabled_by not in {s.name for s in self.settings}:
            raise ValueError(f"{self.platform}: {self.enabled_by} is not among its settings")


# Every platform-neutral setting; platforms declare theirs in their SettingsGroup.
CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("ACEDATACLOUD_API_TOKEN", secret=True),
    Setting("ACEDATACLOUD_API_BASE_URL", "https://api.acedata.cloud"),
    Setting("ACECHAT_CONNECT_TIMEOUT", "10"),
    Setting("ACECHAT_READ_TIMEOUT", "120"),
    Setting("ACECHAT_UPSTREAM_RETRIES", "2"),
    Setting("ACECHAT_UPSTREAM_MAX_CONNECTIONS", "1000"),
    Setting("ACECHAT_API_VERSION", "v2"),
    Setting("ACECHAT_TOOLS", "true"),
    Setting("ACECHAT_MODELS", ",".join(DEFAULT_MODELS)),
    Setting("ACECHAT_DEFAULT_MODEL", DEFAULT_MODEL),
    Setting("ACECHAT_DEFAULT_PRESET", "assistant"),
    Setting("ACECHAT_ADMIN_USERS"),
    Setting("ACECHAT_AUTHOR_PREFIX", "true"),
    Setting("ACECHAT_MAX_QUESTION_CHARS", "8000"),
    Setting("ACECHAT_MAX_ANSWER_CHARS", "12000"),
    Setting("ACECHAT_MAX_PRESET_CHARS", "4000"),
    Setting("ACECHAT_ANSWER_TIMEOUT", "300"),
    Setting("ACECHAT_USER_RATE", "10/60"),
    Setting("ACECHAT_CHANNEL_RATE", "30/60"),
    Setting("ACECHAT_THINKING", "fold"),
    Setting("ACECHAT_DB_PATH", "data/acechat.db"),
    # Not secret as a whole; its password is (see Settings.secrets).
    Setting("ACECHAT_DATABASE_URL"),
    Setting("ACECHAT_DATABASE_POOL", str(DEFAULT_DATABASE_POOL)),
    Setting("ACECHAT_TRANSCRIPT_DAYS", "30"),
    Setting("ACECHAT_LOG_LEVEL", "INFO"),
    Setting("ACECHAT_LOG_JSON", "false"),
    Setting("ACECHAT_HEALTH_HOST", "127.0.0.1"),
    Setting("ACECHAT_HEALTH_PORT", "9100"),
    Setting("ACECHAT_SHUTDOWN_GRACE", "20"),
    Setting("ACECHAT_MAX_WAITING", "5"),
    Setting("ACECHAT_MAX_WAIT", "300"),
    # Fernet key(s) sealing secrets at rest (core.secret_box), read by a platform that keeps tokens it
    # was given at install time.
    Setting("ACECHAT_SECRET_KEY", secret=True),
)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsReader:
    """Typed access to the declared settings in one mapping of raw strings. A bad value is noted (naming
    its setting) and its default used, so that every problem is reported at once by `check()`."""

    def __init__(self, env: Mapping[str, str], declared: Iterable[Setting]) -> None:
        self._env = env
        self._declared = {setting.name: setting for setting in declared}
        self.problems: list[str] = []
        self.secrets: list[str] = []

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

    def check(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)

    def raw(self, name: str) -> str | None:
        setting = self._declared.get(name)
        if setting is None:
            raise KeyError(f"{name} is read but not declared: add it to its Setting list")
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        if value and setting.secret and value not in self.secrets:
            self.secrets.append(value)
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def required(self, name: str, why: str) -> str:
        value = self.raw(name)
        if value is None:
            self.fail(f"{name} is not set: {why}")
            return ""
        return value

    def _parse(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            self.fail(f"{name}={value!r} is invalid: expected {expected}")
            return default

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        known = len(self.problems)
        result = self._parse(name, default, int, "a whole number")
        if len(self.problems) > known:
            return result
        if result < minimum:
            self.fail(f"{name}={result} is invalid: must be at least {minimum}")
            return default
        if maximum is not None and result > maximum:
            self.fail(f"{name}={result} is invalid: must be at most {maximum}")
            return default
        return result

    def port(self, name: str, default: int, minimum: int = 0) -> int:
        return self.integer(name, default, minimum=minimum, maximum=65535)

    def optional_integer(self, name: str, minimum: int = 0) -> int | None:
        value = self.raw(name)
        return None if value is None else self.integer(name, 0, minimum=minimum)

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        known = len(self.problems)
        result = self._parse(name, default, float, "a number")
        if len(self.problems) > known:
            return result
        if not math.isfinite(result) or result < minimum:
            self.fail(f"{name}={result} is invalid: must be a number of at least {minimum}")
            return default
        return result

    def boolean(self, name: str, default: bool) -> bool:
        def parse(value: str) -> bool:
            lowered = value.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)

        return self._parse(name, default, parse, "true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in {c.lower() for c in choices}:
            self.fail(f"{name}={value!r} is invalid: expected one of {', '.join(choices)}")
            return default.lower()
        return value

    def words(self, name: str) -> tuple[str, ...]:
        value = self.raw(name) or ""
        return tuple(dict.fromkeys(w.strip() for w in value.replace(";", ",").split(",") if w.strip()))

    def rate(self, name: str, default: RateLimit) -> RateLimit:
        def parse(value: str) -> RateLimit:
            count, _, seconds = value.partition("/")
            limit = RateLimit(int(count), float(seconds or "60"))
            if limit.count < 0 or not 0 < limit.per_seconds < math.inf:
                raise ValueError(value)
            return limit

        return self._parse(name, default, parse, "COUNT/SECONDS, e.g. 10/60 (0/60 turns it off)")

    def url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name) or default
        if value is None:
            return None
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = urlsplit("")
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
            self.fail(f"{name}={value!r} is invalid: expected a URL starting with http(s):// or ws(s)://")
            return default
        return value.rstrip("/")

    def database_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        try:
            return check_database_url(name, value)
        except SettingsError as error:
            self.problems.extend(error.problems)
            return None


def check_database_url(name: str, value: str) -> str:
    """`value` if it is a PostgreSQL URL; else a SettingsError naming `name` (and not the value, which
    may hold a password)."""
    try:
        parts = urlsplit(value)
        # `port` parses the port, raising on one that is not a number.
        valid = (
            parts.scheme in ("postgresql", "postgres")
            and bool(parts.hostname or parts.path.strip("/"))
            and (parts.port or 0) >= 0
        )
    except ValueError:  # e.g. an unclosed IPv6 bracket
        valid = False
    if not valid:
        raise SettingsError(f"{name} is invalid: expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME")
    return value


def load_settings(
    env: Mapping[str, str] | None = None,
    dotenv_path: str | Path | None = ".env",
    *,
    overrides: Mapping[str, str] | None = None,
    platforms: Iterable[SettingsGroup] = (),
) -> Settings:
    """Build the settings from `env` (the process environment by default) over a `.env` file.

    Real environment variables win over the `.env` file, as operators expect; `overrides` win over both
    (`acechat demo` puts its stand-in's address and a placeholder token there). `platforms`: the groups
    of settings of the platforms acechat can serve.
    """
    if env is None:
        import os

        env = os.environ
    merged: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        merged.update(read_dotenv(Path(dotenv_path)))
    merged.update(env)
    merged.update(overrides or {})
    return parse_settings(merged, platforms)


class _ParseWarnings(logging.Filter):
    """Keeps python-dotenv's warnings about lines it cannot parse, instead of letting them print."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "could not parse" not in message:
            return True
        self.messages.append(message)
        return False


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables a `.env` file sets; a line python-dotenv cannot parse is a SettingsError naming the
    file (dotenv itself only warns, and would drop the setting without a word)."""
    warnings = _ParseWarnings()
    dotenv_log = logging.getLogger("dotenv.main")
    dotenv_log.addFilter(warnings)
    try:
        values = dotenv_values(path)
    finally:
        dotenv_log.removeFilter(warnings)
    if warnings.messages:
        raise SettingsError([f"{path}: {message}" for message in warnings.messages])
    return {k: v for k, v in values.items() if v is not None}


def parse_settings(env: Mapping[str, str], platforms: Iterable[SettingsGroup] = ()) -> Settings:
    groups = tuple(platforms)
    r = SettingsReader(env, [*CORE_SETTINGS, *(s for group in groups for s in group.settings)])
    upstream = UpstreamSettings(
        token=r.required(
            "ACEDATACLOUD_API_TOKEN",
            "get a token at https://platform.acedata.cloud and put it in .env (or try `acechat demo`, which needs none)",
        ),
        base_url=r.url("ACEDATACLOUD_API_BASE_URL", "https://api.acedata.cloud") or "",
        connect_timeout=r.number("ACECHAT_CONNECT_TIMEOUT", 10.0, minimum=0.1),
        read_timeout=r.number("ACECHAT_READ_TIMEOUT", 120.0, minimum=0.1),
        retries=r.integer("ACECHAT_UPSTREAM_RETRIES", 2),
        max_connections=r.integer("ACECHAT_UPSTREAM_MAX_CONNECTIONS", 1000, minimum=1),
        api_version=r.choice("ACECHAT_API_VERSION", "v2", API_VERSIONS),
    )
    v1 = upstream.api_version == "v1"

    models = r.words("ACECHAT_MODELS") or (V1_MODELS if v1 else DEFAULT_MODELS)
    too_long = [m for m in models if len(m) > MAX_MODEL_CHARS]
    if too_long:
        r.fail(f"ACECHAT_MODELS has a name longer than {MAX_MODEL_CHARS} characters: {too_long[0][:40]!r}…")
    default_model = r.text("ACECHAT_DEFAULT_MODEL", V1_DEFAULT_MODEL if v1 else DEFAULT_MODEL)
    if default_model not in models:
        r.fail(
            f"ACECHAT_DEFAULT_MODEL={default_model!r} is invalid: it is not in ACECHAT_MODELS ({', '.join(models)})"
        )
    # Custom presets belong to one workspace, so only a built-in can be the default everywhere.
    default_preset = r.text("ACECHAT_DEFAULT_PRESET", "assistant").lower()
    if default_preset not in BUILTIN_PRESETS:
        r.fail(
            f"ACECHAT_DEFAULT_PRESET={default_preset!r} is invalid: expected a built-in preset "
            f"({', '.join(BUILTIN_PRESETS)})"
        )

    configured: dict[str, object] = {}
    for group in groups:
        parsed = group.parse(r)
        if parsed is not None:
            configured[group.platform] = parsed

    settings = Settings(
        upstream=upstream,
        platforms=configured,
        models=models,
        default_model=default_model,
        tools=r.boolean("ACECHAT_TOOLS", True),
        default_preset=default_preset,
        admin_users=frozenset(r.words("ACECHAT_ADMIN_USERS")),
        author_prefix=r.boolean("ACECHAT_AUTHOR_PREFIX", True),
        max_question_chars=r.integer("ACECHAT_MAX_QUESTION_CHARS", 8000, minimum=1),
        max_answer_chars=r.integer("ACECHAT_MAX_ANSWER_CHARS", 12_000, minimum=100),
        max_preset_chars=r.integer("ACECHAT_MAX_PRESET_CHARS", 4000, minimum=1),
        answer_timeout=r.number("ACECHAT_ANSWER_TIMEOUT", 300.0, minimum=1.0),
        user_rate=r.rate("ACECHAT_USER_RATE", RateLimit(10, 60.0)),
        channel_rate=r.rate("ACECHAT_CHANNEL_RATE", RateLimit(30, 60.0)),
        thinking=ThinkingMode(r.choice("ACECHAT_THINKING", "fold", tuple(ThinkingMode))),
        db_path=Path(r.text("ACECHAT_DB_PATH", "data/acechat.db")),
        database_url=r.database_url("ACECHAT_DATABASE_URL"),
        database_pool=r.integer("ACECHAT_DATABASE_POOL", DEFAULT_DATABASE_POOL, minimum=1, maximum=1000),
        transcript_days=r.integer("ACECHAT_TRANSCRIPT_DAYS", 30),
        log_level=r.choice("ACECHAT_LOG_LEVEL", "INFO", LOG_LEVELS).upper(),
        log_json=r.boolean("ACECHAT_LOG_JSON", False),
        health_host=r.text("ACECHAT_HEALTH_HOST", "127.0.0.1"),
        health_port=r.port("ACECHAT_HEALTH_PORT", 9100),
        shutdown_grace=r.number("ACECHAT_SHUTDOWN_GRACE", 20.0),
        max_waiting=r.integer("ACECHAT_MAX_WAITING", 5),
        max_wait=r.number("ACECHAT_MAX_WAIT", 300.0, minimum=1.0),
        secret_values=tuple(r.secrets),
    )
    r.check()
    return settings
