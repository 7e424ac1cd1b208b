"""The `acechat` command: `console`, `discord`, `slack`, `run` (every configured adapter), `check` and `db`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from core.logs import configure_logging
from core.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acechat", description="Ace Data Cloud AI chat bots for Discord and Slack."
    )
    parser.add_argument(
        "--env-file", default=".env", help="settings file read under the environment (default: .env)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    console = commands.add_parser(
        "console", help="chat in the terminal on the same core (try presets and models)"
    )
    console.add_argument(
        "--channel", default="terminal", help="pretend channel, to try several conversations"
    )
    console.add_argument("--user", default=None, help="the name questions are asked under")
    commands.add_parser("discord", help="run the Discord bot")
    slack = commands.add_parser("slack", help="run the Slack bot")
    slack.add_argument("--port", type=int, default=None, help="HTTP mode port (default: SLACK_PORT)")
    commands.add_parser("run", help="run every configured adapter in one process, with /healthz and /metrics")
    commands.add_parser("check", help="validate the configuration, reach the database, and exit")
    db = commands.add_parser("db", help="database tools").add_subparsers(dest="db_command", required=True)
    copy = db.add_parser(
        "copy", help="copy every table of the SQLite file (ACECHAT_DB_PATH) into a PostgreSQL database"
    )
    copy.add_argument(
        "--to", required=True, metavar="URL", help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(dotenv_path=args.env_file)
        settings = _apply_arguments(settings, args)
    except SettingsError as error:
        print(f"acechat: {error}", file=sys.stderr)
        return 2
    level = settings.log_level
    if args.command == "console" and level == "INFO":
        # Routine INFO lines would interleave with the chat in the terminal.
        level = "WARNING"
    configure_logging(level, json_lines=settings.log_json, secrets=settings.secrets)

    if args.command == "check":
        from storage import StoreError, check_database

        try:
            database = asyncio.run(
                check_database(database_url=settings.database_url, db_path=settings.db_path)
            )
        except StoreError as error:
            print(f"acechat: {error}", file=sys.stderr)
            return 2
        adapters = [name for name, on in (("discord", settings.discord), ("slack", settings.slack)) if on]
        print(
            f"acechat: configuration is valid; adapters configured: {', '.join(adapters) or 'none'}; "
            f"database: {database.describe()}"
        )
        return 0
    if args.command == "db":
        return _db_copy(settings, args.to)
    if args.command == "console":
        from bots.console import run_console
        from core.chat import ChatCore
        from storage import StoreError

        async def console() -> None:
            core = await ChatCore.open(settings)
            try:
                await run_console(core, channel=args.channel, user=args.user)
            finally:
                await core.aclose()

        try:
            asyncio.run(console())
        except StoreError as error:
            print(f"acechat: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass
        return 0

    from bots.runtime import StartupError, serve
    from storage import StoreError

    wanted = ["discord", "slack"] if args.command == "run" else [args.command]
    try:
        asyncio.run(serve(settings, wanted, health=args.command == "run"))
    except (StartupError, StoreError) as error:
        print(f"acechat: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _db_copy(settings: Settings, url: str) -> int:
    from core.settings import check_database_url
    from storage import StoreError
    from storage.copy import copy_to_postgres

    try:
        check_database_url("--to", url)
    except SettingsError as error:
        print(f"acechat: {error}", file=sys.stderr)
        return 2
    try:
        tables = asyncio.run(copy_to_postgres(settings.db_path, url))
    except StoreError as error:
        print(f"acechat: {error}", file=sys.stderr)
        return 2
    for table in tables:
        print(f"acechat: {table.describe()}")
    print(f"acechat: copied {settings.db_path} into the PostgreSQL database; running it again adds nothing")
    return 0


def _apply_arguments(settings: Settings, args: argparse.Namespace) -> Settings:
    from dataclasses import replace

    if args.command == "discord" and settings.discord is None:
        raise SettingsError("DISCORD_BOT_TOKEN is not set: `acechat discord` needs the bot token")
    if args.command == "slack" and settings.slack is None:
        raise SettingsError("SLACK_BOT_TOKEN is not set: `acechat slack` needs the bot token")
    if args.command == "run" and settings.discord is None and settings.slack is None:
        raise SettingsError(
            "neither DISCORD_BOT_TOKEN nor SLACK_BOT_TOKEN is set: `acechat run` has nothing to run"
        )
    if args.command == "slack" and args.port is not None and settings.slack is not None:
        settings = replace(settings, slack=replace(settings.slack, port=args.port))
    return settings


if __name__ == "__main__":
    raise SystemExit(main())
