"""The `acechat` command: one subcommand per adapter in the registry, plus `run`, `console`, `demo`, `check`,
`db` and `installs`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from acechat.bots import installs_cli
from acechat.bots.adapter import ADAPTERS, StartupError, adapter, configured, settings_groups
from acechat.core.logs import configure_logging
from acechat.core.settings import Settings, SettingsError, load_settings

DEFAULT_ENV_FILE = ".env"


def _version() -> str:
    try:
        return version("acechat")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acechat", description="Ace Data Cloud AI chat bots for Discord and Slack."
    )
    parser.add_argument("--version", action="version", version=f"acechat {_version()}")
    parser.add_argument(
        "--env-file",
        default=None,
        help=f"settings file read under the environment (default: {DEFAULT_ENV_FILE}, if there is one)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary[:1].upper() + summary[1:] + ".")

    run = command("run", "run every configured adapter in one process, with /healthz and /metrics")
    run.set_defaults(adapters=None)
    for spec in ADAPTERS:
        command(spec.name, spec.summary).set_defaults(adapters=[spec.name])
    console = command("console", "chat in the terminal on the same core (try presets and models)")
    console.add_argument(
        "--channel", default="terminal", help="pretend channel, to try several conversations"
    )
    console.add_argument("--user", default=None, help="the name questions are asked under")
    commands.add_parser(
        "demo",
        help="chat in the terminal against a built-in local stand-in of the AI Chat API (no token needed)",
        description="The console on a local stand-in of the AI Chat API: canned, streamed answers that show"
        " the preset, model and turn; no token, no network, and a throwaway database.",
    )
    check = command("check", "validate the configuration, report every problem, reach the database, and exit")
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask each configured platform whether its tokens work (they are never printed)",
    )
    db = command("db", "database tools").add_subparsers(dest="db_command", required=True, metavar="TOOL")
    copy = db.add_parser(
        "copy",
        help="copy every table of the SQLite file (ACECHAT_DB_PATH) into a PostgreSQL database",
        description="Copy every table of the SQLite file (ACECHAT_DB_PATH) into a PostgreSQL database, "
        "creating its tables; running it again adds nothing.",
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
    )
    installs_cli.add_parser(commands)
    return parser


def _fail(error: Exception | str) -> int:
    lines = error.problems if isinstance(error, SettingsError) else str(error).splitlines() or [""]
    for line in lines:
        print(f"acechat: {line}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env_file = args.env_file or DEFAULT_ENV_FILE
    if args.env_file is not None and not Path(args.env_file).is_file():
        # Only the default may be absent: a file named on purpose that is not there is a mistake.
        return _fail(f"--env-file {args.env_file}: no such file")
    if args.command == "demo":
        from acechat.bots.console_demo import run_demo

        return run_demo(env_file)
    if args.command == "installs" and args.installs_command == "keygen":
        return installs_cli.keygen()  # a new key needs no settings
    try:
        settings = load_settings(dotenv_path=env_file, platforms=settings_groups())
    except SettingsError as error:
        return _fail(error)
    level = settings.log_level
    if args.command == "console" and level == "INFO":
        # Routine INFO lines would interleave with the chat in the terminal.
        level = "WARNING"
    configure_platform_logging(level, settings)

    if args.command == "check":
        return _check(settings, online=args.online)
    if args.command == "db":
        return _db_copy(settings, args.to)
    if args.command == "console":
        return _console(settings, args)
    if args.command == "installs":
        return _installs(settings, args)
    return _serve(settings, args.adapters, health=args.command == "run")


def configure_platform_logging(level: str, settings: Settings) -> None:
    """Logging for this process, quieting what every platform's libraries say that is not news."""
    configure_logging(
        level,
        json_lines=settings.log_json,
        secrets=settings.secrets,
        noisy=[name for spec in ADAPTERS for name in spec.noisy_loggers],
        unwanted=[line for spec in ADAPTERS for line in spec.unwanted],
    )


def _check(settings: Settings, *, online: bool) -> int:
    from acechat.storage import StoreError, check_database

    try:
        database = asyncio.run(check_database(database_url=settings.database_url, db_path=settings.db_path))
    except StoreError as error:
        return _fail(error)
    specs = configured(settings)
    if online:
        try:
            for spec in specs:
                print(
                    f"acechat: {spec.name}: the platform accepts the tokens: {asyncio.run(spec.verify(settings))}"
                )
        except StartupError as error:
            return _fail(error)
    names = [spec.name for spec in specs]
    if not names:
        wanted = " or ".join(spec.missing for spec in ADAPTERS)
        print(
            f"acechat: configuration is valid, but no adapter is configured: set {wanted} "
            f"(`acechat console` runs without one); database: {database.describe()}"
        )
        return 0
    print(
        f"acechat: configuration is valid; adapters configured: {', '.join(names)}; "
        f"database: {database.describe()}"
    )
    return 0


def _db_copy(settings: Settings, url: str) -> int:
    from acechat.core.settings import check_database_url
    from acechat.storage import StoreError
    from acechat.storage.copy import copy_to_postgres
    from acechat.storage.installations_postgres import copy_installations

    try:
        check_database_url("--to", url)
        tables = asyncio.run(copy_to_postgres(settings.db_path, url))
        installations = asyncio.run(copy_installations(settings.db_path, url))
    except (SettingsError, StoreError) as error:
        return _fail(error)
    for table in tables:
        print(f"acechat: {table.describe()}")
    print(f"acechat: {installations}")
    print(f"acechat: copied {settings.db_path} into the PostgreSQL database; running it again adds nothing")
    return 0


def _installs(settings: Settings, args: argparse.Namespace) -> int:
    from acechat.storage import StoreError

    try:
        lines = asyncio.run(installs_cli.run(settings, args))
    except (SettingsError, StoreError) as error:
        return _fail(error)
    for line in lines:
        print(f"acechat: {line}")
    return 0


def _console(settings: Settings, args: argparse.Namespace) -> int:
    from acechat.bots.console import run_console
    from acechat.core.chat import ChatCore
    from acechat.storage import StoreError

    async def console() -> None:
        core = await ChatCore.open(settings)
        try:
            await run_console(core, channel=args.channel, user=args.user)
        finally:
            await core.aclose()

    try:
        asyncio.run(console())
    except StoreError as error:
        return _fail(error)
    except KeyboardInterrupt:
        pass
    return 0


def _serve(settings: Settings, wanted: list[str] | None, *, health: bool) -> int:
    from acechat.bots.runtime import serve
    from acechat.storage import StoreError

    if wanted is None:
        specs = configured(settings)
        if not specs:
            missing = " nor ".join(spec.missing for spec in ADAPTERS)
            return _fail(f"neither {missing} is set: `acechat run` has nothing to run")
    else:
        specs = [adapter(name) for name in wanted]
        unset = [spec for spec in specs if not spec.configured(settings)]
        if unset:
            return _fail(f"{unset[0].missing} is not set: `acechat {unset[0].name}` needs it")
    try:
        asyncio.run(serve(settings, specs, health=health))
    except (StartupError, StoreError) as error:
        return _fail(error)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
