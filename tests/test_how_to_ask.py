"""Refusals that tell someone how to ask word it as their platform does: the core owns the sentence,
the platform's rules (`PlatformRules.asking`, `.commands`) say how one asks and where the commands are.

On Slack a mention is a question and everything else, questions too, goes through the app's slash
command; on Discord a mention is a question and commands are slash commands; a platform that says
nothing (tests/relay_platform.py) gets the `ask QUESTION` grammar every adapter shares.
"""

from __future__ import annotations

import dataclasses
import re

from acechat.bots import discord_rules, slack_rules
from acechat.bots.slack_settings import SlackSettings
from acechat.core import notices
from acechat.core.chat import ChatCore
from acechat.core.commands import Action, Command
from acechat.core.platform import GENERIC_ASKING, GENERIC_COMMANDS, PlatformRules
from acechat.core.settings import Settings
from tests import relay_platform
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.fakes.target import RecordingTarget
from tests.fakes.upstream import FakeUpstream
from tests.test_discord import BOT, bot, fake, restore_endpoints, settings
from tests.test_slack import running
from tests.test_v2 import CHANNEL, DANA

__all__ = ["bot", "fake", "restore_endpoints", "settings"]  # fixtures

# "mention me" said where the platform's way is a command: to ask (`ask`), or to run one (`help`).
MENTION_FOR_A_COMMAND = re.compile(r"after the mention|mention me instead|say `help`", re.IGNORECASE)


def texts(rules: PlatformRules) -> list[str]:
    return [notices.empty_question(rules), notices.no_asking_here(rules)]


def test_slack_names_its_command_where_a_command_is_meant() -> None:
    for text in texts(slack_rules.RULES):
        assert "`/aichat` and your question" in text and not MENTION_FOR_A_COMMAND.search(text), text
    assert "`/aichat help` lists my commands." in notices.empty_question(slack_rules.RULES)
    # The app's own command, when the operator renamed it (SLACK_COMMAND).
    renamed = slack_rules.rules_for("/ask-ai")
    assert all("`/ask-ai` and your question" in t and "/aichat" not in t for t in texts(renamed))
    assert renamed.mentions is slack_rules.MENTIONS and renamed.rights == slack_rules.RULES.rights


def test_discord_still_says_mention_me_and_names_its_slash_command() -> None:
    for text in texts(discord_rules.RULES):
        assert "mention me with your question" in text and "`/ask`" in text, text
        assert "`help`" not in text, "Discord has no help command: its commands are the slash ones"


def test_a_platform_that_says_nothing_gets_the_shared_grammar_and_no_mention() -> None:
    for text in texts(relay_platform.RULES):
        assert GENERIC_ASKING in text and "mention" not in text, text
    assert notices.empty_question(relay_platform.RULES).endswith(GENERIC_COMMANDS)


async def test_a_question_handed_to_a_command_path_is_refused_in_the_target_s_words(core: ChatCore) -> None:
    class SlackTarget(RecordingTarget):
        rules = slack_rules.rules_for("/ask-ai")

    target = SlackTarget()
    reply = await core.run_command(CHANNEL, DANA, Command(Action.ASK, text="what is a monad?"), target)
    assert reply is not None and not reply.ok
    assert target.notices == [notices.no_asking_here(SlackTarget.rules)]


async def test_slack_an_empty_ask_names_the_operator_s_command(
    settings: Settings, slack: FakeSlack, fake_upstream: FakeUpstream
) -> None:
    slack_app = SlackSettings(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=slack.api_url, command="/ask-ai", port=0
    )
    renamed = dataclasses.replace(settings, platforms={"slack": slack_app})
    async with running(renamed) as slack_bot:
        payload = slack.command("ask", command="/ask-ai")
        await slack.deliver_http(slack_bot.url, payload)
        await slack_bot.adapter.transport.idle()
    [reply] = slack.responses_to(payload["response_url"].rsplit("/", 1)[1])
    assert reply.ephemeral and "`/ask-ai` and your question" in reply.text, reply.text
    assert not MENTION_FOR_A_COMMAND.search(reply.text)
    assert fake_upstream.requests == []


async def test_discord_a_mention_with_no_text_says_how_to_ask_there(
    fake: FakeDiscord, fake_upstream: FakeUpstream, bot: object
) -> None:
    asked = await fake.post_message(BOT)
    await fake.wait_for(lambda: any(m.reference_id == asked for m in fake.bot_messages()))
    [notice] = [m for m in fake.bot_messages() if m.reference_id == asked]
    assert notice.content == notices.empty_question(discord_rules.RULES)
    assert fake_upstream.requests == []
