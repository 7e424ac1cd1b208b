from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acechat.core.splitting import MIN_LIMIT, Chunk, Measure, closing_fence, split_chunks, split_message

SPACE = re.compile(r"\s*")


def reassembles(text: str, chunks: list[Chunk]) -> bool:
    """text == w0 + body1 + w1 + ... + bodyN + wN, every w whitespace (the documented contract)."""
    at = 0
    for chunk in chunks:
        gap = SPACE.match(text, at)
        assert gap is not None
        gap_end = gap.end()
        indent = len(chunk.body) - len(chunk.body.lstrip())
        start = gap_end - indent if chunk.body.strip() else at
        if start < at or not text.startswith(chunk.body, start):
            return False
        at = start + len(chunk.body)
    return not text[at:].strip()


def open_fence(text: str) -> tuple[str, int] | None:
    """Which fence is open at the end of `text`, read the CommonMark way; written apart from the splitter."""
    fence: tuple[str, int] | None = None
    for line in text.split("\n"):
        match = re.match(r" {0,3}(`{3,}|~{3,})(.*)$", line)
        if match is None:
            continue
        run, rest = match.groups()
        if fence is None:
            if not (run[0] == "`" and "`" in rest):
                fence = (run[0], len(run))
        elif run[0] == fence[0] and len(run) >= fence[1] and not rest.strip():
            fence = None
    return fence


def check_invariants(text: str, limit: int, measure: Measure = len) -> list[Chunk]:
    chunks = split_chunks(text, limit, None if measure is len else measure)
    assert [c.text for c in chunks] == split_message(text, limit, None if measure is len else measure)
    for i, chunk in enumerate(chunks):
        assert 0 < len(chunk.text) <= limit
        assert measure(chunk.text) <= limit
        assert chunk.text.strip()
        assert chunk.body
        # A reopened fence continues exactly the fence the previous chunk closed.
        if i == 0:
            assert chunk.reopen == ""
        else:
            assert bool(chunk.reopen) == bool(chunks[i - 1].close)
            if chunk.reopen:
                assert re.fullmatch(r"(`{3,}|~{3,})[^\n]*\n", chunk.reopen)
                assert chunks[i - 1].close.strip() == chunk.reopen.strip()[: len(chunks[i - 1].close.strip())]
    if chunks:
        assert chunks[-1].close == ""
    assert reassembles(text, chunks)
    return chunks


# --- generated Markdown: prose, inline backticks, fenced blocks of both kinds -------------------------

words = st.text(alphabet="abcxyz0123456789.,:!?@<>*_-`~é日🙂", min_size=1, max_size=10)
# A prose line starts with a letter, so only code_block makes fence lines.
prose_line = st.lists(words, min_size=1, max_size=12).map(lambda ws: "w" + " ".join(ws))
paragraph = st.lists(prose_line, min_size=1, max_size=4).map("\n".join)
code_line = st.tuples(
    st.sampled_from(["", "  ", "    ", "\t", "        "]),
    st.lists(st.text(alphabet="abc123=()[]{}:;'\"#.,+", min_size=1, max_size=8), min_size=0, max_size=6),
).map(lambda t: t[0] + " ".join(t[1]))


@st.composite
def code_block(draw: st.DrawFn) -> str:
    char = draw(st.sampled_from("`~"))
    size = draw(st.integers(3, 4))
    info = draw(st.sampled_from(["", "python", "js", "sql", "sh x"]))
    lines = draw(st.lists(code_line, max_size=15))
    if char == "~":
        # A backtick fence line inside a tilde block is only code.
        lines += draw(st.lists(st.just("```"), max_size=1))
    return "\n".join([char * size + info, *lines, char * size])


@st.composite
def markdown(draw: st.DrawFn) -> str:
    blocks = draw(st.lists(st.one_of(paragraph, code_block()), min_size=1, max_size=8))
    return "".join(block + draw(st.sampled_from(["\n", "\n\n", "\n\n\n"])) for block in blocks)


# Anything at all, weighted towards the characters the splitter cares about.
raw = st.lists(
    st.sampled_from([*"ab `~\n\té", "```", "~~~", "```py\n", "\n```\n", "word " * 12]), max_size=200
).map("".join)
limits = st.integers(MIN_LIMIT, 300)


def examples(count: int) -> settings:
    """The same examples on every run (so a mutation-testing run is repeatable), with no clock involved."""
    return settings(
        max_examples=count, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@given(text=st.one_of(raw, markdown()), limit=limits)
@examples(80)
def test_any_text_splits_within_limit_and_reassembles(text: str, limit: int) -> None:
    check_invariants(text, limit)


@given(text=markdown(), limit=st.integers(60, 300))
@examples(60)
def test_every_chunk_of_balanced_markdown_renders_balanced(text: str, limit: int) -> None:
    assert open_fence(text) is None
    for chunk in check_invariants(text, limit):
        assert open_fence(chunk.text) is None, chunk.text


@given(text=st.one_of(raw, markdown()), more=raw, limit=limits)
@examples(60)
def test_appending_never_changes_any_chunk_but_the_last(text: str, more: str, limit: int) -> None:
    before = split_message(text, limit)[:-1]
    assert split_message(text + more, limit)[: len(before)] == before


@given(
    text=st.one_of(raw, markdown()),
    rests=st.lists(
        st.sampled_from(["", "`", "``", "```", "~~~", "\n", " ", "x", "py\n", "\n```\n"]), min_size=2
    ),
    limit=limits,
)
@examples(60)
def test_the_first_cut_reads_nothing_past_the_room(text: str, rests: list[str], limit: int) -> None:
    padded = text + " w" * limit
    start = len(padded) - len(padded.lstrip())
    room = padded[: start + limit + 1]
    assert len({split_message(room + rest + " " + "z" * limit, limit)[0] for rest in rests}) == 1


def escaped_length(text: str) -> int:
    """A platform that shows `<`, `>` and `&` as entities, as Slack does (written apart from its adapter)."""
    return len(text) + 3 * (text.count("<") + text.count(">")) + 4 * text.count("&")


dense = st.lists(
    st.sampled_from([*"<>&", "a", " ", "\n", "<td>", "a&b ", "```\n", "\n```\n"]), max_size=300
).map("".join)


@given(text=st.one_of(raw, markdown(), dense), limit=limits)
@examples(80)
def test_measured_chunks_show_within_the_limit_and_reassemble(text: str, limit: int) -> None:
    check_invariants(text, limit, escaped_length)


@given(text=st.one_of(markdown(), dense), more=st.one_of(raw, dense), limit=limits)
@examples(60)
def test_measured_appending_changes_only_the_last_two_chunks(text: str, more: str, limit: int) -> None:
    # Only the last message's own cut, decided while its text fit the room but not the screen, may move.
    before = split_message(text, limit, escaped_length)[:-2]
    assert split_message(text + more, limit, escaped_length)[: len(before)] == before


def test_a_measure_that_never_fits_still_makes_progress() -> None:
    # Each room tried is smaller than the last, down to one character, which is then sent as it is.
    assert split_message("<" * 500, 60, lambda text: 1000) == ["<"] * 500


@pytest.mark.parametrize(
    ("text", "measure", "tries", "chunks"),
    [
        # Shown a little too long whatever the text: the room shrinks to one character, no further.
        ("<" * 4, lambda text: 61, [4, 3, 2, 1, 3, 2, 1, 2, 1, 1, 1], [1, 1, 1, 1]),
        # Shown as long as it is: a chunk that fills the message exactly is taken on its first try.
        ("x" * 120, len, [50, 50, 20], [50, 50, 20]),
        # Fits the room but not the screen: one try scaled a little under the limit, then smaller ones.
        ("<" * 30 + " tail", escaped_length, [35, 13, 12, 23, 14, 12, 11], [12, 12, 11]),
        # Fits the room, and shows exactly the limit.
        ("<" * 10 + "a" * 10, escaped_length, [20], [20]),
        # After a chunk that showed longer than its text, the next first try is scaled by as much.
        (
            "a<" * 100,
            escaped_length,
            [50, 19, 20, 19, 18, 19, 20, 19, 18, 48, 19, 29, 19, 10],
            [19, 20, 19, 18, 19, 20, 19, 18, 19, 19, 10],
        ),
        ("aaa<" * 40, escaped_length, [50, 28, 27, 29, 26, 27, 27, 25], [28, 27, 26, 27, 27, 25]),
    ],
    ids=[
        "never fits",
        "fits exactly",
        "last chunk too long",
        "last chunk shows the limit",
        "dense",
        "less dense",
    ],
)
def test_which_texts_are_measured_at_a_limit_of_50(
    text: str, measure: Measure, tries: list[int], chunks: list[int]
) -> None:
    measured: list[str] = []

    def recording(written: str) -> int:
        measured.append(written)
        return measure(written)

    got = split_message(text, 50, recording)
    assert [len(t) for t in measured] == tries
    assert [len(c) for c in got] == chunks
    assert "".join(got).replace(" ", "") == text.replace(" ", "")


# --- examples -------------------------------------------------------------------------------------


def test_the_reassembly_check_catches_lost_or_repeated_text() -> None:
    text = "alpha beta\n\ngamma"
    assert reassembles(text, [Chunk("alpha beta"), Chunk("gamma")])
    assert not reassembles(text, [Chunk("alpha"), Chunk("gamma")])
    assert not reassembles(text, [Chunk("alpha beta"), Chunk("beta"), Chunk("gamma")])
    assert not reassembles(text, [Chunk("alpha beta")])


def test_limit_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_message("hello", MIN_LIMIT - 1)


def test_short_and_blank_texts() -> None:
    assert split_message("  hello world \n", 100) == ["hello world"]
    assert split_message("", 100) == []
    assert split_message(" \n\t ", 100) == []
    exact = "x" * 100
    assert split_message(exact, 100) == [exact]


def test_prefers_a_blank_line_in_the_second_half() -> None:
    first = "alpha " * 10 + "\n" + "beta " * 5
    text = first.strip() + "\n\n" + "gamma delta " * 5
    chunks = split_message(text, 100)
    assert chunks[0] == first.strip()
    assert chunks[1].startswith("gamma")


def test_prefers_a_line_break_over_a_space() -> None:
    text = "one two three four five six seven eight nine ten\nel" + " zz" * 30
    chunks = split_message(text, 60)
    assert chunks[0] == "one two three four five six seven eight nine ten"


def test_a_blank_line_too_early_loses_to_a_late_line_break() -> None:
    text = "hi\n\n" + "word " * 15 + "\n" + "more " * 10
    assert split_message(text, 90)[0] == "hi\n\n" + ("word " * 15).strip()


def test_splits_at_spaces_then_mid_word_only_for_a_giant_word() -> None:
    text = " ".join(["lorem"] * 40)
    chunks = split_message(text, 50)
    assert all(c.split() and all(w == "lorem" for w in c.split()) for c in chunks)
    giant = "a" * 130
    assert split_message(f"start {giant} end", 50) == ["start", "a" * 50, "a" * 50, "a" * 30 + " end"]


def test_code_block_is_closed_and_reopened_with_its_info_string() -> None:
    code = "\n".join(f"    value_{i} = compute({i})" for i in range(12))
    text = f"Here you go:\n\n```python\n{code}\n```\n\nDone."
    chunks = split_message(text, 120)
    assert len(chunks) > 2
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n    value_")
        assert chunk.endswith("\n```")
    # Indentation survives the cut, and no line is lost or repeated.
    lines = [ln for c in chunks for ln in c.split("\n") if ln.startswith("    value_")]
    assert lines == code.split("\n")


def test_tilde_fences_and_backtick_lines_inside_them() -> None:
    body = "\n".join(["```", "inside tilde", *[f"line {i} of code" for i in range(10)]])
    text = f"~~~~markdown\n{body}\n~~~~\ntail"
    chunks = split_chunks(text, 80)
    assert chunks[0].close == "\n~~~~"
    assert all(c.reopen == "~~~~markdown\n" for c in chunks[1:-1])
    assert all(open_fence(c.text) is None for c in chunks)


def test_never_ends_a_chunk_right_after_an_opening_fence() -> None:
    text = "x" * 40 + "\n```\n" + "a_long_identifier_without_spaces_" * 3 + "\n```"
    chunks = split_message(text, 60)
    assert chunks[0] == "x" * 40
    assert chunks[1].startswith("```\na_long")


def test_an_unclosed_block_stays_unclosed_in_the_last_chunk() -> None:
    text = "```sh\n" + "\n".join(f"echo {i}" for i in range(30))
    chunks = split_message(text, 80)
    assert chunks[-1].startswith("```sh\n") and not chunks[-1].endswith("```")
    assert all(c.endswith("\n```") for c in chunks[:-1])


def test_inline_triple_backticks_are_not_fences() -> None:
    text = "Wrap code in ```python``` fences, like ```this```. " * 6
    assert all(open_fence(c) is None for c in split_message(text, 70))
    assert all(not c.startswith("```") for c in split_message(text, 70))


def test_a_ten_thousand_line_code_block() -> None:
    lines = [f"    result_{i} = handler(event, context={i})" for i in range(10_000)]
    text = "Big file:\n\n```python\n" + "\n".join(lines) + "\n```\n\nThat's all."
    chunks = check_invariants(text, 2000)
    assert all(c.text.startswith("```python\n") for c in chunks[1:-1])
    assert all(c.text.endswith("\n```") for c in chunks[:-1])
    # Every chunk holds whole code lines: the cut is always at a line break.
    got = [ln for c in chunks for ln in c.body.split("\n") if ln.startswith("    result_")]
    assert got == lines


def test_one_megabyte_splits_fast() -> None:
    prose = ("The quick brown fox jumps over the lazy dog. " * 8 + "\n") * 1400
    code = "```js\n" + "const answer = compute(41) + 1;\n" * 4000 + "```\n"
    text = (prose + "\n" + code) * 1
    assert len(text) > 500_000
    text = text + text
    # CPU time, not wall time: other processes on a busy machine do not count.
    start = time.process_time()
    chunks = split_message(text, 2000)
    assert time.process_time() - start < 1.0
    assert len(chunks) > 500


# --- exact cuts: where each rule puts the cut ---------------------------------------------------------


def test_a_text_of_exactly_the_limit_is_one_message() -> None:
    text = ("word " * 20).strip()
    assert len(text) == 99
    assert split_message(text, 99) == [text]
    assert split_message(f"\n {text} \n", 99) == [text]
    assert split_message(text, 98) == [("word " * 19).strip(), "word"]


def test_prose_is_cut_at_the_last_space_that_fits() -> None:
    # The eleventh word would end at 54; the space after the tenth is at 49, the last place that fits.
    assert split_message("word " * 12, 50) == [("word " * 10).strip(), "word word"]
    # A space right after the room is no cut: what follows it, perhaps a fence, is not read.
    assert split_message("abcd " * 9 + "abcde f", 50) == [("abcd " * 9).strip(), "abcde f"]


def test_a_blank_line_in_the_second_half_beats_a_later_line_break() -> None:
    text = "one two three four five six seven\n\neight nine ten\neleven twelve thirteen fourteen fifteen"
    assert split_message(text, 60) == [
        "one two three four five six seven",
        "eight nine ten\neleven twelve thirteen fourteen fifteen",
    ]


def test_a_blank_line_in_the_first_half_loses_to_a_later_space() -> None:
    text = "alpha beta gamma delta\n\nepsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    assert split_message(text, 60) == [
        "alpha beta gamma delta\n\nepsilon zeta eta theta iota kappa",
        "lambda mu nu xi omicron",
    ]


def test_a_blank_line_across_the_middle_counts_as_a_blank_line() -> None:
    # The room is 60, so the second half starts at 30: between the two line breaks.
    text = "x" * 29 + "\n\n" + "y" * 20 + "\n" + "z " * 30
    assert split_message(text, 60)[:2] == ["x" * 29, "y" * 20 + "\n" + ("z " * 19).strip()]


def test_a_blank_line_just_before_the_middle_is_in_the_first_half() -> None:
    # The second half starts at 31, right after "x\n": the blank line before "x" is in the first half.
    text = "a" * 27 + "\n\nx\n" + "word " * 10
    assert split_message(text, 62) == ["a" * 27 + "\n\nx", ("word " * 10).strip()]


def test_a_one_letter_word_before_a_giant_word() -> None:
    assert split_message("I " + "b" * 60, 50) == ["I", "b" * 50, "b" * 10]


def test_a_fence_line_longer_than_a_message_is_cut_like_a_giant_word() -> None:
    assert split_message("```" + "a" * 60, 50) == ["```" + "a" * 47, "a" * 13]


def test_when_every_cut_is_refused_the_chunk_fills_the_room() -> None:
    # Not right after the opening fence, not right before the closing one: the room decides, even so.
    text = "```\n```" + "x" * 39 + "\n```\nmore"
    assert split_chunks(text, 50) == [
        Chunk("```\n```" + "x" * 39, close="\n```"),
        Chunk("```\nmore", reopen="```\n"),
    ]


def test_code_after_a_cut_keeps_its_indentation_but_not_the_blank_lines_before() -> None:
    text = "```\n" + "x = 1\n" * 3 + "\n\n    y = 2\n" + "z = 3\n" * 12 + "```"
    chunks = split_chunks(text, 50)
    assert chunks[1].body.startswith("    y = 2\n")


def test_a_cut_inside_code_may_fall_at_a_space_in_the_first_half() -> None:
    assert split_message("```py\nx = " + "y" * 80, 50) == [
        "```py\nx =\n```",
        "```py\n" + "y" * 40 + "\n```",
        "```py\n" + "y" * 40,
    ]


def test_a_code_line_may_end_a_chunk_though_spaces_follow_it() -> None:
    # The fence-like code line ends exactly where the room does (50 less the closing fence).
    code = "```" + "x" * 33
    text = "```\nab cd\n" + code + "  \n" + "y = 1\n" * 8 + "```"
    assert split_message(text, 50)[0] == f"```\nab cd\n{code}\n```"


# --- fences at the cut ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "reopen"),
    [
        # At a limit of 60 the reopened line and the closing fence may take 20 characters together.
        ("```abcdefghijkl", "```abcdefghijkl\n"),
        ("```abcdefghijklm", "```\n"),
        ("~~~ `ok`", "~~~ `ok`\n"),
    ],
)
def test_the_reopened_fence_line_takes_at_most_a_third_of_a_message(opening: str, reopen: str) -> None:
    text = opening + "\n" + "x = 1\n" * 12 + opening[:3]
    chunks = split_chunks(text, 60)
    assert len(chunks) == 2
    assert chunks[0].close == "\n" + opening[:3]
    assert chunks[1].reopen == reopen


def test_a_fence_too_long_to_repeat_is_not_carried_over_but_still_tracked() -> None:
    # At a limit of 50 an eight-backtick fence would take 18 characters in every message: too many.
    text = "intro\n\n````````\n" + "    x = 1\n" * 8 + "````````\n\n```py\n" + "y = 2\n" * 10 + "```\nend"
    assert split_message(text, 50) == [
        "intro\n\n````````\n" + ("    x = 1\n" * 3).rstrip(),
        # Still inside the long block: the indentation is code, and is kept.
        ("    x = 1\n" * 5).rstrip(),
        # The long block's closing line is seen, so the next block is carried over.
        "````````\n\n```py\n" + ("y = 2\n" * 5) + "```",
        "```py\n" + "y = 2\n" * 5 + "```\nend",
    ]


def test_a_backtick_fence_line_with_a_backtick_after_the_fence_is_not_a_fence() -> None:
    text = "intro words\n" + "```x```\n" * 5 + "after " * 10
    assert split_chunks(text, 50) == [
        Chunk("intro words\n" + ("```x```\n" * 4).rstrip()),
        Chunk("```x```\n" + ("after " * 7).rstrip()),
        Chunk(("after " * 3).rstrip()),
    ]


def test_a_fence_line_of_the_other_kind_inside_a_block_is_code() -> None:
    text = "~~~\n" + "a = 1\n" * 6 + "```\n" + "b = 2\n" * 8 + "~~~"
    assert split_message(text, 50) == [
        "~~~\n" + "a = 1\n" * 6 + "```\n~~~",
        "~~~\n" + ("b = 2\n" * 7) + "~~~",
        "~~~\nb = 2\n~~~",
    ]


def test_a_chunk_never_ends_right_before_a_closing_fence() -> None:
    # Ending the first chunk after seven lines would leave the next one an empty block; six it is.
    opened_here = "intro\n```\n" + "a = 1\n" * 7 + "```\n" + "after " * 10
    assert split_chunks(opened_here, 56)[:2] == [
        Chunk("intro\n```\n" + ("a = 1\n" * 6).rstrip(), close="\n```"),
        Chunk("a = 1\n```\n" + ("after " * 6).rstrip(), reopen="```\n"),
    ]
    # The same when the block was opened in an earlier chunk.
    carried = "```\n" + "a = 1\n" * 14 + "```\n" + "after " * 10
    assert split_chunks(carried, 52)[1:3] == [
        Chunk(("a = 1\n" * 6).rstrip(), reopen="```\n", close="\n```"),
        Chunk("a = 1\n```\n" + ("after " * 5).rstrip(), reopen="```\n"),
    ]


def test_a_fence_line_whose_end_is_past_the_room_is_not_known_yet() -> None:
    # Whether "```   ..." closes the block depends on what follows, past the room: the cut before it
    # stays allowed, and the text after the room cannot change the chunk.
    for rest in ("\nafter", "x\nafter"):
        text = "```\n" + "a = 1\n" * 7 + "```   " + rest
        assert split_message(text, 50) == ["```\n" + ("a = 1\n" * 7) + "```", "```\n```   " + rest]


def test_a_fence_like_line_too_long_for_the_room_starts_a_chunk_whole() -> None:
    # It cannot follow its opening fence in the same chunk, so that fence is left alone in a chunk.
    text = "intro\n```\n```" + "x" * 60 + "\n```"
    assert split_message(text, 50) == [
        "intro",
        "```\n\n```",
        "```\n```" + "x" * 39 + "\n```",
        "```\n" + "x" * 21 + "\n```",
    ]


@pytest.mark.parametrize(
    ("room", "rests"),
    [
        # A fence line starting right at the end of the room, complete or not.
        ("````````" + "i" * 40 + "\n``", ("`zz zz", "zz zz")),
        # A closing fence line whose end lies past the room.
        ("```\n" + "a = 1\n" * 7 + "```   ", ("\nafter", "x after")),
        # An opening fence line across the end of the room.
        ("x" * 50 + "\n```p", ("y\ncode\n```", "y`\nzz zz")),
        # A space at the end of the room, then a fence or not: the space cannot be the cut.
        ("w " * 26, ("``", "```")),
    ],
    ids=[
        "fence line at the end",
        "closing line past the end",
        "opening line across the end",
        "space at the end",
    ],
)
def test_a_cut_reads_nothing_past_the_room(room: str, rests: tuple[str, str]) -> None:
    """The first chunk depends on text[:limit + 1] alone; that is what keeps earlier chunks stable."""
    limit = len(room) - 1
    first = {split_message(room + rest + " " + "z" * 60, limit)[0] for rest in rests}
    assert len(first) == 1


# --- closing a block the answer left open (core.chat, when an answer is stopped or cut) ---------------


@pytest.mark.parametrize(
    ("text", "close"),
    [
        ("", ""),
        ("plain words", ""),
        ("a ```x``` b", ""),
        # A fence on the very first line, with nothing after it.
        ("```", "\n```"),
        ("```py\ncode", "\n```"),
        # The last line closes the block though no line break follows it.
        ("```\ncode\n```", ""),
        ("  ```\nx\n   ````", ""),
        # Only the block still open at the end counts, with its own fence.
        ("~~~~\ncode\n~~~~\nafter\n````js\nx", "\n````"),
        ("```\ncode\n```\nafter\n~~~\nx", "\n~~~"),
    ],
)
def test_closing_fence_closes_only_a_block_still_open(text: str, close: str) -> None:
    assert closing_fence(text) == close
    assert open_fence(text + close) is None
