"""`acechat run` as operators run it: a real process with Slack (HTTP mode) and Discord against the
fakes, `/healthz` and `/metrics` on a local port, JSON logs, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.fakes.discord import TOKEN, FakeDiscord
from tests.fakes.slack import BOT_TOKEN, BOT_USER_ID, FakeSlack
from tests.fakes.upstream import Behaviour, FakeUpstream
from tests.processes import BotProcess, bot_environment, free_port, get, metrics_once, slack_url, until

pytestmark = pytest.mark.fault


async def test_run_serves_health_metrics_json_logs_and_stops_cleanly_after_answers_in_flight(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack
) -> None:
    health_port = free_port()
    env = bot_environment(
        tmp_path,
        fake_upstream,
        slack,
        ACECHAT_HEALTH_PORT=str(health_port),
        ACECHAT_LOG_JSON="true",
        ACECHAT_USER_RATE="3/60",
        ACECHAT_UPSTREAM_RETRIES="0",
    )
    bot = await BotProcess.start(tmp_path, "run", env, name="run")
    health = f"http://127.0.0.1:{health_port}"
    try:
        await bot.wait_for_port(health_port)
        status, body = await get(f"{health}/healthz")
        assert status == 200, body
        assert json.loads(body) == {"status": "ok", "database_writable": True, "adapters": {"slack": True}}

        # Two answers, one upstream error, one rate-limit refusal (the fourth question in a minute).
        fake_upstream.queue(Behaviour(), Behaviour.fail(500, "api_error"))
        for text in ("first question", "second question", "third question", "fourth question"):
            delivery = await slack.deliver_http(slack_url(env), slack.command(text, user="U1", channel="C1"))
            assert delivery.status == 200

        # Four separate requests: Slack promises no order among them, so wait for all four outcomes.
        def answers() -> list[str]:
            return [m.text.partition("\n\n")[2] for m in slack.in_channel("C1")]

        def refusals() -> list[str]:
            return [r.text for r in slack.responses if "faster than this bot allows" in r.text]

        def outcomes() -> bool:
            texts = answers()
            answered = sum(t.startswith("Answer ") for t in texts)
            return len(refusals()) == 1 and answered == 2 and any(t.startswith("⚠️") for t in texts)

        await until(outcomes, what="answers")
        # The three questions the limit let through have all reached the upstream: the behaviour queued
        # next can only be the slow one's.
        assert len(fake_upstream.requests) == 3

        # An answer still streaming when SIGTERM arrives.
        fake_upstream.queue(Behaviour(latency=1.0, answer="finished after SIGTERM"))
        await slack.deliver_http(slack_url(env), slack.command("slow one", user="U2", channel="C2"))
        async with asyncio.timeout(10):
            await fake_upstream.wait_for_requests(4)
        answered = 'acechat_questions_total{outcome="answered",platform="slack"}'
        metrics = await metrics_once(health, lambda m: m.get(answered) == 2)
        assert metrics['acechat_questions_total{outcome="failed",platform="slack"}'] == 1
        assert metrics['acechat_questions_total{outcome="refused",platform="slack"}'] == 1
        assert metrics['acechat_upstream_errors_total{code="api_error"}'] == 1
        assert metrics['acechat_rate_limited_total{limit="user"}'] == 1
        assert metrics["acechat_in_flight"] == 1
        assert metrics["acechat_upstream_seconds_count"] == 2
        assert metrics["acechat_first_text_seconds_count"] == 2
        assert 'acechat_upstream_seconds_bucket{le="+Inf"}' in metrics

        assert await bot.stop(signal.SIGTERM) == 0
    finally:
        await bot.kill_if_running()

    assert slack.in_channel("C2")[-1].text.endswith("\n\nfinished after SIGTERM")
    entries = [json.loads(line) for line in bot.log.splitlines()]  # every line is one JSON object
    answers = [e for e in entries if e["message"] == "answered"]
    assert len(answers) == 3
    for entry in answers:
        assert entry["platform"] == "slack" and entry["channel"] in ("C1", "C2")
        assert entry["conversation_id"] in fake_upstream.conversations
        assert entry["trace_id"].startswith("fake-trace-")
    [failed] = [e for e in entries if e["message"].startswith("upstream error")]
    assert failed["level"] == "WARNING" and failed["trace_id"].startswith("fake-trace-")
    assert failed["status"] == 500 and failed["code"] == "api_error" and failed["channel"] == "C1"
    assert any(e["message"] == "waiting up to 10s for 1 answers in flight" for e in entries)
    assert entries[-1]["message"] == "stopped"
    assert fake_upstream.token not in bot.log and BOT_TOKEN not in bot.log


async def test_run_serves_discord_and_slack_together(
    tmp_path: Path, fake_upstream: FakeUpstream, slack: FakeSlack
) -> None:
    health_port = free_port()
    async with FakeDiscord(token=TOKEN.replace("fake-signature", "run-signature")) as discord:
        env = bot_environment(
            tmp_path,
            fake_upstream,
            slack,
            ACECHAT_HEALTH_PORT=str(health_port),
            DISCORD_BOT_TOKEN=discord.token,
            DISCORD_API_BASE_URL=discord.api_base,
            DISCORD_GATEWAY_URL=discord.gateway_url,
        )
        bot = await BotProcess.start(tmp_path, "run", env, name="run-both")
        health = f"http://127.0.0.1:{health_port}"
        try:
            await bot.wait_for_port(health_port)
            status, body = await get(f"{health}/healthz")
            assert status == 200, body
            assert json.loads(body)["adapters"] == {"discord": True, "slack": True}

            asked = await discord.post_message(f"<@{discord.BOT_ID}> hello from discord")
            await slack.deliver_http(slack_url(env), slack.mention(f"<@{BOT_USER_ID}> hello from slack"))
            answered = 'acechat_questions_total{outcome="answered",platform="%s"}'
            await metrics_once(
                health, lambda m: m.get(answered % "discord") == m.get(answered % "slack") == 1
            )
            [reply] = [m for m in discord.bot_messages() if m.reference_id == asked]
            assert reply.content.endswith("hello from discord")
            [threaded] = slack.messages
            assert (
                threaded.channel == "C1" and threaded.thread_ts and threaded.text.endswith("hello from slack")
            )

            await discord.drop_gateway()
            await until(lambda: len(discord.resumes) == 1, what="a resume")
            await discord.wait_ready()
            status, body = await get(f"{health}/healthz")
            assert status == 200, body

            assert await bot.stop(signal.SIGTERM) == 0
        finally:
            await bot.kill_if_running()
    assert "Traceback" not in bot.log, bot.log
    assert discord.token not in bot.log
