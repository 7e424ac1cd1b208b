"""Text crossing the Slack boundary: Slack's markup in, the core's Markdown out as mrkdwn.

Markdown is read by markdown-it-py (CommonMark, plus strikethrough and tables), whose tokenizer runs in
time linear in the text, and written out here as mrkdwn one token at a time. The writer is the only
place a `<…>` token is made: a link whose target is an `http(s)://` or `mailto:` URL. Every other `<`,
`>` and `&` in the output is an entity, so nothing the model writes (`[x](!channel)`, `<@U1>`,
`<!subteam^S1>`) can ping anyone, whatever the sanitiser upstream did or missed.
"""

from __future__ import annotations

import functools
import logging
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

import markdown_it.helpers
from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll
from markdown_it.rules_core import StateCore
from markdown_it.token import Token

from acechat.core.platform import ZWSP

log = logging.getLogger(__name__)

# Slack refuses texts near 4,000 characters with msg_too_long, far below the documented 40,000.
MAX_MESSAGE_CHARS = 3900
# What one call of Slack's streaming methods may carry as `markdown_text`; a streamed message is kept a
# little under it in all, so that however Slack joins its appends the whole fits a markdown block.
MAX_STREAM_CHARS = 12_000
MAX_STREAMED_MESSAGE_CHARS = 11_000
# How far `shown_length` measures: far enough for the splitter to scale a room down in one or two tries.
MEASURE_CAP = 8 * MAX_MESSAGE_CHARS
# Messages measured and written recently: a streaming answer's earlier messages, measured on every update.
MEASURED_MESSAGES = 256

CUT = " …"
RULE = "──────────"
INDENT = "    "
BULLETS = ("•", "◦", "▪")
# Slack reads a link token up to its first `|`; a bar inside a label becomes this look-alike.
LABEL_BAR = "¦"

# Inline nesting (brackets inside a link label, links inside links) deeper than this is read as text.
# markdown-it's label scan costs time in proportion to it on bracket soup; real answers nest 1 or 2 deep.
INLINE_NESTING = 3
# CommonMark lets a parser cap nested parentheses in a link destination (at least 3 must work): each
# unclosed `(` otherwise makes every earlier `[a](` scan on, 32 deep in markdown-it.
DESTINATION_PARENS = 4

_MARKUP = re.compile(r"<([^<>\n]++)>")
# What could still ping in Markdown sent to the streaming methods, whatever the core defused: a `<`
# opening a mention or special token (`<\!here>` too: Markdown drops the backslash), `@here` and its
# kin, and an entity that Markdown would turn into one of those characters. Each is decided within one
# word, so text sent word by word is defused the same way the whole text is.
_STREAM_PINGS = re.compile(
    r"<(?=\\?[@!#])|@(?=(?:here|channel|everyone))|&(?=#|[A-Za-z][A-Za-z0-9]{0,31};)", re.IGNORECASE
)
_DESTINATION_STOP = re.compile(r"[\x00-\x20\x7f()\\]")
# The only targets written as Slack link tokens: web pages and mail addresses, something after the scheme.
_LINK_TARGET = re.compile(r"https?://[^/?#]|mailto:.", re.IGNORECASE)
_IMAGE_TARGET = re.compile(r"https?://[^/?#]", re.IGNORECASE)
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f<>|]")


def escape(text: str) -> str:
    """Slack's three control characters as entities, so model or user text cannot form `<!here>` or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- parsing ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Destination:
    """What markdown-it's link rule reads back from a destination parser."""

    ok: bool = False
    pos: int = 0
    str: str = ""


def _link_destination(src: str, pos: int, maximum: int) -> object:
    """A bare link destination (no `<…>`), jumping from one parenthesis or backslash to the next."""
    if src.startswith("<", pos):
        # Ends at the next `<`, `>` or newline: no earlier link can make it scan further.
        return markdown_it.helpers.parseLinkDestination(src, pos, maximum)
    start = pos
    level = 0
    while pos < maximum:
        found = _DESTINATION_STOP.search(src, pos, maximum)
        if found is None:
            pos = maximum
            break
        pos = found.start()
        char = src[pos]
        if char == "(":
            level += 1
            if level > DESTINATION_PARENS:
                return _Destination()
        elif char == ")":
            if level == 0:
                break
            level -= 1
        elif char == "\\" and pos + 1 < maximum:
            if src[pos + 1] == " ":
                break
            pos += 1
        elif char != "\\":
            break  # space or control character
        pos += 1
    if pos == start or level:
        return _Destination()
    return _Destination(True, pos, unescapeAll(src[start:pos]))


def _parser() -> MarkdownIt:
    # Raw HTML is not parsed at all: it stays text, and text is escaped.
    inline = MarkdownIt("commonmark", {"maxNesting": INLINE_NESTING})
    inline.enable("strikethrough").disable("html_inline")
    link_helpers = types.ModuleType("acechat_link_helpers")
    vars(link_helpers).update(
        parseLinkLabel=markdown_it.helpers.parseLinkLabel,
        parseLinkTitle=markdown_it.helpers.parseLinkTitle,
        parseLinkDestination=_link_destination,
    )
    inline.helpers = link_helpers

    # Blocks keep CommonMark's own nesting limit: a list four levels deep is real Markdown.
    blocks = MarkdownIt("commonmark").enable("table").disable("html_block")

    def parse_inline(state: StateCore) -> None:
        for token in state.tokens:
            if token.type == "inline":
                token.children = []
                inline.inline.parse(token.content, inline, state.env, token.children)

    blocks.core.ruler.at("inline", parse_inline)
    return blocks


_PARSER = _parser()


# --- writing ----------------------------------------------------------------------------------------


_MARKS = {"strong": "*", "em": "_", "s": "~"}
_MARK_TOKENS = {f"{name}_{end}": (name, end == "open") for name in _MARKS for end in ("open", "close")}


class _Kind(Enum):
    TEXT = "text"  # escaped text: may be cut anywhere outside an entity
    ATOM = "atom"  # a link token, a rule, a closing mark: whole or not at all
    OPEN = "open"  # an opening mark: pointless as the last thing before a cut
    BREAK = "break"  # a line break and what starts the next line (quote mark, list marker): likewise


@dataclass(slots=True)
class _Piece:
    text: str
    kind: _Kind
    closer: str  # what closes the marks open before this piece, if the message is cut here


@dataclass(slots=True)
class _Item:
    marker: str
    pending: bool = True  # the marker is still to be written, on the item's first line


class _Full(Exception):
    """The mrkdwn written so far is already over the limit: the rest would be cut anyway."""


class _Writer:
    """One conversion over markdown-it's flat token stream. Nesting lives in counters and small stacks,
    never in recursion, so a hostile depth costs nothing but its tokens.

    Writing stops once the output passes `limit`: reference links can repeat one long target any number
    of times, and work in proportion to what would be cut anyway is work an attacker chooses.
    """

    def __init__(self, limit: int) -> None:
        self.pieces: list[_Piece] = []
        self.size = 0
        self._limit = limit
        self._closers: list[str] = []  # of the open marks, innermost last
        self._closer = ""
        self._marks = dict.fromkeys(_MARKS, 0)
        self._quotes = 0
        self._lists: list[bool] = []  # ordered?
        self._items: list[_Item] = []
        self._last_line = -1  # the source line after the previous block
        self._one_line = False  # in a heading or a table cell: breaks become spaces
        # Per open link: its target, and whether it becomes a link token or text followed by its target.
        self._links: list[tuple[str, bool, int]] = []
        self._label: list[str] | None = None  # the label of the link token being written

    # blocks

    def write(self, tokens: Sequence[Token]) -> None:
        bold = False
        rows = cells = 0
        for i, token in enumerate(tokens):
            kind = token.type
            if kind == "inline":
                self._inline(token.children or ())
            elif kind == "paragraph_open":
                self._block(token.map)
            elif kind in ("heading_open", "th_open", "td_open"):
                if kind == "heading_open":
                    self._block(token.map)
                else:
                    if cells:
                        self._put(" | ", _Kind.TEXT)
                    cells += 1
                self._one_line = True
                # A heading is a bold line; so is a table's header row.
                bold = kind != "td_open" and bool(tokens[i + 1].content.strip())
                if bold:
                    self._mark("strong", True)
            elif kind in ("heading_close", "th_close", "td_close"):
                if bold:
                    self._mark("strong", False)
                bold = False
                self._one_line = False
            elif kind == "tr_open":
                # Rows stay on consecutive lines: the source's delimiter row is not one of them.
                self._block(token.map, tight=rows > 0)
                rows += 1
                cells = 0
            elif kind == "table_open":
                rows = 0
            elif kind in ("bullet_list_open", "ordered_list_open"):
                self._lists.append(kind == "ordered_list_open")
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self._lists.pop()
            elif kind == "list_item_open":
                self._items.append(_Item(self._marker(token)))
            elif kind == "list_item_close":
                self._items.pop()
            elif kind == "blockquote_open":
                self._quotes += 1
            elif kind == "blockquote_close":
                self._quotes -= 1
            elif kind in ("fence", "code_block"):
                self._block(token.map)
                self._code(token.content, token.info.split(maxsplit=1)[0] if token.info.strip() else "")
            elif kind == "hr":
                self._block(token.map)
                self._put(RULE, _Kind.ATOM)

    def _marker(self, token: Token) -> str:
        if self._lists[-1]:
            return f"{token.info}{token.markup} "
        depth = sum(1 for ordered in self._lists if not ordered) - 1
        return BULLETS[depth % len(BULLETS)] + " "

    def _prefix(self) -> str:
        """What starts a line here: Slack's quote mark (one level is all mrkdwn has), then the list marker
        of an item's first line or the indent of its others."""
        parts = ["> "] if self._quotes else []
        for item in self._items:
            parts.append(item.marker if item.pending else INDENT)
            item.pending = False
        return "".join(parts)

    def _block(self, lines: list[int] | None, tight: bool = False) -> None:
        # Blocks that were apart in the source stay apart; a heading right above its text stays there.
        if self.pieces:
            apart = not tight and (lines is None or lines[0] > self._last_line)
            self._put(("\n\n" if apart else "\n") + self._prefix(), _Kind.BREAK)
        else:
            self._put(self._prefix(), _Kind.BREAK)
        if lines is not None:
            self._last_line = lines[1]

    def _newline(self) -> None:
        self._put("\n" + self._prefix(), _Kind.BREAK)

    def _code(self, content: str, language: str) -> None:
        # Slack highlights nothing, but the core's splitter reopens a block with its language: keep it.
        self._open("```" + escape(language), "\n```")
        for line in content.removesuffix("\n").split("\n") if content else ():
            self._newline()
            self._put(escape(line), _Kind.TEXT)
        self._newline()
        self._close("```")

    # inline

    def _inline(self, tokens: Iterable[Token]) -> None:
        for token in tokens:
            kind = token.type
            if kind == "text":
                self._text(escape(token.content))
            elif kind in ("softbreak", "hardbreak"):
                if self._one_line or self._label is not None:
                    self._text(" ")
                else:
                    self._newline()
            elif kind == "code_inline":
                if self._label is not None:
                    self._label.append(f"`{_label_text(token.content)}`")
                else:
                    self._open("`", "`")
                    self._put(escape(token.content), _Kind.TEXT)
                    self._close("`")
            elif kind in _MARK_TOKENS:
                self._mark(*_MARK_TOKENS[kind])
            elif kind == "link_open":
                self._link_open(token.attrGet("href"))
            elif kind == "link_close":
                self._link_close()
            elif kind == "image":
                self._image(token)

    def _text(self, escaped: str) -> None:
        if self._label is not None:
            self._label.append(escaped.replace("|", LABEL_BAR).replace("\n", " "))
        else:
            self._put(escaped, _Kind.TEXT)

    def _mark(self, name: str, opening: bool) -> None:
        """Bold, italic, strike: nested twice they would close each other in mrkdwn, so only the
        outermost of each kind is written."""
        self._marks[name] += 1 if opening else -1
        if self._marks[name] != (1 if opening else 0):
            return
        mark = _MARKS[name]
        if self._label is not None:
            self._label.append(mark)
        elif opening:
            self._open(mark, mark)
        else:
            self._close(mark)

    def _link_open(self, href: str | float | None) -> None:
        target = href if isinstance(href, str) else ""
        as_token = self._label is None and _LINK_TARGET.match(target) is not None
        self._links.append((target, as_token, len(self.pieces)))
        if as_token:
            self._label = []

    def _link_close(self) -> None:
        target, as_token, first = self._links.pop()
        if as_token and self._label is not None:
            label, self._label = "".join(self._label).strip(), None
            self._put(_link(target, label), _Kind.ATOM)
            return
        # Any other target is only text: shown after the label, unless the label already says it.
        shown = escape(_PARSER.normalizeLinkText(target))
        label = "".join(p.text for p in self.pieces[first:] if p.kind is _Kind.TEXT)
        if shown and shown != label.strip():
            self._text(f" ({shown})" if label.strip() else shown)

    def _image(self, token: Token) -> None:
        src = token.attrGet("src")
        alt = _plain_text(token.children or ())
        if self._label is None and isinstance(src, str) and _IMAGE_TARGET.match(src):
            self._put(_link(src, _label_text(alt)), _Kind.ATOM)
        else:
            self._text(escape(alt))

    # pieces

    def _put(self, text: str, kind: _Kind) -> None:
        if text:
            self.pieces.append(_Piece(text, kind, self._closer))
            self.size += len(text)
            if self.size > self._limit:
                raise _Full

    def _open(self, mark: str, closer: str) -> None:
        self._put(mark, _Kind.OPEN)
        self._closers.append(closer)
        self._closer = "".join(reversed(self._closers))

    def _close(self, mark: str) -> None:
        self._put(mark, _Kind.ATOM)
        self._closers.pop()
        self._closer = "".join(reversed(self._closers))


def _label_text(text: str) -> str:
    return escape(text).replace("|", LABEL_BAR).replace("\n", " ")


def _link(url: str, label: str) -> str:
    """A Slack link token that nothing in `url` or `label` can end early or turn into something else."""
    safe = _URL_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", url).replace("&", "&amp;")
    return f"<{safe}|{label or _label_text(_PARSER.normalizeLinkText(url))}>"


def _plain_text(tokens: Iterable[Token]) -> str:
    """An image's alt text: what its label says, without markup (labels may hold images of their own)."""
    out: list[str] = []
    stack = [iter(tokens)]
    while stack:
        for token in stack[-1]:
            if token.type in ("text", "code_inline"):
                out.append(token.content)
            elif token.type in ("softbreak", "hardbreak"):
                out.append(" ")
            elif token.children:
                stack.append(iter(token.children))
                break
        else:
            stack.pop()
    return "".join(out)


# --- the message ------------------------------------------------------------------------------------


def render(markdown: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Markdown as mrkdwn no longer than `limit`.

    Conversion rarely grows text, but every escaped `&`, `<` or `>` does. Past the limit the tail is cut
    between pieces (never inside an entity or a link token), open marks are closed and " …" ends it.
    Markdown past `limit` characters is not read at all.
    """
    if len(markdown) <= limit:
        whole = _whole(markdown)
        if whole is not None and len(whole) <= limit:
            return whole
    source = _head(markdown, limit)
    writer = _Writer(limit)
    try:
        writer.write(_PARSER.parse(source))
    except _Full:
        pass
    else:
        if len(source) == len(markdown):
            return "".join(p.text for p in writer.pieces)
    log.warning("Markdown of %d characters does not fit %d of mrkdwn; cutting it", len(markdown), limit)
    return _cut(writer.pieces, limit)


def stream_markdown(markdown: str) -> str:
    """The core's Markdown as the streaming methods' `markdown_text` (standard Markdown, not mrkdwn): as it
    is, with a zero-width space after anything that could still ping."""
    return _STREAM_PINGS.sub(lambda m: m.group() + ZWSP, markdown)


def stream_length(markdown: str) -> int:
    """The length a streamed answer's message counts at, as `MAX_MESSAGE_CHARS` counts: its mrkdwn where it
    is edited with `chat.update`, or its streamed Markdown scaled to what a streamed message holds."""
    streamed = stream_markdown(markdown)
    scaled = -(-len(streamed) * MAX_MESSAGE_CHARS // MAX_STREAMED_MESSAGE_CHARS)
    return max(shown_length(streamed), scaled)


def shown_length(markdown: str) -> int:
    """How many characters of mrkdwn `markdown` becomes (at most a little over `MEASURE_CAP`).

    The core splits answers on this length, so what `render` then writes is never cut. The splitter
    measures the same messages `render` writes next, hence the cache they share."""
    whole = _whole(markdown)
    return len(whole) if whole is not None else MEASURE_CAP + 1


@functools.lru_cache(maxsize=MEASURED_MESSAGES)
def _whole(markdown: str) -> str | None:
    """`markdown` as mrkdwn, or None once that passes `MEASURE_CAP` (writing stops there: reference
    links can repeat a long target any number of times)."""
    writer = _Writer(MEASURE_CAP)
    try:
        writer.write(_PARSER.parse(markdown))
    except _Full:
        return None
    return "".join(p.text for p in writer.pieces)


def _head(markdown: str, limit: int) -> str:
    """The first `limit` characters of `markdown`, ending at a line's end if one is near: mrkdwn is
    rarely shorter than its Markdown, and text that could not show should cost no parsing."""
    if len(markdown) <= limit:
        return markdown
    line_end = markdown.rfind("\n", limit // 2, limit)
    return markdown[: line_end if line_end != -1 else limit]


def _cut(pieces: list[_Piece], limit: int) -> str:
    budget = limit - len(CUT) - max((len(p.closer) for p in pieces), default=0)
    kept: list[_Piece] = []
    used = 0
    closer = ""
    for piece in pieces:
        room = budget - used
        if len(piece.text) <= room:
            kept.append(piece)
            used += len(piece.text)
            continue
        closer = piece.closer
        if piece.kind is _Kind.TEXT and room > 0:
            part = piece.text[:room]
            entity = part.rfind("&", max(0, room - 4))
            if entity != -1 and ";" not in part[entity:]:
                part = part[:entity]
            kept.append(_Piece(part, _Kind.TEXT, closer))
        break
    while kept and (kept[-1].kind in (_Kind.OPEN, _Kind.BREAK) or not kept[-1].text.strip()):
        closer = kept.pop().closer
    if not kept:
        return CUT.strip()[:limit]
    return "".join(p.text for p in kept).rstrip() + closer + CUT


# --- Slack's markup in ------------------------------------------------------------------------------


def _plain(match: re.Match[str], bot_user_id: str | None) -> str:
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):
        return "" if target[1:] == bot_user_id else "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    if target.startswith("!"):
        # <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
        return label or "@" + target[1:].split("^")[0]
    if target.startswith("mailto:"):
        return label or target.removeprefix("mailto:")
    if label and label not in target:
        return f"{label} ({target})"
    return target


def from_slack(text: str, bot_user_id: str | None = None) -> str:
    """What a user typed, as plain text: mentions, channels and links unwrapped, the bot's mention removed."""
    # Possessive: a `<` that never closes is given up at once, not retried at every shorter length.
    plain = _MARKUP.sub(lambda m: _plain(m, bot_user_id), text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()
