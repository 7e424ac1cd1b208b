"""The AI Chat API client against the local fake: bodies, streaming, errors, retries, secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace

import aiohttp
import pytest
import pytest_asyncio

from acechat.core import upstream as up
from acechat.core.errors import UpstreamError
from acechat.core.settings import UpstreamSettings
from acechat.core.upstream import AIChatClient, AnswerUpdate, Turn
from tests.fakes.upstream import Behaviour, FakeUpstream


class Sleeps:
    """Stands in for asyncio.sleep: records back-off delays and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest_asyncio.fixture
async def client(upstream_settings: UpstreamSettings, sleeps: Sleeps) -> AsyncIterator[AIChatClient]:
    async with AIChatClient(upstream_settings, sleep=sleeps, rng=random.Random(7)) as c:
        yield c


def turn(
    question: str = "What is NDJSON?",
    *,
    model: str = "gpt-4o",
    preset: str | None = None,
    conversation_id: str | None = None,
    references: tuple[str, ...] = (),
) -> Turn:
    return Turn(question, model, preset, conversation_id, references)


@dataclass(frozen=True)
class Seen:
    """A chunk as it was when it arrived (its text keeps growing with the stream)."""

    answer: str
    delta: str
    conversation_id: str | None


async def collect(client: AIChatClient, t: Turn) -> list[Seen]:
    return [
        Seen(str(c.text), c.delta, c.conversation_id) async for c in client.stream(t) if isinstance(c, AnswerUpdate)
    ]


async def collect_until_error(client: AIChatClient, t: Turn) -> tuple[list[Seen], UpstreamError]:
    chunks: list[Seen] = []
    with pytest.raises(UpstreamError) as info:
        async for c in client.stream(t):
            if isinstance(c, AnswerUpdate):
                chunks.append(Seen(str(c.text), c.delta, c.conversation_id))
    return chunks, info.value


async def answer(client: AIChatClient, t: Turn) -> Seen:
    return (await collect(client, t))[-1]


async def fail(client: AIChatClient, t: Turn) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await collect(client, t)
    return info.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- happy paths -------------------------------------------------------------------------------


async def test_stream_sends_the_documented_body_and_reads_the_answer(
    client: AIChatClient, fake_upstream: FakeUpstream
) -> None:
    chunks = [
        c
        async for c in client.stream(
            turn("Hi there", preset="Be brief.", references=("https://x.test/a.png",))
        )
        if isinstance(c, AnswerUpdate)
    ]

    assert str(chunks[-1].text) == "Answer 1 to: Hi there"
    assert chunks[-1].conversation_id in fake_upstream.conversations
    assert chunks[-1].trace_id == fake_upstream.requests[0]["trace_id"]
    request = fake_upstream.requests[0]
    assert request["body"] == {
        "model": "gpt-4o",
        "question": "Hi there",
        "stateful": True,
        "preset": "Be brief.",
        "references": ["https://x.test/a.png"],
        "allowed_skills": [],
        "allowed_mcp_servers": [],
    }
    assert request["path"] == "/aichat2/conversations"
    assert request["accept"] == "application/x-ndjson"
    assert request["authorization"] == "Bearer test-token"
    assert request["content_type"].startswith("application/json")


async def test_follow_ups_reuse_the_id_and_resend_the_preset(
    client: AIChatClient, fake_upstream: FakeUpstream
) -> None:
    first = await answer(client, turn("one", preset="P"))
    chunks = await collect(client, turn("two", preset="P", conversation_id=first.conversation_id))
    third = await answer(
        client, turn("three", model="deepseek-r1", conversation_id=chunks[-1].conversation_id)
    )

    assert chunks[-1].conversation_id == third.conversation_id == first.conversation_id
    assert chunks[-1].answer == "Answer 2 to: two"
    assert third.answer == "Answer 3 to: three"
    first_body, second_body, third_body = fake_upstream.bodies
    assert first_body is not None and "id" not in first_body and "references" not in first_body
    assert second_body == {
        "model": "gpt-4o",
        "question": "two",
        "stateful": True,
        "id": first.conversation_id,
        "preset": "P",
        "allowed_skills": [],
        "allowed_mcp_servers": [],
    }
    assert third_body is not None and "preset" not in third_body and third_body["stateful"] is True
    memory = fake_upstream.conversations[str(first.conversation_id)]
    assert [(t["question"], t["preset"], t["model"]) for t in memory] == [
        ("one", "P", "gpt-4o"),
        ("two", "P", "gpt-4o"),
        ("three", None, "deepseek-r1"),
    ]


async def test_stream_yields_growing_text(client: AIChatClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour(fragment_size=4))
    chunks = await collect(client, turn("stream me"))

    full = "Answer 1 to: stream me"
    assert [c.answer for c in chunks] == [full[: i + 4] for i in range(0, len(full), 4)]
    assert "".join(c.delta for c in chunks) == full
    assert {c.conversation_id for c in chunks} == set(fake_upstream.conversations)
    assert fake_upstream.requests[0]["accept"] == "application/x-ndjson"


async def test_stream_tolerates_crlf_blank_lines_split_lines_and_no_final_newline(
    client: AIChatClient, fake_upstream: FakeUpstream
) -> None:
    pieces = (
        b'{"answer": "Hel',
        b'lo", "delta_answer": "Hello", "id": "c-1"}\r\n\r\n',
        b'\n  \r\n{"answer": "Hello wor',
        b'ld", "delta_answer": " world", "id": "c-1"}\r',
        b'\n{"answer": "Hello world", "delta_answer": "", "id": "c-2"}\n',
        b'{"answer": "Hello world!", "delta_answer": "!", "id": "c-2"}',
    )
    fake_upstream.queue(Behaviour(raw=pieces, fragment_delay=0.005))
    chunks = await collect(client, turn())

    assert [(c.answer, c.delta, c.conversation_id) for c in chunks] == [
        ("Hello", "Hello", "c-1"),
        ("Hello world", " world", "c-1"),
        ("Hello world!", "!", "c-2"),  # the id from the empty-delta line was kept
    ]


async def test_stream_of_single_bytes(client: AIChatClient, fake_upstream: FakeUpstream) -> None:
    data = b'{"answer": "h\xc3\xa9", "delta_answer": "h\xc3\xa9", "id": "c"}\r\n'
    fake_upstream.queue(Behaviour(raw=tuple(data[i : i + 1] for i in range(len(data))), fragment_delay=0.001))
    chunks = await collect(client, turn())
    assert [c.answer for c in chunks] == ["hé"]


@pytest.mark.parametrize(
    "behaviour", [Behaviour(delta_only=True, fragment_size=3), Behaviour(blank_lines=True)]
)
async def test_stream_variants_give_the_whole_answer(
    client: AIChatClient, fake_upstream: FakeUpstream, behaviour: Behaviour
) -> None:
    fake_upstream.queue(behaviour)
    chunks = await collect(client, turn("abc"))
    assert chunks[-1].answer == "Answer 1 to: abc"
    assert "".join(c.delta for c in chunks) == "Answer 1 to: abc"


# --- broken replies ----------------------------------------------------------------------------


async def test_cut_off_stream_is_partial_and_not_retried(
    client: AIChatClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="abcdefghijkl", fragment_size=4, cut_after=2))
    chunks, exc = await collect_until_error(client, turn())

    assert [c.answer for c in chunks] == ["abcd", "abcdefgh"]
    assert exc.user_message == up.CUT_OFF
    assert exc.partial is True
    assert len(fake_upstream.requests) == 1


async def test_stream_closed_before_any_text(client: AIChatClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour(cut_after=0))
    chunks, exc = await collect_until_error(client, turn())
    assert chunks == []
    assert exc.partial is False
    # The server accepted the question: asking again could append it twice.
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize("after", [0, 1])
async def test_non_json_stream_line(client: AIChatClient, fake_upstream: FakeUpstream, after: int) -> None:
    fake_upstream.queue(Behaviour(garbage_after=after, fragment_size=2))
    chunks, exc = await collect_until_error(client, turn())
    assert len(chunks) == after
    assert exc.user_message == up.UNREADABLE
    assert exc.partial is (after > 0)
    assert exc.trace_id == fake_upstream.requests[0]["trace_id"]


async def test_error_line_mid_stream(client: AIChatClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour(error_after=1, error_line_code="used_up"))
    chunks, exc = await collect_until_error(client, turn())
    assert len(chunks) == 1
    assert (exc.user_message, exc.code, exc.partial) == (up.USED_UP, "used_up", True)
    assert exc.trace_id == fake_upstream.requests[0]["trace_id"]


async def test_empty_answer(client: AIChatClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(Behaviour(answer=""))
    exc = await fail(client, turn())
    assert exc.user_message == up.EMPTY
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000 + b"]" * 100_000,  # json raises RecursionError here, not ValueError
        b'{"answer": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"answer": "unterminated',
        b"\xff\xfe not text",
    ],
    ids=["nested-array", "nested-in-object", "unterminated", "not-utf8"],
)
async def test_every_malformed_stream_line_is_a_malformed_reply(
    client: AIChatClient, fake_upstream: FakeUpstream, line: bytes
) -> None:
    good = b'{"answer": "So far", "delta_answer": "So far", "id": "c-1"}\n'
    fake_upstream.queue(Behaviour(raw=(good, line + b"\n"), fragment_delay=0.001))
    chunks, exc = await collect_until_error(client, turn())
    assert [c.answer for c in chunks] == ["So far"]
    assert (exc.user_message, exc.partial) == (up.UNREADABLE, True)
    assert up.UNREADABLE == "The AI service sent a malformed reply."


async def test_a_million_characters_of_small_deltas_cost_linear_time(
    client: AIChatClient, fake_upstream: FakeUpstream
) -> None:
    """Appending each fragment to the whole text so far was quadratic: about 11 s for this stream."""
    lines = [b'{"delta_answer": "abcd", "id": "c-1"}\n'] * 250_000
    fake_upstream.queue(Behaviour(raw=(b"".join(lines),)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    count = 0
    async for chunk in client.stream(turn()):
        count += 1
        last = chunk
    assert count == 250_000 and len(last.text) == 1_000_000
    assert str(last.text) == "abcd" * 250_000
    assert loop.time() - started < 5.0


# --- error replies -----------------------------------------------------------------------------

ERRORS = [
    (400, "bad_request", up.REJECTED),
    (400, "no_token", up.BAD_TOKEN),
    (400, "api_not_implemented", up.MISCONFIGURED),
    (401, "invalid_token", up.BAD_TOKEN),
    (401, "token_expired", up.BAD_TOKEN),
    (401, "token_mismatched", up.BAD_TOKEN),
    (400, "token_mismatched", up.BAD_TOKEN),  # where the OpenAPI spec lists it
    (403, "used_up", up.USED_UP),
    (403, "disabled", up.DISABLED),
    (404, "not_found", up.CONVERSATION_LOST),
    (404, "no_api", up.MISCONFIGURED),
    (429, "too_many_requests", up.BUSY),
    (500, "api_error", up.FAILED),
    (500, "chat_error", up.FAILED),
    (503, None, up.FAILED),
]


@pytest.mark.parametrize(("status", "code", "message"), ERRORS)
async def test_documented_errors(
    fake_upstream: FakeUpstream,
    upstream_settings: UpstreamSettings,
    status: int,
    code: str | None,
    message: str,
) -> None:
    fake_upstream.queue(Behaviour.fail(status, code, "upstream says no"))
    async with AIChatClient(replace(upstream_settings, retries=0)) as c:
        exc = await fail(c, turn())
    assert (exc.user_message, exc.status, exc.code) == (message, status, code)
    assert exc.trace_id == fake_upstream.requests[0]["trace_id"]
    assert exc.detail == "upstream says no"
    # A stateful turn the service may have appended is never sent twice: only a 429 is retried.
    assert exc.retryable is (status == 429)


@pytest.mark.parametrize("code", ["token_mismatched", "invalid_token"])
async def test_a_bad_token_error_line_inside_a_stream_reads_as_a_bad_token(
    client: AIChatClient, fake_upstream: FakeUpstream, code: str
) -> None:
    fake_upstream.queue(Behaviour(error_after=0, error_line_code=code))
    _, exc = await collect_until_error(client, turn())
    assert exc.user_message == up.BAD_TOKEN


async def test_real_token_and_id_checks(
    fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    async with AIChatClient(replace(upstream_settings, token="wrong")) as c:
        exc = await fail(c, turn())
    assert (exc.status, exc.code, exc.user_message) == (401, "invalid_token", up.BAD_TOKEN)

    async with AIChatClient(upstream_settings) as c:
        exc = await fail(c, turn(conversation_id="00000000-0000-0000-0000-000000000000"))
    assert (exc.status, exc.code, exc.user_message) == (404, "not_found", up.CONVERSATION_LOST)

    async with AIChatClient(replace(upstream_settings, base_url=fake_upstream.url + "/wrong/")) as c:
        exc = await fail(c, turn())
    assert (exc.status, exc.code, exc.user_message) == (404, "no_api", up.MISCONFIGURED)
    assert len(fake_upstream.requests) == 2  # the wrong path never reached the API handler


@pytest.mark.parametrize(
    ("behaviour", "message", "code", "detail"),
    [
        (
            Behaviour.fail_raw(502, "<html><h1>502 Bad Gateway</h1></html>", "text/html"),
            up.FAILED,
            None,
            "Bad Gateway",
        ),
        (Behaviour.fail_raw(404, "404 page not found"), up.MISCONFIGURED, None, "page not found"),
        (Behaviour.fail_raw(400, b""), up.REJECTED, None, "Bad Request"),
        (
            Behaviour.fail_raw(403, '{"error": "used_up"}', "application/json"),
            up.USED_UP,
            "used_up",
            "used_up",
        ),
        (Behaviour.fail_raw(418, '["odd"]', "application/json"), up.REJECTED, None, "odd"),
    ],
)
async def test_odd_error_bodies(
    fake_upstream: FakeUpstream,
    upstream_settings: UpstreamSettings,
    behaviour: Behaviour,
    message: str,
    code: str | None,
    detail: str,
) -> None:
    fake_upstream.queue(behaviour)
    async with AIChatClient(replace(upstream_settings, retries=0)) as c:
        exc = await fail(c, turn())
    assert (exc.user_message, exc.status, exc.code) == (message, behaviour.status, code)
    assert detail in exc.detail
    assert exc.trace_id == fake_upstream.requests[0]["trace_id"]  # from the x-trace-id header


async def test_bare_string_error_keeps_the_body_trace_id(
    client: AIChatClient, fake_upstream: FakeUpstream
) -> None:
    body = json.dumps({"error": "Please slow down", "trace_id": "t-body"})
    fake_upstream.queue(*[Behaviour.fail_raw(429, body, "application/json")] * 3)
    exc = await fail(client, turn())
    assert (exc.user_message, exc.code, exc.trace_id, exc.detail) == (
        up.BUSY,
        None,
        "t-body",
        "Please slow down",
    )


def test_user_message_fallbacks() -> None:
    assert up.user_message(413, None) == up.REJECTED
    assert up.user_message(408, None) == up.TOO_SLOW
    assert up.user_message(301, None) == up.MISCONFIGURED
    assert up.user_message(504, "whatever") == up.FAILED
    assert up.user_message(401, "used_up") == up.BAD_TOKEN
    assert up.user_message(None, "disabled") == up.DISABLED
    assert up.user_message(None, None) == up.FAILED


# --- transport failures ------------------------------------------------------------------------


async def test_connection_refused_is_retried_then_reported(sleeps: Sleeps) -> None:
    settings = UpstreamSettings(token="t", base_url=f"http://127.0.0.1:{closed_port()}", retries=2)
    async with AIChatClient(settings, sleep=sleeps, rng=random.Random(1)) as c:
        exc = await fail(c, turn())
    assert (exc.user_message, exc.status, exc.retryable) == (up.UNREACHABLE, None, True)
    assert len(sleeps.calls) == 2
    assert isinstance(exc.__cause__, aiohttp.ClientConnectorError)


async def test_invalid_base_url(sleeps: Sleeps) -> None:
    async with AIChatClient(UpstreamSettings(token="t", base_url="not a url"), sleep=sleeps) as c:
        exc = await fail(c, turn())
    assert exc.user_message == up.MISCONFIGURED
    assert sleeps.calls == []


async def test_read_timeout_before_the_reply_is_not_retried(
    fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings, sleeps: Sleeps
) -> None:
    fake_upstream.set_default(latency=1.0)
    async with AIChatClient(replace(upstream_settings, read_timeout=0.1), sleep=sleeps) as c:
        exc = await fail(c, turn())
    assert (exc.user_message, exc.status, exc.partial) == (up.TOO_SLOW, None, False)
    assert len(fake_upstream.requests) == 1 and sleeps.calls == []


async def test_read_timeout_mid_stream_is_partial(
    fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings, sleeps: Sleeps
) -> None:
    fake_upstream.queue(Behaviour(answer="abcdef", fragment_size=3, fragment_delay=1.0))
    async with AIChatClient(replace(upstream_settings, read_timeout=0.1), sleep=sleeps) as c:
        chunks, exc = await collect_until_error(c, turn())
    assert [c.answer for c in chunks] == ["abc"]
    assert (exc.user_message, exc.partial) == (up.TOO_SLOW, True)
    assert len(fake_upstream.requests) == 1 and sleeps.calls == []


# --- retries -----------------------------------------------------------------------------------


async def test_429s_are_retried_then_succeed(
    client: AIChatClient,
    fake_upstream: FakeUpstream,
    sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_upstream.queue(Behaviour.fail(429, "too_many_requests"), Behaviour.fail(429, "too_many_requests"))
    caplog.set_level(logging.WARNING, logger="acechat.core.upstream")
    text = (await collect(client, turn("again?")))[-1].answer

    assert text == "Answer 1 to: again?"
    assert fake_upstream.bodies == [fake_upstream.bodies[0]] * 3
    assert len(sleeps.calls) == 2
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "status=429 code=too_many_requests" in warnings[0]
    assert fake_upstream.requests[0]["trace_id"] in warnings[0]


@pytest.mark.parametrize(("status", "code"), [(500, "api_error"), (503, None), (408, None), (409, None)])
async def test_a_stateful_turn_is_not_sent_again_after_a_5xx_408_or_409(
    client: AIChatClient, fake_upstream: FakeUpstream, sleeps: Sleeps, status: int, code: str | None
) -> None:
    """The service may have appended the question before failing: a retry could append it twice."""
    fake_upstream.queue(Behaviour.fail(status, code))
    exc = await fail(client, turn())
    assert exc.status == status and not exc.retryable
    assert len(fake_upstream.requests) == 1 and sleeps.calls == []


async def test_back_off_doubles_up_to_the_cap() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    sleeps = Sleeps()
    c = AIChatClient(UpstreamSettings(token="t", retries=9), sleep=sleeps, rng=Top())
    for attempt in range(6):
        await c._back_off(UpstreamError("x", retryable=True), attempt)
    assert sleeps.calls == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


@pytest.mark.parametrize(("header", "expected"), [("3", 3.0), ("0.25", 0.25), ("120", 30.0)])
async def test_retry_after_is_honoured_and_capped(
    client: AIChatClient, fake_upstream: FakeUpstream, sleeps: Sleeps, header: str, expected: float
) -> None:
    fake_upstream.queue(Behaviour.fail(429, "too_many_requests", retry_after=header))
    assert (await answer(client, turn())).answer == "Answer 1 to: What is NDJSON?"
    assert sleeps.calls == [expected]


async def test_attempts_are_bounded(
    client: AIChatClient, fake_upstream: FakeUpstream, sleeps: Sleeps
) -> None:
    fake_upstream.queue(*[Behaviour.fail(429, "too_many_requests", retry_after="1")] * 3)
    exc = await fail(client, turn())
    assert (exc.status, exc.user_message) == (429, up.BUSY)
    assert len(fake_upstream.requests) == 3  # retries=2: the default answer that follows is never asked for
    assert sleeps.calls == [1.0, 1.0]


@pytest.mark.parametrize(("status", "code"), [(400, "bad_request"), (401, "invalid_token"), (403, "used_up")])
async def test_client_errors_are_not_retried(
    client: AIChatClient, fake_upstream: FakeUpstream, sleeps: Sleeps, status: int, code: str
) -> None:
    fake_upstream.queue(Behaviour.fail(status, code))
    exc = await fail(client, turn())
    assert exc.status == status
    assert len(fake_upstream.requests) == 1 and sleeps.calls == []


async def test_no_retry_once_stream_text_arrived(
    client: AIChatClient, fake_upstream: FakeUpstream, sleeps: Sleeps
) -> None:
    fake_upstream.queue(Behaviour(error_after=2, error_line_code="api_error", fragment_size=2))
    chunks, exc = await collect_until_error(client, turn())
    assert len(chunks) == 2 and exc.partial
    assert len(fake_upstream.requests) == 1 and sleeps.calls == []


# --- secrecy and lifecycle ---------------------------------------------------------------------


async def test_token_and_question_never_leak(sleeps: Sleeps, caplog: pytest.LogCaptureFixture) -> None:
    token = "sk-very-secret-token-42"
    question = "my private question"
    fake = FakeUpstream(token=token)
    await fake.start()
    caplog.set_level(logging.DEBUG)
    errors: list[UpstreamError] = []
    try:
        fake.queue(*[Behaviour.fail(429, "too_many_requests", f"bad token {token} for {question}")] * 3)
        async with AIChatClient(UpstreamSettings(token=token, base_url=fake.url), sleep=sleeps) as c:
            errors.append(await fail(c, turn(question)))
        fake.queue(Behaviour.fail_raw(401, f"<p>{token}</p>", "text/html"))
        async with AIChatClient(UpstreamSettings(token=token, base_url=fake.url), sleep=sleeps) as c:
            errors.append(await fail(c, turn(question)))
    finally:
        await fake.stop()
    refused = UpstreamSettings(token=token, base_url=f"http://127.0.0.1:{closed_port()}")
    async with AIChatClient(refused, sleep=sleeps) as c:
        errors.append(await fail(c, turn(question)))

    assert "[token]" in errors[0].detail and "[token]" in errors[1].detail
    for exc in errors:
        for text in (str(exc), repr(exc), exc.detail, exc.user_message):
            assert token not in text
    assert caplog.records, "the retries should have logged"
    assert token not in caplog.text
    assert question not in caplog.text


def test_construction_outside_a_loop_creates_no_session() -> None:
    c = AIChatClient(UpstreamSettings(token="t"))
    assert c._session is None


async def test_an_injected_session_is_left_open(upstream_settings: UpstreamSettings) -> None:
    async with aiohttp.ClientSession() as session:
        async with AIChatClient(upstream_settings, session=session) as c:
            assert (await answer(c, turn())).answer
        assert not session.closed


async def test_abandoned_stream_releases_its_connection(
    fake_upstream: FakeUpstream, upstream_settings: UpstreamSettings
) -> None:
    fake_upstream.set_default(fragment_size=1, fragment_delay=0.01)
    async with AIChatClient(replace(upstream_settings, max_connections=1)) as c:
        for _ in range(3):
            async with asyncio.timeout(2), aclosing(c.stream(turn())) as chunks:
                async for _chunk in chunks:
                    break


async def test_many_concurrent_streams(client: AIChatClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.set_default(latency=0.05, fragment_size=5)
    questions = [f"q{i}" for i in range(100)]
    results = await asyncio.gather(*(collect(client, turn(q)) for q in questions))
    assert [r[-1].answer for r in results] == [f"Answer 1 to: {q}" for q in questions]
    assert fake_upstream.peak_active > 50
