"""Admins' controls shared through PostgreSQL: two cores on one database, as two processes of one bot
(issue 17). A change made through one is in force in the other; quota counts add up across them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest

from acechat.bots.console import ConsoleTarget
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.commands import parse_command
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege
from acechat.core.scope import Scope
from acechat.core.settings import Settings
from tests.fakes.upstream import FakeUpstream
from tests.store_backends import pg_database, pg_url

__all__ = ["pg_database", "pg_url"]  # fixtures

HERE = Scope.of("slack", "T1", "C1")
ADMIN = Actor("UADMIN", "ada", Privilege.WORKSPACE_ADMIN)
MEMBER = Actor("U1", "u1", Privilege.MEMBER)


@pytest.fixture
async def cores(settings: Settings, pg_url: str) -> AsyncIterator[tuple[ChatCore, ChatCore]]:
    shared = replace(settings, database_url=pg_url)
    async with AsyncExitStack() as stack:
        first = await ChatCore.open(shared)
        stack.push_async_callback(first.aclose)
        second = await ChatCore.open(shared)
        stack.push_async_callback(second.aclose)
        yield first, second


async def ask(core: ChatCore, text: str) -> Outcome:
    return await core.ask(Question(HERE, MEMBER, text), ConsoleTarget(io.StringIO()))


def control_changes(core: ChatCore) -> asyncio.Event:
    """Set when `core` hears of a control change made elsewhere (its cache has dropped it by then)."""
    heard = asyncio.Event()
    core.store.on_change(lambda change: heard.set() if change.kind == "control" else None)
    return heard


async def test_a_control_set_in_one_process_holds_in_the_other(
    cores: tuple[ChatCore, ChatCore], fake_upstream: FakeUpstream
) -> None:
    first, second = cores
    assert await ask(second, "warm the cache") is Outcome.ANSWERED  # `second` has the controls cached
    heard = control_changes(second)
    reply = await first.execute(HERE, ADMIN, parse_command("channel off"))
    assert reply.ok and reply.public
    async with asyncio.timeout(5):
        await heard.wait()
    assert await ask(second, "refused now") is Outcome.REFUSED


async def test_quota_counts_add_up_across_processes(
    cores: tuple[ChatCore, ChatCore], fake_upstream: FakeUpstream
) -> None:
    first, second = cores
    await second.controls.of(HERE)  # cached before the change
    heard = control_changes(second)
    assert (await first.execute(HERE, ADMIN, parse_command("quota user 2/day"))).ok
    async with asyncio.timeout(5):
        await heard.wait()
    assert await ask(first, "one") is Outcome.ANSWERED
    assert await ask(second, "two") is Outcome.ANSWERED
    assert await ask(first, "three") is Outcome.REFUSED
    assert await ask(second, "four") is Outcome.REFUSED
    usage = await second.execute(HERE, ADMIN, parse_command("usage"))
    assert "2 questions (2 answered)" in usage.text


async def test_questions_at_once_in_two_processes_never_pass_a_quota_together(
    cores: tuple[ChatCore, ChatCore], fake_upstream: FakeUpstream
) -> None:
    """Each process's questions in flight are held in the database, where the other counts them."""
    first, second = cores
    assert (await first.execute(HERE, ADMIN, parse_command("quota user 3/day"))).ok
    fake_upstream.set_default(latency=0.3)
    outcomes = await asyncio.gather(*(ask(core, f"q{n}") for n in range(4) for core in (first, second)))
    assert sorted(o.value for o in outcomes) == ["answered"] * 3 + ["refused"] * 5
    assert len(fake_upstream.requests) == 3
    # Once over, the holds are gone and the answers count: the next question is refused too.
    assert await ask(second, "later") is Outcome.REFUSED
    usage = await first.execute(HERE, ADMIN, parse_command("usage"))
    assert "3 questions (3 answered)" in usage.text
