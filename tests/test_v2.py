"""AI Chat v2 (issue 16): the endpoint, its events shown in answers, usage, tools and conversation deletes.

Everything runs through the real core against the fake API (tests/fakes/upstream.py), which speaks v2's
typed NDJSON events as the vendor's guide and OpenAPI spec describe them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from acechat.core import access, events, notices
from acechat.core.answer import AnswerView, progress_line, safe_url
from acechat.core.chat import ChatCore, Outcome, Question
from acechat.core.commands import Action, Command, parse_command
from acechat.core.events import ToolStarted
from acechat.core.facts import Actor
from acechat.core.permissions import Privilege, required
from acechat.core.sanitize import ThinkingMode
from acechat.core.scope import Scope
from acechat.core.settings import Settings, UpstreamSettings
from acechat.storage.records import PendingDelete
from tests.fakes.target import TEST_RULES, RecordingTarget
from tests.fakes.upstream import Behaviour, FakeUpstream

CHANNEL = Scope.of("test", "W1", "C1")
DANA = Actor("U1", "Dana")


def tool(tool_id: str, name: str, **tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "tool_id": tool_id, "tool_name": name, "input": tool_input}


def result(tool_id: str, output: str = "raw tool output", *, failed: bool = False) -> dict[str, Any]:
    return {"type": "tool_result", "tool_id": tool_id, "output": output, "is_error": failed}


def cite(url: str, title: str | None = None) -> dict[str, Any]:
    return {"type": "citation", "url": url, **({"title": title} if title else {})}


async def ask(core: ChatCore, text: str = "hi", actor: Actor = DANA) -> RecordingTarget:
    target = RecordingTarget()
    await core.ask(Question(CHANNEL, actor, text), target)
    return target


def shown(target: RecordingTarget) -> list[str]:
    """Every text the target's messages showed, posts and edits, in order."""
    return [c.text for c in target.calls if c.kind in ("post", "edit")]


# --- endpoint and request body ---------------------------------------------------------------------


async def test_v2_is_the_default_endpoint_and_sends_nothing_unattended(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    target = await ask(core)
    request = fake_upstream.requests[0]
    assert request["path"] == "/aichat2/conversations"
    body = request["body"]
    assert body["allowed_skills"] == [] and body["allowed_mcp_servers"] == []
    assert "max_turns" not in body, "tools are on by default"
    assert target.text == "Answer 1 to: Dana: hi"


async def test_v1_setting_keeps_the_old_endpoint_and_body(
    settings: Settings, fake_upstream: FakeUpstream
) -> None:
    v1 = dataclasses.replace(settings, upstream=dataclasses.replace(settings.upstream, api_version="v1"))
    core = await ChatCore.open(v1)
    try:
        first = await ask(core, "one")
        second = await ask(core, "two")
    finally:
        await core.aclose()
    one, two = fake_upstream.requests
    assert one["path"] == two["path"] == "/aichat/conversations"
    assert set(one["body"]) == {"model", "question", "stateful", "preset"}
    assert two["body"]["id"] in fake_upstream.conversations
    assert first.text == "Answer 1 to: Dana: one" and second.text == "Answer 2 to: Dana: two"


async def test_text_comes_from_content_not_from_the_v1_fields(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    lines = [
        {"type": "text_delta", "content": "Real ", "delta_answer": "WRONG ", "answer": "WRONG", "id": "c1"},
        {"type": "text_delta", "content": "text.", "id": "c1"},
        {
            "type": "done",
            "conversation_id": "c1",
            "usage": {"total_tokens": 3},
            "terminal_reason": "natural_stop",
        },
    ]
    fake_upstream.queue(Behaviour(raw=tuple(f"{_json(line)}\n".encode() for line in lines)))
    target = await ask(core)
    assert target.text == "Real text."


# --- events shown in the answer ---------------------------------------------------------------------


async def test_tool_steps_show_one_live_line_that_is_gone_from_the_final_answer(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    steps = [
        (
            tool("t1", "web_search", query="acechat <@123> @everyone"),
            result("t1", "SECRET RAW SEARCH OUTPUT"),
        ),
        (
            tool("t2", "web_fetch", url="https://www.example.com/docs/page?x=1"),
            result("t2", "the page: <!channel>", failed=True),
        ),
        (tool("t3", "mcp__github__list_issues"), result("t3")),
    ]
    texts: list[str] = []
    finals: list[str] = []
    for use, done in steps:
        fake_upstream.queue(Behaviour(answer="Found it.", fragment_delay=0.05, before=(use, done)))
        target = await ask(core)
        texts += shown(target)
        finals.append(target.text)
    assert "_🔎 Searching the web for “acechat @123 @\u200beveryone”…_" in texts, texts
    assert any("📖 Reading example.com/docs/page…" in t or "`web_fetch` did not work" in t for t in texts)
    assert "_🛠️ Using `mcp__github__list_issues`…_" in texts
    assert finals == ["Found it."] * 3, "the tool line is gone from the final answer"
    everything = "\n".join(texts)
    assert "SECRET RAW SEARCH OUTPUT" not in everything and "the page" not in everything
    assert "@everyone" not in everything and "<@123>" not in everything


async def test_tool_progress_costs_at_most_a_call_a_second_and_never_delays_the_text(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    steps = tuple(
        event for k in range(10) for event in (tool(f"t{k}", "web_search", query=f"q{k}"), result(f"t{k}"))
    )
    fake_upstream.queue(
        Behaviour(answer="The answer text.", fragment_size=4, fragment_delay=0.03, before=steps)
    )
    target = RecordingTarget()
    started = time.monotonic()
    await core.ask(Question(CHANNEL, DANA, "dig"), target)
    calls = [c for c in target.calls if c.kind in ("post", "edit")]
    progress = [c for c in calls if c.text.startswith("_")]
    first_text = next(c for c in calls if c.text.startswith("The"))
    phase = first_text.at - started
    assert len(progress) <= 1 + phase / 1.0, (len(progress), phase)
    assert target.text == "The answer text."


async def test_a_failed_tool_never_becomes_the_answer(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    fake_upstream.queue(
        Behaviour(
            answer="", before=(tool("t1", "web_search", query="q"), result("t1", "Error: boom", failed=True))
        )
    )
    target = await ask(core)
    assert "boom" not in target.text
    assert "empty answer" in target.text


async def test_sources_are_numbered_deduplicated_capped_and_safe(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    citations = [
        cite("https://a.example/1", "First <@42> @here [x](javascript:alert(1))"),
        cite("https://a.example/1", "Duplicate"),
        cite("javascript:alert(1)", "Script"),
        cite("ftp://files.example/x", "FTP"),
        {"type": "citation", "source": {"uri": "https://b.example/nested", "name": "Nested"}},
        {"type": "citation", "url": 42},
        cite("https://c.example/" + "x" * 10, "T" * 300),
        *[cite(f"https://d.example/{n}") for n in range(20)],
    ]
    fake_upstream.queue(Behaviour(answer="Answer.", after=tuple(citations)))
    target = await ask(core)
    text = target.text
    answer, _, sources = text.partition("\n\n**Sources**\n")
    assert answer == "Answer."
    lines = sources.splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("1. [First @42 @\u200bhere x javascript:alert 1](<https://a.example/1>)")
    assert lines[1] == "2. [Nested](<https://b.example/nested>)"
    assert lines[2].startswith("3. [" + "T" * 79 + "…](<https://c.example/")
    assert lines[3] == "4. <https://d.example/0>"
    assert "Duplicate" not in text and "Script" not in text and "ftp:" not in text


async def test_cards_and_artifacts_are_shown_never_dropped(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(
        Behaviour(
            answer="See below.",
            after=(
                {"type": "card", "title": "A cat", "image_url": "https://img.example/cat.png"},
                {"type": "card", "card": {"title": "Docs", "url": "https://docs.example/x"}},
                {
                    "type": "artifact",
                    "title": "script.py",
                    "language": "python",
                    "content": "print(1)\n```\n@everyone",
                },
                {"type": "artifact", "title": "big", "content": "y" * 5000},
            ),
        )
    )
    target = await ask(core)
    text = target.text
    assert "🖼️ [A cat](<https://img.example/cat.png>)" in text
    assert "🔗 [Docs](<https://docs.example/x>)" in text
    assert "**📎 script.py**\n```python\nprint(1)\n`\u200b``\n@\u200beveryone\n```" in text
    assert "1,500 more characters of this artifact are not shown" in text


async def test_an_error_event_keeps_the_text_marks_it_incomplete_and_shows_the_trace(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(Behaviour(answer="Partial answer here", fragment_size=8, error_after=2))
    target = await ask(core)
    assert target.text.startswith("Partial answer ")
    trace = fake_upstream.requests[0]["trace_id"]
    assert target.text.endswith(
        f"⚠️ The AI service failed to answer; try again in a moment. (trace `{trace}`) "
        "_(The answer above is incomplete.)_"
    )


async def test_done_records_token_usage_per_question(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await ask(core, "count me")
    await ask(core, "and me", actor=Actor("U2", "Lee"))
    # The fake reports a quarter of the characters as tokens, as `done.usage.total_tokens`.
    expected = [
        len(f"{n}: {q}") // 4 + len(f"Answer {i} to: {n}: {q}") // 4
        for i, n, q in ((1, "Dana", "count me"), (2, "Lee", "and me"))
    ]
    now = time.time()
    counted = await core.store.count_usage(
        CHANNEL.workspace_key, CHANNEL.channel_scope.key, "U1", access.day_start(now), now
    )
    assert counted.user_tokens == expected[0] > 0 and counted.user_questions == 1
    assert counted.workspace_tokens == sum(expected)


async def test_an_unnatural_stop_is_said_and_unknown_events_are_logged_once(
    core: ChatCore, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    events.UNKNOWN_TYPES.seen.clear()
    odd = ({"type": "hologram", "data": 1}, {"type": "hologram"}, {"type": "compact"})
    fake_upstream.queue(Behaviour(answer="Short.", before=odd, terminal_reason="max_turns"))
    with caplog.at_level(logging.INFO, logger="acechat.core.events"):
        target = await ask(core)
        await ask(core)
    assert (
        target.text
        == "Short.\n\n_The model stopped before a natural end: it reached its limit of tool steps._"
    )
    assert [r.getMessage() for r in caplog.records].count(
        "ignoring AI Chat stream events of unknown type 'hologram'"
    ) == 1


async def test_thinking_events_are_folded_like_think_tags(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.queue(
        Behaviour(answer="The answer.", before=({"type": "thinking", "content": "hmm </think> @everyone"},))
    )
    target = await ask(core)
    assert target.text == "> 💭 _Thought for a while_\n\nThe answer."


# --- pure rendering ------------------------------------------------------------------------------


def test_progress_lines_name_what_a_tool_does() -> None:
    assert progress_line(ToolStarted("1", "web_search", "best `pizza`\n*now*")) == (
        "🔎 Searching the web for “best pizza now ”…".replace(" ”", "”")
    )
    assert progress_line(ToolStarted("1", "fetch_url", "http://example.com/")) == "📖 Reading example.com…"
    assert progress_line(ToolStarted("1", "file_read", "report.pdf")) == "📖 Reading report.pdf…"
    assert progress_line(ToolStarted("1", "evil`name<@1>")) == "🛠️ Using `evilname1`…"


def test_safe_url_keeps_only_http_links_that_fit_in_angle_brackets() -> None:
    assert safe_url("https://x.example/a?b=c") == "https://x.example/a?b=c"
    for bad in ("javascript:alert(1)", "https://x.example/a>b", "https://", "http://x y", "mailto:a@b", None):
        assert safe_url(bad) is None


def test_view_length_counts_a_tool_line_before_any_text() -> None:
    view = AnswerView(ThinkingMode.FOLD, TEST_RULES.mentions)
    assert len(view) == 0
    view.on_event(ToolStarted("1", "web_search", "q"))
    assert len(view) == 1 and view.render(streaming=True).startswith("_🔎")
    assert view.render(streaming=False) == ""


def _json(obj: object) -> str:
    import json

    return json.dumps(obj)


@pytest_asyncio.fixture
async def v1_core(upstream_settings: UpstreamSettings, tmp_path: Path) -> AsyncIterator[ChatCore]:
    settings = Settings(
        upstream=dataclasses.replace(upstream_settings, api_version="v1"), db_path=tmp_path / "a.db"
    )
    chat = await ChatCore.open(settings)
    try:
        yield chat
    finally:
        await chat.aclose()


async def test_v1_sends_attachments_as_references(v1_core: ChatCore, fake_upstream: FakeUpstream) -> None:
    from acechat.core.facts import Attachment

    files = (Attachment("https://cdn.example/cat.png", "cat.png", "image/png", 10),)
    assert await v1_core.ask(Question(CHANNEL, DANA, "look", files), RecordingTarget()) is Outcome.ANSWERED
    body = fake_upstream.bodies[0]
    assert (
        body is not None and body["references"] == ["https://cdn.example/cat.png"] and "message" not in body
    )


# --- tools are an admin's choice -----------------------------------------------------------------

ADMIN = Actor("U9", "Ada", privilege=Privilege.WORKSPACE_ADMIN)
CHANNEL_ADMIN = Actor("U8", "Cy", privilege=Privilege.CHANNEL_ADMIN)


def test_tools_grammar() -> None:
    assert parse_command("tools") == Command(Action.TOOLS_SHOW)
    assert parse_command("tools OFF") == Command(Action.TOOLS_SET, name="off")
    assert parse_command("tools default on") == Command(Action.TOOLS_DEFAULT, name="on")
    assert parse_command("tools default").action is Action.HELP
    assert parse_command("tools for research are great").action is Action.ASK
    assert required(Action.TOOLS_SET) is Privilege.CHANNEL_ADMIN
    assert required(Action.TOOLS_DEFAULT) is Privilege.WORKSPACE_ADMIN


async def test_tools_off_sends_max_turns_1_is_audited_shown_and_keeps_the_conversation(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await ask(core, "one")
    refused = await core.execute(CHANNEL, DANA, Command(Action.TOOLS_SET, name="off"))
    assert not refused.ok and "needs" in refused.text
    off = await core.execute(CHANNEL, CHANNEL_ADMIN, Command(Action.TOOLS_SET, name="off"))
    assert off.ok and off.public and "Cy turned tools off in this channel" in off.text
    await ask(core, "two")
    status = await core.execute(CHANNEL, DANA, Command(Action.STATUS))
    assert "**Tools:** off (channel)" in status.text
    one, two = fake_upstream.bodies
    assert one is not None and two is not None
    assert "max_turns" not in one and two["max_turns"] == 1
    assert two["id"] == next(iter(fake_upstream.conversations)), "turning tools off keeps the conversation"
    assert two["allowed_skills"] == [] and two["allowed_mcp_servers"] == []

    # The workspace default applies where a channel has not chosen, and only a workspace admin sets it.
    other = Scope.of("test", "W1", "C2")
    assert not (await core.execute(other, CHANNEL_ADMIN, Command(Action.TOOLS_DEFAULT, name="off"))).ok
    assert (await core.execute(other, ADMIN, Command(Action.TOOLS_DEFAULT, name="off"))).public
    shown_here = await core.execute(other, DANA, Command(Action.TOOLS_SHOW))
    assert "off (workspace setting)" in shown_here.text
    await core.execute(CHANNEL, CHANNEL_ADMIN, Command(Action.TOOLS_SET, name="on"))
    await ask(core, "three")
    assert "max_turns" not in fake_upstream.bodies[-1]  # type: ignore[operator]
    audit = await core.execute(CHANNEL, ADMIN, Command(Action.AUDIT))
    assert "tools default" in audit.text and audit.text.count("tools set") == 2


async def test_the_operator_default_turns_tools_off(settings: Settings, fake_upstream: FakeUpstream) -> None:
    core = await ChatCore.open(dataclasses.replace(settings, tools=False))
    try:
        await ask(core)
        status = await core.execute(CHANNEL, DANA, Command(Action.STATUS))
    finally:
        await core.aclose()
    assert fake_upstream.bodies[0]["max_turns"] == 1  # type: ignore[index]
    assert "**Tools:** off (default)" in status.text


# --- reset deletes the conversation at the service ------------------------------------------------


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_reset_deletes_the_previous_conversation_at_the_service(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await ask(core, "remember this")
    (conversation_id,) = fake_upstream.conversations
    reply = await core.execute(CHANNEL, DANA, Command(Action.RESET))
    assert reply.ok and reply.public
    await until(lambda: fake_upstream.deleted == [conversation_id])
    delete = fake_upstream.actions[-1]
    assert delete["body"] == {"action": "delete", "id": conversation_id, "model": core.settings.default_model}
    assert delete["path"] == "/aichat2/conversations"
    await until(lambda: not core._delete_soon.is_set())
    assert await core.store.due_deletes(time.time() + 10**6) == []


async def test_a_failed_delete_never_blocks_the_reset_and_is_retried_later(
    core: ChatCore, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    await ask(core, "remember this")
    (conversation_id,) = fake_upstream.conversations
    fake_upstream.queue(Behaviour.fail(500, "api_error"))
    with caplog.at_level(logging.WARNING, logger="acechat.core.chat"):
        reply = await core.execute(CHANNEL, DANA, Command(Action.RESET))
        assert reply.ok and "started a new conversation" in reply.text
        await until(lambda: any("could not delete conversation" in r.getMessage() for r in caplog.records))
    assert fake_upstream.deleted == []
    # The next question starts a new conversation at once; the old one waits for its retry.
    await ask(core, "fresh start")
    assert "id" not in fake_upstream.bodies[-1]  # type: ignore[operator]
    (pending,) = await core.store.due_deletes(time.time() + 10**6)
    assert pending.conversation_id == conversation_id and pending.attempts == 1
    # It survives a restart (it is in the database) and the next attempt after the back-off succeeds.
    await core.aclose()
    again = await ChatCore.open(core.settings)
    try:
        assert await again.run_deletes(now=time.time()) == 0, "not before its back-off"
        assert await again.run_deletes(now=pending.next_at + 1) == 1
    finally:
        await again.aclose()
    assert fake_upstream.deleted == [conversation_id]


async def test_an_already_deleted_conversation_counts_as_deleted(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await core.store.queue_delete(PendingDelete("gone-already", "m", 0, 0.0))
    assert await core.run_deletes(now=1.0) == 1
    assert await core.store.due_deletes(10**12) == []


async def test_v1_deletes_nothing(v1_core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await v1_core.ask(Question(CHANNEL, DANA, "hi"), RecordingTarget())
    assert (await v1_core.execute(CHANNEL, DANA, Command(Action.RESET))).ok
    assert await v1_core.store.due_deletes(10**12) == []
    assert len(fake_upstream.requests) == 1 and fake_upstream.actions == []


# --- questions the model asks back ------------------------------------------------------------------

ASKED = {
    "type": "ask_user_question",
    "tool_id": "toolu_ask_1",
    "tool_name": "ask_user_question",
    "question": "Chinese or English? <!here>",
    "options": ["Chinese", "English", {"label": "Both"}],
}


async def paused(core: ChatCore, fake_upstream: FakeUpstream, actor: Actor = DANA) -> RecordingTarget:
    fake_upstream.queue(Behaviour(answer="", before=(ASKED,), terminal_reason="awaiting_user_input"))
    return await ask(core, "write the report", actor=actor)


async def test_a_question_back_is_shown_with_numbered_choices_and_resumed_by_its_asker(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    asked = await paused(core, fake_upstream)
    assert asked.text == (
        "**❓ Chinese or English? !here**\n1. Chinese\n2. English\n3. Both\n"
        "_Reply with `answer NUMBER` or `answer` and your own words (the asker or a channel admin)._"
    )
    (conversation_id,) = fake_upstream.conversations
    assert fake_upstream.paused == {conversation_id: "toolu_ask_1"}

    stranger = RecordingTarget()
    assert await core.answer(CHANNEL, Actor("U7", "Kim"), "1", stranger) is Outcome.REFUSED
    assert stranger.notices == [notices.NOT_YOUR_QUESTION] and stranger.messages == {}
    assert len(fake_upstream.requests) == 1

    answered = RecordingTarget()
    assert await core.answer(CHANNEL, DANA, "2", answered) is Outcome.ANSWERED
    body = fake_upstream.bodies[-1]
    assert body is not None and body["id"] == conversation_id
    assert body["tool_results"] == [{"tool_use_id": "toolu_ask_1", "output": "English"}]
    assert answered.text == "Answer 2 to: (answered: English)"

    again = RecordingTarget()
    assert await core.answer(CHANNEL, DANA, "1", again) is Outcome.REFUSED
    assert again.notices == [notices.QUESTION_ANSWERED]
    assert len(fake_upstream.requests) == 2


async def test_a_channel_admin_may_answer_in_own_words_and_a_double_press_answers_once(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await paused(core, fake_upstream)
    first, second = RecordingTarget(), RecordingTarget()
    outcomes = await asyncio.gather(
        core.answer(CHANNEL, CHANNEL_ADMIN, "Klingon, please", first),
        core.answer(CHANNEL, DANA, "1", second),
    )
    assert sorted(o.value for o in outcomes) == ["answered", "refused"]
    resumed = [b for b in fake_upstream.bodies if b is not None and "tool_results" in b]
    assert len(resumed) == 1
    assert resumed[0]["tool_results"][0]["output"] in ("Klingon, please", "Chinese")
    assert notices.QUESTION_ANSWERED in first.notices + second.notices


async def test_a_new_question_skips_the_pending_one(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await paused(core, fake_upstream)
    await ask(core, "never mind, something else")
    assert "tool_results" not in fake_upstream.bodies[-1]  # type: ignore[operator]
    late = RecordingTarget()
    assert await core.answer(CHANNEL, DANA, "1", late) is Outcome.REFUSED
    assert late.notices == [notices.QUESTION_SKIPPED]
    assert await core.open_question(CHANNEL) is None


async def test_a_pending_question_survives_a_restart_and_the_text_grammar_answers_it(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await paused(core, fake_upstream)
    await core.aclose()
    again = await ChatCore.open(core.settings)
    try:
        assert (await again.open_question(CHANNEL)) is not None
        target = RecordingTarget()
        assert await again.run_line(CHANNEL, DANA, "answer 3", target) is Outcome.ANSWERED
        assert fake_upstream.bodies[-1]["tool_results"][0]["output"] == "Both"  # type: ignore[index]
        # With no question waiting, "answer …" is an ordinary question.
        plain = RecordingTarget()
        assert await again.run_line(CHANNEL, DANA, "answer me this", plain) is Outcome.ANSWERED
        assert fake_upstream.bodies[-1]["question"] == "Dana: answer me this"  # type: ignore[index]
    finally:
        await again.aclose()


async def test_a_reset_skips_the_pending_question(core: ChatCore, fake_upstream: FakeUpstream) -> None:
    await paused(core, fake_upstream)
    await core.execute(CHANNEL, DANA, Command(Action.RESET))
    target = RecordingTarget()
    assert await core.answer(CHANNEL, DANA, "1", target) is Outcome.REFUSED
    assert target.notices == [notices.QUESTION_SKIPPED]


async def test_a_mention_saying_answer_n_answers_the_waiting_question(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    await paused(core, fake_upstream)
    target = await ask(core, "answer 1")
    assert fake_upstream.bodies[-1]["tool_results"][0]["output"] == "Chinese"  # type: ignore[index]
    assert target.text == "Answer 2 to: (answered: Chinese)"


async def test_a_target_with_a_status_shows_the_tool_line_there_paced_and_posts_only_text(
    core: ChatCore, fake_upstream: FakeUpstream
) -> None:
    steps = tuple(
        event
        for k in range(6)
        for event in (tool(f"t{k}", "web_search", query=f"q{k} @here"), result(f"t{k}"))
    )
    fake_upstream.queue(Behaviour(answer="The answer text.", fragment_delay=0.2, before=steps))
    target = RecordingTarget(dataclasses.replace(RecordingTarget().limits, status_chars=30))
    await core.ask(Question(CHANNEL, DANA, "dig"), target)
    statuses = target.kinds("status")
    assert statuses and all(len(c.text) <= 30 and "@here" not in c.text for c in statuses), statuses
    assert all(b.at - a.at >= 0.99 for a, b in itertools.pairwise(statuses)), "at most one a second"
    posts = target.kinds("post")
    assert posts[0].text.startswith("The"), "the first post is answer text, not a tool line"
    assert all(c.at <= posts[0].at for c in statuses), "the status ends with the first post"
    assert not any("Searching" in c.text for c in target.calls if c.kind in ("post", "edit"))
    assert target.text == "The answer text."
