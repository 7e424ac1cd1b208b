"""Upstream and platform faults, through the real adapters and the core, against the loopback fakes.

Already covered elsewhere, not repeated here: each upstream error's wording at the core
(test_chat.py::test_every_upstream_failure_gives_the_user_a_short_clear_message), an idle gateway
drop (test_discord.py::test_the_bot_resumes_after_the_gateway_drops), an idle Socket Mode drop
(test_slack.py::test_socket_mode_reconnects_after_slack_drops_the_connection) and one answer meeting
chat.update 429s (test_slack.py::test_chat_update_429_is_honoured_and_the_final_text_still_arrives).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route

from acechat.bots.discord_bot import DiscordAdapter
from acechat.bots.discord_settings import DiscordSettings
from acechat.bots.discord_targets import POST_WINDOW
from acechat.bots.slack_bot import EVENTS_PATH, SlackAdapter
from acechat.bots.slack_settings import SlackSettings
from acechat.core import upstream as wording
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.facts import Actor
from acechat.core.scope import Scope
from acechat.core.settings import RateLimit, Settings, UpstreamSettings
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.fakes.target import RecordingTarget
from tests.fakes.upstream import Behaviour, FakeUpstream


def command_answer(text: str) -> str:
    """A `/aichat` answer without the line its first message opens with (who asked what)."""
    header, _, answer = text.partition("\n\n")
    assert " asked: " in header, text[:200]
    return answer


pytestmark = pytest.mark.fault

BOT = f"<@{FakeDiscord.BOT_ID}>"
ANSWER = "alpha beta gamma delta epsilon zeta eta theta iota kappa"


@pytest.fixture(autouse=True)
def restore_discord_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Discord adapter points discord.py's process-wide endpoints at the fake; put them back."""
    monkeypatch.setattr(Route, "BASE", Route.BASE)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", DiscordWebSocket.DEFAULT_GATEWAY)


def fault_settings(tmp_path: Path, upstream: UpstreamSettings, **changes: object) -> Settings:
    base = Settings(
        upstream=upstream,
        db_path=tmp_path / "acechat.db",
        user_rate=RateLimit(0, 60),
        channel_rate=RateLimit(0, 60),
        shutdown_grace=5.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def slack_bot(
    settings: Settings, slack: FakeSlack, *, socket: bool = False
) -> AsyncIterator[tuple[ChatCore, SlackAdapter, str]]:
    """The core and a Slack adapter as `acechat slack` runs them; yields (core, adapter, events URL)."""
    slack_settings = SlackSettings(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN if socket else None,
        signing_secret=None if socket else SIGNING_SECRET,
        api_url=slack.api_url,
        port=0,
    )
    core = await ChatCore.open(dataclasses.replace(settings, platforms={"slack": slack_settings}))
    adapter = SlackAdapter(core, slack_settings, host="127.0.0.1")
    try:
        await adapter.start()
        yield core, adapter, f"http://127.0.0.1:{adapter.port}{EVENTS_PATH}"
    finally:
        await adapter.close()
        await core.aclose()


@asynccontextmanager
async def discord_bot(
    settings: Settings, fake: FakeDiscord
) -> AsyncIterator[tuple[ChatCore, DiscordAdapter]]:
    core = await ChatCore.open(settings)
    endpoints = DiscordSettings(token=fake.token, api_base_url=fake.api_base, gateway_url=fake.gateway_url)
    adapter = DiscordAdapter(core, endpoints, guild_ready_timeout=0.05, connect_timeout=10)
    try:
        await adapter.start()
        await fake.wait_for(lambda: adapter.connected)
        yield core, adapter
    finally:
        await adapter.close()
        await core.aclose()


def reply_to(fake: FakeDiscord, message_id: int) -> FakeMessage | None:
    return next((m for m in fake.bot_messages() if m.reference_id == message_id), None)


async def discord_answer(
    fake: FakeDiscord, asked: int, done: Callable[[str], bool], seconds: float = 5
) -> str:
    await fake.wait_for(lambda: (m := reply_to(fake, asked)) is not None and done(m.content), seconds)
    message = reply_to(fake, asked)
    assert message is not None
    return message.content


# --- upstream faults ------------------------------------------------------------------------------

READ_TIMEOUT = 0.25
# (behaviour, what the user reads, text shown before the failure)
FAULTS: list[tuple[str, Behaviour, str, str]] = [
    ("400", Behaviour.fail(400, "bad_request"), wording.REJECTED, ""),
    ("400 no token", Behaviour.fail(400, "no_token"), wording.BAD_TOKEN, ""),
    ("401", Behaviour.fail(401, "invalid_token"), wording.BAD_TOKEN, ""),
    ("401 expired", Behaviour.fail(401, "token_expired"), wording.BAD_TOKEN, ""),
    ("403 used up", Behaviour.fail(403, "used_up"), wording.USED_UP, ""),
    ("403 disabled", Behaviour.fail(403, "disabled"), wording.DISABLED, ""),
    ("404 no api", Behaviour.fail(404, "no_api"), wording.MISCONFIGURED, ""),
    ("429", Behaviour.fail(429, "too_many_requests"), wording.BUSY, ""),
    ("500", Behaviour.fail(500, "api_error"), wording.FAILED, ""),
    ("500 chat", Behaviour.fail(500, "chat_error"), wording.FAILED, ""),
    ("502 html", Behaviour.fail_raw(502, "<html>Bad Gateway</html>", "text/html"), wording.FAILED, ""),
    ("non-JSON body", Behaviour(raw=(b"<html>maintenance</html>",)), wording.UNREADABLE, ""),
    (
        "bad JSON line",
        Behaviour(answer=ANSWER, fragment_size=6, garbage_after=2),
        wording.UNREADABLE,
        ANSWER[:12],
    ),
    ("error line", Behaviour(answer=ANSWER, fragment_size=6, error_after=2), wording.FAILED, ANSWER[:12]),
    ("cut off", Behaviour(answer=ANSWER, fragment_size=6, cut_after=2), wording.CUT_OFF, ANSWER[:12]),
    ("slow start", Behaviour(latency=READ_TIMEOUT * 3), wording.TOO_SLOW, ""),
    (
        "stalls mid-answer",
        Behaviour(answer="first part, then silence", fragment_size=11, fragment_delay=READ_TIMEOUT * 3),
        wording.TOO_SLOW,
        "first part,",
    ),
    ("empty", Behaviour(answer=""), wording.EMPTY, ""),
]


def fault_upstream_settings(upstream: UpstreamSettings) -> UpstreamSettings:
    return dataclasses.replace(upstream, read_timeout=READ_TIMEOUT, retries=1)


def check_fault_message(
    text: str, name: str, expected: str, shown: str, elapsed: float, settings: Settings, posting: float = 0.0
) -> None:
    """`posting`: how long the platform may make a post wait in a busy channel."""
    assert "⚠️" in text and expected in text, (name, text)
    assert text.startswith(shown.strip() or "⚠️"), (name, text)
    assert "Traceback" not in text and "test-token" not in text, (name, text)
    assert elapsed < settings.answer_timeout + posting, (name, elapsed)
    if "slow" in name or "stalls" in name:
        assert elapsed >= READ_TIMEOUT, (name, elapsed)


async def test_every_upstream_failure_reaches_slack_as_a_clear_message_in_time(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = fault_settings(tmp_path, fault_upstream_settings(upstream_settings), answer_timeout=2.0)
    async with FakeSlack() as slack, slack_bot(settings, slack) as (_, adapter, url):
        for n, (name, behaviour, expected, shown) in enumerate(FAULTS):
            fake_upstream.script.clear()
            fake_upstream.queue(behaviour, behaviour)  # enough for the retry as well
            started = time.monotonic()
            assert (
                await slack.deliver_http(url, slack.command(f"question {n}", channel=f"C{n}"))
            ).status == 200
            await adapter.transport.idle()
            [answer] = slack.in_channel(f"C{n}")
            check_fault_message(
                command_answer(answer.text), name, expected, shown, time.monotonic() - started, settings
            )
        fake_upstream.script.clear()
        await slack.deliver_http(url, slack.command("and now?", channel="C0"))
        await adapter.transport.idle()
        assert command_answer(slack.in_channel("C0")[-1].text).startswith("Answer 1 to:")
    assert slack.too_long == 0 and slack.rate_limited == 0


async def test_every_upstream_failure_reaches_discord_as_a_clear_message_in_time(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = fault_settings(tmp_path, fault_upstream_settings(upstream_settings), answer_timeout=2.0)
    async with FakeDiscord() as fake, discord_bot(settings, fake):
        for n, (name, behaviour, expected, shown) in enumerate(FAULTS):
            fake_upstream.script.clear()
            fake_upstream.queue(behaviour, behaviour)
            started = time.monotonic()
            asked = await fake.post_message(f"{BOT} question {n}")
            text = await discord_answer(fake, asked, lambda t: "⚠️" in t, seconds=10)
            # Every failure is asked in one channel, where Discord allows five posts per five seconds.
            elapsed = time.monotonic() - started
            check_fault_message(text, name, expected, shown, elapsed, settings, posting=POST_WINDOW)
        fake_upstream.script.clear()
        asked = await fake.post_message(f"{BOT} and now?")
        # Turns cut off after their first text keep the conversation they started: the service holds it.
        assert re.match(
            r"Answer \d+ to:", await discord_answer(fake, asked, lambda t: t.endswith("and now?"))
        )
    assert fake.rate_limited == 0


async def test_a_flapping_upstream_under_load_answers_or_explains_every_question_and_leaks_nothing(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    """100 questions in 20 channels (five in turn in each) while the upstream's requests alternate between
    up and each documented failure in turn, and the upstream stops listening every 200 ms."""
    upstream = dataclasses.replace(upstream_settings, read_timeout=READ_TIMEOUT, retries=2)
    settings = fault_settings(tmp_path, upstream, answer_timeout=1.5)
    fake_upstream.answerer = lambda question, history: f"reply to {question}"
    up = Behaviour(fragment_size=5, fragment_delay=0.005)
    fake_upstream.default = up
    port = int(fake_upstream.url.rsplit(":", 1)[1])
    # Back-off and Retry-After are bounded by the client; the answer timeout bounds a turn, twice when
    # a forgotten conversation is restarted.
    bound = 2 * settings.answer_timeout + 0.5
    failures = [f[1] for f in FAULTS] + [
        Behaviour.fail(404, "not_found"),
        Behaviour.fail(429, retry_after="0"),
    ]
    messages = {f[2] for f in FAULTS} | {wording.CONVERSATION_LOST, wording.UNREACHABLE}
    [stalled] = [f[1].answer for f in FAULTS if f[0] == "stalls mid-answer"]

    # Requests alternate between up and each failure in turn, whatever the timing: every failure is met
    # however fast or slow the machine runs the questions. On top, the service goes away now and then.
    for n in range(600):
        fake_upstream.queue(up if n % 2 else failures[n // 2 % len(failures)])

    async def flap(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.2)
            await fake_upstream.stop()  # down: connections refused, streams cut
            await asyncio.sleep(0.05)
            await fake_upstream.start(port=port)

    async def channel(core: ChatCore, n: int) -> list[tuple[str, Outcome, RecordingTarget, float]]:
        """Five people ask in turn, each a moment after the previous answer is complete."""
        scope = Scope.of("flap", "W1", f"C{n}")
        results = []
        for turn in range(5):
            await asyncio.sleep(0.05)
            question = f"q{turn} in C{n}"
            target = RecordingTarget()
            started = time.monotonic()
            outcome = await core.ask(Question(scope, Actor(f"U{turn}", f"User{turn}"), question), target)
            expected = f"reply to User{turn}: {question}"
            results.append((expected, outcome, target, time.monotonic() - started))
        return results

    tasks_before = asyncio.all_tasks()
    core = await ChatCore.open(settings)
    try:
        stop = asyncio.Event()
        flapper = asyncio.create_task(flap(stop))
        try:
            per_channel = await asyncio.gather(*(channel(core, n) for n in range(20)))
        finally:
            stop.set()
            await flapper
        # Nothing left behind: no connection checked out of the pool.
        session = core.client._session
        assert session is not None
        assert len(session.connector._acquired) == 0  # type: ignore[union-attr]  # aiohttp has no public count
    finally:
        await core.aclose()

    results = [r for rs in per_channel for r in rs]
    warnings = set()
    for expected, outcome, target, elapsed in results:
        assert elapsed < bound, (expected, elapsed)
        if outcome is Outcome.ANSWERED:
            # A restarted conversation or an answer stopped for time carries a note after the text.
            text, _, notes = target.text.partition("\n\n")
            if "stopped because it ran too long" in notes:
                # The answer timeout fell mid-answer, as retries and a busy machine can make it: the part
                # shown stays, and says so.
                assert text and any(a.startswith(text) for a in (expected, stalled)), (expected, target.text)
            else:
                assert text == expected, (expected, target.text)
        else:
            assert outcome is Outcome.FAILED, (expected, outcome)
            warning = target.text.rpartition("⚠️ ")[2]
            assert any(warning.startswith(m) for m in messages), (expected, target.text)
            warnings.add(warning.split(" (trace")[0])
    answered = sum(o is Outcome.ANSWERED for _, o, _, _ in results)
    assert 20 <= answered <= 90, answered
    assert len(warnings) >= 4, warnings

    def leftovers() -> set[asyncio.Task[object]]:
        return asyncio.all_tasks() - tasks_before - {asyncio.current_task()}

    # No request still open at the fake, no task of the core's still running.
    async with asyncio.timeout(2):
        # Polling: server handlers and client tasks wind down on their own, with nothing to wait on.
        while fake_upstream.active or leftovers():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- platform faults ------------------------------------------------------------------------------


async def test_discord_gateway_drops_mid_answer_the_answer_completes_and_the_bot_resumes_each_time(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = fault_settings(tmp_path, upstream_settings)
    streamed = " ".join(f"word{i}" for i in range(60))
    async with FakeDiscord() as fake, discord_bot(settings, fake) as (_, adapter):

        async def drop_while_streaming(drop: int, code: int, channel: int) -> None:
            fake_upstream.queue(Behaviour(answer=streamed, fragment_size=20, fragment_delay=0.04))
            asked = await fake.post_message(f"{BOT} stream {drop}", channel_id=channel)
            await fake.wait_for(lambda: reply_to(fake, asked) is not None)
            await fake.drop_gateway(code)
            streaming = reply_to(fake, asked)
            assert streaming is not None and streaming.content != streamed, "dropped mid-answer"
            await discord_answer(fake, asked, lambda t: t == streamed)
            await fake.wait_for(lambda: len(fake.resumes) == drop)
            await fake.wait_ready()
            follow = await fake.post_message(f"after drop {drop}", channel_id=fake.DM_CHANNEL_ID)
            await discord_answer(fake, follow, lambda t: t.endswith(f"after drop {drop}"))
            assert adapter.connected

        # Each stream in its own channel: Discord's edit allowance is per channel, and consecutive
        # answers in one channel can exceed it (see the report); answers in the DM need no edits.
        await drop_while_streaming(1, 4000, fake.CHANNEL_ID)
        await drop_while_streaming(2, 1000, fake.OTHER_CHANNEL_ID)  # a "normal" close is improper here
        await drop_while_streaming(3, 4000, fake.THREAD_ID)
    assert len(fake.identifies) == 1, "every drop was resumed, never a new session"
    assert fake.rate_limited == 0


async def test_slack_socket_drops_mid_answer_the_answer_completes_and_the_bot_reconnects_each_time(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    settings = fault_settings(tmp_path, upstream_settings)
    streamed = " ".join(f"word{i}" for i in range(60))
    async with FakeSlack() as slack, slack_bot(settings, slack, socket=True) as (_, adapter, _url):

        def answer(channel: str) -> str:
            found = slack.in_channel(channel)
            return command_answer(found[0].text) if found else ""

        async def drop_while_streaming(drop: int) -> None:
            fake_upstream.queue(Behaviour(answer=streamed, fragment_size=20, fragment_delay=0.04))
            channel = f"C{drop}"
            await slack.wait_for_ack(await slack.deliver_socket(slack.command("stream", channel=channel)))
            await slack.wait_until(lambda: answer(channel) != "")
            await slack.drop_socket()
            assert answer(channel) != streamed, "dropped mid-answer"
            await slack.wait_until(lambda: answer(channel) == streamed, 10)
            await slack.wait_for_socket(drop + 1)
            follow = slack.command(f"after drop {drop}", channel=f"D{drop}")
            await slack.wait_for_ack(await slack.deliver_socket(follow))
            await slack.wait_until(lambda: answer(f"D{drop}").endswith(f"after drop {drop}"))
            assert adapter.connected

        await slack.wait_for_socket(1)
        for drop in (1, 2, 3):
            await drop_while_streaming(drop)
        await adapter.transport.idle()
    assert slack.rate_limited == 0


async def test_chat_update_429s_are_waited_out_across_answers_and_every_answer_completes(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    """Three answers stream at once into a workspace whose chat.update allowance is tiny: after each
    429 no chat.update goes out before its Retry-After, and every answer ends with its full text."""
    settings = fault_settings(tmp_path, upstream_settings)
    answers = {f"C{n}": " ".join(f"c{n}w{i}" for i in range(80)) for n in range(3)}
    fake_upstream.answerer = lambda question, history: answers[question.rsplit(" ", 1)[1]]
    fake_upstream.set_default(fragment_size=24, fragment_delay=0.03)
    async with FakeSlack(update_burst=3, update_per_minute=240) as slack:
        async with slack_bot(settings, slack) as (_, adapter, url):
            await asyncio.gather(
                *(slack.deliver_http(url, slack.command(f"stream in {c}", channel=c)) for c in answers)
            )
            await adapter.transport.idle()
        for channel, text in answers.items():
            assert command_answer(slack.in_channel(channel)[-1].text) == text
        updates = slack.calls_to("chat.update")
        limited = [c for c in updates if c.status == 429]
    assert limited, "the test must provoke 429s"
    assert len(limited) <= 3 * len(answers), "the bot backs off instead of hammering"
    # FakeSlack rounds its wait up to whole seconds; refilling 4 calls a second, it always says 1.
    retry_after = 1.0
    # A call already on its way when the 429 came back may land just after it.
    in_flight = 0.05
    for refusal in limited:
        early = [c for c in updates if refusal.at + in_flight < c.at < refusal.at + retry_after - in_flight]
        assert not early, f"{len(early)} chat.update calls inside a Retry-After window"


async def test_discord_edit_429s_are_waited_out_and_the_answer_completes(
    tmp_path: Path, fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    """Discord allows fewer edits than the bot assumes: discord.py sleeps out each 429 and the final
    text still arrives in full."""
    settings = fault_settings(tmp_path, upstream_settings)
    streamed = " ".join(f"word{i}" for i in range(100))
    fake_upstream.queue(Behaviour(answer=streamed, fragment_size=10, fragment_delay=0.02))
    async with FakeDiscord(edit_limit=1, edit_window=0.6) as fake, discord_bot(settings, fake):
        asked = await fake.post_message(f"{BOT} stream")
        await discord_answer(fake, asked, lambda t: t == streamed, seconds=15)
        edits = fake.calls_to("PATCH", r"/channels/\d+/messages/\d+")
    refused = [c for c in edits if c.status == 429]
    assert refused, "the test must provoke 429s"
    assert len(refused) <= len(edits) - len(refused) + 1, "each 429 is waited out, not retried at once"
