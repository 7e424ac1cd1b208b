"""A local fake of the Ace Data Cloud AI Chat API, v1 (`POST /aichat/conversations`) and v2
(`POST /aichat2/conversations`), following the API as its vendor documents it: bearer token check, JSON or
NDJSON replies by the accept header, stateful conversation ids with server-side memory, and scripted
misbehaviour for the next requests. v2 streams typed events (`text_delta`, tool steps, citations, a
question that pauses the turn until `tool_results` name its `tool_id`, `done` with usage) and takes
`action: delete`. The protocol
pieces it shares with the product's stand-in (`demo.standin`, what `acechat demo` talks to) come from there.

Run it on its own: `python -m tests.fakes.upstream --port 8765 --latency 0.3 --fragment-delay 0.02`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from acechat.demo.standin import (
    NDJSON,
    V1_PATH,
    V2_PATH,
    bearer_token,
    done,
    error_body,
    fragments,
    text_delta,
    v2_question,
)

log = logging.getLogger(__name__)


@dataclass
class Behaviour:
    """How the fake answers one request; the defaults give a normal, quick answer."""

    answer: str | None = None  # None: the fake's `answerer` writes it; "" is an empty answer
    status: int = 200
    code: str | None = None
    message: str | None = None
    retry_after: str | None = None
    error_body: bytes | None = None  # sent instead of the JSON error body
    error_content_type: str = "application/json"
    latency: float = 0.0  # before the status line
    fragment_size: int = 16  # characters per stream line
    fragment_delay: float = 0.0  # between stream lines
    newline: str = "\r\n"
    blank_lines: bool = False  # a blank line after every stream line
    delta_only: bool = False  # stream lines carry `delta_answer` but no `answer`
    cut_after: int | None = None  # stream: close the connection after this many lines
    garbage_after: int | None = None  # stream: a non-JSON line after this many lines, then the end
    error_after: int | None = None  # stream: an `error` line after this many lines, then the end
    error_line_code: str = "chat_error"
    malformed: bool = False  # JSON mode: a body that is not JSON
    wrapped: bool = False  # JSON mode: the reply inside {"status": ..., "data": {...}}
    raw: tuple[bytes, ...] | None = None  # a 200 body written as is, one write per piece
    gate: asyncio.Event | None = None  # awaited before answering, for ordering tests
    # v2 streams only: events written before the answer text, and after it (before `done`); an
    # `ask_user_question` among them pauses the conversation on its `tool_id`.
    before: tuple[dict[str, Any], ...] = ()
    after: tuple[dict[str, Any], ...] = ()
    terminal_reason: str = "natural_stop"
    no_done: bool = False  # v2: end the stream without its `done` event

    @classmethod
    def fail(
        cls,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: str | None = None,
    ) -> Behaviour:
        """An error reply with the documented body `{"error": {"code", "message"}, "trace_id"}`."""
        return cls(status=status, code=code, message=message, retry_after=retry_after)

    @classmethod
    def fail_raw(
        cls,
        status: int,
        body: bytes | str,
        content_type: str = "text/plain",
        *,
        retry_after: str | None = None,
    ) -> Behaviour:
        """An error reply with any body: HTML from a proxy, a bare-string `error`, and so on."""
        data = body.encode() if isinstance(body, str) else body
        return cls(status=status, error_body=data, error_content_type=content_type, retry_after=retry_after)


def default_answer(question: str, history: list[dict[str, Any]]) -> str:
    """Deterministic, and shows the server kept the conversation: "Answer 2 to: <question>"."""
    return f"Answer {len(history) + 1} to: {question}"


class FakeUpstream:
    """The fake server: tests read `requests` and `conversations`, and steer it with `queue()`."""

    def __init__(
        self, token: str = "test-token", *, any_token: bool = False, default: Behaviour | None = None
    ) -> None:
        self.token = token
        self.any_token = any_token
        self.default = default or Behaviour()
        self.script: list[Behaviour] = []
        # Each: {"body": dict | None, "accept", "authorization", "content_type", "trace_id"}.
        self.requests: list[dict[str, Any]] = []
        # Conversation id -> turns {"question", "preset", "model", "references", "answer"}.
        self.conversations: dict[str, list[dict[str, Any]]] = {}
        # v2: conversation id -> the tool_id its paused question waits on; ids deleted by `action: delete`.
        self.paused: dict[str, str] = {}
        self.deleted: list[str] = []
        # Requests with an `action` other than `chat`, recorded like `requests`.
        self.actions: list[dict[str, Any]] = []
        self.answerer: Callable[[str, list[dict[str, Any]]], str] = default_answer
        self.active = 0
        self.peak_active = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._traces = itertools.count(1)
        self._arrived: asyncio.Condition | None = None

    def queue(self, *behaviours: Behaviour) -> None:
        """Use these behaviours, in order, for the next requests; then `default` again."""
        self.script.extend(behaviours)

    def set_default(self, **changes: Any) -> None:
        """Change the knobs of every unscripted request: `set_default(latency=0.2, fragment_delay=0.01)`."""
        self.default = replace(self.default, **changes)

    @property
    def bodies(self) -> list[dict[str, Any] | None]:
        return [r["body"] for r in self.requests]

    async def wait_for_requests(self, count: int) -> None:
        """Wait until `count` requests have arrived in total (wrap it in `asyncio.timeout`)."""
        assert self._arrived is not None, "start() the fake first"
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(V1_PATH, self._handle)
        app.router.add_post(V2_PATH, self._handle)
        app.router.add_route("*", "/{tail:.*}", self._no_api)
        # Cancel handlers whose client went away (a read timeout, an abandoned stream) and do not
        # wait for sleeping handlers at shutdown.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096)
        await site.start()
        self._arrived = asyncio.Condition()
        bound = self._runner.addresses[0]
        self.url = f"http://{host}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _no_api(self, request: web.Request) -> web.Response:
        return self._error(404, "no_api", "No such API", self._trace())

    def _trace(self) -> str:
        return f"fake-trace-{next(self._traces)}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        trace_id = self._trace()
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        acting = isinstance(body, dict) and body.get("action", "chat") != "chat"
        # Conversation actions (`delete`) are kept apart: `requests` are the turns asked.
        (self.actions if acting else self.requests).append(
            {
                "body": body,
                "accept": request.headers.get("accept", ""),
                "authorization": request.headers.get("authorization"),
                "content_type": request.headers.get("content-type", ""),
                "trace_id": trace_id,
                "path": request.path,
            }
        )
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            return await self._reply(request, body, trace_id)
        finally:
            self.active -= 1

    async def _reply(self, request: web.Request, body: Any, trace_id: str) -> web.StreamResponse:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return self._error(400, "no_token", "No token provided", trace_id)
        if not self.any_token and token != self.token:
            return self._error(401, "invalid_token", "Invalid token", trace_id)
        v2 = request.path == V2_PATH
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._error(400, "bad_request", "model is required", trace_id)
        question = v2_question(body) if v2 else body.get("question")
        resuming = v2 and isinstance(body.get("tool_results"), list) and bool(body["tool_results"])
        action = body.get("action", "chat") if v2 else "chat"
        if action == "chat" and not isinstance(question, str) and not resuming:
            return self._error(400, "bad_request", "question is required", trace_id)

        b = self.script.pop(0) if self.script else self.default
        if b.gate is not None:
            await b.gate.wait()
        if b.latency:
            await asyncio.sleep(b.latency)
        if b.status != 200:
            if b.error_body is not None:
                return self._error(
                    b.status, None, "", trace_id, b.retry_after, b.error_body, b.error_content_type
                )
            message = b.message if b.message is not None else f"fake {b.code or 'error'}"
            return self._error(b.status, b.code, message, trace_id, b.retry_after)

        conversation_id = body.get("id")
        if conversation_id is not None:
            if not isinstance(conversation_id, str) or conversation_id not in self.conversations:
                return self._error(404, "not_found", "Conversation not found", trace_id)
            history = self.conversations[conversation_id]
        elif action != "chat":
            return self._error(400, "bad_request", "id is required", trace_id)
        elif body.get("stateful", v2) is True:
            conversation_id = str(uuid.uuid4())
            history = self.conversations[conversation_id] = []
        else:
            history = []
        if action == "delete":
            assert conversation_id is not None
            del self.conversations[conversation_id]
            self.paused.pop(conversation_id, None)
            self.deleted.append(conversation_id)
            reply = {"id": conversation_id, "success": True}
            return web.Response(body=json.dumps(reply).encode(), content_type="application/json")
        if action != "chat":
            return self._error(400, "bad_request", f"action {action} is not faked", trace_id)
        waiting = self.paused.pop(conversation_id, None) if conversation_id is not None else None
        if resuming:
            answered = body["tool_results"][0]
            if waiting is None or not isinstance(answered, dict) or answered.get("tool_use_id") != waiting:
                if waiting is not None and conversation_id is not None:
                    self.paused[conversation_id] = waiting
                return self._error(400, "bad_request", "tool_use_id does not match", trace_id)
            question = f"(answered: {answered.get('output')})"
        elif waiting is not None:
            history.append({"question": "(skipped by user)", "answer": ""})
        assert isinstance(question, str)
        text = b.answer if b.answer is not None else self.answerer(question, history)
        if conversation_id is not None:
            history.append(
                {
                    "question": question,
                    "preset": body.get("preset"),
                    "model": body["model"],
                    "references": body.get("references"),
                    "answer": text,
                }
            )
        log.debug("fake upstream: turn %d of %s, %d chars", len(history), conversation_id, len(text))

        headers = {"x-trace-id": trace_id}
        streaming = NDJSON in request.headers.get("accept", "")
        if b.raw is not None:
            return await self._write_raw(request, b, headers, NDJSON if streaming else "application/json")
        if streaming and v2:
            return await self._stream_v2(request, b, question, text, conversation_id, headers, trace_id)
        if streaming:
            return await self._stream(request, b, text, conversation_id, headers, trace_id)
        if b.malformed:
            return web.Response(body=b'{"answer": "cut', content_type="application/json", headers=headers)
        reply: dict[str, Any] = {"answer": text}
        if conversation_id is not None:
            reply["id"] = conversation_id
        if b.wrapped:
            reply = {"status": "succeed", "data": reply}
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json", headers=headers)

    async def _stream(
        self,
        request: web.Request,
        b: Behaviour,
        text: str,
        conversation_id: str | None,
        headers: dict[str, str],
        trace_id: str,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**headers, "content-type": NDJSON})
        await resp.prepare(request)
        pieces = fragments(text, b.fragment_size)
        so_far = ""
        try:
            for n in range(len(pieces) + 1):
                if n == b.cut_after and request.transport is not None:
                    request.transport.close()
                    return resp
                if n == b.garbage_after:
                    await resp.write(b"this is not json" + b.newline.encode())
                    break
                if n == b.error_after:
                    await resp.write(
                        error_body(b.error_line_code, "fake failure", trace_id) + b.newline.encode()
                    )
                    break
                if n == len(pieces):
                    break
                if n and b.fragment_delay:
                    await asyncio.sleep(b.fragment_delay)
                so_far += pieces[n]
                line: dict[str, Any] = {"delta_answer": pieces[n], "id": conversation_id}
                if not b.delta_only:
                    line["answer"] = so_far
                end = b.newline * 2 if b.blank_lines else b.newline
                await resp.write((json.dumps(line) + end).encode())
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nothing to tell it
        return resp

    async def _stream_v2(
        self,
        request: web.Request,
        b: Behaviour,
        question: str,
        text: str,
        conversation_id: str | None,
        headers: dict[str, str],
        trace_id: str,
    ) -> web.StreamResponse:
        """v2's typed events: `before`, the text as `text_delta`s, `after`, then `done`. The knobs
        `cut_after`, `garbage_after` and `error_after` count text lines, as in v1."""
        resp = web.StreamResponse(headers={**headers, "content-type": NDJSON})
        await resp.prepare(request)
        end = (b.newline * 2 if b.blank_lines else b.newline).encode()

        async def send(event: dict[str, Any]) -> None:
            if event.get("type") == "ask_user_question" and conversation_id is not None:
                self.paused[conversation_id] = str(event.get("tool_id"))
            await resp.write(json.dumps({"id": conversation_id, **event}).encode() + end)
            if b.fragment_delay:
                await asyncio.sleep(b.fragment_delay)

        pieces = fragments(text, b.fragment_size) if text else []
        try:
            for event in b.before:
                await send(event)
            for n in range(len(pieces) + 1):
                if n == b.cut_after and request.transport is not None:
                    request.transport.close()
                    return resp
                if n == b.garbage_after:
                    await resp.write(b"this is not json" + end)
                    break
                if n == b.error_after:
                    failure = {"type": "error", "message": "fake failure", "code": b.error_line_code}
                    await resp.write(json.dumps({**failure, "trace_id": trace_id}).encode() + end)
                    break
                if n == len(pieces):
                    for event in b.after:
                        await send(event)
                    if not b.no_done:
                        await send(done(conversation_id, question, text, b.terminal_reason))
                    break
                if n and b.fragment_delay:
                    await asyncio.sleep(b.fragment_delay)
                await resp.write(json.dumps(text_delta(pieces[n], conversation_id)).encode() + end)
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nothing to tell it
        return resp

    async def _write_raw(
        self, request: web.Request, b: Behaviour, headers: dict[str, str], content_type: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={**headers, "content-type": content_type})
        await resp.prepare(request)
        try:
            for n, piece in enumerate(b.raw or ()):
                if n and b.fragment_delay:
                    await asyncio.sleep(b.fragment_delay)
                await resp.write(piece)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    @staticmethod
    def _error(
        status: int,
        code: str | None,
        message: str,
        trace_id: str,
        retry_after: str | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> web.Response:
        headers = {"x-trace-id": trace_id}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if body is None:
            body = error_body(code, message, trace_id)
        return web.Response(status=status, body=body, content_type=content_type, headers=headers)


async def _serve(args: argparse.Namespace) -> None:
    default = Behaviour(
        latency=args.latency, fragment_delay=args.fragment_delay, fragment_size=args.fragment_size
    )
    fake = FakeUpstream(args.token, any_token=args.any_token, default=default)
    url = await fake.start(args.host, args.port)
    accepted = "any non-empty token" if args.any_token else args.token
    print(f"Fake AI Chat API listening on {url}", flush=True)
    print(f"  ACEDATACLOUD_API_BASE_URL={url}", flush=True)
    print(f"  ACEDATACLOUD_API_TOKEN: {accepted}", flush=True)
    print("Ctrl-C to stop.", flush=True)
    stop = asyncio.Event()
    # Scripts that start the fake in the background stop it with SIGTERM (their SIGINT may be ignored).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.upstream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="test-token", help="the bearer token to accept")
    parser.add_argument("--any-token", action="store_true", help="accept any non-empty token")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--fragment-delay", type=float, default=0.0, help="seconds between streamed lines")
    parser.add_argument("--fragment-size", type=int, default=16, help="characters per streamed line")
    parser.add_argument("--verbose", action="store_true", help="log every turn")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.verbose:
        log.setLevel(logging.DEBUG)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    print("Stopped.")


if __name__ == "__main__":
    main()
