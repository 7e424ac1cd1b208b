"""Adding a platform touches no file under acechat/: Relay (tests/relay_platform.py) brings its own
settings, mention rules, rights and target, and is served by the product's own loader and runtime."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from acechat.bots.adapter import ADAPTERS
from acechat.bots.runtime import serve
from acechat.core.platform import ZWSP
from acechat.core.settings import Settings, load_settings
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.relay_platform import SPEC, RelayNetwork, RelaySettings

REGISTRY = (*ADAPTERS, SPEC)
MAX_CHARS = 300


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def words(text: str) -> list[str]:
    """The text as a reader sees it: the invisible breaks in defused pings and the line breaks aside."""
    return text.replace(ZWSP, "").split()


def relay_settings(network: RelayNetwork, upstream: FakeUpstream, tmp_path: Path) -> Settings:
    """Read as `acechat` reads its settings, with Relay's group beside the built-in platforms'."""
    env = {
        "ACEDATACLOUD_API_TOKEN": upstream.token,
        "ACEDATACLOUD_API_BASE_URL": upstream.url,
        "ACECHAT_DB_PATH": str(tmp_path / "acechat.db"),
        "ACECHAT_USER_RATE": "0/60",
        "ACECHAT_CHANNEL_RATE": "0/60",
        "RELAY_URL": network.url,
        "RELAY_TOKEN": network.token,
        "RELAY_MAX_CHARS": str(MAX_CHARS),
    }
    return load_settings(env, None, platforms=[spec.settings for spec in REGISTRY])


@asynccontextmanager
async def serving(settings: Settings, network: RelayNetwork) -> AsyncIterator[None]:
    """`acechat run`'s runtime with the Relay adapter; stopped by SIGTERM, as a container stops it."""
    task = asyncio.create_task(serve(settings, [SPEC], health=False))
    try:
        await until(lambda: network.bot_joined.is_set() or task.done())
        assert not task.done(), task.exception()
        yield
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(10):
            await task


async def test_a_platform_defined_outside_acechat_is_served_end_to_end(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    async with RelayNetwork(max_chars=MAX_CHARS) as network:
        settings = relay_settings(network, fake_upstream, tmp_path)
        relay = settings.platform("relay", RelaySettings)
        assert relay == RelaySettings(network.url, network.token, MAX_CHARS)
        assert network.token in settings.secrets, "its secret setting is scrubbed from the logs"
        assert SPEC.configured(settings) and not [spec for spec in ADAPTERS if spec.configured(settings)]
        assert await SPEC.verify(settings) == f"relay network at {network.url}", "what check --online prints"

        async with serving(settings, network):
            # A question, answered in its channel.
            await network.say("dana", "#lab", "bot: hello there")
            await until(lambda: network.shown("#lab") == ["Answer 1 to: dana: hello there"])

            # A command: its reply goes to the asker alone.
            await network.say("dana", "#lab", "bot: model list")
            await until(lambda: len(network.notices) == 1)
            assert network.notices[0][0] == "dana" and "claude-sonnet-4-6" in network.notices[0][1]

            # A refusal cites the rights as Relay names them; an operator may.
            await network.say("dana", "#lab", "bot: preset set coder")
            await until(lambda: len(network.notices) == 2)
            assert network.notices[1] == (
                "dana",
                "`preset set` needs channel operator status (+o). Ask someone who has that, or the bot's operator.",
            )
            await network.say("olga", "#lab", "bot: preset set coder", op=True)
            await until(lambda: any("coder" in text for text in network.shown("#lab")[1:]))

            # A long answer full of Relay's pings: split to Relay's limit, every ping defused.
            paragraphs = [f"Step {i}: tell !all and @@bob that part {i} is done. " * 3 for i in range(12)]
            answer = "\n\n".join(paragraphs)
            fake_upstream.queue(Behaviour(answer=answer, fragment_size=200))
            before = len(network.messages)
            await network.say("dana", "#ops", "bot: write the release notes")
            await until(lambda: words(" ".join(network.shown("#ops"))) == words(answer))

    parts = network.shown("#ops")
    assert len(network.messages) - before == len(parts) >= 4, "split into several messages"
    assert all(len(part) <= MAX_CHARS for part in parts)
    assert network.pings == [], "nothing the model wrote pinged anyone"
