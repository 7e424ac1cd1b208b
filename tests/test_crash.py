"""SIGKILL under load: whatever the bot acknowledged before it died is in the database afterwards.

The bot runs as a real process (`python -m acechat.bots.cli slack`, HTTP mode) against FakeSlack and
FakeUpstream in this process. What counts as acknowledged:

- an admin command: its reply reached `response_url` (the core replies only after its write committed);
- a question's turn: the bot sent the *next* question of the same conversation upstream. Turns in one
  scope run one at a time and each is stored before the next may start, so that request proves the
  earlier turn was committed. (An answer's text is visible while it streams, before it can be stored,
  so visibility alone proves nothing.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from acechat.storage import check_database
from acechat.storage.sqlite import SQLiteStore
from tests.fakes.slack import BOT_USER_ID, FakeSlack
from tests.fakes.upstream import FakeUpstream
from tests.processes import BotProcess, bot_environment, slack_url, until

pytestmark = pytest.mark.fault

TEAM = "slack:T0001"
OPS = "UOPS"  # an admin only through ACECHAT_ADMIN_USERS; Slack itself says no
QUESTION = re.compile(r"\bq-(\S+)-(\d+)$")


def scope_key(channel: str, thread: str | None = None) -> str:
    return f"{TEAM}:{channel}:{thread or '-'}"


class Load:
    """Questions in many conversations and admin commands in other channels, all in flight together."""

    def __init__(self, slack: FakeSlack, url: str) -> None:
        self.slack = slack
        self.url = url
        self.scopes: dict[str, str] = {}  # question label -> scope key
        self.threads: dict[str, str] = {}  # thread label -> thread ts
        self.admin: dict[str, tuple[str, str]] = {}  # response_url key -> (channel, command text)
        self._sent = itertools.count()

    async def deliver(self, payload: dict[str, Any]) -> None:
        # Deliveries still open when the bot is killed fail; those were never acknowledged anyway.
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await self.slack.deliver_http(self.url, payload)

    def question(self, label: str, n: int) -> dict[str, Any]:
        """The n-th question of conversation `label` (slash command, thread mention or DM by its prefix)."""
        text = f"q-{label}-{n}"
        user = f"U{n % 3 + 1}"
        if label.startswith("C"):
            self.scopes[label] = scope_key(label)
            return self.slack.command(text, user=user, channel=label)
        if label.startswith("D"):
            self.scopes[label] = scope_key(label)
            return self.slack.direct_message(text, user=user, channel=label)
        root = self.threads.get(label)
        payload = self.slack.mention(f"<@{BOT_USER_ID}> {text}", user=user, channel="M1", thread_ts=root)
        if root is None:
            root = self.threads[label] = payload["event"]["ts"]
        self.scopes[label] = scope_key("M1", root)
        return payload

    def admin_command(self) -> dict[str, Any]:
        n = next(self._sent)
        channel = f"A{n % 8}"
        text = [
            f"preset create team{n} You answer for team {n}.",
            "preset set coder",
            "model set gpt-5.4-mini",
            f"preset edit team{n - 3} Team {n - 3}, briefly.",
        ][n % 4]
        payload = self.slack.command(text, user=OPS, channel=channel)
        self.admin[payload["response_url"].rsplit("/", 1)[1]] = (channel, text)
        return payload


def change(channel: str, text: str) -> tuple[str, str, str]:
    """The audit entry (action, scope key, new value) that an admin command line makes."""
    words = text.split(maxsplit=3)
    action = " ".join(words[:2])
    new = words[3] if action in ("preset create", "preset edit") else words[2]
    return action, scope_key(channel), new


def turns_by_scope(upstream: FakeUpstream, load: Load) -> dict[str, list[dict[str, Any]]]:
    """Upstream request bodies per scope key, in arrival order."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in upstream.bodies:
        assert body is not None
        match = QUESTION.search(body["question"])
        assert match, body["question"]
        found[load.scopes[match.group(1)]].append(body)
    return found


@contextlib.contextmanager
def write_lock_held(db: Path) -> Iterator[None]:
    # Blocks this loop only for as long as one of the bot's own short write transactions.
    connection = sqlite3.connect(db, timeout=5, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def conversation_of(upstream: FakeUpstream, first_question: str) -> str:
    [found] = [cid for cid, turns in upstream.conversations.items() if turns[0]["question"] == first_question]
    return found


async def test_everything_acknowledged_before_a_sigkill_is_there_after_a_restart(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    # Every answer is one fragment: a post and no chat.update, so Slack's update budget does not pace
    # the load; 150 ms upstream keeps plenty of questions in flight.
    fake_upstream.set_default(latency=0.15, fragment_size=10_000)
    async with FakeSlack() as slack:
        # Seven questions per channel at once: let them all queue (the bound is tested elsewhere).
        env = bot_environment(
            tmp_path, fake_upstream, slack, ACECHAT_ADMIN_USERS=f"slack:{OPS}", ACECHAT_MAX_WAITING="10"
        )
        db = tmp_path / "acechat.db"
        bot = await BotProcess.start(tmp_path, "slack", env, name="before-kill")
        try:
            await bot.wait_for_port(int(env["SLACK_PORT"]))
            load = Load(slack, slack_url(env))
            labels = [f"C{i}" for i in range(10)] + [f"T{i}" for i in range(4)] + ["D1", "D2", "D3"]
            # Thread roots first, so that their follow-ups can name the thread.
            roots = [load.question(label, 0) for label in labels if label.startswith("T")]
            await asyncio.gather(*(load.deliver(p) for p in roots))
            questions = [load.question(label, n) for label in labels for n in range(1, 8)]
            questions = [p for p in questions if p not in roots]
            sending = [asyncio.create_task(load.deliver(p)) for p in questions]

            commands: set[asyncio.Task[None]] = set()

            async def keep_administering() -> None:
                while True:
                    commands.add(asyncio.create_task(load.deliver(load.admin_command())))
                    await asyncio.sleep(0.01)

            admin = asyncio.create_task(keep_administering())
            # Kill once plenty is acknowledged and more is in flight: answers upstream, commands unanswered.
            await until(
                lambda: (
                    len(fake_upstream.requests) >= 40
                    and len(slack.responses) >= 20
                    and fake_upstream.active >= 5
                ),
                within=20,
                what="load",
            )
            # Commands acknowledged to Slack but not yet committed, so not yet answered, must be in
            # flight at the kill: hold the database's write lock while a few arrive, then kill.
            with write_lock_held(db):
                late = [load.admin_command() for _ in range(3)]
                await asyncio.gather(*(load.deliver(p) for p in late))
                assert await bot.stop(signal.SIGKILL) == -signal.SIGKILL
            admin.cancel()
            await asyncio.gather(*sending, *commands, return_exceptions=True)
        finally:
            await bot.kill_if_running()

        # What the bot had acknowledged, read after it died: nothing newer can arrive. (Questions get
        # responses too: "Thinking…" for the asker.)
        responses = [r for r in slack.responses if r.key in load.admin]
        per_scope = turns_by_scope(fake_upstream, load)
        assert len(load.admin) > len(responses), "some admin commands were still unanswered at the kill"
        assert sum(len(turns) for turns in per_scope.values()) < len(questions) + len(roots)

        await check_database(database_url=None, db_path=db)  # raises unless PRAGMA integrity_check is ok
        store = await SQLiteStore.open(db)
        try:
            # Admin commands.
            audit = await store.list_audit(TEAM, limit=10_000)
            logged = {(e.action, e.scope_key, e.new) for e in audit}
            assert logged <= {change(ch, text) for ch, text in load.admin.values()}, "only what was sent"
            acknowledged = 0
            for response in responses:
                channel, text = load.admin[response.key]
                if response.ephemeral:  # refused, e.g. editing a preset whose creation never arrived
                    continue
                acknowledged += 1
                action, key, new = change(channel, text)
                assert (action, key, new) in logged, text
                name = text.split()[2]
                if action in ("preset create", "preset edit"):
                    preset = await store.get_preset(TEAM, name)
                    assert preset is not None, text
                    # An acknowledged edit may have replaced a created prompt; nothing else may.
                    assert preset.prompt == new or ("preset edit", preset.prompt) in {
                        (a, n) for a, _, n in logged
                    }, text
                else:
                    settings = await store.get_settings([key])
                    assert getattr(settings[key], action.split()[0]) == name, text
            assert acknowledged >= 10
            models_set = {load.admin[r.key][0] for r in responses if "model set" in load.admin[r.key][1]}
            assert "A2" in models_set

            # Conversations.
            stored = {}
            confirmed = 0
            for key, turns in per_scope.items():
                conversation = conversation_of(fake_upstream, turns[0]["question"])
                assert "id" not in turns[0]
                assert all(t["id"] == conversation for t in turns[1:]), "follow-ups reuse the conversation"
                record = await store.get_conversation(key)
                # Every turn before the last one sent upstream is acknowledged.
                if len(turns) > 1:
                    assert record is not None, key
                    assert record.turns >= len(turns) - 1, key
                    confirmed += len(turns) - 1
                if record is not None:
                    assert record.upstream_id == conversation, key
                    assert record.turns <= len(turns), "no turn the upstream never saw"
                    stored[key] = record.upstream_id
            assert confirmed >= 20
        finally:
            await store.close()

        # The restarted bot continues every stored conversation and knows every acknowledged setting.
        before = len(fake_upstream.requests)
        bot = await BotProcess.start(tmp_path, "slack", env, name="after-restart")
        try:
            await bot.wait_for_port(int(env["SLACK_PORT"]))
            for label in list(load.scopes):
                await load.deliver(load.question(label, 99))
            await until(lambda: len(fake_upstream.requests) == before + len(load.scopes), what="follow-ups")
            audit_request = slack.command("audit", user=OPS, channel="A0")
            status_request = slack.command("status", user="U1", channel="A2")  # A2 had `model set`
            await load.deliver(audit_request)
            await load.deliver(status_request)
            keys = [r["response_url"].rsplit("/", 1)[1] for r in (audit_request, status_request)]
            await until(lambda: all(slack.responses_to(k) for k in keys), what="audit and status")
            assert await bot.stop(signal.SIGTERM) == 0
        finally:
            await bot.kill_if_running()

        for body in fake_upstream.bodies[before:]:
            assert body is not None
            key = load.scopes[QUESTION.search(body["question"]).group(1)]  # type: ignore[union-attr]
            assert body.get("id") == stored.get(key), key
        replies = {r.key: r.text for r in slack.responses}
        audit_text = replies[audit_request["response_url"].rsplit("/", 1)[1]]
        assert audit_text.startswith("*Admin changes, newest first*")
        entries = [line for line in audit_text.splitlines() if " UTC · " in line]
        assert len(entries) == min(15, len(audit)), "one line for each of the latest entries"
        assert "gpt-5.4-mini" in replies[status_request["response_url"].rsplit("/", 1)[1]]
        await check_database(database_url=None, db_path=db)  # raises unless PRAGMA integrity_check is ok
