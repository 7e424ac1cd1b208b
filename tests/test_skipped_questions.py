"""A question the model asked back is skipped by a new question in its scope or a reset (issue 16): its
buttons say so at once, whichever process showed them, before or after a restart, on either backend.

The core keeps where the buttons are with the question; the process that skips it edits the message
with its own platform client (the closer an adapter registers). The platforms' own end-to-end cases are
in tests/test_slack_interactive.py and tests/test_discord_interactive.py, two real processes on
PostgreSQL in tests/test_multiprocess.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import ClassVar

import pytest

from acechat.core import notices
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.choices import Choices
from acechat.core.commands import Action, Command
from acechat.core.platform_errors import PlatformRateLimited
from acechat.core.scope import Scope
from acechat.core.settings import DEFAULT_MODELS, Settings
from tests.fakes.target import RecordingTarget
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.processes import until
from tests.store_backends import pg_database, pg_url
from tests.test_v2 import ASKED, CHANNEL, CHANNEL_ADMIN, DANA

__all__ = ["pg_database", "pg_url"]  # fixtures

OTHER = Scope.of("test", "W1", "C2")


class ChoosingTarget(RecordingTarget):
    """A target that shows a question's buttons as the platform targets do, each at a handle of its own."""

    shown: ClassVar[list[tuple[str, Choices]]] = []

    async def offer_choices(self, choices: Choices) -> str:
        where = f"C1:{len(ChoosingTarget.shown) + 1}"
        ChoosingTarget.shown.append((where, choices))
        return where


class Platform:
    """The edits a platform received from one process's closer: (workspace, where, text)."""

    def __init__(self, *, failing: bool = False) -> None:
        self.edits: list[tuple[str, str, str]] = []
        self.failing = failing
        self.hanging = 0  # edits under way, held until `release` is set
        self.release = asyncio.Event()

    async def close(self, workspace: str, where: str, text: str) -> None:
        if self.failing:
            # A platform that takes its time, then refuses (the message was deleted meanwhile).
            self.hanging += 1
            await self.release.wait()
            self.hanging -= 1
            raise RuntimeError("Unknown Message")
        self.edits.append((workspace, where, text))

    def attach(self, core: ChatCore) -> ChatCore:
        core.register_closer(CHANNEL.platform, self.close)
        return core


@pytest.fixture(autouse=True)
def fresh_handles() -> None:
    ChoosingTarget.shown = []


async def question_back(core: ChatCore, fake_upstream: FakeUpstream, scope: Scope = CHANNEL) -> str:
    """Ask something the model answers with a question back; returns where its buttons are."""
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    before = len(ChoosingTarget.shown)
    assert await core.ask(Question(scope, DANA, "write the report"), ChoosingTarget()) is Outcome.ANSWERED
    assert len(ChoosingTarget.shown) == before + 1
    return ChoosingTarget.shown[-1][0]


async def plain(core: ChatCore, text: str = "something else", scope: Scope = CHANNEL) -> RecordingTarget:
    target = ChoosingTarget()
    assert await core.ask(Question(scope, DANA, text), target) is Outcome.ANSWERED
    return target


async def test_a_new_question_edits_the_waiting_buttons_once_and_never_its_own(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    platform = Platform()
    platform.attach(core)
    first = await question_back(core, fake_upstream)
    assert platform.edits == []
    # The next question is itself answered with a question back: the first one's buttons go, its own stay.
    second = await question_back(core, fake_upstream)
    await until(lambda: len(platform.edits) == 1)
    assert platform.edits == [(CHANNEL.workspace, first, notices.SKIPPED_BY_QUESTION)]
    # A question in another channel skips nothing here.
    await plain(core, scope=OTHER)
    await plain(core)
    await until(lambda: len(platform.edits) == 2)
    assert platform.edits[1] == (CHANNEL.workspace, second, notices.SKIPPED_BY_QUESTION)
    await plain(core)
    await asyncio.sleep(0.1)
    assert len(platform.edits) == 2, "each message is edited once"


async def test_an_answered_question_is_not_marked_skipped(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    platform = Platform()
    platform.attach(core)
    await question_back(core, fake_upstream)
    assert await core.answer(CHANNEL, DANA, "1", RecordingTarget()) is Outcome.ANSWERED
    await plain(core)
    await asyncio.sleep(0.1)
    assert platform.edits == []


@pytest.mark.parametrize(
    "command",
    [Command(Action.RESET), Command(Action.MODEL_SET, name=DEFAULT_MODELS[1])],
    ids=["reset", "a setting that starts the conversation over"],
)
async def test_a_reset_edits_the_waiting_buttons(
    core: ChatCore, fake_upstream: FakeUpstream, command: Command
) -> None:
    platform = Platform()
    platform.attach(core)
    where = await question_back(core, fake_upstream)
    reply = await core.execute(CHANNEL, CHANNEL_ADMIN, command)
    assert reply.ok, reply.text
    await until(lambda: len(platform.edits) == 1)
    assert platform.edits == [(CHANNEL.workspace, where, notices.SKIPPED_BY_RESET)]
    late = RecordingTarget()
    assert await core.answer(CHANNEL, DANA, "1", late) is Outcome.REFUSED
    assert late.notices == [notices.QUESTION_SKIPPED]


async def test_a_failed_edit_is_logged_and_never_blocks_the_new_question(
    core: ChatCore, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    platform = Platform(failing=True)
    platform.attach(core)
    await question_back(core, fake_upstream)
    caplog.set_level(logging.WARNING, logger="acechat.core.chat")
    target = await plain(core, "next one")
    assert "next one" in target.text
    await until(lambda: platform.hanging == 1)  # answered while the edit still hangs
    platform.release.set()
    logged = "could not show that a question was skipped"
    await until(lambda: any(logged in r.message for r in caplog.records))
    # The buttons still say it when pressed.
    late = RecordingTarget()
    assert await core.answer(CHANNEL, DANA, "1", late) is Outcome.REFUSED
    assert late.notices == [notices.QUESTION_SKIPPED]


async def test_buttons_shown_before_a_restart_are_edited_after_it(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    Platform().attach(core)
    where = await question_back(core, fake_upstream)
    await core.aclose()
    platform = Platform()
    again = platform.attach(await ChatCore.open(core.settings))
    try:
        await plain(again)
        await until(lambda: len(platform.edits) == 1)
        assert platform.edits == [(CHANNEL.workspace, where, notices.SKIPPED_BY_QUESTION)]
    finally:
        await again.aclose()


async def test_with_postgresql_the_process_that_skips_edits_the_buttons_another_showed(
    settings: Settings, fake_upstream: FakeUpstream, pg_url: str
) -> None:
    shared = dataclasses.replace(settings, database_url=pg_url)
    showing, skipping = Platform(), Platform()
    a = showing.attach(await ChatCore.open(shared))
    b = skipping.attach(await ChatCore.open(shared))
    try:
        where = await question_back(a, fake_upstream)
        await plain(b)
        await until(lambda: len(skipping.edits) == 1)
        assert skipping.edits == [(CHANNEL.workspace, where, notices.SKIPPED_BY_QUESTION)]
        # The reset on A finds nothing left to edit: the handle went to B alone.
        assert (await a.execute(CHANNEL, DANA, Command(Action.RESET))).ok
        await asyncio.sleep(0.1)
        assert showing.edits == []

        # A second question back, skipped by a reset in the other process.
        where = await question_back(a, fake_upstream)
        assert (await b.execute(CHANNEL, DANA, Command(Action.RESET))).ok
        await until(lambda: len(skipping.edits) == 2)
        assert skipping.edits[1] == (CHANNEL.workspace, where, notices.SKIPPED_BY_RESET)
        assert showing.edits == []
    finally:
        await b.aclose()
        await a.aclose()


async def test_a_platform_that_cannot_edit_buttons_keeps_no_handles(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    """A platform registers no closer (the console shows numbered lines): where buttons are is not kept."""
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    await core.ask(Question(CHANNEL, DANA, "write the report"), ChoosingTarget())
    await plain(core)
    assert await core.store.skip_questions(CHANNEL.key) == []


class BusyChannel(ChoosingTarget):
    """A channel whose posts were all taken just now: the buttons' first post is refused with a 429."""

    refused = 0

    async def offer_choices(self, choices: Choices) -> str:
        if not self.refused:
            self.refused += 1
            raise PlatformRateLimited(0.05)
        return await super().offer_choices(choices)


async def test_buttons_refused_for_the_post_rate_are_posted_once_it_allows(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    Platform().attach(core)
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    target = BusyChannel()
    assert await core.ask(Question(CHANNEL, DANA, "write the report"), target) is Outcome.ANSWERED
    assert target.refused == 1 and len(ChoosingTarget.shown) == 1
    assert await core.store.skip_questions(CHANNEL.key) == [ChoosingTarget.shown[0][0]]
