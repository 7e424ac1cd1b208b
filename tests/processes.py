"""Real acechat processes for the tests that run them (`python -m acechat.bots.cli ...`): their environment,
pointed at the fakes, and waiting on what they record (ports, /metrics, logs).

Used by tests/test_run.py, tests/test_crash.py and tests/test_multiprocess.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from acechat.bots.slack_bot import EVENTS_PATH
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 20.0


def free_port() -> int:
    """A port nothing listens on right now (the bot binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bot_environment(
    tmp_path: Path, upstream: FakeUpstream, slack: FakeSlack | None = None, **variables: str
) -> dict[str, str]:
    """Only what the bot needs, pointed at the fakes: nothing leaks in from the developer's shell."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "ACEDATACLOUD_API_TOKEN": upstream.token,
        "ACEDATACLOUD_API_BASE_URL": upstream.url,
        "ACECHAT_DB_PATH": str(tmp_path / "acechat.db"),
        "ACECHAT_USER_RATE": "0/60",
        "ACECHAT_CHANNEL_RATE": "0/60",
        "ACECHAT_SHUTDOWN_GRACE": "10",
    }
    if slack is not None:
        env |= {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.url + "/api",
            "SLACK_PORT": str(free_port()),
        }
    return env | variables


@dataclass
class BotProcess:
    """One `python -m acechat.bots.cli ...` child; its stderr (the log) goes to a file, never a full pipe."""

    process: asyncio.subprocess.Process
    log_path: Path

    @classmethod
    async def start(cls, tmp_path: Path, command: str, env: dict[str, str], *, name: str) -> BotProcess:
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "acechat.bots.cli",
                command,
                env=env,
                cwd=tmp_path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return cls(process, log_path)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> None:
        assert self.process.returncode is None, f"the bot exited ({self.process.returncode}):\n{self.log}"

    async def wait_for_port(self, port: int, within: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + within
        while True:
            self.alive()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                assert time.monotonic() < deadline, f"nothing listens on {port}:\n{self.log}"
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 20.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def kill_if_running(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def slack_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['SLACK_PORT']}{EVENTS_PATH}"


async def until(predicate: Any, within: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate()` every 10 ms (state spans several fakes and a child process)."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def metrics_once(url: str, ready: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """The samples at `url`/metrics once `ready(samples)` holds: a count moves only after the answer
    the platform shows is stored."""
    async with asyncio.timeout(10):
        while True:
            status, text = await get(f"{url}/metrics")
            assert status == 200
            found = samples(text)
            if ready(found):
                return found
            await asyncio.sleep(0.02)


def samples(metrics: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    found = {}
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found
