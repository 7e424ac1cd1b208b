"""A fast, scripted fake of the AI Chat API for benchmarks: `python -m bench.upstream --port 0 [--latency S]`.

It streams NDJSON exactly as the API documents it (v1: `answer` so far, `delta_answer`, `id`, the body's
end being the answer's end; v2: typed events, `text_delta` with `content`, tool steps, citations, a
question back and `done`), but it is a bare asyncio protocol rather than an aiohttp application: at
tens of microseconds per request it never becomes the bottleneck of the bot it measures, which the
aiohttp-based `tests.fakes.upstream` (about a millisecond per request) does at a thousand answers.

A question may carry its own timeline, so one server in its own process plays every scenario:
`bench:tag=T,latency=0.3,n=150,size=4,gap=0.02,pause=0.4,at=75` waits 0.3 s before the status line,
then sends 150 fragments of 4 characters 20 ms apart, with 0.4 s more before fragment 75. On v2,
`tools=10,tool_gap=0.1,cites=8,ask=1` adds 10 tool steps (`tool_use` then `tool_result`) 0.1 s apart
before the text, 8 citations after it (`early=1`: before the text, with the first fragment), and a
question back (`ask_user_question`) that ends the turn. Fragments
go out against absolute deadlines, so long streams do not drift. For tagged questions the server
records when the request arrived and when its first and last fragments were written, and how many
requests carried it (`GET /timings`; `time.monotonic()`, a clock every process on a Linux machine
shares).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import signal
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

PATH = b"/aichat/conversations"
V2_PATH = b"/aichat2/conversations"
_SCRIPT = re.compile(r"bench:(\S+)")
_WORDS = (
    "stream edit pace final split answer channel model reply token budget window latency fragment "
    "message thread scope preset queue worker"
).split()


@dataclass(frozen=True)
class Script:
    tag: str = ""
    latency: float = 0.0
    n: int = 4
    size: int = 16
    gap: float = 0.0
    pause: float = 0.0
    at: int = 0  # the pause comes before this fragment
    # v2 only: tool steps before the text, `tool_gap` apart; citations after it; a question back.
    tools: int = 0
    tool_gap: float = 0.1
    cites: int = 0
    ask: int = 0
    early: int = 0  # the citations go out before the text rather than after it

    def marker(self) -> str:
        """The text to put in a question to have it answered this way."""
        return (
            f"bench:tag={self.tag},latency={self.latency},n={self.n},size={self.size},"
            f"gap={self.gap},pause={self.pause},at={self.at},tools={self.tools},"
            f"tool_gap={self.tool_gap},cites={self.cites},ask={self.ask},early={self.early}"
        )

    @property
    def tools_time(self) -> float:
        return self.tools * self.tool_gap

    @property
    def text(self) -> str:
        return answer_text(self.n * self.size)

    @property
    def duration(self) -> float:
        """Seconds from the request to the last fragment, as scripted."""
        pause = self.pause if 0 < self.at < self.n else 0.0
        return self.latency + self.tools_time + max(0, self.n - 1) * self.gap + pause

    def parse(self, question: str) -> Script:
        """This script, overridden by a marker in `question` if it has one."""
        found = _SCRIPT.search(question)
        if found is None:
            return self
        fields = dict(item.partition("=")[::2] for item in found.group(1).split(","))
        return replace(
            self,
            tag=fields.get("tag", ""),
            latency=float(fields.get("latency", self.latency)),
            n=int(fields.get("n", self.n)),
            size=int(fields.get("size", self.size)),
            gap=float(fields.get("gap", self.gap)),
            pause=float(fields.get("pause", 0.0)),
            at=int(fields.get("at", 0)),
            tools=int(fields.get("tools", 0)),
            tool_gap=float(fields.get("tool_gap", self.tool_gap)),
            cites=int(fields.get("cites", 0)),
            ask=int(fields.get("ask", 0)),
            early=int(fields.get("early", 0)),
        )


_texts: dict[int, str] = {}


def answer_text(length: int) -> str:
    """Plain words in paragraphs, exactly `length` characters, ending in a letter: text that no
    formatter (Markdown to mrkdwn, mention guards, the splitter's trimming) changes."""
    cached = _texts.get(length)
    if cached is not None:
        return cached
    parts: list[str] = []
    size = 0
    for i in itertools.count():
        sep = "\n\n" if i and i % 40 == 0 else " " if i else ""
        word = _WORDS[i % len(_WORDS)]
        parts.append(sep + word)
        size += len(sep) + len(word)
        if size >= length + 2:
            break
    text = "".join(parts)[:length]
    while text and not text[-1].isalpha():
        text = text[:-1] + "x"
    _texts[length] = text
    return text


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request at a time per connection (what HTTP clients do)."""

    def __init__(self, server: FastUpstream) -> None:
        self._server = server
        self._buffer = bytearray()
        self._head: tuple[bytes, bytes, dict[bytes, bytes]] | None = None
        self._need = 0
        self._transport: asyncio.Transport | None = None
        self._timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = bytes(self._buffer[:end]).split(b"\r\n")
                del self._buffer[: end + 4]
                method, path, _ = lines[0].split(b" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                self._head = (method, path, headers)
                self._need = int(headers.get(b"content-length", b"0"))
            if len(self._buffer) < self._need:
                return
            body = bytes(self._buffer[: self._need])
            del self._buffer[: self._need]
            method, path, headers = self._head
            self._head = None
            self._request(method, path, headers, body)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _reply(self, status: str, content_type: bytes, body: bytes) -> None:
        self._write(
            b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), content_type, len(body), body)
        )

    def _request(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        arrived = time.monotonic()
        if method == b"GET" and path == b"/timings":
            self._reply("200 OK", b"application/json", json.dumps(self._server.timings).encode())
            return
        v2 = path.split(b"?")[0] == V2_PATH
        if method != b"POST" or path.split(b"?")[0] not in (PATH, V2_PATH):
            self._reply(
                "404 Not Found", b"application/json", b'{"error":{"code":"no_api","message":"no api"}}'
            )
            return
        if not headers.get(b"authorization", b"").lower().startswith(b"bearer "):
            self._reply(
                "400 Bad Request", b"application/json", b'{"error":{"code":"no_token","message":"-"}}'
            )
            return
        request: dict[str, Any] = json.loads(body)
        if v2 and request.get("action", "chat") != "chat":
            self._reply(
                "200 OK", b"application/json", json.dumps({"id": request.get("id"), "success": True}).encode()
            )
            return
        script = self._server.default.parse(str(request.get("question", "")))
        record: dict[str, float] | None = None
        if script.tag:
            record = self._server.timings.setdefault(script.tag, {})
            record["arrived"] = arrived
            # More than one means the bot asked the same question twice.
            record["requests"] = record.get("requests", 0) + 1
        conversation_id = request.get("id") or str(uuid.uuid4())
        text = script.text
        pieces = [text[i : i + script.size] for i in range(0, len(text), script.size)]
        loop = asyncio.get_running_loop()
        head = loop.time() + script.latency
        steps = script.tools if v2 else 0
        start = head + steps * script.tool_gap
        # Fragments due at the same moment go out in one write, as a server's buffer would send them.
        groups: dict[float, list[int]] = {}
        for i in range(len(pieces)):
            due = start + i * script.gap + (script.pause if 0 < script.at <= i else 0.0)
            groups.setdefault(due, []).append(i)
        so_far = [""]
        last = len(pieces) - 1
        opened = [False]

        def opening() -> list[bytes]:
            if opened[0]:
                return []
            opened[0] = True
            return [
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                b"x-trace-id: fast-%d\r\ntransfer-encoding: chunked\r\n\r\n" % next(self._server.traces)
            ]

        def line(event: dict[str, Any]) -> bytes:
            return _chunk((json.dumps(event) + "\r\n").encode())

        def tool_step(k: int) -> None:
            out = opening()
            tool_id = f"toolu_{k}"
            name, tool_input = (
                ("web_search", {"query": f"step {k}"})
                if k % 2 == 0
                else (
                    "web_fetch",
                    {"url": f"https://docs.example/page/{k}"},
                )
            )
            out.append(
                line(
                    {
                        "type": "tool_use",
                        "tool_id": tool_id,
                        "tool_name": name,
                        "input": tool_input,
                        "id": conversation_id,
                    }
                )
            )
            out.append(
                line(
                    {
                        "type": "tool_result",
                        "tool_id": tool_id,
                        "output": "x" * 200,
                        "is_error": False,
                        "id": conversation_id,
                    }
                )
            )
            self._write(b"".join(out))

        def citations() -> list[bytes]:
            return [
                line({"type": "citation", "url": f"https://source.example/{k}", "title": f"Source {k}"})
                for k in range(script.cites)
            ]

        def ending() -> list[bytes]:
            out = [] if script.early else citations()
            if script.ask:
                question = {"type": "ask_user_question", "tool_id": "toolu_ask", "question": "Which one?"}
                out.append(line({**question, "options": ["First", "Second", "Third"], "id": conversation_id}))
            reason = "awaiting_user_input" if script.ask else "natural_stop"
            usage = {
                "prompt_tokens": 10,
                "completion_tokens": len(text) // 4,
                "total_tokens": 10 + len(text) // 4,
            }
            done = {
                "type": "done",
                "conversation_id": conversation_id,
                "usage": usage,
                "terminal_reason": reason,
            }
            return [*out, line(done)]

        def send(indices: list[int]) -> None:
            out = opening()
            if v2 and script.early and indices[0] == 0:
                out += citations()
            for i in indices:
                so_far[0] += pieces[i]
                if v2:
                    event = {"type": "text_delta", "content": pieces[i], "id": conversation_id}
                else:
                    event = {"answer": so_far[0], "delta_answer": pieces[i], "id": conversation_id}
                out.append(line(event))
            if indices[-1] == last:
                if v2:
                    out += ending()
                out.append(b"0\r\n\r\n")
            self._write(b"".join(out))
            if record is not None:
                now = time.monotonic()
                record.setdefault("first", now)
                if indices[-1] == last:
                    record["end"] = now

        self._timers = [loop.call_at(head + k * script.tool_gap, tool_step, k) for k in range(steps)]
        self._timers += [loop.call_at(due, send, indices) for due, indices in groups.items()]


class FastUpstream:
    def __init__(self, default: Script | None = None) -> None:
        self.default = default or Script()
        self.timings: dict[str, dict[str, float]] = {}
        self.traces = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096)
        self.url = f"http://{host}:{self._server.sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


async def _serve(args: argparse.Namespace) -> None:
    server = FastUpstream(Script(latency=args.latency, n=args.fragments, size=args.fragment_size))
    url = await server.start(args.host, args.port)
    print(f"Fast fake AI Chat API listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the status line")
    parser.add_argument("--fragments", type=int, default=4, help="lines in an unscripted answer")
    parser.add_argument("--fragment-size", type=int, default=16, help="characters per line")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
