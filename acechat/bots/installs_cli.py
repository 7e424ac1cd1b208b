"""`acechat installs`: the Slack workspaces the app is installed in (OAuth mode), and their secret key."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from acechat.bots.slack_settings import SlackSettings
from acechat.core.secret_box import SealedError, SecretBox, generate_key
from acechat.core.settings import Settings, SettingsError
from acechat.storage.installations import (
    InstallationEvent,
    InstallationRow,
    Installations,
    describe,
    open_installations,
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = (
        "list the Slack workspaces the app is installed in (OAuth mode), remove one, manage the secret key"
    )
    installs = commands.add_parser(
        "installs", help=summary, description=summary[:1].upper() + summary[1:] + "."
    )
    tools = installs.add_subparsers(dest="installs_command", metavar="TOOL")
    tools.add_parser(
        "list", help="every installation, and the latest installs, refreshes and removals (default)"
    )
    remove = tools.add_parser("remove", help="delete one installation's tokens now (its data is kept)")
    remove.add_argument(
        "key", metavar="ID", help="the workspace id (T…), or the org id (E…) of an org-wide install"
    )
    tools.add_parser("keygen", help="print a new key for ACECHAT_SECRET_KEY")
    tools.add_parser(
        "rekey",
        help="reseal every installation with the first key of ACECHAT_SECRET_KEY (after putting a new one first)",
    )


@dataclass(frozen=True)
class Rekeyed:
    resealed: int
    unreadable: list[str]  # keys of installations no configured key opens


async def rekey(table: Installations, box: SecretBox) -> Rekeyed:
    """Reseal every installation's tokens with the first key, each written only over what was read."""
    resealed, unreadable = 0, []
    for row in await table.all():
        try:
            sealed = box.reseal(row.sealed)
        except SealedError:
            unreadable.append(row.key)
            continue
        event = InstallationEvent(row.key, "resealed", "acechat installs rekey", time.time())
        # A refresh that wins the race wrote with the first key already.
        if await table.replace(row.key, row.version, sealed=sealed, expires_at=row.expires_at, event=event):
            resealed += 1
    return Rekeyed(resealed, unreadable)


def keygen() -> int:
    print(generate_key())
    return 0


async def run(settings: Settings, args: argparse.Namespace) -> list[str]:
    """The tool's output lines; SettingsError if the settings do not allow it."""
    command = args.installs_command or "list"
    slack = settings.platform("slack", SlackSettings)
    oauth = slack.oauth if slack is not None else None
    if command == "rekey" and oauth is None:
        raise SettingsError(
            "SLACK_CLIENT_ID is not set: `acechat installs rekey` needs OAuth mode's settings"
        )
    table = await open_installations(database_url=settings.database_url, db_path=settings.db_path)
    try:
        if command == "remove":
            event = InstallationEvent(args.key, "removed", "acechat installs remove", time.time())
            if await table.delete(args.key, event=event):
                return [f"removed the installation of {args.key}: its tokens are deleted, its data kept"]
            return [f"no installation of {args.key}: nothing removed"]
        if command == "rekey":
            assert oauth is not None
            done = await rekey(table, SecretBox(oauth.secret_keys))
            lines = [f"resealed {done.resealed} installation(s) with the first key of ACECHAT_SECRET_KEY"]
            lines += [f"cannot open {key} with any key: reinstall the app there" for key in done.unreadable]
            return lines
        return _listing(await table.all(), await table.history())
    finally:
        await table.close()


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _listing(rows: list[InstallationRow], history: list[InstallationEvent]) -> list[str]:
    if not rows:
        lines = ["no installations yet: open /slack/install to add the app to a workspace"]
    else:
        lines = [f"{len(rows)} installation(s):"]
        for row in rows:
            expiry = "" if row.expires_at is None else f", token refreshed before {_when(row.expires_at)} UTC"
            lines.append(f"  {row.key}: {describe(row)}, installed {_when(row.installed_at)} UTC{expiry}")
    if history:
        lines.append("latest changes:")
        lines += [f"  {_when(e.at)} UTC {e.key} {e.action}: {e.detail}" for e in history]
    return lines
