"""The platform fakes enforce the platforms' documented limits, in the shapes the real client libraries parse.

Slack through slack_sdk's own AsyncWebClient (with no retry handler, so every 429 shows), Discord through
raw HTTP and through discord.py's own HTTPClient. Time is the fakes' injected clock wherever a limit's
window matters, so nothing here depends on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord.http import HTTPClient, Route
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.discord import GLOBAL_LIMIT, GLOBAL_WINDOW, ROUTE_LIMITS, FakeDiscord, FakeInteraction
from tests.fakes.slack import BOT_TOKEN, METHOD_TIERS, POST_BURST, TIERS, Change, FakeSlack


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- Slack -----------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture
async def slack(clock: Clock) -> AsyncIterator[tuple[FakeSlack, AsyncWebClient]]:
    async with FakeSlack(clock=clock) as fake, aiohttp.ClientSession() as session:
        yield fake, AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url, session=session)


async def refused(call: Callable[[], Awaitable[object]]) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        await call()
    return caught.value


async def status_of_call(client: AsyncWebClient, method: str) -> int:
    """The HTTP status of one call with no arguments (the method itself may refuse it: still counted)."""
    try:
        return (await client.api_call(method, json={})).status_code
    except SlackApiError as error:
        return int(error.response.status_code)


async def test_chat_post_message_allows_a_short_burst_then_one_a_second_per_channel(
    slack: tuple[FakeSlack, AsyncWebClient], clock: Clock
) -> None:
    fake, client = slack
    for n in range(POST_BURST):
        await client.chat_postMessage(channel="C1", text=f"post {n}")
    error = await refused(lambda: client.chat_postMessage(channel="C1", thread_ts="1.0", text="one too many"))
    assert error.response.status_code == 429
    assert error.response["error"] == "ratelimited"
    assert error.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="C2", text="another channel has its own allowance")
    clock.advance(1.0)
    await client.chat_postMessage(channel="C1", text="a second later")
    await refused(lambda: client.chat_postMessage(channel="C1", text="and no more"))
    assert fake.limited == {"chat.postMessage": 2} and fake.rate_limited == 2
    assert [m.text for m in fake.in_channel("C1")] == [
        *(f"post {n}" for n in range(POST_BURST)),
        "a second later",
    ]


@pytest.mark.parametrize("method", sorted(METHOD_TIERS))
async def test_each_tiered_method_has_its_own_workspace_bucket(
    slack: tuple[FakeSlack, AsyncWebClient], clock: Clock, method: str
) -> None:
    fake, client = slack
    tier = TIERS[METHOD_TIERS[method]]
    for _ in range(tier.burst):
        assert await status_of_call(client, method) == 200
    error = await refused(lambda: client.api_call(method, json={}))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == str(math.ceil(60 / tier.per_minute))
    for other in METHOD_TIERS:
        if other != method:
            assert await status_of_call(client, other) == 200, "each method has its own bucket"
    clock.advance(60 / tier.per_minute + 0.001)
    assert await status_of_call(client, method) == 200
    assert fake.limited == {method: 1}


async def test_set_status_is_recorded_and_clears_when_the_app_posts_in_the_thread(
    slack: tuple[FakeSlack, AsyncWebClient], clock: Clock
) -> None:
    fake, client = slack
    for _ in range(100):  # "special" tier: not limited
        await client.assistant_threads_setStatus(
            channel_id="C1", thread_ts="5.0", status="is thinking…", loading_messages=["Reading", "Writing"]
        )
    assert fake.rate_limited == 0
    [status, *_] = fake.statuses_in("C1", "5.0")
    assert (status.status, status.loading_messages, status.at) == (
        "is thinking…",
        ("Reading", "Writing"),
        clock(),
    )
    assert fake.status_of("C1", "5.0") == "is thinking…"
    await client.chat_postMessage(channel="C1", text="elsewhere in the channel")
    assert fake.status_of("C1", "5.0") == "is thinking…"
    await client.chat_postMessage(channel="C1", thread_ts="5.0", text="the answer")
    assert fake.status_of("C1", "5.0") == ""

    await client.assistant_threads_setStatus(channel_id="C1", thread_ts="6.0", status="is thinking…")
    await client.assistant_threads_setStatus(channel_id="C1", thread_ts="6.0", status="")
    assert fake.status_of("C1", "6.0") == ""
    await client.assistant_threads_setStatus(channel_id="C1", thread_ts="7.0", status="is thinking…")
    clock.advance(120)
    assert fake.status_of("C1", "7.0") == "", "Slack removes a status after two minutes without a message"


async def test_a_streamed_message_is_recorded_like_a_posted_and_edited_one(
    slack: tuple[FakeSlack, AsyncWebClient], clock: Clock
) -> None:
    fake, client = slack
    await client.assistant_threads_setStatus(channel_id="C1", thread_ts="5.0", status="is thinking…")
    missing = await refused(lambda: client.chat_startStream(channel="C1", thread_ts="5.0"))
    assert missing.response["error"] == "missing_recipient_user_id"
    started = await client.chat_startStream(
        channel="C1",
        thread_ts="5.0",
        markdown_text="Hello",
        recipient_user_id="U1",
        recipient_team_id=fake.team_id,
    )
    ts = started["ts"]
    assert fake.status_of("C1", "5.0") == "", "starting a stream is a post in the thread"
    clock.advance(0.5)
    await client.chat_appendStream(channel="C1", ts=ts, markdown_text=" wide")
    clock.advance(0.5)
    await client.chat_appendStream(channel="C1", ts=ts, chunks=[{"type": "markdown_text", "text": " world"}])
    clock.advance(0.5)
    stopped = await client.chat_stopStream(channel="C1", ts=ts, markdown_text="!")
    assert stopped["message"]["text"] == "Hello wide world!"
    [message] = fake.in_channel("C1", "5.0")
    assert message.text == "Hello wide world!" and not message.streaming
    assert message.versions == ["Hello", "Hello wide", "Hello wide world", "Hello wide world!"]
    late = await refused(lambda: client.chat_appendStream(channel="C1", ts=ts, markdown_text="more"))
    assert late.response["error"] == "message_not_in_streaming_state"

    await client.chat_delete(channel="C1", ts=ts)
    assert fake.in_channel("C1", "5.0") == [] and fake.deleted == [message]
    start = clock() - 1.5
    assert fake.changes_in("C1", "5.0") == [
        Change(start, ts, "Hello"),
        Change(start + 0.5, ts, "Hello wide"),
        Change(start + 1.0, ts, "Hello wide world"),
        Change(start + 1.5, ts, "Hello wide world!"),
        Change(start + 1.5, ts, None),
    ]


async def test_a_stream_in_a_dm_needs_no_recipient(slack: tuple[FakeSlack, AsyncWebClient]) -> None:
    fake, client = slack
    started = await client.chat_startStream(channel="D1", thread_ts="5.0")
    await client.chat_stopStream(channel="D1", ts=started["ts"], markdown_text="done")
    assert [m.text for m in fake.in_channel("D1", "5.0")] == ["done"]


async def test_slack_closes_old_and_long_streams_and_a_workspace_may_refuse_them(
    slack: tuple[FakeSlack, AsyncWebClient], clock: Clock
) -> None:
    fake, client = slack
    top = await refused(lambda: client.chat_startStream(channel="D1", thread_ts=""))
    assert top.response["error"] == "invalid_arguments", "top-level streams are for channels only"
    fake.stream_max_chars, fake.stream_max_seconds = 10, 60.0
    long = (await client.chat_startStream(channel="D1", thread_ts="5.0", markdown_text="12345"))["ts"]
    await client.chat_appendStream(channel="D1", ts=long, markdown_text="678")
    closed = await refused(lambda: client.chat_appendStream(channel="D1", ts=long, markdown_text="9ab"))
    assert closed.response["error"] == "message_not_in_streaming_state"
    assert [m.text for m in fake.in_channel("D1", "5.0")] == ["12345678"] and not fake.in_channel(
        "D1", "5.0"
    )[0].streaming
    old = (await client.chat_startStream(channel="D1", thread_ts="6.0"))["ts"]
    clock.advance(61)
    expired = await refused(lambda: client.chat_stopStream(channel="D1", ts=old, markdown_text="x"))
    assert expired.response["error"] == "message_not_in_streaming_state"
    await client.chat_update(channel="D1", ts=old, text="edited once closed")
    too_long = await refused(
        lambda: client.chat_startStream(channel="D1", thread_ts="7.0", markdown_text="x" * 12_001)
    )
    assert too_long.response["error"] == "msg_too_long"

    fake.stream_max_chars = fake.stream_max_seconds = None
    open_ = (await client.chat_startStream(channel="D1", thread_ts="8.0"))["ts"]
    busy = await refused(lambda: client.chat_update(channel="D1", ts=open_, text="no"))
    assert busy.response["error"] == "cant_update_message"
    bad = await refused(
        lambda: client.chat_appendStream(channel="D1", ts=open_, chunks=[{"type": "task_update", "id": "1"}])
    )
    assert bad.response["error"] == "invalid_chunks"
    step = {"type": "task_update", "id": "s1", "title": "Searching", "status": "in_progress"}
    await client.chat_appendStream(channel="D1", ts=open_, chunks=[step])
    feedback = {
        "type": "context_actions",
        "elements": [{"type": "feedback_buttons", "action_id": "acechat:vote:1"}],
    }
    await client.chat_stopStream(
        channel="D1",
        ts=open_,
        chunks=[{**step, "status": "complete"}],
        blocks=[feedback],
        markdown_text="done",
    )
    (message,) = fake.in_channel("D1", "8.0")
    assert message.text == "done" and message.action_ids == ["acechat:vote:1"]
    assert message.tasks == {"s1": {**step, "status": "complete"}}

    fake.streaming_refused = "not_allowed_token_type"
    no = await refused(lambda: client.chat_startStream(channel="D1", thread_ts="9.0"))
    assert no.response["error"] == "not_allowed_token_type"


# --- Discord ---------------------------------------------------------------------------------------


def test_discords_documented_global_limit_is_the_default() -> None:
    fake = FakeDiscord()
    assert (fake.global_limit, fake.global_window) == (GLOBAL_LIMIT, GLOBAL_WINDOW) == (50, 1.0)
    assert {name: (r.limit, r.window) for name, r in ROUTE_LIMITS.items()} == {
        "create": (5, 5.0),
        "edit": (5, 5.0),
        "typing": (5, 5.0),
    }


async def rest(
    session: aiohttp.ClientSession,
    fake: FakeDiscord,
    method: str,
    path: str,
    body: dict[str, object] | None = None,
    *,
    auth: bool = True,
) -> tuple[int, dict[str, str], object]:
    headers = {"Authorization": f"Bot {fake.token}"} if auth else {}
    async with session.request(method, fake.api_base + path, headers=headers, json=body or {}) as reply:
        text = await reply.text()
        return reply.status, dict(reply.headers), json.loads(text) if text else None


async def test_the_51st_request_within_a_second_gets_a_global_429_in_discords_shape(clock: Clock) -> None:
    async with FakeDiscord(clock=clock) as fake, aiohttp.ClientSession() as session:
        for _ in range(GLOBAL_LIMIT):
            assert (await rest(session, fake, "GET", "/users/@me"))[0] == 200
        clock.advance(0.25)
        status, headers, body = await rest(session, fake, "GET", "/users/@me")
        assert status == 429
        assert body == {"message": "You are being rate limited.", "retry_after": 0.75, "global": True}
        assert headers["X-RateLimit-Global"] == "true" and headers["X-RateLimit-Scope"] == "global"
        assert headers["Retry-After"] == "1" and headers["Via"]
        assert headers["Content-Type"] == "application/json", "discord.py parses JSON only then"
        # Interaction callbacks and the webhook routes of interaction tokens are exempt.
        record = FakeInteraction(1, "itoken", {"channel_id": str(fake.CHANNEL_ID), "type": 2})
        fake.interactions[record.token] = record
        callback = await rest(
            session, fake, "POST", f"/interactions/1/{record.token}/callback", {"type": 1}, auth=False
        )
        assert callback[0] == 200
        clock.advance(0.75)
        assert (await rest(session, fake, "GET", "/users/@me"))[0] == 200
    assert fake.limited == {"global": 1} and fake.rate_limited == 1
    assert [c.limit for c in fake.calls].count("global") == 1
    assert [c.counted for c in fake.calls].count(False) == 1


async def test_message_create_is_limited_per_channel_with_the_buckets_headers(clock: Clock) -> None:
    channel, other = FakeDiscord.CHANNEL_ID, FakeDiscord.OTHER_CHANNEL_ID
    async with FakeDiscord(clock=clock, route_headers=True) as fake, aiohttp.ClientSession() as session:
        remaining = []
        for _ in range(5):
            status, headers, _ = await rest(session, fake, "POST", f"/channels/{channel}/messages")
            assert status == 200
            remaining.append(headers["X-RateLimit-Remaining"])
            assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Bucket"]
        assert remaining == ["4", "3", "2", "1", "0"]
        clock.advance(2.0)
        status, headers, body = await rest(session, fake, "POST", f"/channels/{channel}/messages")
        assert status == 429
        assert body == {"message": "You are being rate limited.", "retry_after": 3.0, "global": False}
        assert headers["X-RateLimit-Scope"] == "user" and headers["Retry-After"] == "3"
        assert "X-RateLimit-Global" not in headers
        status, headers, _ = await rest(session, fake, "POST", f"/channels/{other}/messages")
        assert (status, headers["X-RateLimit-Remaining"]) == (200, "4")
        typing = await rest(session, fake, "POST", f"/channels/{channel}/typing")
        assert typing[0] == 204, "typing has a bucket of its own"
        clock.advance(3.0)
        assert (await rest(session, fake, "POST", f"/channels/{channel}/messages"))[0] == 200
    assert fake.limited == {"create": 1}


Login = Callable[[FakeDiscord], Awaitable[HTTPClient]]


@pytest_asyncio.fixture
async def discord_http(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Login]:
    """discord.py's own HTTP client, logged in to a fake."""
    clients: list[HTTPClient] = []

    async def login(fake: FakeDiscord) -> HTTPClient:
        monkeypatch.setattr(Route, "BASE", fake.api_base)
        client = HTTPClient(asyncio.get_running_loop())
        await client.static_login(fake.token)
        clients.append(client)
        return client

    yield login
    for client in clients:
        await client.close()


def typing_in(channel: int) -> Route:
    return Route("POST", "/channels/{channel_id}/typing", channel_id=channel)


async def test_discord_py_waits_out_a_global_429_and_retries(clock: Clock, discord_http: Login) -> None:
    channels = [FakeDiscord.CHANNEL_ID, FakeDiscord.OTHER_CHANNEL_ID, FakeDiscord.THREAD_ID]
    async with FakeDiscord(clock=clock, global_limit=2) as fake:
        client = await discord_http(fake)
        sent = asyncio.gather(*(client.request(typing_in(c)) for c in channels))
        # Login took one request and the first typing call the other: the next two meet the limit.
        await fake.wait_for(lambda: fake.limited["global"] >= 2)
        clock.advance(GLOBAL_WINDOW)  # discord.py sleeps out retry_after (the window) before retrying
        await asyncio.wait_for(sent, 10)
    assert sorted(c for c, _ in fake.typing) == sorted(channels)
    refusals = [c for c in fake.calls if c.limit == "global"]
    assert len(refusals) >= 2 and all(c.status == 429 for c in refusals)


async def test_discord_py_gives_up_after_five_global_429s(
    discord_http: Login,
) -> None:
    async with FakeDiscord(global_limit=1, global_window=0.01) as fake:
        client = await discord_http(fake)
        fake.global_limit = 0
        with pytest.raises(discord.HTTPException) as caught:
            await client.request(typing_in(fake.CHANNEL_ID))
    assert caught.value.status == 429
    assert not isinstance(caught.value, discord.RateLimited)
    assert fake.limited == {"global": 5}


async def test_with_route_headers_discord_py_paces_a_channel_itself(
    discord_http: Login,
) -> None:
    """No 429: discord.py reads the bucket's headers and waits for its reset before the sixth post."""
    window = 0.3
    async with FakeDiscord(route_headers=True, create_window=window) as fake:
        client = await discord_http(fake)
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=fake.CHANNEL_ID)
        await asyncio.gather(*(client.request(route, json={"content": f"m{n}"}) for n in range(6)))
    assert fake.rate_limited == 0
    posts = [c.time for c in fake.calls_to("POST", r"/channels/\d+/messages")]
    assert len(posts) == 6 and posts[5] - posts[0] >= window


async def test_discord_changes_record_every_version_and_deletion(clock: Clock) -> None:
    async with FakeDiscord(clock=clock) as fake, aiohttp.ClientSession() as session:
        channel = fake.CHANNEL_ID
        path = f"/channels/{channel}/messages"
        async with session.post(
            fake.api_base + path, headers={"Authorization": f"Bot {fake.token}"}, json={"content": "a"}
        ) as reply:
            message = int((await reply.json())["id"])
        clock.advance(1)
        async with session.patch(
            f"{fake.api_base}{path}/{message}",
            headers={"Authorization": f"Bot {fake.token}"},
            json={"content": "a b"},
        ):
            pass
        clock.advance(1)
        assert (await rest(session, fake, "DELETE", f"{path}/{message}"))[0] == 204
    start = clock() - 2
    assert [(c.at - start, c.text) for c in fake.changes_in(channel)] == [(0, "a"), (1, "a b"), (2, None)]


async def test_slack_lists_posts_with_their_metadata_and_can_fail_after_delivery(
    slack: tuple[FakeSlack, AsyncWebClient],
) -> None:
    fake, _ = slack
    # No retries: slack_sdk's default would send a post that broke its connection again.
    client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url, retry_handlers=[])
    marker = {"event_type": "acechat_message", "event_payload": {"id": "m-1"}}
    top = await client.chat_postMessage(channel="C1", text="top level", metadata=marker)
    fake.drop_after_delivery["chat.postMessage"] = 1
    with pytest.raises(aiohttp.ClientError):
        await client.chat_postMessage(channel="C1", thread_ts=top["ts"], text="in the thread")
    fake.drop_before_delivery["chat.postMessage"] = 1
    with pytest.raises(aiohttp.ClientError):
        await client.chat_postMessage(channel="C1", thread_ts=top["ts"], text="never arrives")
    replies = await client.conversations_replies(channel="C1", ts=top["ts"], include_all_metadata=True)
    assert [m["text"] for m in replies["messages"]] == ["in the thread"], "delivered; the lost one not"
    history = await client.conversations_history(channel="C1", include_all_metadata=True)
    assert [(m["text"], m.get("metadata")) for m in history["messages"]] == [("top level", marker)]
    plain = await client.conversations_history(channel="C1")
    assert "metadata" not in plain["messages"][0], "metadata only when asked for"


async def test_discord_returns_the_first_message_for_an_enforced_nonce() -> None:
    channel = FakeDiscord.CHANNEL_ID
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        body = {"content": "hello", "nonce": "n-1", "enforce_nonce": True}
        fake.fail_after_delivery = 1
        status, _, _ = await rest(session, fake, "POST", f"/channels/{channel}/messages", body)
        assert status == 502
        status, _, again = await rest(session, fake, "POST", f"/channels/{channel}/messages", body)
        assert status == 200 and isinstance(again, dict) and again["nonce"] == "n-1"
        status, _, loose = await rest(
            session, fake, "POST", f"/channels/{channel}/messages", {"content": "hello", "nonce": "n-1"}
        )
        assert status == 200 and isinstance(loose, dict) and loose["id"] != again["id"], "not enforced"
        assert [m.content for m in fake.bot_messages(channel)] == ["hello", "hello"]
