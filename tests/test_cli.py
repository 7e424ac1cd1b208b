"""The `acechat` command in a subprocess, with a controlled environment and no developer `.env`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from acechat.storage.sqlite import SQLiteStore
from tests.fakes.discord import TOKEN as DISCORD_TOKEN
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import APP_TOKEN as SLACK_APP_TOKEN
from tests.fakes.slack import BOT_TOKEN as SLACK_BOT_TOKEN
from tests.fakes.slack import BOT_USER_ID, FakeSlack
from tests.fakes.upstream import FakeUpstream
from tests.test_storage import WS, audit, damage_an_index

ROOT = Path(__file__).resolve().parents[1]


def environment(tmp_path: Path, **variables: str) -> dict[str, str]:
    """Only what Python needs, plus the given settings: nothing leaks in from the developer's shell."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "ACECHAT_DB_PATH": str(tmp_path / "acechat.db"),
        **variables,
    }


def acechat(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    # No --env-file: the default .env is read if there is one, and the temporary directory has none.
    command = [sys.executable, "-m", "acechat.bots.cli", *args]
    return subprocess.run(
        command,
        env=environment(tmp_path, **variables),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_entry_point_is_the_cli_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["acechat"] == "acechat.bots.cli:main"


def test_a_missing_token_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = acechat(tmp_path, "check")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("acechat: ACEDATACLOUD_API_TOKEN is not set")
    assert result.stdout == ""


def test_an_invalid_setting_is_named_on_one_line(tmp_path: Path) -> None:
    result = acechat(tmp_path, "console", ACEDATACLOUD_API_TOKEN="tok-123456", ACECHAT_USER_RATE="lots")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("acechat: ACECHAT_USER_RATE='lots' is invalid")
    assert "tok-123456" not in result.stderr + result.stdout


def test_check_accepts_a_valid_configuration(tmp_path: Path) -> None:
    result = acechat(tmp_path, "check", ACEDATACLOUD_API_TOKEN="tok-123456", DISCORD_BOT_TOKEN=DISCORD_TOKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "acechat: configuration is valid; adapters configured: discord; database: sqlite "
    )
    assert "tok-123456" not in result.stderr + result.stdout


def test_check_reports_every_problem_at_once_and_points_at_the_demo(tmp_path: Path) -> None:
    result = acechat(
        tmp_path, "check", ACECHAT_USER_RATE="lots", ACECHAT_THINKING="loud", ACECHAT_MODELS="m" * 101
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 5, lines
    assert lines[0].startswith("acechat: ACEDATACLOUD_API_TOKEN is not set") and "acechat demo" in lines[0]
    for name in ("ACECHAT_USER_RATE", "ACECHAT_THINKING", "ACECHAT_MODELS", "ACECHAT_DEFAULT_MODEL"):
        assert sum(name in line for line in lines) >= 1, name
    assert all(line.startswith("acechat: ") for line in lines)


def test_check_refuses_a_damaged_database_file_in_one_line(tmp_path: Path) -> None:
    async def create() -> None:
        store = await SQLiteStore.open(tmp_path / "acechat.db")
        try:
            for n in range(20):  # entries for the damaged index to lose
                await store.set_setting(WS, "model", f"m{n}", audit=audit(f"m{n}"))
        finally:
            await store.close()

    asyncio.run(create())
    damage_an_index(tmp_path / "acechat.db")
    result = acechat(tmp_path, "check", ACEDATACLOUD_API_TOKEN="tok-123456")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"acechat: the database {tmp_path / 'acechat.db'} is damaged (")
    assert line.endswith("restore it from a backup") and result.stdout == ""


def test_check_says_when_no_adapter_is_configured(tmp_path: Path) -> None:
    result = acechat(tmp_path, "check", ACEDATACLOUD_API_TOKEN="tok-123456")
    assert result.returncode == 0, result.stderr
    assert "no adapter is configured: set DISCORD_BOT_TOKEN or SLACK_BOT_TOKEN" in result.stdout


def test_every_subcommand_describes_itself(tmp_path: Path) -> None:
    for command in ("run", "discord", "slack", "console", "demo", "check"):
        result = subprocess.run(
            [sys.executable, "-m", "acechat.bots.cli", command, "--help"],
            env=environment(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        description = result.stdout.split("\n\n")[1]
        assert len(description.split()) >= 4 and not description.startswith("options"), (command, description)


def test_check_reads_the_given_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "acechat.env"
    env_file.write_text(
        "ACEDATACLOUD_API_TOKEN=from-file\nSLACK_BOT_TOKEN=xoxb-1\nSLACK_SIGNING_SECRET=s3cret\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "acechat.bots.cli", "--env-file", str(env_file), "check"],
        env=environment(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "adapters configured: slack" in result.stdout


@pytest.mark.parametrize(
    ("command", "named"),
    [("discord", "DISCORD_BOT_TOKEN"), ("slack", "SLACK_BOT_TOKEN"), ("run", "DISCORD_BOT_TOKEN")],
)
def test_an_adapter_without_its_token_says_so(tmp_path: Path, command: str, named: str) -> None:
    result = acechat(tmp_path, command, ACEDATACLOUD_API_TOKEN="tok-123456")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"acechat: {named} is not set") or named in line
    assert f"`acechat {command}`" in line


def test_an_unusable_database_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = acechat(
        tmp_path, "console", ACEDATACLOUD_API_TOKEN="tok-123456", ACECHAT_DB_PATH=str(blocker / "acechat.db")
    )
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("acechat: cannot open the database")


async def test_console_answers_through_the_upstream(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    variables = environment(
        tmp_path,
        ACEDATACLOUD_API_TOKEN=fake_upstream.token,
        ACEDATACLOUD_API_BASE_URL=fake_upstream.url,
        ACECHAT_LOG_LEVEL="DEBUG",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "acechat.bots.cli",
        "console",
        "--user",
        "dana",
        "--channel",
        "lab",
        env=variables,
        cwd=tmp_path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        stdout, stderr = await process.communicate(b"hello\n/status\n")
    out, err = stdout.decode(), stderr.decode()
    assert process.returncode == 0, err
    assert "acechat console · channel 'lab'" in out
    assert "bot> Answer 1 to: dana: hello" in out
    assert "**Conversation:** 1 turn" in out
    assert [b["question"] for b in fake_upstream.bodies] == ["dana: hello"]  # type: ignore[index]
    assert fake_upstream.requests[0]["authorization"] == f"Bearer {fake_upstream.token}"
    assert "answered" in err, "DEBUG logging goes to stderr"
    assert fake_upstream.token not in out + err, "the token never reaches the terminal"


def test_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = acechat(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"acechat {version('acechat')}"


def test_an_env_file_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    result = acechat(tmp_path, "--env-file", "prod.env", "check", ACEDATACLOUD_API_TOKEN="tok-123456")
    assert result.returncode == 2
    assert one_line(result.stderr) == "acechat: --env-file prod.env: no such file"


def test_a_line_the_env_file_cannot_parse_fails_check_naming_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "acechat.env"
    env_file.write_text('ACEDATACLOUD_API_TOKEN=tok-123456\nACECHAT_MODELS="gpt-4o\nACECHAT_THINKING=hide\n')
    result = acechat(tmp_path, "--env-file", str(env_file), "check")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"acechat: {env_file}: ") and "line 2" in line, line


MALFORMED_TOKENS = [
    ({"DISCORD_BOT_TOKEN": "bogus"}, ["DISCORD_BOT_TOKEN does not look like a bot token"]),
    ({"DISCORD_BOT_TOKEN": "Bot " + DISCORD_TOKEN}, ["DISCORD_BOT_TOKEN starts with 'Bot '"]),
    ({"SLACK_BOT_TOKEN": "hello", "SLACK_SIGNING_SECRET": "s3cret"}, ["SLACK_BOT_TOKEN is not a bot token"]),
    ({"SLACK_BOT_TOKEN": "xapp-1-A1-2-ff", "SLACK_APP_TOKEN": "xoxb-1-2-ff"}, ["are swapped"]),
    (
        {"SLACK_BOT_TOKEN": "xoxb-1-2-ff", "SLACK_APP_TOKEN": "xoxb-1-2-ff"},
        ["SLACK_APP_TOKEN is the bot token"],
    ),
    (
        {"SLACK_BOT_TOKEN": "xoxp-1-2-ff", "SLACK_SIGNING_SECRET": "xoxb-1-2-ff"},
        ["SLACK_BOT_TOKEN is not a bot token", "SLACK_SIGNING_SECRET is a token"],
    ),
]


@pytest.mark.parametrize(("tokens", "said"), MALFORMED_TOKENS, ids=[" ".join(t) for t, _ in MALFORMED_TOKENS])
def test_check_refuses_tokens_of_the_wrong_shape_without_printing_them(
    tmp_path: Path, tokens: dict[str, str], said: list[str]
) -> None:
    result = acechat(tmp_path, "check", ACEDATACLOUD_API_TOKEN="tok-123456", **tokens)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == len(said) and all(
        line.startswith("acechat: ") and s in line for s, line in zip(said, lines, strict=True)
    )
    assert not [value for value in tokens.values() if value in result.stdout + result.stderr]


async def run_check(tmp_path: Path, *args: str, **variables: str) -> tuple[int, str, str]:
    """`acechat check` in a subprocess, without blocking the loop the fakes serve on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "acechat.bots.cli",
        "check",
        *args,
        env=environment(tmp_path, ACEDATACLOUD_API_TOKEN="tok-123456", **variables),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_check_online_asks_each_platform_and_never_prints_a_token(
    tmp_path: Path, slack: FakeSlack
) -> None:
    async with FakeDiscord() as discord:
        tokens = {
            "DISCORD_BOT_TOKEN": discord.token,
            "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
            "SLACK_APP_TOKEN": SLACK_APP_TOKEN,
        }
        code, out, err = await run_check(
            tmp_path, "--online", DISCORD_API_BASE_URL=discord.api_base, SLACK_API_URL=slack.api_url, **tokens
        )
        offline = await run_check(tmp_path, DISCORD_API_BASE_URL="http://127.0.0.1:9", **tokens)
    assert code == 0, err
    assert f"acechat: discord: the platform accepts the tokens: Discord bot acebot ({discord.BOT_ID})" in out
    assert f"acechat: slack: the platform accepts the tokens: Slack bot aichat ({BOT_USER_ID})" in out
    assert "adapters configured: discord, slack" in out
    assert not [token for token in tokens.values() if token in out + err]
    assert [call.method for call in slack.calls] == ["auth.test", "apps.connections.open"]
    assert offline[0] == 0 and "accepts" not in offline[1], "without --online nothing is asked"


@pytest.mark.parametrize("platform", ["discord", "slack-bot", "slack-app"])
async def test_check_online_names_the_token_a_platform_refuses(
    tmp_path: Path, slack: FakeSlack, platform: str
) -> None:
    wrong_discord = DISCORD_TOKEN.replace("fake-signature", "other-signature")
    async with FakeDiscord() as discord:
        variables = {
            "discord": {"DISCORD_BOT_TOKEN": wrong_discord, "DISCORD_API_BASE_URL": discord.api_base},
            "slack-bot": {"SLACK_BOT_TOKEN": "xoxb-revoked", "SLACK_SIGNING_SECRET": "s3cret"},
            "slack-app": {"SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_APP_TOKEN": "xapp-revoked"},
        }[platform]
        code, out, err = await run_check(tmp_path, "--online", SLACK_API_URL=slack.api_url, **variables)
    assert code == 2
    named = {"discord": "DISCORD_BOT_TOKEN", "slack-bot": "SLACK_BOT_TOKEN", "slack-app": "SLACK_APP_TOKEN"}
    assert f"rejected {named[platform]}" in one_line(err)
    assert not [value for value in variables.values() if "revoked" in value and value in out + err]
    assert wrong_discord not in out + err


async def test_check_online_says_when_a_platform_cannot_be_reached(tmp_path: Path) -> None:
    code, _, err = await run_check(
        tmp_path,
        "--online",
        DISCORD_BOT_TOKEN=DISCORD_TOKEN,
        DISCORD_API_BASE_URL="http://127.0.0.1:9/api/v10",
    )
    assert code == 2
    assert one_line(err).startswith("acechat: could not reach Discord (http://127.0.0.1:9/api/v10)")
