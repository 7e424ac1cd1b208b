"""The `acechat` command: `console`, `demo`, `discord`, `slack`, `run` (every configured adapter) and `check`."""

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
    commands.add_parser(
        "demo",
        help="chat in the terminal against a built-in local stand-in of the AI Chat API (no token needed)",
        description="The console on a local stand-in of the AI Chat API: canned, streamed answers that show"
        " the preset, model and turn; no token, no network, and a throwaway database.",
    )
    commands.add_parser("discord", help="run the Discord bot")
    slack = commands.add_parser("slack", help="run the Slack bot")
    slack.add_argument("--port", type=int, default=None, help="HTTP mode port (default: SLACK_PORT)")
    commands.add_parser("run", help="run every configured adapter in one process, with /healthz and /metrics")
    commands.add_parser("check", help="validate the configuration and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from demo.run import run_demo

        return run_demo(args.env_file)
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
        adapters = [name for name, on in (("discord", settings.discord), ("slack", settings.slack)) if on]
        print(f"acechat: configuration is valid; adapters configured: {', '.join(adapters) or 'none'}")
        return 0
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
