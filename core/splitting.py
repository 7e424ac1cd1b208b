"""Cut an answer into messages a platform accepts, without breaking fenced code blocks.

Rules, shared by `split_message` and `StreamSplitter`:

- every chunk is at most `limit` characters and never blank;
- a chunk that ends inside a fenced code block (``` or ~~~) has the fence closed at its end, and the next
  chunk reopens it with the same opening line (e.g. ```python);
- a cut prefers the last blank line in the second half of the room, then the last line break there, then
  the last space; failing those, the last whitespace anywhere in the room; only a word longer than the
  room is cut mid-word. A cut never lands right after an opening fence or right before a closing one;
- whitespace at a cut is dropped, and so is whitespace around the whole text, except that after a cut
  inside a code block the next line keeps its indentation.

Precisely: with `Chunk.body` being a chunk without the fence lines the splitter added, the text equals
`w0 + body1 + w1 + body2 + ... + bodyN + wN` where every `w` is whitespace (empty at a mid-word cut).

Streaming: a cut is decided from `text[:start + room + 1]` alone (`room` is the limit less the reopened
fence), and only once the text after `start` is known not to fit in one message. Appending text can
therefore never change a decided cut: `split_message(text)[:-1]` is a prefix of
`split_message(text + more)`. `StreamSplitter` freezes a chunk as soon as its cut is decided, so the
streamer can finalize message N and continue in message N+1. Because the streamed text is formatted
(see core.sanitize) and formatting may still rewrite its last few characters, the splitter only decides
cuts from text at least `holdback` characters before the end.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

MIN_LIMIT = 50
# Covers every rewrite core.sanitize.format_answer can still make to the end of a growing answer.
DEFAULT_HOLDBACK = 256

_FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,})", re.MULTILINE)
_SPACE = re.compile(r"\s+")
_FENCES = ("```", "~~~")
_NEVER = sys.maxsize


@dataclass(frozen=True, slots=True)
class Chunk:
    """One message: `body` is a slice of the text; `reopen` and `close` are fence lines added around it."""

    body: str
    reopen: str = ""
    close: str = ""

    @property
    def text(self) -> str:
        return f"{self.reopen}{self.body}{self.close}"


@dataclass(frozen=True, slots=True)
class _Fence:
    char: str
    size: int
    # "" when the opening line is too long to repeat in every chunk; the block is then not carried over.
    reopen: str

    @property
    def close(self) -> str:
        return "\n" + self.char * self.size if self.reopen else ""


@dataclass(frozen=True, slots=True)
class _Line:
    """A line that starts like a fence. A cut at or after `end` comes after the whole line."""

    start: int
    lead: int  # where the fence characters begin
    end: int  # just after the last non-space character; _NEVER if the line's end is not known yet
    fence: _Fence | None  # the open fence after this line


def _opening(line: str, limit: int) -> _Fence | None:
    stripped = line.strip()
    char = stripped[0]
    size = len(stripped) - len(stripped.lstrip(char))
    if char == "`" and "`" in stripped[size:]:
        return None
    for reopen in (f"{stripped}\n", f"{char * size}\n"):
        if len(reopen) + 1 + size <= limit // 3:
            return _Fence(char, size, reopen)
    return _Fence(char, size, "")


def _after(line: str, fence: _Fence | None, limit: int) -> _Fence | None:
    if fence is None:
        return _opening(line, limit)
    stripped = line.strip()
    closes = len(stripped) >= fence.size and not stripped.lstrip(fence.char)
    return None if closes else fence


def _fence_lines(
    text: str, start: int, stop: int, fence: _Fence | None, limit: int, *, last_line: bool = False
) -> list[_Line]:
    """Fence-like lines starting in text[start:stop], reading nothing at or after `stop`.

    A line with no line break before `stop` is complete only if `last_line` says the text ends there.
    """
    lines: list[_Line] = []
    for match in _FENCE_LINE.finditer(text, start, stop):
        lead = match.start() + len(match.group()) - len(match.group().lstrip(" "))
        end = text.find("\n", match.end(), stop)
        if end == -1:
            if not last_line:
                lines.append(_Line(match.start(), lead, _NEVER, fence))
                break
            end = stop
        line = text[match.start() : end]
        fence = _after(line, fence, limit)
        lines.append(_Line(match.start(), lead, match.start() + len(line.rstrip()), fence))
    return lines


def _content_end(text: str, stop: int) -> int:
    stop = max(0, min(stop, len(text)))
    while stop and text[stop - 1].isspace():
        stop -= 1
    return stop


def _skip(text: str, cut: int, end: int, fence: _Fence | None) -> int:
    """Where the chunk after a cut starts: past the whitespace, but keeping a code line's indentation."""
    match = _SPACE.match(text, cut, end)
    if match is None:
        return cut
    if fence is not None:
        newline = text.rfind("\n", cut, match.end())
        if newline != -1:
            return newline + 1
    return match.end()


def _choose(text: str, pos: int, hi: int, fence: _Fence | None, lines: list[_Line]) -> int:
    """The cut in text(pos, hi]: the end of the chunk's body."""
    after_opening: set[int] = set()
    before_closing: set[int] = set()
    previous = fence
    for line in lines:
        if previous is None and line.fence is not None:
            after_opening.add(line.end)
        elif previous is not None and line.fence is None:
            before_closing.add(line.lead)
        previous = line.fence

    def allowed(cut: int, stop: int, newlines: int) -> bool:
        if cut in after_opening or stop in before_closing:
            return False
        # A mid-line cut must not put a fence at the start of a line, nor split a fence line.
        return newlines > 0 or (
            not text.startswith(_FENCES, stop) and not any(ln.lead < cut < ln.end for ln in lines)
        )

    def runs(start: int, stop: int) -> list[tuple[int, int, int]]:
        return [(m.start(), m.end(), m.group().count("\n")) for m in _SPACE.finditer(text, start, stop)]

    half = pos + (hi - pos) // 2
    while half > pos + 1 and text[half - 1].isspace():
        half -= 1
    late = runs(half, hi + 1)
    for needed in (2, 1, 0):
        for cut, stop, newlines in reversed(late):
            if newlines >= needed and allowed(cut, stop, newlines):
                return cut
    for cut, stop, newlines in reversed(runs(pos + 1, half)):
        if allowed(cut, stop, newlines):
            return cut
    inside = next((ln.lead for ln in lines if pos < ln.lead < hi < ln.end), None)
    return hi if inside is None else inside


class StreamSplitter:
    """Split a growing answer; chunks once returned by `feed` never change.

    Call `feed` with the whole answer so far (each call's text extending the previous one, apart from its
    last `holdback` characters), then `finish` with the complete answer. `finish` returns exactly
    `split_message(text, limit)` when the text stayed consistent.
    """

    def __init__(self, limit: int, *, holdback: int = DEFAULT_HOLDBACK) -> None:
        if limit < MIN_LIMIT:
            raise ValueError(f"a message limit of {limit} is too small to split into (minimum {MIN_LIMIT})")
        if holdback < 0:
            raise ValueError("holdback cannot be negative")
        self._limit = limit
        self._holdback = holdback
        self._chunks: list[Chunk] = []
        self._cut = 0  # where the last frozen body ended
        self._fence: _Fence | None = None  # the fence open at self._cut
        self._scan_from = 0  # fence-like lines before this are all accounted for in self._fence

    def feed(self, text: str) -> tuple[list[str], str]:
        """Return every frozen chunk so far and a preview (at most `limit` long) of the message after them."""
        self._advance(text, _content_end(text, len(text) - self._holdback))
        return [chunk.text for chunk in self._chunks], self._preview(text)

    def finish(self, text: str) -> list[str]:
        return [chunk.text for chunk in self._finish(text)]

    def _finish(self, text: str) -> list[Chunk]:
        end = _content_end(text, len(text))
        pos = self._advance(text, end)
        if pos < end:
            self._chunks.append(Chunk(text[pos:end], self._reopen))
        return list(self._chunks)

    @property
    def _reopen(self) -> str:
        return self._fence.reopen if self._fence else ""

    def _advance(self, text: str, end: int) -> int:
        """Freeze every chunk whose cut text[:end] decides; return where the unfrozen rest starts."""
        while True:
            pos = _skip(text, self._cut, end, self._fence)
            if end - pos <= self._limit - len(self._reopen):
                return pos
            chunk, self._cut, self._fence, self._scan_from = self._decide(text, pos)
            self._chunks.append(chunk)

    def _decide(self, text: str, pos: int) -> tuple[Chunk, int, _Fence | None, int]:
        """The chunk starting at `pos` when the text after it does not fit; reads text[:pos + room + 1]."""
        reopen = self._reopen
        room = self._limit - len(reopen)
        lines = _fence_lines(text, self._scan_from, pos + room + 1, self._fence, self._limit)
        reserve = max((len(f.close) for f in (self._fence, *(ln.fence for ln in lines)) if f), default=0)
        cut = _choose(text, pos, pos + room - reserve, self._fence, lines)
        counted = [ln for ln in lines if ln.end <= cut]
        fence = counted[-1].fence if counted else self._fence
        pending = next((ln.start for ln in lines if ln.end > cut), cut)
        return Chunk(text[pos:cut], reopen, fence.close if fence else ""), cut, fence, min(cut, pending)

    def _preview(self, text: str) -> str:
        end = _content_end(text, len(text))
        pos = _skip(text, self._cut, end, self._fence)
        if pos >= end:
            return ""
        if end - pos > self._limit - len(self._reopen):
            return self._decide(text, pos)[0].text
        lines = _fence_lines(text, self._scan_from, end, self._fence, self._limit, last_line=True)
        fence = lines[-1].fence if lines else self._fence
        shown = self._reopen + text[pos:end]
        close = fence.close if fence else ""
        return shown + close if len(shown) + len(close) <= self._limit else shown


def split_chunks(text: str, limit: int) -> list[Chunk]:
    """`split_message` with each chunk's added fence lines kept apart from its body."""
    return StreamSplitter(limit, holdback=0)._finish(text)


def split_message(text: str, limit: int) -> list[str]:
    """Split `text` into messages of at most `limit` characters; a blank text gives no messages."""
    return [chunk.text for chunk in split_chunks(text, limit)]


def closing_fence(text: str) -> str:
    """The line that closes a fenced code block still open at the end of `text` ("" if none is open),
    so that text cut short can be followed by prose."""
    lines = _fence_lines(text, 0, len(text), None, sys.maxsize, last_line=True)
    fence = lines[-1].fence if lines else None
    return "\n" + fence.char * fence.size if fence is not None else ""
