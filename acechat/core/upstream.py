"""Client for the Ace Data Cloud AI Chat API: one question per call, its answer streamed (NDJSON).

v2 (`/aichat2/conversations`, the default) streams typed events: answer text and reasoning become
`AnswerUpdate`s; tool steps, sources, cards, artifacts, a question back and the end of the turn come out as
the events of `core.events`. v1 (`/aichat/conversations`) streams untyped lines of answer text.

Every failure leaves this module as `UpstreamError`, with a short message fit for a chat channel.
Every turn is stateful, so a request the service may have received is never sent again: only a 429
or a connection that never opened is retried, and never once answer text has arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from acechat.core.errors import UpstreamError
from acechat.core.events import Event, parse_event
from acechat.core.sanitize import THINK_CLOSE, THINK_OPEN
from acechat.core.settings import UpstreamSettings

log = logging.getLogger(__name__)

PATHS = {"v1": "/aichat/conversations", "v2": "/aichat2/conversations"}
NDJSON = "application/x-ndjson"

BASE_DELAY = 0.5
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 30.0
DETAIL_CHARS = 300
# A stream line holds the whole answer so far, so it can be long; this only stops a runaway body.
MAX_LINE_BYTES = 16 * 1024 * 1024

REJECTED = "The AI service could not accept this question."
BAD_TOKEN = "The AI service rejected this bot's API token; an admin must fix the configuration."
USED_UP = "The Ace Data Cloud balance is used up."
DISABLED = "Access to the AI service is disabled for this bot's account."
CONVERSATION_LOST = "The AI service could not find this conversation; it will start a new one."
MISCONFIGURED = "The AI service address is misconfigured."
BUSY = "The AI service is busy right now; try again in a moment."
FAILED = "The AI service failed to answer; try again in a moment."
UNREACHABLE = "The AI service cannot be reached right now."
TOO_SLOW = "The AI service took too long to answer."
UNREADABLE = "The AI service sent a malformed reply."
EMPTY = "The AI service sent an empty answer."
CUT_OFF = "The answer was cut off."

# (status, code) -> what the user reads; (status, None) is the fallback for that status.
# A 404 promises a new conversation only for `not_found`, the one code on which the core drops the id;
# any other 404 (an HTML page from a proxy, `no_api`) means the base URL is wrong.
USER_MESSAGES: dict[tuple[int, str | None], str] = {
    (300, None): MISCONFIGURED,
    (400, None): REJECTED,
    (400, "no_token"): BAD_TOKEN,
    # The OpenAPI spec lists this one under 400; the service's framework answers it with 401.
    (400, "token_mismatched"): BAD_TOKEN,
    (400, "api_not_implemented"): MISCONFIGURED,
    (401, None): BAD_TOKEN,
    (403, None): DISABLED,
    (403, "used_up"): USED_UP,
    (404, None): MISCONFIGURED,
    (404, "not_found"): CONVERSATION_LOST,
    (408, None): TOO_SLOW,
    (409, None): FAILED,
    (429, None): BUSY,
    (500, None): FAILED,
}

# An error line inside a 200 stream has a code but no status of its own.
CODE_STATUS: dict[str, int] = {
    "bad_request": 400,
    "no_token": 400,
    "api_not_implemented": 400,
    "invalid_token": 401,
    "token_expired": 401,
    "token_mismatched": 401,
    "used_up": 403,
    "disabled": 403,
    "no_api": 404,
    "not_found": 404,
    "too_many_requests": 429,
    "api_error": 500,
    "chat_error": 500,
}

# A 408, 409 or 5xx may come after the service appended the question to the conversation.
RETRY_STATUSES = frozenset({429})

# What json.loads calls for a str, without its per-call checks: every stream line goes through it.
_decode_json = json.JSONDecoder().decode


def user_message(status: int | None, code: str | None) -> str:
    """The chat-channel wording for an error reply (`status` None: an error line inside a stream)."""
    if status is None or 200 <= status < 300:
        status = CODE_STATUS.get(code or "", 500)
    if (status, None) not in USER_MESSAGES:
        status = 500 if status >= 500 else 300 if status < 400 else 400
    return USER_MESSAGES.get((status, code)) or USER_MESSAGES[(status, None)]


@dataclass(frozen=True, slots=True)
class Turn:
    """One question sent upstream."""

    question: str
    model: str
    # The system prompt text: sent on every turn, since the server may not remember it.
    preset: str | None = None
    conversation_id: str | None = None
    references: tuple[str, ...] = ()
    # v2 only. Attachments as `message` blocks after the question's text: (kind, url), kind being
    # "image_url" or "file_url"; v1 sends their URLs as `references`.
    blocks: tuple[tuple[str, str], ...] = ()
    # False sends `max_turns: 1`: one reply, no tool calls.
    tools: bool = True
    # Resumes a paused turn: (tool_use_id, output); the question is then ignored by the service.
    tool_results: tuple[tuple[str, str], ...] = ()


class AnswerText:
    """An answer growing fragment by fragment, joined only when read.

    Appending stays linear however many fragments arrive; `str()` joins what came since it was last
    read. `version` changes with every change, so a reader can tell whether to read again.
    """

    __slots__ = ("_joined", "_length", "_parts", "version")

    def __init__(self) -> None:
        self._joined = ""
        self._parts: list[str] = []
        self._length = 0
        self.version = 0

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        if self._parts:
            self._joined += "".join(self._parts)
            self._parts.clear()
        return self._joined

    def append(self, delta: str) -> None:
        self._parts.append(delta)
        self._length += len(delta)
        self.version += 1

    def replace(self, text: str) -> None:
        self._joined = text
        self._parts.clear()
        self._length = len(text)
        self.version += 1


@dataclass(frozen=True, slots=True)
class AnswerUpdate:
    """One streamed line that brought new text. `text` is the whole answer so far: the same object for
    every update of a stream, growing with it."""

    text: AnswerText
    delta: str
    conversation_id: str | None
    trace_id: str | None = None


# What a stream yields: new text, or another v2 event.
StreamItem = AnswerUpdate | Event


class AIChatClient:
    """Asks the AI Chat API, retrying only failures that happened before any answer arrived."""

    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._version = settings.api_version
        self._url = settings.base_url.rstrip("/") + PATHS[settings.api_version]
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep
        self._rng = rng or random.Random()
        # No total: the core caps an answer's duration; sock_read bounds the silence between reads.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )

    async def __aenter__(self) -> AIChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def api_version(self) -> str:
        return self._version

    async def delete(self, conversation_id: str, model: str) -> None:
        """Delete a conversation at the service (v2's `action: delete`); an unknown id counts as
        deleted. Raises `UpstreamError` on any other failure, for the caller to try again later."""
        body = {"action": "delete", "id": conversation_id, "model": model}
        try:
            async with self._http().post(
                self._url, json=body, headers=self._headers("application/json"), timeout=self._timeout
            ) as resp:
                if resp.status == 404:
                    code, _, _ = _parse_error_body(await resp.read())
                    if code == "not_found":
                        return
                await self._raise_for_status(resp)
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failure(exc, responded=False, partial=False) from exc

    async def stream(self, turn: Turn) -> AsyncGenerator[StreamItem, None]:
        """The answer as it is written; once an update was yielded, a failure is never retried."""
        body = _request_body(turn, self._version)
        attempt = 0
        while True:
            parser = _StreamParser(self._scrub)
            # One generator, not one per attempt inside another: every update passes a single layer.
            try:
                responded = False
                try:
                    async with self._http().post(
                        self._url, json=body, headers=self._headers(NDJSON), timeout=self._timeout
                    ) as resp:
                        await self._raise_for_status(resp)
                        responded = True
                        parser.trace_id = _header_trace(resp)
                        content = resp.content
                        while data := await content.readany():
                            for update in parser.feed(data):
                                yield update
                        for update in parser.finish():
                            yield update
                except (aiohttp.ClientError, OSError) as exc:
                    raise self._failure(exc, responded=responded, partial=bool(len(parser.text))) from exc
                return
            except UpstreamError as exc:
                if len(parser.text) or not self._may_retry(exc, attempt):
                    raise
                await self._back_off(exc, attempt)
                attempt += 1

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use so it binds to the running loop, never at import or construction.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                timeout=self._timeout,
            )
        return self._session

    def _headers(self, accept: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self._settings.token}", "accept": accept}

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        if 200 <= resp.status < 300:
            return
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, OSError):
            raw = b""
        code, message, trace_id = _parse_error_body(raw)
        raise UpstreamError(
            user_message(resp.status, code),
            status=resp.status,
            code=code,
            trace_id=trace_id or _header_trace(resp),
            detail=self._scrub(message or resp.reason or ""),
            retryable=resp.status in RETRY_STATUSES,
            retry_after=_retry_after(resp.headers.get("retry-after")),
        )

    def _failure(self, exc: BaseException, *, responded: bool, partial: bool) -> UpstreamError:
        """Word a transport failure; only failures before any reply are worth another attempt."""
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, aiohttp.InvalidURL):
            return UpstreamError(MISCONFIGURED, detail=detail)
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
            # No connection, so no request: the one failure safe to try again.
            return UpstreamError(UNREACHABLE, detail=detail, retryable=True)
        if isinstance(exc, TimeoutError):
            # The question reached the server: asking again would append it twice to the conversation.
            return UpstreamError(TOO_SLOW, detail=detail, partial=partial)
        if responded:
            return UpstreamError(CUT_OFF, detail=detail, partial=partial)
        # The connection broke after the request may have been sent: the service may have it already.
        return UpstreamError(FAILED, detail=detail)

    def _scrub(self, text: str) -> str:
        token = self._settings.token
        if token:
            text = text.replace(token, "[token]")
        text = " ".join(text.split())
        return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"

    def _may_retry(self, exc: UpstreamError, attempt: int) -> bool:
        return exc.retryable and not exc.partial and attempt < self._settings.retries

    async def _back_off(self, exc: UpstreamError, attempt: int) -> None:
        if exc.retry_after is not None:
            delay = min(exc.retry_after, MAX_RETRY_AFTER)
        else:
            delay = self._rng.uniform(0.0, min(MAX_DELAY, BASE_DELAY * 2**attempt))
        log.warning(
            "AI Chat API attempt %d of %d failed: %s (status=%s code=%s trace_id=%s); retrying in %.2fs",
            attempt + 1,
            self._settings.retries + 1,
            exc.user_message,
            exc.status,
            exc.code,
            exc.trace_id,
            delay,
        )
        await self._sleep(delay)


class _StreamParser:
    """Turns NDJSON bytes, in whatever pieces they arrive, into updates of the answer and v2 events."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self._scrub = scrub
        self._buffer = bytearray()
        self._scanned = 0
        self.text = AnswerText()
        self.conversation_id: str | None = None
        self.trace_id: str | None = None
        # v2 reasoning goes into the text as a leading <think> block, the form `ACECHAT_THINKING` folds.
        self._thinking = False
        self._answered = False
        # A turn that pauses on a question may end without answer text.
        self.paused = False

    def feed(self, data: bytes) -> Iterator[StreamItem]:
        """Updates from the complete lines in `data`, lazily: text before a bad line still gets out."""
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", max(start, self._scanned))) != -1:
            update = self._line(buffer[start:end])
            start = end + 1
            if update is not None:
                yield update
        del buffer[:start]
        self._scanned = len(buffer)
        if self._scanned > MAX_LINE_BYTES:
            raise self._error(UNREADABLE, "a stream line exceeded the size limit")

    def finish(self) -> list[StreamItem]:
        """The body closed: a last line may lack its newline, and there must have been some text."""
        update = self._line(self._buffer) if self._buffer else None
        self._buffer.clear()
        if self._thinking:
            self._thinking = False
            self.text.append(THINK_CLOSE)
        if not self.paused and not str(self.text).strip():
            raise self._error(EMPTY, "the stream ended without answer text")
        return [update] if update is not None else []

    def _line(self, raw: bytes | bytearray) -> StreamItem | None:
        try:
            # JSON allows whitespace (a CR, say) around the object; a blank line fails here and is skipped.
            obj = _decode_json(raw.decode())
        except (ValueError, RecursionError):
            raw = raw.strip()
            if not raw:
                return None
            try:
                obj = json.loads(raw)  # the encodings json.loads detects in bytes: a BOM, UTF-16 or 32
            except (ValueError, RecursionError):
                # RecursionError: a line of thousands of nested brackets.
                snippet = raw[:80].decode("utf-8", "replace")
                raise self._error(UNREADABLE, "a stream line is not JSON: " + snippet) from None
        if type(obj) is not dict:
            raise self._error(UNREADABLE, "a stream line is not a JSON object")
        kind = obj.get("type")
        if type(kind) is str and kind:
            return self._event(kind, obj)
        if "answer" not in obj:
            obj = _unwrap(obj)
        if obj.get("error"):
            code, message, trace_id = _error_fields(obj)
            self.trace_id = trace_id or self.trace_id
            raise self._error(user_message(None, code), message, code=code)
        conversation_id = obj.get("id")
        if conversation_id and isinstance(conversation_id, str):
            self.conversation_id = conversation_id
        answer = obj.get("answer")
        delta = obj.get("delta_answer")
        text = self.text
        if isinstance(answer, str):
            # The whole answer so far: what is new is its tail, unless the service rewrote earlier text.
            # Comparing costs as much as the line itself, so the work stays linear in what arrives.
            known = len(text)
            if len(answer) >= known and answer.startswith(str(text)):
                delta = answer[known:]
                if not delta:
                    return None
            else:
                delta = answer
            text.replace(answer)
        elif isinstance(delta, str):
            if not delta:
                return None
            text.append(delta)
        else:
            return None
        return AnswerUpdate(text, delta, self.conversation_id, self.trace_id)

    def _event(self, kind: str, obj: dict[str, Any]) -> StreamItem | None:
        """A v2 line. Text comes from `content` alone: `delta_answer` and `answer` are v1 leftovers."""
        conversation_id = obj.get("id") if kind != "done" else obj.get("conversation_id") or obj.get("id")
        if conversation_id and isinstance(conversation_id, str) and kind not in _TOOL_KINDS:
            self.conversation_id = conversation_id
        if kind == "text_delta":
            content = obj.get("content")
            if not isinstance(content, str) or not content:
                return None
            if self._thinking:
                self._thinking = False
                self.text.append(THINK_CLOSE)
            self._answered = True
            self.text.append(content)
            return AnswerUpdate(self.text, content, self.conversation_id, self.trace_id)
        if kind == "thinking":
            content = obj.get("content")
            if not isinstance(content, str):
                content = obj.get("thinking")
            if not isinstance(content, str) or not content or self._answered:
                # Reasoning after answer text began has no place in the answer: like a <think> block
                # anywhere but the start, it is not shown.
                return None
            if not self._thinking:
                self._thinking = True
                self.text.append(THINK_OPEN)
            # Its own closing tag would end the block early and show the rest as answer.
            content = content.replace(THINK_CLOSE, "</ think>")
            self.text.append(content)
            return AnswerUpdate(self.text, content, self.conversation_id, self.trace_id)
        if kind == "error":
            error = obj.get("error")
            nested = error if isinstance(error, dict) else {}
            code = obj.get("code") or nested.get("code")
            message = obj.get("message") or nested.get("message") or (error if isinstance(error, str) else "")
            trace_id = obj.get("trace_id")
            if isinstance(trace_id, str) and trace_id:
                self.trace_id = trace_id
            code = code if isinstance(code, str) and code else None
            message = message if isinstance(message, str) else ""
            raise self._error(user_message(None, code), message or "an error event", code=code)
        event = parse_event(kind, obj)
        if event is not None and kind == "ask_user_question":
            self.paused = True
        return event

    def _error(self, message: str, detail: str, *, code: str | None = None) -> UpstreamError:
        return UpstreamError(
            message,
            status=200,
            code=code,
            trace_id=self.trace_id,
            detail=self._scrub(detail),
            partial=bool(len(self.text)),
        )


# Events whose `id` may be the tool's rather than the conversation's.
_TOOL_KINDS = frozenset({"tool_use", "tool_result", "ask_user_question"})


def _request_body(turn: Turn, version: str = "v2") -> dict[str, Any]:
    body: dict[str, Any] = {"model": turn.model, "question": turn.question, "stateful": True}
    if turn.conversation_id:
        body["id"] = turn.conversation_id
    if turn.preset:
        body["preset"] = turn.preset
    if version == "v1":
        references = list(turn.references) + [url for _, url in turn.blocks]
        if references:
            body["references"] = references
        return body
    if turn.references:
        body["references"] = list(turn.references)
    if turn.blocks:
        # In order after the text, so "the second image" means what the asker means.
        message: list[dict[str, Any]] = [{"type": "text", "text": turn.question}]
        message += [{"type": kind, kind: {"url": url}} for kind, url in turn.blocks]
        # `message` is sent instead of `question`, as the v2 guide says.
        del body["question"]
        body["message"] = message
    if not turn.tools:
        body["max_turns"] = 1
    # Nothing runs unattended: no skill or MCP server may write without a person confirming.
    body["allowed_skills"] = []
    body["allowed_mcp_servers"] = []
    if turn.tool_results:
        body["tool_results"] = [{"tool_use_id": i, "output": o} for i, o in turn.tool_results]
    return body


def _unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """Some documentation pages show the reply inside `{"status": ..., "data": {...}}`."""
    data = obj.get("data")
    if isinstance(data, dict) and "answer" not in obj and "error" not in obj:
        return data
    return obj


def _parse_error_body(raw: bytes) -> tuple[str | None, str, str | None]:
    """(code, message, trace_id) from an error body, whatever its shape."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None, raw[:DETAIL_CHARS].decode("utf-8", "replace"), None
    if not isinstance(obj, dict):
        return None, str(obj), None
    return _error_fields(_unwrap(obj))


def _error_fields(obj: dict[str, Any]) -> tuple[str | None, str, str | None]:
    error = obj.get("error")
    trace_id = obj.get("trace_id")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    elif isinstance(error, str):
        # A bare string may be the code itself or a sentence.
        code, message = (error if error in CODE_STATUS else None), error
    else:
        code, message = obj.get("code"), obj.get("message")
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) else "",
        trace_id if isinstance(trace_id, str) and trace_id else None,
    )


def _header_trace(resp: aiohttp.ClientResponse) -> str | None:
    return resp.headers.get("x-trace-id") or resp.headers.get("trace-id") or None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
