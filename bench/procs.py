"""Fake servers in their own processes, and memory readings of this one.

A fake upstream in the benchmark's own process would compete with the bot for the same event loop and
CPU; in a child process both sides of a comparison see the same server, on its own core.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_URL = re.compile(rb"(http://127\.0\.0\.1:\d+)")


@asynccontextmanager
async def server(module: str, *args: str) -> AsyncIterator[str]:
    """Run `python -m module --port 0 ARGS` and yield the base URL it prints on start."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--port",
        "0",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        url = await asyncio.wait_for(_read_url(proc.stdout), 30)
        # Keep draining its output so a chatty server never blocks on a full pipe.
        drain = asyncio.create_task(_drain(proc.stdout))
        try:
            yield url
        finally:
            drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _read_url(stream: asyncio.StreamReader) -> str:
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError("the fake server exited before printing its URL")
        found = _URL.search(line)
        if found:
            return found.group(1).decode()


async def _drain(stream: asyncio.StreamReader) -> None:
    with suppress(Exception):
        while await stream.read(65536):
            pass


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss() -> int:
    """Resident memory of this process now, in bytes."""
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Peak resident memory since start or the last `reset_peak_rss()`, in bytes."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Start a new peak from the current RSS (Linux 4.0+); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True
