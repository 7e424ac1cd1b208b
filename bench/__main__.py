"""`python -m bench [NAME ...]`: run the benchmarks and print one table.

With no name every benchmark runs, each in a fresh process one after the other (so memory figures
and global library state do not leak from one into the next). Names: cost, concurrency, storage,
discord, slack, burst, slack-flood, slack-channel, discord-flood, discord-shards, render, tools,
slack-flood-tools, discord-flood-tools. Exits
non-zero if a figure misses its target. `--json` prints the rows as JSON instead (what the parent
process reads); `--profile` prints where a question's CPU and a channel's memory go (cProfile,
tracemalloc) instead of benchmarking.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench.procs import REPO
from bench.report import Row, from_json, table, to_json

BENCHMARKS: dict[str, str] = {
    "cost": "bench.cost",
    "concurrency": "bench.concurrency",
    "storage": "bench.storage_lookup",
    "discord": "bench.discord_stream",
    "slack": "bench.slack_stream",
    "burst": "bench.burst",
    "slack-flood": "bench.slack_flood",
    "slack-channel": "bench.slack_channel",
    "discord-flood": "bench.discord_flood",
    "discord-shards": "bench.discord_shards",
    "render": "bench.render",
    "tools": "bench.tools",
    # The issue-10 floods with tool steps and citations before every answer's text (issue 16).
    "slack-flood-tools": "bench.slack_flood:measure_tools",
    "discord-flood-tools": "bench.discord_flood:measure_tools",
}
CHILD_TIMEOUT = 300


def run_here(name: str) -> list[Row]:
    path, _, function = BENCHMARKS[name].partition(":")
    module = importlib.import_module(path)
    measure: Callable[[], Coroutine[Any, Any, list[Row]]] = getattr(module, function or "measure")
    return asyncio.run(measure())


def run_child(name: str) -> tuple[list[Row], float]:
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench", name, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return [Row(name, "benchmark did not finish", f"> {CHILD_TIMEOUT} s", passed=False)], CHILD_TIMEOUT
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return [Row(name, "benchmark failed", f"exit {done.returncode}", passed=False, note=tail)], elapsed
    return from_json(done.stdout.strip().splitlines()[-1]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print rows as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="profile a question's CPU and a channel's memory instead"
    )
    args = parser.parse_args()
    if args.profile:
        from bench.cost import profile

        print(asyncio.run(profile()))
        return
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    if len(names) == 1:
        rows = run_here(names[0])
        print(to_json(rows) if args.json else table(rows))
        # With --json the parent process reads the rows and judges them.
        if not args.json and any(r.passed is False for r in rows):
            sys.exit(1)
        return
    started = time.perf_counter()
    rows = []
    for name in names:
        print(f"running {name} …", file=sys.stderr, flush=True)
        found, elapsed = run_child(name)
        print(f"  {name}: {elapsed:.0f} s", file=sys.stderr, flush=True)
        rows.extend(found)
    print(
        f"acechat benchmarks · Python {platform.python_version()} · {os.cpu_count()} CPUs · "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(table(rows))
    if any(r.passed is False for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
