"""`acechat demo`: the terminal chat on a real core whose AI Chat API is the local stand-in.

No token and no network: the settings get a placeholder token and the stand-in's address on top of
the operator's environment (so ACECHAT_THINKING and the like still apply), and the database lives in a
temporary directory that goes when the demo ends, so no real state is touched.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from acechat.bots.console import run_console
from acechat.core.chat import ChatCore
from acechat.core.logs import configure_logging
from acechat.core.settings import SettingsError, load_settings
from acechat.demo.standin import StandIn
from acechat.storage import StoreError

PLACEHOLDER_TOKEN = "demo-placeholder-token"


def run_demo(
    env_file: str | Path | None = ".env", *, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    """Run the demo until end of input or Ctrl-C; the exit code for `acechat demo`."""
    with tempfile.TemporaryDirectory(prefix="acechat-demo-") as scratch:
        try:
            asyncio.run(_demo(env_file, Path(scratch) / "acechat.db", stdin, out))
        except (SettingsError, StoreError) as error:
            print(f"acechat: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass
    return 0


async def _demo(env_file: str | Path | None, db_path: Path, stdin: TextIO, out: TextIO) -> None:
    async with StandIn() as standin:
        settings = load_settings(
            dotenv_path=env_file,
            overrides={
                "ACEDATACLOUD_API_TOKEN": PLACEHOLDER_TOKEN,
                "ACEDATACLOUD_API_BASE_URL": standin.url,
                "ACECHAT_DB_PATH": str(db_path),
                # The demo never touches a real deployment's database.
                "ACECHAT_DATABASE_URL": "",
            },
        )
        # Routine INFO lines would interleave with the chat in the terminal.
        level = "WARNING" if settings.log_level == "INFO" else settings.log_level
        configure_logging(level, json_lines=settings.log_json, secrets=settings.secrets)
        out.write(
            f"acechat demo: answers come from a local stand-in of the AI Chat API at {standin.url}, "
            "not from a real model; nothing is kept.\n"
        )
        core = await ChatCore.open(settings)
        try:
            await run_console(core, stdin=stdin, out=out)
        finally:
            await core.aclose()
