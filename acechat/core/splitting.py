"""Cut an answer into messages a platform accepts, without breaking fenced code blocks.

Rules of `split_message`:

- every chunk is at most `limit` characters and never blank;
- a chunk that ends inside a fenced code block (``` or ~~~) has the fence closed at its end, and the next
  chunk reopens it with the same opening line (e.g. ```python);
- a cut prefers the last blank line in the second half of the room, then the last line break there, then
  the last space; failing those, the last whitespace anywhere in the room; only a word longer than the
  room is cut mid-word. A cut never lands right after an opening fence or right before a closing one,
  and a cut at a space never leaves a fence at the start of a line;
- whitespace at a cut is dropped, and so is whitespace around the whole text, except that after a cut
  inside a code block the next line keeps its indentation.

Precisely: with `Chunk.body` being a chunk without the fence lines the splitter added, the text equals
`w0 + body1 + w1 + body2 + ... + bodyN + wN` where every `w` is whitespace (empty at a mid-word cut).

Growing text: a cut is decided from `text[:start + room + 1]` alone (`room` is the limit less the reopened
fence), and only once the text after `start` is known not to fit in one message. Appending text can
therefore never change a decided cut: `split_message(text)[:-1]` is a prefix of
`split_message(text + more)`, so core.streaming, which splits the whole answer so far on every update,
never has to rewrite a message once a later one exists.

Shown length: a platform may show a chunk longer than its text (Slack writes each `<` as `&lt;`). With a
`measure` (the length a chunk's text has once shown), a chunk that would show longer than `limit` is
decided again in a smaller room until it fits, so no message is ever cut after splitting. The first try
is scaled by how much longer the previous chunk showed. A smaller room reads less text, so a decided cut
stays decided as text grows; only the last message's own cut, when its text fits the room but not the
screen, may move while the answer grows (the streamer then edits that message).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

MIN_LIMIT = 50

_FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,})", re.MULTILINE)
_SPACE = re.compile(r"\s+")
_FENCES = ("```", "~~~")
_NEVER = sys.maxsize

# The length a message's text has once the platform shows it.
Measure = Callable[[str], int]


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


def _fence_lines(text: str, start: int, stop: int, fence: _Fence | None, limit: int) -> list[_Line]:
    """Fence-like lines starting in text[start:stop], reading nothing at or after `stop`.

    A line with no line break before `stop` may still go on, so its end is not known.
    """
    lines: list[_Line] = []
    for match in _FENCE_LINE.finditer(text, start, stop):
        lead = match.start() + len(match.group()) - len(match.group().lstrip(" "))
        end = text.find("\n", match.end(), stop)
        if end == -1:
            lines.append(_Line(match.start(), lead, _NEVER, fence))
            break
        line = text[match.start() : end]
        fence = _after(line, fence, limit)
        lines.append(_Line(match.start(), lead, match.start() + len(line.rstrip()), fence))
    return lines


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


def _choose(text: str, pos: int, hi: int, window: int, fence: _Fence | None, lines: list[_Line]) -> int:
    """The cut in text(pos, hi], reading nothing at or after `window`: the end of the chunk's body."""
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
        if newlines:
            return True
        # A mid-line cut must not put a fence at the start of a line, nor split a fence line. What the
        # window cuts short may still become a fence: nothing seen, or one or two fence characters.
        seen = text[stop : min(stop + 3, window)]
        if any(fence.startswith(seen) for fence in _FENCES):
            return False
        return not any(ln.lead < cut < ln.end for ln in lines)

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


def _decide(
    text: str, pos: int, fence: _Fence | None, scan_from: int, limit: int, room: int
) -> tuple[Chunk, _Fence | None, int]:
    """The chunk starting at `pos` when the text after it does not fit in `room` (at most the limit less
    the reopened fence); reads text[:pos + room + 1].

    `fence` is the fence open at `pos`, and every fence-like line before `scan_from` is accounted for in
    it. Returns the chunk, the fence open at its cut and where the next scan for fence lines starts.
    """
    reopen = fence.reopen if fence else ""
    window = pos + room + 1
    lines = _fence_lines(text, scan_from, window, fence, limit)
    reserve = max((len(f.close) for f in (fence, *(ln.fence for ln in lines)) if f), default=0)
    cut = _choose(text, pos, pos + max(1, room - reserve), window, fence, lines)
    counted = [ln for ln in lines if ln.end <= cut]
    after = counted[-1].fence if counted else fence
    pending = next((ln.start for ln in lines if ln.end > cut), cut)
    return Chunk(text[pos:cut], reopen, after.close if after else ""), after, min(cut, pending)


def _fitted(
    text: str, pos: int, fence: _Fence | None, scan_from: int, limit: int, room: int, measure: Measure
) -> tuple[Chunk, _Fence | None, int, float]:
    """`_decide` in rooms made smaller until the chunk shows within `limit`; also returns how much longer
    than its text the chunk shows, which is where the next chunk's first try starts.

    Each smaller room is the last one scaled by how much too long the chunk showed, aiming a little under
    the limit: density varies along the text, and every try costs a measure.
    """
    while True:
        decided = _decide(text, pos, fence, scan_from, limit, room)
        written = decided[0].text
        shown = measure(written)
        if shown <= limit or room <= 1:
            return (*decided, shown / len(written))
        room = min(room - 1, _scaled(room, shown, limit))


def _scaled(room: int, shown: int, limit: int) -> int:
    return room * (limit - limit // 50) // shown


def split_chunks(text: str, limit: int, measure: Measure | None = None) -> list[Chunk]:
    """`split_message` with each chunk's added fence lines kept apart from its body."""
    if limit < MIN_LIMIT:
        raise ValueError(f"a message limit of {limit} is too small to split into (minimum {MIN_LIMIT})")
    end = len(text.rstrip())
    chunks: list[Chunk] = []
    cut = 0  # where the last chunk's body ended
    fence: _Fence | None = None  # the fence open at `cut`
    scan_from = 0
    growth = 1.0  # how much longer than its text the last chunk showed
    while True:
        pos = _skip(text, cut, end, fence)
        reopen = fence.reopen if fence else ""
        room = limit - len(reopen)
        if end - pos <= room:
            if measure is None or pos >= end:
                break
            shown = measure(reopen + text[pos:end])
            if shown <= limit:
                break
            # Fits the room, not the screen: this cut reads all the text there is, so it may move later.
            room = min(end - pos - 1, _scaled(end - pos, shown, limit))
        elif measure is not None and growth > 1:
            room = _scaled(room, round(growth * room), limit)
        if measure is None:
            chunk, fence, scan_from = _decide(text, pos, fence, scan_from, limit, room)
        else:
            chunk, fence, scan_from, growth = _fitted(text, pos, fence, scan_from, limit, room, measure)
        chunks.append(chunk)
        cut = pos + len(chunk.body)
    if pos < end:
        chunks.append(Chunk(text[pos:end], reopen))
    return chunks


def split_message(text: str, limit: int, measure: Measure | None = None) -> list[str]:
    """Split `text` into messages of at most `limit` characters (as `measure` counts them, if given);
    a blank text gives no messages."""
    return [chunk.text for chunk in split_chunks(text, limit, measure)]


def closing_fence(text: str) -> str:
    """The line that closes a fenced code block still open at the end of `text` ("" if none is open),
    so that text cut short can be followed by prose."""
    # A line break after the last line makes its end known, so the last fence line counts too.
    whole = text + "\n"
    lines = _fence_lines(whole, 0, len(whole), None, sys.maxsize)
    fence = lines[-1].fence if lines else None
    return "\n" + fence.char * fence.size if fence is not None else ""
