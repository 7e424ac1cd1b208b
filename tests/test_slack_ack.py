"""The Slack adapter's transport: every request acknowledged before bolt or the core work on it, and
nothing run for a request that is not Slack's. Real slack-bolt over loopback against FakeSlack."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import aiohttp
import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from acechat.core.settings import Settings
from tests.fakes.slack import APP_TOKEN, BOT_USER_ID, Ack, FakeSlack, sign
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.test_slack import Bot, bot, running, settings, with_slack

__all__ = ["bot", "settings"]  # fixtures shared with test_slack.py


class CountedAcks(dict[str, Ack]):
    """FakeSlack keeps one ack per envelope id; this also counts how many arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.count: Counter[str] = Counter()

    def __setitem__(self, envelope_id: str, ack: Ack) -> None:
        self.count[envelope_id] += 1
        super().__setitem__(envelope_id, ack)


@contextmanager
def bolt_held() -> Iterator[tuple[asyncio.Event, list[str]]]:
    """Hold every request at the door of bolt's dispatch (HTTP and Socket Mode both go through it) until
    the event is set; the list names those that got there."""
    release, reached = asyncio.Event(), []
    dispatch = AsyncApp.async_dispatch

    async def held(app: AsyncApp, request: AsyncBoltRequest) -> BoltResponse:
        reached.append(str(request.body.get("event_id") or request.body.get("trigger_id")))
        await release.wait()
        return await dispatch(app, request)

    with patch.object(AsyncApp, "async_dispatch", held):
        try:
            yield release, reached
        finally:
            release.set()


async def post(url: str, body: str, content_type: str, **signing: Any) -> tuple[int, str]:
    headers = {"Content-Type": content_type, **sign(body, **signing)}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as reply:
        return reply.status, await reply.text()


def socket_settings(settings: Settings) -> Settings:
    return with_slack(settings, app_token=APP_TOKEN, signing_secret=None)


async def test_http_requests_are_acknowledged_before_bolt_runs_and_answered_after(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    command, mention = slack.command("acked first"), slack.mention(f"<@{BOT_USER_ID}> me too")
    with bolt_held() as (release, reached):
        for payload in (command, mention):
            delivery = await asyncio.wait_for(slack.deliver_http(bot.url, payload), 2)
            assert (delivery.status, delivery.body) == (200, "")
        # Both acknowledged while bolt is held: nothing has been asked or posted yet.
        await asyncio.wait_for(_until(lambda: len(reached) == 2), 2)
        assert slack.calls_to("users.info") == [] and fake_upstream.requests == []
        release.set()
        await bot.adapter.transport.idle()
    [answer] = slack.in_channel("C1")
    assert answer.text.startswith("*u1-display* asked: acked first") and answer.text.endswith("acked first")
    [threaded] = slack.in_channel("C1", mention["event"]["ts"])
    assert threaded.text.endswith("me too")


@pytest.mark.parametrize(
    "how",
    [
        {"secret": "wrong-secret"},
        {"timestamp": 1_000_000_000},
        {"signed": False},
    ],
    ids=["forged", "stale", "unsigned"],
)
async def test_a_badly_signed_event_gets_401_and_reaches_nothing(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream, how: dict[str, Any]
) -> None:
    at_startup = len(slack.calls)
    with bolt_held() as (_, reached):
        delivery = await slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> forged"), **how)
        await bot.adapter.transport.idle()
    assert delivery.status == 401
    assert reached == [] and len(slack.calls) == at_startup and fake_upstream.requests == []


async def test_url_verification_and_ssl_check_are_answered_in_the_reply(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    challenge = json.dumps({"token": "t", "challenge": "c-123", "type": "url_verification"})
    status, text = await post(bot.url, challenge, "application/json")
    assert status == 200 and json.loads(text) == {"challenge": "c-123"}
    status, _ = await post(bot.url, challenge, "application/json", secret="wrong")
    assert status == 401

    ssl_check = urllib.parse.urlencode({"ssl_check": "1", "token": "t"})
    status, text = await post(bot.url, ssl_check, "application/x-www-form-urlencoded")
    assert (status, text) == (200, "")
    await bot.adapter.transport.idle()
    assert slack.responses == [] and slack.messages == [] and fake_upstream.requests == []


async def test_a_retry_arriving_while_the_first_delivery_is_handled_is_answered_once(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(latency=0.2, answer="only once"))
    event = slack.mention(f"<@{BOT_USER_ID}> twice at once")
    command = slack.command("and this twice", channel="C2")
    deliveries = await asyncio.gather(
        *(slack.deliver_http(bot.url, p, retry_num=n) for p in (event, command) for n in (None, 1))
    )
    assert [d.status for d in deliveries] == [200] * 4
    await bot.adapter.transport.idle()
    assert len(fake_upstream.requests) == 2
    assert [m.text for m in slack.in_channel("C1", event["event"]["ts"])] == ["only once"]
    assert len(slack.in_channel("C2")) == 1  # one answer


async def test_bolt_uses_the_auth_test_made_at_start(
    bot: Bot, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    await asyncio.gather(
        *(
            slack.deliver_http(bot.url, slack.mention(f"<@{BOT_USER_ID}> n{n}", channel=f"C{n}"))
            for n in range(5)
        )
    )
    await bot.adapter.transport.idle()
    assert len(fake_upstream.requests) == 5
    assert len(slack.calls_to("auth.test")) == 1
    # The bot's own user id reached the listeners: the mention is stripped from the question.
    assert all(body is not None and "<@" not in body["question"] for body in fake_upstream.bodies)


async def test_socket_mode_acknowledges_each_envelope_once_before_bolt_runs(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    acks = slack.acks = CountedAcks()
    async with running(socket_settings(settings)) as bot:
        await slack.wait_for_socket()
        mention = slack.mention(f"<@{BOT_USER_ID}> over the socket")
        with bolt_held() as (release, reached):
            envelopes = [
                await slack.deliver_socket(slack.command("socket command")),
                await slack.deliver_socket(mention),
                await slack.deliver_socket(mention, retry_attempt=1),
            ]
            for envelope in envelopes:
                assert not (await slack.wait_for_ack(envelope, within=2)).payload
            await asyncio.wait_for(_until(lambda: len(reached) == 3), 2)
            assert fake_upstream.requests == []
            release.set()
        await slack.wait_until(lambda: len(fake_upstream.requests) == 2)
        await bot.adapter.transport.idle()
        # Acks travel in order on the one socket: once a later envelope's ack is in, a second ack of
        # the earlier ones would have been too.
        later = await slack.deliver_socket(slack.command("help"))
        await slack.wait_for_ack(later, within=2)
        await bot.adapter.transport.idle()
    assert acks.count == Counter([*envelopes, later])
    assert slack.in_channel("C1", mention["event"]["ts"])[0].text.endswith("over the socket")


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110
        await asyncio.sleep(0.005)
