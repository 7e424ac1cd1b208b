"""Admission by admins' controls: the pure rules (core/access.py), and the core applying them through the
console's grammar, token quotas taken from recorded usage included (issue 17)."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from prometheus_client import REGISTRY

from acechat.bots.console import ConsoleTarget
from acechat.core import access
from acechat.core.access import Controls, Quota, Refusal, quota_refusal, where_refusal, who_refusal
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.commands import parse_command
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege
from acechat.core.scope import Scope
from acechat.core.settings import Settings
from acechat.storage.records import Control, UsageCount, UsageRecord
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_console import console

WS = "console:local"
HERE = Scope.of("console", "local", "terminal")


def controls(channel: dict[str, str] | None = None, workspace: dict[str, str] | None = None) -> Controls:
    return Controls.of(
        [Control(HERE.key, k, v, 0.0) for k, v in (channel or {}).items()],
        [Control(WS, k, v, 0.0) for k, v in (workspace or {}).items()],
    )


@pytest.mark.parametrize(
    ("channel", "workspace", "direct", "expected"),
    [
        ({}, {}, False, None),
        ({"channel": "off"}, {}, False, Refusal.CHANNEL_OFF),
        ({}, {"access": "listed"}, False, Refusal.NOT_LISTED),
        ({"channel": "on"}, {"access": "listed"}, False, None),
        ({"channel": "off"}, {"access": "listed"}, False, Refusal.CHANNEL_OFF),
        ({}, {"dms": "off"}, True, Refusal.DMS_OFF),
        ({"channel": "off"}, {"access": "listed"}, True, None),  # DMs have their own switch
    ],
)
def test_where(
    channel: dict[str, str], workspace: dict[str, str], direct: bool, expected: Refusal | None
) -> None:
    found = where_refusal(controls(channel, workspace), direct=direct, workspaceless=False, operator_dms=True)
    assert found is expected


def test_dms_of_no_workspace_follow_the_operator_alone() -> None:
    closed = controls(workspace={"dms": "on"})
    assert where_refusal(closed, direct=True, workspaceless=True, operator_dms=False) is Refusal.DMS_OFF
    off = controls(workspace={"dms": "off"})
    assert where_refusal(off, direct=True, workspaceless=True, operator_dms=True) is None


def test_who_deny_wins_and_an_allow_list_admits_only_those_on_it() -> None:
    lists = controls(workspace={"user:U1": "allow", "role:7": "deny", "user:U3": "deny"})
    assert who_refusal(lists, "U1", ()) is None
    assert who_refusal(lists, "U1", ("7",)) is Refusal.DENIED  # a deny of a role beats an allow
    assert who_refusal(lists, "U2", ()) is Refusal.NOT_ALLOWED
    assert who_refusal(lists, "U3", ()) is Refusal.DENIED
    assert who_refusal(controls(workspace={"user:U3": "deny"}), "U2", ()) is None
    assert who_refusal(controls(workspace={"role:9": "allow"}), "U2", ("9",)) is None


def test_quotas_are_read_from_the_store_and_reached_at_the_limit() -> None:
    found = controls(
        workspace={"quota:user:questions": "2", "quota:workspace:tokens": "1000", "quota:x:y": "1"}
    )
    assert found.quotas == (Quota("user", "questions", 2), Quota("workspace", "tokens", 1000))
    assert quota_refusal(found, UsageCount(user_questions=1, workspace_tokens=999)) is None
    hit = quota_refusal(found, UsageCount(user_questions=1, workspace_tokens=1000))
    assert hit is not None and hit.quota.unit == "tokens"
    noon = 1_800_000_000.0 - 1_800_000_000.0 % 86400 + 12 * 3600
    assert access.quota_text(hit, noon) == (
        "This workspace's quota of 1,000 tokens a day is used up; it resets at 00:00 UTC (in 12 h 0 min)."
    )


@pytest.mark.parametrize(
    ("word", "subject"),
    [
        ("<@U12|ann>", "user:U12"),
        ("<@!42>", "user:42"),
        ("<@&42>", "role:42"),
        ("W0ABC1", "user:W0ABC1"),
        ("bob", None),
        ("<@u12>", None),
        ("<@&>", None),
        ("<@" + "1" * 40 + ">", None),
    ],
)
def test_subjects(word: str, subject: str | None) -> None:
    assert access.parse_subject(word) == subject


async def test_the_console_speaks_the_same_grammar(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    out = await console(
        core,
        "/channel off",
        "/access listed",
        "/quota user 5/day",
        "/quota workspace 200000 tokens/day",
        "/engage thread",
        "/transcripts off",
        "/autothread on",
        "/access dms off",
        "/users deny <@&7>",
        "/users deny <@U9>",
        "/status",
        "/usage",
        "/forget me",
        "/audit",
    )
    assert "dana turned me off in this channel." in out
    assert "dana set a quota of 5 questions a day per user (UTC days)." in out
    assert "Tokens count where the AI service reports them." in out
    assert "`/autothread` is for Discord" in out and "`/access dms` is for Slack workspaces." in out
    assert "Roles are Discord's" in out and "put user `U9` on the deny list" in out
    assert "**Quotas:** 5 questions a day per user; 200,000 tokens a day (workspace setting)" in out
    assert "**Transcripts:** off: counts only (workspace setting)" in out
    assert "never refuse you" in out  # the operator is an admin
    assert "No questions went to the AI service today (UTC)." in out
    assert "Deleted 0 of your questions and answers" in out
    assert "· quota · channel terminal · — → `workspace 200000 tokens/day`" in out
    # The admin is never refused: the channel is off and listed, yet the question is answered.
    assert "bot> Answer 1 to: dana: hello" in await console(core, "hello")


async def test_a_token_quota_counts_the_tokens_recorded_and_refuses_the_next_question(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await console(core, "/quota user 100 tokens/day")
    member = Actor("U1", "u1", Privilege.MEMBER)
    now = time.time()
    await core.store.record_usage(UsageRecord(WS, HERE.key, "U1", "gpt-4o", 10, 1.0, "answered", now, 90))
    out = io.StringIO()
    # Under the quota: answered (the service may report tokens that cross it; the answer is finished).
    assert await core.ask(Question(HERE, member, "first"), ConsoleTarget(out)) is Outcome.ANSWERED
    await core.store.record_usage(UsageRecord(WS, HERE.key, "U1", "gpt-4o", 10, 1.0, "answered", now, 20))
    assert await core.ask(Question(HERE, member, "second"), ConsoleTarget(out)) is Outcome.REFUSED
    assert "bot> Your quota of 100 tokens a day is used up; it resets at 00:00 UTC" in out.getvalue()
    assert [b["question"] for b in fake_upstream.bodies if b] == ["u1: first"]
    # Recorded: the answered question with the tokens v2's `done` reported (the fake: a quarter of the
    # characters, 2 for "u1: first" and 5 for its answer), beside the rows written here.
    used = await core.store.count_usage(WS, HERE.key, "U1", access.day_start(now), time.time())
    assert (used.user_questions, used.user_tokens) == (3, 110 + 7)


async def test_a_refused_or_failed_question_is_not_counted_against_a_question_quota(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await console(core, "/quota user 1/day")
    member = Actor("U1", "u1", Privilege.MEMBER)
    out = io.StringIO()
    fake_upstream.queue(Behaviour(status=500))
    assert await core.ask(Question(HERE, member, "fails"), ConsoleTarget(out)) is Outcome.FAILED
    assert await core.ask(Question(HERE, member, "answered"), ConsoleTarget(out)) is Outcome.ANSWERED
    assert await core.ask(Question(HERE, member, "over"), ConsoleTarget(out)) is Outcome.REFUSED
    totals = await core.store.usage_totals(WS, 0.0)
    assert (totals.questions, totals.answered) == (2, 1)


async def test_questions_asked_at_once_cannot_all_slip_under_a_quota(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await console(core, "/quota user 2/day")
    fake_upstream.set_default(latency=0.2)
    member = Actor("U1", "u1", Privilege.MEMBER)
    out = io.StringIO()
    outcomes = await asyncio.gather(
        *(core.ask(Question(HERE, member, f"q{i}"), ConsoleTarget(out)) for i in range(5))
    )
    assert sorted(o.value for o in outcomes) == ["answered", "answered", "refused", "refused", "refused"]
    assert len(fake_upstream.requests) == 2
    # Once they are over, the counts held for them are gone: the recorded answers count instead.
    now = time.time()
    used = await core.store.count_usage(WS, HERE.key, "U1", access.day_start(now), now)
    assert used.user_questions == 2
    assert await core.ask(Question(HERE, member, "later"), ConsoleTarget(out)) is Outcome.REFUSED


async def test_two_cores_on_one_sqlite_file_hold_one_quota_between_them(
    core: ChatCore, settings: Settings, fake_upstream: FakeUpstream
) -> None:
    """As two processes on one database file: the holds and counters are in the file."""
    await console(core, "/quota channel 2/day")
    other = await ChatCore.open(settings)
    try:
        fake_upstream.set_default(latency=0.2)
        out = io.StringIO()
        asks = [
            each.ask(Question(HERE, Actor(f"U{n}", f"u{n}", Privilege.MEMBER), f"q{n}"), ConsoleTarget(out))
            for n in range(3)
            for each in (core, other)
        ]
        outcomes = await asyncio.gather(*asks)
        assert sorted(o.value for o in outcomes) == ["answered"] * 2 + ["refused"] * 4
        assert len(fake_upstream.requests) == 2
    finally:
        await other.aclose()


async def test_per_workspace_counters(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    labels = {"platform": "console", "workspace": "local", "outcome": "answered"}

    def sample(name: str, **extra: str) -> float:
        return REGISTRY.get_sample_value(name, extra or labels) or 0.0

    before = sample("acechat_workspace_questions_total")
    chars = sample("acechat_workspace_answer_chars_total", platform="console", workspace="local")
    refused = sample("acechat_refused_total", reason="quota user")
    await console(core, "/quota user 1/day")
    member = Actor("U1", "u1", Privilege.MEMBER)
    out = io.StringIO()
    assert await core.ask(Question(HERE, member, "counted"), ConsoleTarget(out)) is Outcome.ANSWERED
    assert await core.ask(Question(HERE, member, "over"), ConsoleTarget(out)) is Outcome.REFUSED
    assert sample("acechat_workspace_questions_total") == before + 1
    answer = "Answer 1 to: u1: counted"
    assert sample(
        "acechat_workspace_answer_chars_total", platform="console", workspace="local"
    ) == chars + len(answer)
    assert sample("acechat_refused_total", reason="quota user") == refused + 1


async def test_a_channels_own_settings_are_refused_in_a_direct_message_and_nothing_is_stored(
    core: ChatCore,
) -> None:
    admin = Actor("UADMIN", "ada", Privilege.WORKSPACE_ADMIN)
    discord_dm = Scope.of("discord", None, "D1")
    slack_dm = Scope.of("slack", "T1", "D1")
    for line in ("channel off", "engage thread"):
        shape = line.split()[0]
        reply = await core.execute(discord_dm, admin, parse_command(line))
        assert not reply.ok and f"`{shape}" in reply.text and "applies to channels" in reply.text
        reply = await core.execute(slack_dm, admin, parse_command(line), direct=True)
        assert not reply.ok and "applies to channels" in reply.text
    assert (
        "bot operator's setting" in (await core.execute(discord_dm, admin, parse_command("channel on"))).text
    )
    assert (
        "`access dms on|off`"
        in (await core.execute(slack_dm, admin, parse_command("channel on"), direct=True)).text
    )
    assert await core.store.get_controls([discord_dm.key, slack_dm.key, "slack:T1:D1:-"]) == []
    # The same line in a channel is a change.
    assert (await core.execute(Scope.of("slack", "T1", "C1"), admin, parse_command("channel off"))).ok
