"""A local stand-in for the Ace Data Cloud AI Chat API on 127.0.0.1: v2 (`POST /aichat2/conversations`)
and v1 (`POST /aichat/conversations`).

It speaks the part of the API acechat uses: a bearer token (any one), one JSON reply or an NDJSON stream
by the `accept` header, stateful conversations that the server remembers under ids it generates, and the
documented error body. On v2 it streams typed events: a web search and a page read before the answer, two
sources after it, a question back with choices when asked to "choose", and `done` with token usage. Its answers are canned, not a model's: they say which persona (the preset's first
sentence) and model they came from, count the turns of the conversation, repeat the question and carry a
little Markdown, so presets, models, `/reset`, streaming and rendering can all be seen working.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from types import TracebackType
from typing import Any

from aiohttp import web

V1_PATH = "/aichat/conversations"
V2_PATH = "/aichat2/conversations"
NDJSON = "application/x-ndjson"
# Models that think aloud first (v1: a <think> block; v2: `thinking` events), so ACECHAT_THINKING can be
# seen at work.
REASONING_MODELS = ("deepseek-r1", "o1", "o3", "o3-mini", "o4-mini", "deepseek-v4-pro", "kimi-k2-thinking")
DOCS_URL = "https://platform.acedata.cloud/documents/aichat2-conversations"
SOURCES = (
    (DOCS_URL, "AI Chat v2 API integration guide"),
    ("https://github.com/AceDataCloud/Docs", "AceDataCloud/Docs on GitHub"),
)
QUOTE_CHARS = 500
REMEMBERED_SHOWN = 5
SENTENCE_CHARS = 160


def error_body(code: str | None, message: str, trace_id: str) -> bytes:
    """The documented shape of every error: `{"error": {"code", "message"}, "trace_id"}`."""
    return json.dumps({"error": {"code": code, "message": message}, "trace_id": trace_id}).encode()


def text_delta(piece: str, conversation_id: str | None) -> dict[str, Any]:
    """v2's text event, with the fields the guide says it keeps for v1 clients."""
    return {"type": "text_delta", "content": piece, "delta_answer": piece, "id": conversation_id}


def done(
    conversation_id: str | None, question: str, answer: str, reason: str = "natural_stop"
) -> dict[str, Any]:
    """v2's last event; token counts are a rough four characters a token, as the service never says."""
    prompt, completion = max(1, len(question) // 4), max(1, len(answer) // 4)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"type": "done", "conversation_id": conversation_id, "usage": usage, "terminal_reason": reason}


def v2_question(body: dict[str, Any]) -> str | None:
    """The text a v2 body asks: `question`, or the text blocks of `message` (a string or a list)."""
    message = body.get("message")
    if isinstance(message, str):
        return message
    if isinstance(message, list):
        return "\n".join(
            b["text"]
            for b in message
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    question = body.get("question")
    return question if isinstance(question, str) else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `authorization: Bearer TOKEN` header, or None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token


def fragments(text: str, size: int) -> list[str]:
    """`text` in pieces of `size` characters, as a stream sends it; an empty text is one empty piece."""
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def first_sentence(text: str) -> str:
    """The text up to its first full stop, question mark, exclamation mark or line break, clipped."""
    line = text.strip()
    ends = [i for i in (line.find(p) for p in (". ", "? ", "! ", "\n")) if i >= 0]
    if ends:
        line = line[: min(ends) + 1]
    return _clip(line.strip(), SENTENCE_CHARS)


def compose_answer(
    *, question: str, model: str, preset: str | None, earlier: list[str], streamed: bool
) -> str:
    """The canned answer to turn `len(earlier) + 1` of a conversation; the same input gives the same text."""
    turn = len(earlier) + 1
    how = "streamed line by line" if streamed else "sent as one JSON reply"
    parts = []
    if model in REASONING_MODELS:
        parts.append(
            f"<think>The stand-in plays {model}, which reasons before it answers; "
            "ACECHAT_THINKING decides whether you see this.</think>"
        )
    parts.append(f"**Local stand-in, not a real model** · model `{model}` · turn {turn} · {how}")
    if preset is None:
        parts.append("No preset reached me, so I speak as no one in particular.")
    else:
        sentence = first_sentence(preset)
        if sentence.startswith("You are ") and len(sentence) > len("You are ."):
            parts.append(f"Persona from the preset: *{sentence[len('You are ') :].rstrip('.')}*.")
        else:
            parts.append(f"The preset begins: “{sentence}”")
    quoted = "\n".join(f"> {line}" for line in _clip(question.strip(), QUOTE_CHARS).splitlines())
    parts.append(f"You asked:\n{quoted}")
    if earlier:
        shown = earlier[-REMEMBERED_SHOWN:]
        listed = "\n".join(
            f"{turn - len(shown) + n}. {_clip(' '.join(q.split()), 80)}" for n, q in enumerate(shown)
        )
        parts.append(
            f"A real model would answer here, knowing what was asked before in this conversation:\n{listed}"
        )
    else:
        parts.append(
            "A real model would answer here. This conversation is new; things to try:\n"
            "- `/preset set coder`, and the persona above changes\n"
            "- `/model set deepseek-r1`, and the model thinks before it answers\n"
            "- `/reset`, and the turn count starts again from 1"
        )
    parts.append(f'```python\nprint("turn {turn}, answered by {model}")\n```')
    return "\n\n".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _request_problem(body: Any, v2: bool = False) -> str | None:
    """What is wrong with a request body, in one line, or None when it is a valid request."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    required: tuple[str, ...] = ("model", "question")
    if v2:
        # v2 asks with `question` or `message`, resumes with `tool_results`, or acts on a conversation.
        asks = body.get("action", "chat") == "chat" and not body.get("tool_results")
        if asks and v2_question(body) is None:
            return "`question` or `message` is required"
        required = ("model",)
    for field in required:
        if not isinstance(body.get(field), str):
            return f"`{field}` is required and must be a string"
    for field, kind in (("preset", str), ("id", str), ("stateful", bool)):
        if body.get(field) is not None and not isinstance(body[field], kind):
            return f"`{field}` must be a {kind.__name__}"
    references = body.get("references")
    if references is not None and not (
        isinstance(references, list) and all(isinstance(r, str) for r in references)
    ):
        return "`references` must be a list of strings"
    return None


def _error(status: int, code: str, message: str, trace_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(code, message, trace_id),
        content_type="application/json",
        headers={"x-trace-id": trace_id},
    )


class StandIn:
    """The server. `conversations` maps each conversation id to its questions, oldest first."""

    def __init__(self, *, fragment_size: int = 16, fragment_delay: float = 0.02) -> None:
        self.fragment_size = fragment_size
        self.fragment_delay = fragment_delay  # seconds between stream lines, so streaming can be seen
        self.conversations: dict[str, list[str]] = {}
        # v2: conversation id -> the tool_id of the question it waits on.
        self.paused: dict[str, str] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._traces = itertools.count(1)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host` (an ephemeral port by default); returns the base URL."""
        app = web.Application()
        app.router.add_post(V1_PATH, self._handle)
        app.router.add_post(V2_PATH, self._handle)
        app.router.add_route("*", "/{tail:.*}", self._no_api)
        # Handlers of clients that went away are cancelled; shutdown does not wait for a stream's pauses.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _trace(self) -> str:
        return f"standin-{next(self._traces)}"

    async def _no_api(self, request: web.Request) -> web.Response:
        return _error(404, "no_api", "No such API", self._trace())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        trace_id = self._trace()
        v2 = request.path == V2_PATH
        if bearer_token(request.headers.get("authorization")) is None:
            return _error(400, "no_token", "No token provided", trace_id)
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        problem = _request_problem(body, v2)
        if problem is not None:
            return _error(400, "bad_request", problem, trace_id)

        conversation_id: str | None = body.get("id")
        if conversation_id is not None:
            if conversation_id not in self.conversations:
                return _error(404, "not_found", "Conversation not found", trace_id)
            earlier = self.conversations[conversation_id]
        elif body.get("action", "chat") != "chat":
            return _error(400, "bad_request", "`id` is required for this action", trace_id)
        elif body.get("stateful", v2) is True:
            conversation_id = str(uuid.uuid4())
            earlier = self.conversations[conversation_id] = []
        else:
            earlier = []
        headers = {"x-trace-id": trace_id}
        if v2 and body.get("action", "chat") != "chat":
            return self._act(body, conversation_id, trace_id)

        streamed = NDJSON in request.headers.get("accept", "")
        events: list[dict[str, Any]] = []
        if v2:
            question, events, text = self._v2_turn(body, conversation_id, earlier, streamed)
        else:
            question = body["question"]
            text = compose_answer(
                question=question,
                model=body["model"],
                preset=body.get("preset"),
                earlier=earlier,
                streamed=streamed,
            )
        earlier.append(question)

        if not streamed:
            reply = {"answer": text} if conversation_id is None else {"answer": text, "id": conversation_id}
            return web.json_response(reply, headers=headers)
        response = web.StreamResponse(headers={**headers, "content-type": NDJSON})
        await response.prepare(request)
        try:
            if v2:
                await self._write_v2(response, events, text, conversation_id, question)
            else:
                so_far = ""
                for n, piece in enumerate(fragments(text, self.fragment_size)):
                    if n and self.fragment_delay:
                        await asyncio.sleep(self.fragment_delay)
                    so_far += piece
                    line = {"answer": so_far, "delta_answer": piece, "id": conversation_id}
                    await response.write(json.dumps(line).encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nobody is left to tell
        return response

    def _act(self, body: dict[str, Any], conversation_id: str | None, trace_id: str) -> web.Response:
        """v2's conversation actions: `delete` is served; the others are not needed by acechat."""
        if body["action"] == "delete" and conversation_id is not None:
            del self.conversations[conversation_id]
            self.paused.pop(conversation_id, None)
            return web.json_response({"id": conversation_id, "success": True})
        return _error(400, "bad_request", f"the stand-in does not serve `{body['action']}`", trace_id)

    def _v2_turn(
        self, body: dict[str, Any], conversation_id: str | None, earlier: list[str], streamed: bool
    ) -> tuple[str, list[dict[str, Any]], str]:
        """(the question as remembered, the events before the text, the text) of one v2 turn.

        With tools allowed, every answer searches the web first and cites two pages; a question with
        the word "choose" in it is answered with a question back, whose choice the next turn uses."""
        waiting = self.paused.pop(conversation_id, None) if conversation_id else None
        results = body.get("tool_results")
        tools = body.get("max_turns") != 1
        if results:
            chosen = next((r.get("output") for r in results if r.get("tool_use_id") == waiting), None)
            question = f"(chose: {chosen})"
            text = (
                f"**Local stand-in, not a real model** · you chose **{chosen}**. A real model would now carry "
                "on with that choice, in the same conversation."
            )
            return question, [], text
        question = v2_question(body) or ""
        events: list[dict[str, Any]] = []
        if tools:
            query = " ".join(question.split())[:60] or "nothing"
            events += [
                {
                    "type": "tool_use",
                    "tool_id": "toolu_search",
                    "tool_name": "web_search",
                    "input": {"query": query},
                },
                {
                    "type": "tool_result",
                    "tool_id": "toolu_search",
                    "output": "(search results)",
                    "is_error": False,
                },
                {
                    "type": "tool_use",
                    "tool_id": "toolu_fetch",
                    "tool_name": "web_fetch",
                    "input": {"url": DOCS_URL},
                },
                {"type": "tool_result", "tool_id": "toolu_fetch", "output": "(page text)", "is_error": False},
            ]
            if "choose" in question.lower() and conversation_id is not None:
                self.paused[conversation_id] = "toolu_ask"
                events.append(
                    {
                        "type": "ask_user_question",
                        "tool_id": "toolu_ask",
                        "tool_name": "ask_user_question",
                        "question": "Which would you like the stand-in to pretend to do?",
                        "options": ["Write a summary", "Make a plan", "Compare options"],
                    }
                )
                return question, events, ""
        text = compose_answer(
            question=question,
            model=body["model"],
            preset=body.get("preset"),
            earlier=earlier,
            streamed=streamed,
        )
        if tools:
            text += "\n\nThe stand-in searched the web first (pretend) and cites two pages below."
        else:
            text += "\n\nTools are off here (`max_turns: 1`), so the stand-in did not search."
        return question, events, text

    async def _write_v2(
        self,
        response: web.StreamResponse,
        events: list[dict[str, Any]],
        text: str,
        conversation_id: str | None,
        question: str,
    ) -> None:
        async def write(event: dict[str, Any]) -> None:
            await response.write(json.dumps({**event, "id": conversation_id}).encode() + b"\n")

        thinking = text.startswith("<think>") and "</think>" in text
        if thinking:
            thought, _, text = text[len("<think>") :].partition("</think>")
            await write({"type": "thinking", "content": thought})
        paused = any(e["type"] == "ask_user_question" for e in events)
        for event in events:
            await write(event)
            if self.fragment_delay:
                await asyncio.sleep(self.fragment_delay * 10)
        for n, piece in enumerate(fragments(text, self.fragment_size) if text else []):
            if n and self.fragment_delay:
                await asyncio.sleep(self.fragment_delay)
            await write(text_delta(piece, conversation_id))
        if any(e["type"] == "tool_use" for e in events) and not paused:
            for url, title in SOURCES:
                await write({"type": "citation", "url": url, "title": title})
        reason = "awaiting_user_input" if paused else "natural_stop"
        await response.write(json.dumps(done(conversation_id, question, text, reason)).encode() + b"\n")
