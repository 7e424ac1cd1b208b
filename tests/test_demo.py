"""`acechat demo`: the stand-in of the AI Chat API on its own, then the whole demo as a real subprocess."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from acechat.bots.cli import main
from acechat.core.presets import BUILTIN_PRESETS
from acechat.demo.standin import V1_PATH as PATH
from acechat.demo.standin import StandIn, compose_answer, first_sentence

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("acechat/core", "acechat/storage", "acechat/bots", "acechat/demo")
JSON_ACCEPT = {"authorization": "Bearer anything-at-all", "accept": "application/json"}
NDJSON_ACCEPT = {"authorization": "Bearer anything-at-all", "accept": "application/x-ndjson"}
CODER = BUILTIN_PRESETS["coder"].prompt


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandIn]:
    async with StandIn(fragment_size=8, fragment_delay=0) as server:
        yield server


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, standin: StandIn, body: Any, headers: dict[str, str] = JSON_ACCEPT
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(standin.url + PATH, data=data, headers=headers) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_a_stateful_json_conversation_remembers_its_turns(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    first = {"model": "gpt-4", "question": "dana: how do I sort?", "stateful": True, "preset": CODER}
    status, _, reply = await post(http, standin, first)
    assert status == 200
    conversation_id = reply["id"]
    assert uuid.UUID(conversation_id).version == 4, "the server makes the id"
    answer = reply["answer"]
    assert "model `gpt-4` · turn 1 · sent as one JSON reply" in answer
    assert "Persona from the preset: *a senior software engineer*." in answer
    assert "> dana: how do I sort?" in answer
    assert "\n- `/reset`" in answer and '```python\nprint("turn 1, answered by gpt-4")\n```' in answer

    second = {**first, "question": "dana: and backwards?", "id": conversation_id}
    status, _, reply = await post(http, standin, second)
    assert status == 200 and reply["id"] == conversation_id
    assert "turn 2" in reply["answer"]
    assert "\n1. dana: how do I sort?" in reply["answer"], "it lists what the conversation remembers"
    assert standin.conversations == {conversation_id: ["dana: how do I sort?", "dana: and backwards?"]}


async def test_a_stateless_question_gets_no_id_and_leaves_no_memory(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    status, _, reply = await post(http, standin, {"model": "gpt-4o", "question": "hi"})
    assert status == 200 and "id" not in reply
    assert "No preset reached me" in reply["answer"]
    assert standin.conversations == {}


async def test_a_streamed_answer_arrives_in_ndjson_lines(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    body = {"model": "gpt-4o", "question": "stream it", "stateful": True, "preset": CODER}
    async with http.post(standin.url + PATH, json=body, headers=NDJSON_ACCEPT) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        raw = await response.read()
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert len(lines) > 10, "the answer comes in many pieces"
    so_far = ""
    for line in lines:
        so_far += line["delta_answer"]
        assert line["answer"] == so_far, "each line carries the whole answer so far"
    (conversation_id,) = {line["id"] for line in lines}
    assert standin.conversations[conversation_id] == ["stream it"]
    assert "turn 1 · streamed line by line" in so_far
    assert "*a senior software engineer*" in so_far


async def test_an_unknown_conversation_is_404_in_the_documented_shape(
    standin: StandIn, http: aiohttp.ClientSession
) -> None:
    body = {"model": "gpt-4o", "question": "hi", "stateful": True, "id": str(uuid.uuid4())}
    status, headers, reply = await post(http, standin, body)
    assert status == 404
    assert reply["error"]["code"] == "not_found" and reply["error"]["message"]
    assert reply["trace_id"] == headers["x-trace-id"]


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b"not json", JSON_ACCEPT, "bad_request"),
        ({"question": "no model"}, JSON_ACCEPT, "bad_request"),
        ({"model": "gpt-4o", "question": 7}, JSON_ACCEPT, "bad_request"),
        ({"model": "gpt-4o", "question": "hi", "preset": ["a"]}, JSON_ACCEPT, "bad_request"),
        ({"model": "gpt-4o", "question": "hi", "references": "http://x"}, JSON_ACCEPT, "bad_request"),
        ({"model": "gpt-4o", "question": "hi"}, {"accept": "application/json"}, "no_token"),
        ({"model": "gpt-4o", "question": "hi"}, {"authorization": "Basic abc"}, "no_token"),
    ],
)
async def test_a_bad_request_is_400_in_the_documented_shape(
    standin: StandIn, http: aiohttp.ClientSession, body: Any, headers: dict[str, str], code: str
) -> None:
    status, _, reply = await post(http, standin, body, headers)
    assert status == 400
    assert reply["error"]["code"] == code and reply["error"]["message"]
    assert reply["trace_id"].startswith("standin-")
    assert standin.conversations == {}


async def test_another_path_is_no_api(standin: StandIn, http: aiohttp.ClientSession) -> None:
    async with http.get(standin.url + "/aichat3/conversations") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "no_api"


def test_answers_are_deterministic_and_show_what_reached_the_model() -> None:
    def answer(model: str, preset: str | None) -> str:
        return compose_answer(question="q", model=model, preset=preset, earlier=["a", "b"], streamed=True)

    assert answer("gpt-4o", CODER) == answer("gpt-4o", CODER)
    assert answer("gpt-4o", CODER) != answer("gpt-4", CODER)
    assert "turn 3" in answer("gpt-4o", CODER)
    assert answer("deepseek-r1", None).startswith("<think>"), "a reasoning model thinks first"
    assert "<think>" not in answer("gpt-4o", None)
    assert "The preset begins: “Talk like a pirate!”" in answer("gpt-4o", "Talk like a pirate! Always.")


def test_first_sentence() -> None:
    assert first_sentence("You are a tutor. Be kind.") == "You are a tutor."
    assert first_sentence("  Why? Because.") == "Why?"
    assert first_sentence("one line\nanother. line") == "one line"
    assert first_sentence("no end at all") == "no end at all"
    assert first_sentence("x" * 500) == "x" * 159 + "…"


def run_demo_process(cwd: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`acechat demo` as an operator on a fresh machine runs it: no token, no settings, no `.env`.

    Its temporary directory is `cwd/tmp`, to see that the demo's database goes when it ends.
    """
    (cwd / "tmp").mkdir()
    return subprocess.run(
        [sys.executable, "-m", "acechat.bots.cli", *args, "demo"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "TMPDIR": str(cwd / "tmp")},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_acechat_demo_end_to_end(tmp_path: Path) -> None:
    script = [
        "hello there",
        "/preset set coder",
        "how do I sort a list?",
        "and in reverse?",  # the second turn of the coder conversation, so /reset has a count to restart
        "/reset",
        "once more",
    ]
    result = run_demo_process(tmp_path, "".join(f"{line}\n" for line in script))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    first_line = out.splitlines()[0]
    assert first_line.startswith("acechat demo: answers come from a local stand-in of the AI Chat API")
    assert "not from a real model" in first_line

    said = out.split("bot> ")[1:]
    answers = [text for text in said if text.startswith("**Local stand-in")]
    # Each answer shows its tool steps as lines of their own (a terminal cannot edit), then the answer.
    steps = [text for text in said if text.startswith("_")]
    assert len(answers) == 4 and len(said) - len(steps) == 6, "four answers and two command replies"
    assert out.count("bot> _🔎 Searching the web for “root: hello there”…_") == 1
    # Later steps replace that line at most once a second: the stand-in's reading step may not show.
    assert all("**Sources**\n1. [AI Chat v2 API integration guide](<https://" in a for a in answers)
    assert all(" · streamed line by line" in answer for answer in answers), "the console streams"
    assert re.findall(r"· turn (\d+) ·", out) == ["1", "1", "2", "1"]
    assert "*a helpful, knowledgeable assistant for a team*" in answers[0]
    assert all("*a senior software engineer*" in answer for answer in answers[1:]), "the preset took effect"
    assert "set the preset for this channel to `coder`" in out, "the terminal user is an admin"
    assert "started a new conversation" in out
    assert list(tmp_path.rglob("*")) == [tmp_path / "tmp"], "the demo leaves nothing behind"


def test_the_operators_settings_apply_but_not_their_token_or_database(tmp_path: Path) -> None:
    real_db = tmp_path / "real.db"
    env_file = tmp_path / "operator.env"
    env_file.write_text(
        "ACEDATACLOUD_API_TOKEN=\nACEDATACLOUD_API_BASE_URL=not a url\n"
        f"ACECHAT_DB_PATH={real_db}\nACECHAT_THINKING=show\nACECHAT_DEFAULT_MODEL=deepseek-v4-pro\n"
    )
    result = run_demo_process(tmp_path, "think aloud\n", "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    assert "model `deepseek-v4-pro`" in result.stdout
    assert "> The stand-in plays deepseek-v4-pro, which reasons before it answers" in result.stdout, (
        "ACECHAT_THINKING=show quotes the reasoning"
    )
    assert not real_db.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_demo_help_describes_it(capsys: pytest.CaptureFixture[str]) -> None:
    def shown(*args: str) -> str:
        with pytest.raises(SystemExit):
            main([*args, "--help"])
        return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width

    assert "demo chat in the terminal against a built-in local stand-in of the AI Chat API" in shown()
    assert "no token, no network, and a throwaway database" in shown("demo")


def test_everything_installs_under_the_one_name_acechat() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["acechat*"]
    assert "COPY acechat /tmp/src/acechat" in (ROOT / "Dockerfile").read_text()
    assert {path.parent.name for path in (ROOT / "acechat").glob("*/__init__.py")} >= {
        "core",
        "bots",
        "storage",
        "demo",
    }


def imports_of(package: str, forbidden: str) -> list[str]:
    """Where the modules under `package` import `forbidden` or anything under it."""
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if name == forbidden or name.startswith(f"{forbidden}.")
            ]
    return offenders


def test_the_product_does_not_import_the_tests() -> None:
    assert [offender for package in PRODUCT for offender in imports_of(package, "tests")] == []


def test_the_demo_stand_in_does_not_import_the_bots() -> None:
    assert imports_of("acechat/demo", "acechat.bots") == []


def test_the_demo_asks_back_with_choices_and_the_console_answers_by_number(tmp_path: Path) -> None:
    result = run_demo_process(tmp_path, "please choose a format\n/answer 2\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "**❓ Which would you like the stand-in to pretend to do?**" in out
    assert "1. Write a summary\n2. Make a plan\n3. Compare options" in out
    assert "you chose **Make a plan**" in out
